"""Where a generation's time goes on the GPU: each engine step timed (host and device), the
replay time of the captured decode graphs alone, and the kernels of the decode steps (name,
launches per step, device time per step), on a random model of the given shape.

    python benchmarks/profile_gpu.py [--model qwen2.5-0.5b] [--batches 1,32]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from e2e_gpu_workers import SHAPES, make_checkpoint, prompts


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
        kind = "decode" if seqs and all(s.num_output_tokens > 1 for s in seqs) else "other"
        totals[(kind, len(seqs))][0] += 1
        totals[(kind, len(seqs))][1] += time.perf_counter() - start
    return totals


def kernel_table(llm, batch_prompts, params, steps: int = 20) -> None:
    """Profile ``steps`` decode steps in the middle of a generation: kernels per step."""
    engine = llm.engine
    for prompt in batch_prompts:
        engine.add_request(prompt, params)
    for _ in range(8):  # past the prefill
        engine.step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        start = time.perf_counter()
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
        wall = time.perf_counter() - start
    while engine.has_unfinished():
        engine.step()
    kernels = defaultdict(lambda: [0, 0.0])
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name][0] += 1
            kernels[event.name][1] += event.device_time_total
    busy = sum(t for _, t in kernels.values()) / steps
    print(f"  {steps} decode steps: {1e6 * wall / steps:.0f} us/step wall, "
          f"{busy:.0f} us/step of kernels, {sum(c for c, _ in kernels.values()) / steps:.0f} "
          f"launches/step")
    for name, (count, total) in sorted(kernels.items(), key=lambda kv: -kv[1][1])[:25]:
        print(f"  {total / steps:8.1f} us {count / steps:6.1f}x  {total / count:7.2f} us each  "
              f"{name[:90]}")


def prefill_profile(llm, vocab: int) -> None:
    """Time one 128-token prefill step (a prompt never seen, so no cached prefix) and show
    where its host time goes."""
    from baseboard import SamplingParams

    engine = llm.engine
    params = SamplingParams(temperature=0.0, max_tokens=1, detokenize=False)
    for seed in (1, 2):
        engine.add_request({"prompt_token_ids": prompts(1, 128, vocab, seed)[0]}, params)
        torch.cuda.synchronize()
        profile = cProfile.Profile()
        start = time.perf_counter()
        profile.enable()
        while engine.has_unfinished():
            engine.step()
        profile.disable()
        torch.cuda.synchronize()
        print(f"  prefill of 128 tokens: {1000 * (time.perf_counter() - start):.2f} ms")
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    parser.add_argument("--batches", default="1,32")
    args = parser.parse_args()
    from baseboard import LLM, SamplingParams

    vocab = SHAPES[args.model]["vocab_size"]
    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint(args.model, directory)
        llm = LLM(model=directory, dtype="bfloat16", max_num_seqs=128, max_model_len=288,
                  skip_tokenizer_init=True)
    params = SamplingParams(temperature=0.0, max_tokens=128, ignore_eos=True, detokenize=False)
    for batch in map(int, args.batches.split(",")):
        batch_prompts = [{"prompt_token_ids": p} for p in prompts(batch, 128, vocab, 0)]
        llm.generate(batch_prompts, params)
        print(f"{args.model}, batch {batch}:")
        for (kind, n), (count, seconds) in sorted(timed_steps(llm, batch_prompts,
                                                              params).items()):
            print(f"  {count:4d} {kind} steps of {n:3d} sequences, "
                  f"{1000 * seconds / count:8.3f} ms each (synchronized)")
        start = time.perf_counter()
        llm.generate(batch_prompts, params)
        torch.cuda.synchronize()
        print(f"  generate: {batch * 128 / (time.perf_counter() - start):.1f} tok/s")
        kernel_table(llm, batch_prompts, params)
        if batch == 1:
            prefill_profile(llm, vocab)
    graphs = llm.engine.runner.graphs
    for size in map(int, args.batches.split(",")):
        graph, _ = graphs.graphs[(False, next(s for s in graphs.decode_sizes if s >= size))]
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(100):
            graph.replay()
        torch.cuda.synchronize()
        print(f"graph replay, batch {size}: {(time.perf_counter() - start) * 10:.3f} ms")


if __name__ == "__main__":
    main()
