"""Where a generation's time goes on the GPU, step by step: each engine step timed (host and
device), the replay time of the captured decode graphs alone, and a cProfile of the host
side, on a random Qwen2.5-0.5B-shaped model.

    python benchmarks/profile_gpu.py [--batches 1,32]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections import defaultdict

import torch

from e2e_gpu import make_checkpoint, prompts


def timed_steps(llm, batch_prompts, params) -> dict:
    engine = llm.engine
    for prompt in batch_prompts:
        engine.add_request(prompt, params)
    totals = defaultdict(lambda: [0, 0.0])
    while engine.has_unfinished():
        torch.cuda.synchronize()
        start = time.perf_counter()
        seqs = engine.step()
        torch.cuda.synchronize()
        kind = "decode" if all(s.num_output_tokens > 1 for s in seqs) else "prefill"
        totals[(kind, len(seqs))][0] += 1
        totals[(kind, len(seqs))][1] += time.perf_counter() - start
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    from baseboard import LLM, SamplingParams

    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint("qwen2.5-0.5b", directory)
        llm = LLM(model=directory, dtype="bfloat16", max_num_seqs=128, max_model_len=288,
                  skip_tokenizer_init=True)
        params = SamplingParams(temperature=0.0, max_tokens=128, ignore_eos=True,
                                detokenize=False)
        for batch in map(int, args.batches.split(",")):
            batch_prompts = [{"prompt_token_ids": p} for p in prompts(batch, 151936)]
            llm.generate(batch_prompts, params)
            for (kind, n), (count, seconds) in sorted(timed_steps(llm, batch_prompts,
                                                                  params).items()):
                print(f"batch {batch}: {count:4d} {kind} steps of {n:3d} sequences, "
                      f"{1000 * seconds / count:8.3f} ms each")
            profile = cProfile.Profile()
            profile.enable()
            llm.generate(batch_prompts, params)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(12)
        graphs = llm.engine.runner.graphs
        for size in (1, 32):
            graph, _ = graphs.graphs[size]
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(100):
                graph.replay()
            torch.cuda.synchronize()
            print(f"graph replay, batch {size}: {(time.perf_counter() - start) * 10:.3f} ms")


if __name__ == "__main__":
    main()
