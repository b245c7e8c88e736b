"""Batch-1 decode of the Qwen2.5-0.5B shape with and without the fused forms (issue 16):
tok/s inside CUDA graphs, and the kernels of one decode step, side by side.

    python benchmarks/decode_kernels.py [--json PATH] [--new-tokens 128] [--shape qwen2.5-0.5b]

Builds a random bf16 checkpoint of the shape, then for each plan (``fused``: the default;
``unfused``: BASEBOARD_FUSE=0, every op apart) loads an engine, times ``generate`` of one
128-token prompt (the decode rate is the extra tokens over the extra time of a longer
generation, so the prefill cancels), and profiles a short and a longer generation with
torch.profiler: a kernel's calls per decode step and mean microseconds are the difference
between the two, divided by the extra steps. Greedy tokens of the two plans must agree.

``--shape tiny --device cpu --prompt-len 8 --new-tokens 8`` checks the script on a
machine without a GPU (the Triton kernels in Triton's interpreter; no graphs; the rows are
then torch ops, not kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from e2e_gpu_workers import (SHAPES, free_device_memory, make_checkpoint,  # noqa: E402
                             prompts, synchronize, timed_calls)

PLANS = {"fused": "1", "unfused": "0"}  # BASEBOARD_FUSE
PROFILED_STEPS = 8  # decode steps between the short and the long profiled generation
# on the CPU the Triton kernels run only when chosen (and under TRITON_INTERPRET=1)
CPU_TRITON_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul",
                  "gemm", "attention")


def make_engine(checkpoint: str, device: str, max_len: int):
    from baseboard import LLM

    backends = {op: "triton" for op in CPU_TRITON_OPS} if device == "cpu" else None
    return LLM(model=checkpoint, dtype="bfloat16" if device != "cpu" else "float32",
               platform="cpu" if device == "cpu" else None, max_num_seqs=1,
               max_model_len=max_len, skip_tokenizer_init=True, backends=backends)


def generate(llm, prompt: list[int], new_tokens: int) -> list[int]:
    from baseboard import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True,
                            detokenize=False)
    [out] = llm.generate([{"prompt_token_ids": prompt}], params)
    return list(out.outputs[0].token_ids)


def timed(call, device: str, repeats: int = 3) -> float:
    """Median seconds of ``call``."""
    return statistics.median(timed_calls(call, repeats, device))


def kernel_totals(llm, prompt: list[int], new_tokens: int, device: str) -> dict:
    """name -> (calls, device microseconds) over one generation, from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    activity = ProfilerActivity.CPU if device == "cpu" else ProfilerActivity.CUDA
    with profile(activities=[activity]) as prof:
        generate(llm, prompt, new_tokens)
        synchronize(device)
    totals = {}
    for event in prof.key_averages():
        if device == "cpu":
            us = event.self_cpu_time_total
        else:
            us = getattr(event, "self_device_time_total", None)
            if us is None:
                us = event.self_cuda_time_total
        if us > 0 or device == "cpu":
            totals[event.key] = (event.count, us)
    return totals


def step_kernels(llm, prompt: list[int], device: str) -> list[dict]:
    """The kernels of one decode step: calls per step and mean us per call, from the
    difference between a generation of 1 + PROFILED_STEPS tokens and one of 1."""
    generate(llm, prompt, 1 + PROFILED_STEPS)  # warm
    short = kernel_totals(llm, prompt, 1, device)
    long = kernel_totals(llm, prompt, 1 + PROFILED_STEPS, device)
    rows = []
    for name, (calls, us) in long.items():
        calls_before, us_before = short.get(name, (0, 0.0))
        extra = calls - calls_before
        if extra <= 0:
            continue
        rows.append({"kernel": name, "per_step": extra / PROFILED_STEPS,
                     "mean_us": (us - us_before) / extra})
    return sorted(rows, key=lambda r: -r["per_step"] * r["mean_us"])


def measure(checkpoint: str, args, fuse: str) -> dict:
    os.environ["BASEBOARD_FUSE"] = fuse
    vocab = SHAPES[args.shape]["vocab_size"]
    [prompt] = prompts(1, args.prompt_len, vocab, seed=0)
    start = time.perf_counter()
    positions = SHAPES[args.shape].get("max_position_embeddings", 1 << 30)
    llm = make_engine(checkpoint, args.device,
                      min(args.prompt_len + args.new_tokens + 16, positions))
    load_s = time.perf_counter() - start
    layer = llm.engine.model.layers[-1]  # the first has no residual to fuse a norm with
    forms = {"rotary_embedding": "fused into attention" if layer.attend_rotary is not None
             else "apart",
             "silu_and_mul": "fused into the down projection" if layer.down_fuses_silu
             else "apart",
             "fused_add_rms_norm": "fused into q/k/v and gate/up"
             if layer.normed_qkv_proj is not None else "apart"}
    tokens = generate(llm, prompt, args.new_tokens)  # also the warm-up
    short_s = timed(lambda: generate(llm, prompt, 1), args.device)
    long_s = timed(lambda: generate(llm, prompt, args.new_tokens), args.device)
    decode_tok_s = (args.new_tokens - 1) / max(long_s - short_s, 1e-9)
    kernels = step_kernels(llm, prompt, args.device)
    llm.engine.close()
    llm = None  # the engine's memory goes back before the next plan's engine loads
    free_device_memory()
    return {"load_s": load_s, "forms": forms, "tokens": tokens,
            "generate_tok_s": args.new_tokens / long_s, "decode_tok_s": decode_tok_s,
            "step_us": 1e6 / decode_tok_s, "kernels": kernels,
            "kernels_per_step": sum(r["per_step"] for r in kernels)}


def print_table(results: dict, num_layers: int) -> None:
    for name, r in results.items():
        print(f"{name:>8}: {r['decode_tok_s']:8.1f} tok/s decode ({r['step_us']:.1f} us a step), "
              f"{r['generate_tok_s']:.1f} tok/s with the prefill; "
              f"{r['kernels_per_step']:.1f} kernels a step "
              f"({r['kernels_per_step'] / num_layers:.2f} per layer); load {r['load_s']:.1f} s; "
              f"{', '.join(f'{op} {form}' for op, form in r['forms'].items())}")
    names = list(results)
    print("\nkernels of one decode step (calls per step x mean us):")
    by_plan = {n: {row["kernel"]: row for row in results[n]["kernels"]} for n in names}
    kernels = list(dict.fromkeys(k for n in names for k in by_plan[n]))
    width = 70
    print(f"{'kernel':<{width}} " + " ".join(f"{n:>20}" for n in names))
    for kernel in kernels:
        cells = []
        for n in names:
            row = by_plan[n].get(kernel)
            cells.append(f"{row['per_step']:7.2f} x {row['mean_us']:7.2f} us" if row
                         else f"{'-':>20}")
        print(f"{kernel[:width]:<{width}} " + " ".join(f"{c:>20}" for c in cells))
    tokens = [r["tokens"] for r in results.values()]
    print(f"\ngreedy tokens of the plans equal: {all(t == tokens[0] for t in tokens)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen2.5-0.5b", choices=sorted(SHAPES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
    with tempfile.TemporaryDirectory() as directory:
        make_checkpoint(args.shape, directory, args.device)
        results = {name: measure(directory, args, fuse) for name, fuse in PLANS.items()}
    print_table(results, SHAPES[args.shape]["num_hidden_layers"])
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"shape": args.shape, "device": torch.cuda.get_device_name()
             if args.device != "cpu" else "cpu", "torch": torch.__version__, **results},
            indent=1))


if __name__ == "__main__":
    main()
