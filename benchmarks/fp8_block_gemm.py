"""gemm_w8a8_fp8_block benchmark: the Triton kernel (its per-token-group activation
quantization included) and the torch reference, each checked against the reference first,
then timed against bf16 ``F.linear`` at K=4096, N in (4096, 14336) and M from 1 to 4096,
with 128x128 weight blocks (DeepSeek-V3 / Qwen3 FP8).

Each time is the median of --repeats runs of 20 back-to-back calls between CUDA events,
after a warm-up. A kernel that fails (its check or its launch) is reported and the others
go on. Prints a table (time in us, speedup over bf16) and writes JSON with --out.

    python benchmarks/fp8_block_gemm.py [--out fp8_block.json]   (about a minute on an H200)
    python benchmarks/fp8_block_gemm.py --smoke   (tiny shapes on the CPU, Triton's
                                                   interpreter: checks the script)
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from baseboard.kernels.torch import quant_gemm as reference  # noqa: E402
from baseboard.kernels.triton import quant_fp8_block  # noqa: E402
from baseboard.testing.quantize import quantize_fp8_blocks  # noqa: E402

K = 4096
NS = (4096, 14336)
MS = (1, 4, 16, 64, 256, 1024, 4096)
BLOCK = (128, 128)
TOLERANCE = 3e-2  # max |error| / max |reference|: bf16 outputs, fp8 activations
CALLS = 20


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of one call."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(CALLS):
                fn()
            end.record()
            end.synchronize()
            samples.append(start.elapsed_time(end) / 1e3 / CALLS)
        else:
            begin = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - begin)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    args = parser.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    k, ns, ms = (256, (192,), (1, 33)) if args.smoke else (K, NS, MS)
    repeats = 1 if args.smoke else args.repeats
    dtype = torch.float32 if args.smoke else torch.bfloat16
    kernels = {"triton": quant_fp8_block.GemmW8A8Fp8Block,
               "torch_reference": reference.GemmW8A8Fp8Block}
    results = []
    print(f"{'N':>6} {'M':>5} {'bf16 us':>9} " + " ".join(f"{name + ' us':>20} {'x':>5}"
                                                          for name in kernels))
    for n in ns:
        gen = torch.Generator().manual_seed(n)
        dense = torch.randn((n, k), generator=gen) / k ** 0.5
        qweight, scales = quantize_fp8_blocks(dense, BLOCK)
        qweight, scales = qweight.to(device), scales.to(device)
        weight = dense.to(device, dtype)
        states = {}
        for name, impl in kernels.items():
            try:
                states[name] = impl.prepare(qweight, scales, BLOCK, None)
            except Exception as exc:  # one failing kernel must not stop the others
                print(f"{name}: prepare failed: {exc!r}")
        for m in ms:
            x = torch.randn((m, k), generator=gen).to(device, dtype)
            want = reference.GemmW8A8Fp8Block.apply(states["torch_reference"], x)
            row = {"n": n, "m": m, "bf16_s": timed(lambda: F.linear(x, weight), device,
                                                   repeats)}
            cells = []
            for name, impl in kernels.items():
                if name not in states:
                    cells.append(f"{'failed':>20} {'':>5}")
                    continue
                try:
                    got = impl.apply(states[name], x)
                    error = ((got.float() - want.float()).abs().max()
                             / want.float().abs().max()).item()
                    if not error < TOLERANCE:
                        raise AssertionError(f"max relative error {error:.2e} > {TOLERANCE}")
                    seconds = timed(lambda: impl.apply(states[name], x), device, repeats)
                except Exception as exc:
                    print(f"{name} N={n} M={m} failed: {exc!r}")
                    cells.append(f"{'failed':>20} {'':>5}")
                    continue
                row[f"{name}_s"], row[f"{name}_error"] = seconds, error
                cells.append(f"{seconds * 1e6:>20.1f} {row['bf16_s'] / seconds:>5.2f}")
            results.append(row)
            print(f"{n:>6} {m:>5} {row['bf16_s'] * 1e6:>9.1f} " + " ".join(cells), flush=True)
    if args.out:
        name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu (interpreter)"
        Path(args.out).write_text(json.dumps({"device": name, "k": k, "block": BLOCK,
                                              "results": results}, indent=2))


if __name__ == "__main__":
    main()
