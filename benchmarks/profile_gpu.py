"""Where a decode step's time goes on the GPU: cProfile of LLM.generate (host side) and
the replay time of the captured decode graph alone, on a random Qwen2.5-0.5B-shaped model.

    python benchmarks/profile_gpu.py [--batch 1]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time

import torch

from e2e_gpu import make_checkpoint, prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    from baseboard import LLM, SamplingParams

    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint("qwen2.5-0.5b", directory)
        llm = LLM(model=directory, dtype="bfloat16", max_num_seqs=128, max_model_len=288,
                  skip_tokenizer_init=True)
        params = SamplingParams(temperature=0.0, max_tokens=64, ignore_eos=True,
                                detokenize=False)
        for batch in map(int, args.batches.split(",")):
            batch_prompts = [{"prompt_token_ids": p} for p in prompts(batch, 151936)]
            llm.generate(batch_prompts, params)
            profile = cProfile.Profile()
            start = time.perf_counter()
            profile.enable()
            llm.generate(batch_prompts, params)
            profile.disable()
            print(f"batch {batch}: {batch * 64 / (time.perf_counter() - start):.1f} tok/s")
            pstats.Stats(profile).sort_stats("tottime").print_stats(18)
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
