"""Quantized GEMM benchmark: every kernel checked against its torch reference, then timed
against bf16 ``F.linear`` at K=4096, N in (14336, 6144, 4096) and M from 1 to 4096 (the
issue's N first: the time budget skips what it cannot reach, and says so).

Kernels: bf16 F.linear (the baseline); W4A16 g128 symmetric and asymmetric and W8A16
per-channel (Triton, each M bucket on the kernel its tile names); the same W4A16 and W8A16
forced onto the GEMV alone and onto the tensor-core kernel alone (N=14336, M <= 64);
tinygemm int4 g128 (torch._weight_int4pack_mm); FP8 W8A8 (Triton, and torch._scaled_mm
row-wise), INT8 W8A8 (Triton, and torch._int_mm), each with its per-token activation
quantization; the Triton activation quantization alone; and, where installed, gemlite's
W4A16 and W8A16 (the optional candidate).

torch's kernels (the peers) each run in a process of their own, ours together in another.
Each measurement replays a CUDA graph of many calls, timed with CUDA events; the calls
cycle through copies of the weight that together exceed the L2 cache, so every call reads
its weight from HBM as a model's successive layers do. A kernel that fails (its check,
its capture or its launch) is reported and the others go on. Writes JSON (--out) and,
with matplotlib installed, a plot of the speedup over bf16 against M per kernel.

    python benchmarks/quant_gemm.py --out quant_gemm.json    (under 3 minutes on an H200)
    python benchmarks/quant_gemm.py --tune --out tune.json   (about 2 minutes: sweeps the
        W4A16 and W8A16 tiles per M bucket at K=4096, N=14336 (GEMV, tensor cores, and
        dequantization for torch's GEMM) and prints the best of each family as a table
        for quant_tiles.TILES, keyed "<device> 14336x4096", to paste; --tune-families
        w8a8 adds the W8A8 sweep)
    python benchmarks/quant_gemm.py --smoke                  (tiny shapes on the CPU through
                                                              Triton's interpreter)
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from baseboard.kernels.torch import quant_alternatives as alt  # noqa: E402
from baseboard.kernels.torch import quant_gemm as reference  # noqa: E402
from baseboard.kernels.triton import quant_gemm, quant_tiles, quant_w8a8  # noqa: E402
from baseboard.kernels.triton.splitk import arrival_counters  # noqa: E402

K = 4096
NS = (14336, 6144, 4096)  # the shape first: the budget cuts the others
MS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)
CHECK_MS = (1, 16, 256)  # split K and not
GROUP = 128
TOLERANCE = 3e-2  # max |error| / max |reference|: bf16 outputs, a different summation order
BUDGET_S = 130.0  # stop starting new measurements past this (the run must end within 3 min)
TUNE_BUDGET_S = 100.0  # the same for --tune (within 2 min), shared out among the families
# and, within a family, among its buckets
L2_MULTIPLE = 3  # weight copies cycled per graph: together this many times the L2 cache


class Linear:
    """bf16 F.linear, the baseline, in the weight-op shape the others have."""

    @staticmethod
    def prepare(weight: torch.Tensor) -> torch.Tensor:
        return weight

    @staticmethod
    def apply(state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, state)


class QuantizeOnly:
    """The Triton per-token fp8 quantization alone (it is part of every FP8 W8A8 time)."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, bias: Any) -> None:
        return None

    @staticmethod
    def apply(state: None, x: torch.Tensor) -> torch.Tensor:
        return quant_w8a8.quantize_rows(x, torch.float8_e4m3fn)[0]


def with_table(state: quant_gemm.WeightOnlyState,
               table: quant_tiles.Table) -> quant_gemm.WeightOnlyState:
    """``state`` run with the tiles of ``table`` instead of its device's."""
    return state._replace(table=table, counters=arrival_counters(
        quant_tiles.max_split_tiles(table, state.n), state.codes.device))


def forced_table(table: quant_tiles.Table, kernel: str) -> quant_tiles.Table:
    """``table`` with every bucket on ``kernel``: a bucket on another kernel takes the tile
    of the nearest bucket below it on ``kernel`` (else the first above)."""
    mine = [(bound, tile) for bound, tile in table if tile.kernel == kernel]
    if not mine:
        raise ValueError(f"no bucket of this table runs the {kernel} kernel")
    forced = []
    for bound, tile in table:
        if tile.kernel != kernel:
            below = [t for b, t in mine if b < bound]
            tile = below[-1] if below else mine[0][1]
        forced.append((bound, tile))
    return tuple(forced)


def only_kernel(impl: Any, kernel: str) -> Any:
    """``impl`` (GemmW4A16 or GemmW8A16) with every M bucket on ``kernel``."""

    class Forced:
        apply = staticmethod(impl.apply)

        @staticmethod
        def prepare(**weights: Any) -> quant_gemm.WeightOnlyState:
            state = impl.prepare(**weights)
            return with_table(state, forced_table(state.table, kernel))

    return Forced


@dataclass(frozen=True)
class Kernel:
    name: str
    kind: str  # which weights it takes (make_weights)
    impl: Any  # prepare(**weights) / apply(state, x)
    reference: Any = None  # the torch reference op, None: not checked
    max_m: int = 1 << 30  # timed only up to this M ...
    only_n: int = 0  # ... and only at this N (0: every N)
    peer: bool = False  # torch's kernel or another library's: timed in a process of its own
    gemm: bool = True  # False: a part of one (the activation quantization), not plotted


KERNELS = (
    Kernel("bf16 F.linear", "bf16", Linear, peer=True),
    Kernel("W4A16 g128 sym (triton)", "w4_sym", quant_gemm.GemmW4A16, reference.GemmW4A16),
    Kernel("W4A16 g128 asym (triton)", "w4_asym", quant_gemm.GemmW4A16, reference.GemmW4A16),
    Kernel("W4A16 g128 (tinygemm)", "w4_asym", alt.TinyGemmW4A16, reference.GemmW4A16,
           peer=True),
    Kernel("W8A16 per-channel (triton)", "w8", quant_gemm.GemmW8A16, reference.GemmW8A16),
    Kernel("W4A16 g128 sym (triton, GEMV only)", "w4_sym",
           only_kernel(quant_gemm.GemmW4A16, quant_tiles.GEMV), reference.GemmW4A16, 64, 14336),
    Kernel("W4A16 g128 sym (triton, MMA only)", "w4_sym",
           only_kernel(quant_gemm.GemmW4A16, quant_tiles.MMA), reference.GemmW4A16, 64, 14336),
    Kernel("W8A16 per-channel (triton, GEMV only)", "w8",
           only_kernel(quant_gemm.GemmW8A16, quant_tiles.GEMV), reference.GemmW8A16, 64, 14336),
    Kernel("W8A16 per-channel (triton, MMA only)", "w8",
           only_kernel(quant_gemm.GemmW8A16, quant_tiles.MMA), reference.GemmW8A16, 64, 14336),
    Kernel("FP8 W8A8 (triton)", "fp8", quant_w8a8.GemmW8A8Fp8, reference.GemmW8A8Fp8),
    Kernel("FP8 W8A8 (_scaled_mm)", "fp8", alt.ScaledMmFp8, reference.GemmW8A8Fp8, peer=True),
    Kernel("INT8 W8A8 (triton)", "int8", quant_w8a8.GemmW8A8Int8, reference.GemmW8A8Int8),
    Kernel("INT8 W8A8 (_int_mm)", "int8", alt.IntMmInt8, reference.GemmW8A8Int8, peer=True),
    Kernel("FP8 act. quantization only (triton)", "fp8", QuantizeOnly, gemm=False),
)
# gemlite, the optional candidate, where installed: its own process, like the peers, and
# last, since its first call of each row bucket may autotune
if importlib.util.find_spec("gemlite") is not None:
    from baseboard.kernels import gemlite_gemm  # noqa: E402

    KERNELS += (
        Kernel("W4A16 g128 asym (gemlite)", "w4_asym", gemlite_gemm.GemliteW4A16,
               reference.GemmW4A16, peer=True),
        Kernel("W8A16 per-channel (gemlite)", "w8", gemlite_gemm.GemliteW8A16,
               reference.GemmW8A16, peer=True),
    )


def make_weights(kind: str, n: int, k: int, device: torch.device, seed: int) -> dict:
    """Random quantized weights in the ops' canonical layouts (prepare's keyword arguments),
    scaled so that x @ w.T is of order 1 for x ~ N(0, 1)."""
    gen = torch.Generator(device=device).manual_seed(seed)
    unit = 1 / math.sqrt(k)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=gen, device=device)

    if kind == "bf16":
        return {"weight": (torch.randn(n, k, generator=gen, device=device) * unit).bfloat16()}
    if kind.startswith("w4"):
        codes = torch.randint(0, 16, (n, k), generator=gen, device=device, dtype=torch.uint8)
        scales = (0.5 + uniform(n, k // GROUP)) * unit / 4
        offsets = -8 * scales if kind == "w4_sym" else -scales * (4 + 8 * uniform(n, k // GROUP))
        return {"qweight": codes, "scales": scales.bfloat16(), "offsets": offsets.bfloat16(),
                "group_size": GROUP, "bias": None}
    if kind == "w8":
        codes = torch.randint(-127, 128, (n, k), generator=gen, device=device, dtype=torch.int8)
        scales = (0.5 + uniform(n, 1)) * unit / 64
        return {"qweight": codes, "scales": scales.bfloat16(), "group_size": k, "bias": None}
    scales = (0.5 + uniform(n)) * unit
    if kind == "fp8":
        codes = torch.randn(n, k, generator=gen, device=device).to(torch.float8_e4m3fn)
    else:
        codes = torch.randint(-127, 128, (n, k), generator=gen, device=device, dtype=torch.int8)
        scales = scales / 64
    return {"qweight": codes, "scales": scales.float(), "bias": None}


def weight_bytes(weights: dict) -> int:
    return sum(t.numel() * t.element_size() for t in weights.values()
               if isinstance(t, torch.Tensor))


def max_relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    return ((got.float() - want.float()).abs().max() / want.float().abs().max()).item()


def time_calls(calls: list[Callable[[], Any]], smoke: bool) -> tuple[float, str]:
    """Microseconds a call, and how it was timed: a CUDA graph of many calls (cycling through
    ``calls``) replayed under CUDA events, or (a capture that fails) the calls launched one
    by one under the events."""
    if smoke:
        start = time.perf_counter()
        calls[0]()
        return (time.perf_counter() - start) * 1e6, "wall clock (interpreter)"
    for call in calls:  # compile, allocate
        call()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    calls[0]()
    end.record()
    end.synchronize()
    estimate_us = max(start.elapsed_time(end) * 1e3, 1.0)
    reps = max(len(calls), min(200, int(3000 / estimate_us)))
    how = "CUDA graph"
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for i in range(reps):
                calls[i % len(calls)]()
        run = graph.replay
    except Exception as exc:  # timed eagerly, and said so
        how = f"eager (capture failed: {type(exc).__name__}: {str(exc)[:120]})"
        torch.cuda.synchronize()

        def run() -> None:
            for i in range(reps):
                calls[i % len(calls)]()
    run()
    torch.cuda.synchronize()
    samples = []
    for _ in range(5):
        start.record()
        run()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end) * 1e3 / reps)
    return statistics.median(samples), how


def prepared_copies(kernel: Kernel, n: int, k: int, device: torch.device,
                    smoke: bool) -> tuple[list, dict]:
    """The kernel's states over enough weight copies to overflow the L2 cache, and the
    first copy's canonical weights (for the reference)."""
    first = make_weights(kernel.kind, n, k, device, seed=0)
    copies = 1
    if not smoke:
        l2 = torch.cuda.get_device_properties(device).L2_cache_size
        copies = max(1, min(16, math.ceil(L2_MULTIPLE * l2 / weight_bytes(first))))
    states = [kernel.impl.prepare(**first)]
    states += [kernel.impl.prepare(**make_weights(kernel.kind, n, k, device, seed=c))
               for c in range(1, copies)]
    return states, first


def check(kernel: Kernel, state: Any, weights: dict, n: int, k: int, ms: tuple[int, ...],
          device: torch.device) -> list[dict]:
    """Max relative errors against the reference at each of ``ms``; raises past TOLERANCE."""
    if kernel.reference is None:
        return []
    ref_state = kernel.reference.prepare(**weights)
    rows = []
    for m in ms:
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        error = max_relative_error(kernel.impl.apply(state, x),
                                   kernel.reference.apply(ref_state, x))
        rows.append({"kernel": kernel.name, "n": n, "m": m, "max_rel_error": error})
        print(f"  check {kernel.name:<38} N={n:<6} M={m:<5} max rel error {error:.2e}")
        assert error < TOLERANCE, f"max relative error {error:.2e} over {TOLERANCE:.0e} at M={m}"
    return rows


def benchmark(kernels: tuple[Kernel, ...], ns: tuple[int, ...], ms: tuple[int, ...], k: int,
              device: torch.device, smoke: bool, deadline: float) -> dict:
    """Check and time ``kernels`` in this process, starting none past ``deadline``
    (time.time())."""
    results, accuracy, errors = [], [], []
    for n in ns:
        for kernel in kernels:
            if kernel.only_n and kernel.only_n != n and n in NS:
                continue
            kernel_ms = tuple(m for m in ms if m <= kernel.max_m) or ms[:1]
            if time.time() > deadline:
                errors.append({"kernel": kernel.name, "n": n, "stage": "skipped",
                               "error": f"time budget of {BUDGET_S:.0f} s reached"})
                continue
            stage = "prepare"
            try:
                states, weights = prepared_copies(kernel, n, k, device, smoke)
                stage = "check"
                accuracy += check(kernel, states[0], weights, n, k,
                                  tuple(m for m in CHECK_MS if m in kernel_ms) or kernel_ms[:1],
                                  device)
                del weights
                for m in kernel_ms:
                    stage = f"time M={m}"
                    x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
                    calls = [lambda s=s: kernel.impl.apply(s, x) for s in states]
                    us, how = time_calls(calls, smoke)
                    results.append({"kernel": kernel.name, "n": n, "k": k, "m": m, "us": us,
                                    "timed": how, "weight_copies": len(states)})
                    print(f"  {kernel.name:<38} N={n:<6} M={m:<5} {us:9.1f} us  ({how})")
            except Exception as exc:
                message = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"
                print(f"  FAILED {kernel.name} N={n} at {stage}: {message}")
                if not isinstance(exc, AssertionError):
                    traceback.print_exc(limit=3)
                errors.append({"kernel": kernel.name, "n": n, "stage": stage, "error": message})
            finally:
                states = None
                if not smoke:
                    torch.cuda.empty_cache()
    return {"results": results, "accuracy": accuracy, "errors": errors}


def benchmark_apart(kernels: tuple[Kernel, ...], args, deadline: float) -> dict:
    """Each of torch's kernels (the peers) in a process of its own and ours together in
    another, so that nothing of ours is loaded beside a peer while it is timed; the rows
    joined, with each one's speed over bf16."""
    ours = tuple(kr for kr in kernels if not kr.peer)
    groups = [(kr,) for kr in kernels if kr.peer and kr.name == "bf16 F.linear"] + \
        ([ours] if ours else []) + \
        [(kr,) for kr in kernels if kr.peer and kr.name != "bf16 F.linear"]
    report = {"results": [], "accuracy": [], "errors": []}
    for group in groups:
        with tempfile.TemporaryDirectory() as scratch:
            out = os.path.join(scratch, "part.json")
            command = [sys.executable, __file__, "--worker", "|".join(kr.name for kr in group),
                       "--deadline", str(deadline), "--out", out] + \
                (["--smoke"] if args.smoke else [])
            done = subprocess.run(command)
            if not os.path.exists(out):
                report["errors"] += [{"kernel": kr.name, "n": 0, "stage": "process",
                                      "error": f"exited with status {done.returncode}"}
                                     for kr in group]
                continue
            with open(out) as f:
                part = json.load(f)
        for field in report:
            report[field] += part[field]
    order = {kr.name: i for i, kr in enumerate(KERNELS)}
    report["results"].sort(key=lambda r: (order[r["kernel"]], r["n"], r["m"]))
    base = {(r["n"], r["m"]): r["us"] for r in report["results"]
            if r["kernel"] == "bf16 F.linear"}
    for row in report["results"]:
        row["speedup_vs_bf16"] = base[(row["n"], row["m"])] / row["us"] \
            if (row["n"], row["m"]) in base else None
    return report


def print_table(results: list[dict], ns: tuple[int, ...], ms: tuple[int, ...]) -> None:
    names = list(dict.fromkeys(r["kernel"] for r in results))
    index = {(r["kernel"], r["n"], r["m"]): r for r in results}
    for n in ns:
        print(f"\nN={n}: microseconds (speedup over bf16)")
        print(f"{'kernel':<38}" + "".join(f"{'M=' + str(m):>17}" for m in ms))
        for name in names:
            cells = []
            for m in ms:
                row = index.get((name, n, m))
                if row is None:
                    cells.append(f"{'-':>17}")
                else:
                    speed = row["speedup_vs_bf16"]
                    cells.append(f"{row['us']:10.1f} ({speed:4.2f}x)" if speed else
                                 f"{row['us']:17.1f}")
            print(f"{name:<38}" + "".join(cells))


# (kernel, its baseline, rows, least speedup over the baseline) from the targets
TARGETS = (
    ("W4A16 g128 sym (triton)", "bf16 F.linear", (1, 2, 4, 8, 16), 3.0),
    ("W4A16 g128 asym (triton)", "bf16 F.linear", (1, 2, 4, 8, 16), 3.0),
    ("W4A16 g128 sym (triton)", "bf16 F.linear", (64,), 1.5),
    ("W4A16 g128 sym (triton)", "bf16 F.linear", (256,), 1.0),
    ("W4A16 g128 asym (gemlite)", "bf16 F.linear", (1, 2, 4, 8, 16), 3.0),
    ("W8A16 per-channel (triton)", "bf16 F.linear", (1, 2, 4, 8, 16), 1.7),
    ("W8A16 per-channel (gemlite)", "bf16 F.linear", (1, 2, 4, 8, 16), 1.7),
    ("FP8 W8A8 (triton)", "FP8 W8A8 (_scaled_mm)", (16, 4096), 1.0),
    ("INT8 W8A8 (triton)", "bf16 F.linear", (4096,), 1.5),
)


def check_targets(results: list[dict], n: int) -> list[dict]:
    """Each target at N=``n``: the measured speedups and whether all reach it."""
    us = {(r["kernel"], r["m"]): r["us"] for r in results if r["n"] == n}
    rows = []
    for kernel, baseline, ms, least in TARGETS:
        speedups = {m: us[(baseline, m)] / us[(kernel, m)] for m in ms
                    if (kernel, m) in us and (baseline, m) in us}
        met = len(speedups) == len(ms) and min(speedups.values()) >= least
        rows.append({"kernel": kernel, "baseline": baseline, "n": n, "least": least,
                     "speedups": speedups, "met": met})
        shown = ", ".join(f"M={m} {v:.2f}x" for m, v in speedups.items()) or "not measured"
        print(f"  {'met ' if met else 'MISS'} {kernel} >= {least}x {baseline}: {shown}")
    return rows


def plot(report: dict, path: str) -> None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = {kr.name for kr in KERNELS if not kr.gemm}
    rows = [r for r in report["results"] if r["speedup_vs_bf16"] and r["kernel"] not in parts]
    ns = list(dict.fromkeys(r["n"] for r in rows))
    fig, axes = plt.subplots(1, len(ns), figsize=(6 * len(ns), 4.5), squeeze=False)
    for ax, n in zip(axes[0], ns):
        ax.set_prop_cycle(color=plt.cm.tab20.colors)  # more kernels than the default's 10
        for name in dict.fromkeys(r["kernel"] for r in rows if r["n"] == n):
            mine = [r for r in rows if r["n"] == n and r["kernel"] == name]
            ax.plot([r["m"] for r in mine], [r["speedup_vs_bf16"] for r in mine], marker="o",
                    markersize=3, label=name)
        ax.axhline(1.0, color="gray", linewidth=0.8)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)  # 0.04x to 2x: a linear axis hides the losers
        ax.set_xlabel("M (rows)")
        ax.set_ylabel("speedup over bf16 F.linear")
        ax.set_title(f"K={report['k']}, N={n} ({report['device']})")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


# the bound of each bucket of the weight-only tables --tune fills, timed at M = the bound
# (UNBOUNDED at TUNE_LARGE_M)
TUNE_BOUNDS = (1, 4, 16, 64, 256, quant_tiles.UNBOUNDED)
TUNE_LARGE_M = 4096
W8A8_TUNE_MS = (1, 16, 64, 256, 1024)
TUNED_KINDS = {quant_tiles.W4A16: ("w4_asym", quant_gemm.GemmW4A16, reference.GemmW4A16),
               quant_tiles.W8A16: ("w8", quant_gemm.GemmW8A16, reference.GemmW8A16)}


def rows_block(m: int) -> int:
    """The tensor cores' block of rows for ``m``: a power of two from 16 to 128."""
    return max(16, min(128, 1 << (m - 1).bit_length()))


def weight_only_candidates(m: int) -> list[quant_tiles.Tile]:
    """Tiles worth timing at ``m`` rows (each is a compile, so few; the likelier first, as a
    bucket's share of the time may end before its last): the GEMV up to 16 rows (its rows
    per program the power of two that holds m) taking turns with the tensor-core kernel
    with split K up to 128 rows, the usual large tiles past that, and dequantization
    followed by torch's GEMM."""
    auto, gemv = quant_tiles.AUTO_SPLIT, quant_tiles.GEMV
    gemvs, mmas = [], []
    if m <= 16:
        block_m = 1 << (m - 1).bit_length()
        # a program holds block_m x block_n x block_k / 8 products: few rows, wide tiles
        shapes = [(32, 512), (16, 512), (64, 256), (32, 256), (16, 256), (64, 512)] \
            if block_m <= 4 else [(16, 256), (32, 256)]
        for block_n, block_k in shapes:
            gemvs.append(quant_tiles.Tile(block_m, block_n, block_k, auto, num_warps=4,
                                          num_stages=4, resident=4, kernel=gemv))
    if m <= 128:
        for block_n, warps in ((64, 4), (128, 4), (128, 8)):
            mmas.append(quant_tiles.Tile(rows_block(m), block_n, 128, auto, warps, 4,
                                         resident=3 if m <= 32 else 2))
    else:
        for block_m, block_n, warps, stages in ((128, 128, 8, 3), (64, 128, 4, 4),
                                                (128, 256, 8, 3), (128, 64, 4, 4)):
            mmas.append(quant_tiles.Tile(block_m, block_n, 128, 1, warps, stages))
        # the weight dequantized, then torch's GEMM: block_n columns a program
        mmas.insert(2, quant_tiles.Tile(1, 32, 128, 1, 4, 1, kernel=quant_tiles.DEQUANT))
    first, second = (gemvs, mmas) if m <= 4 else (mmas, gemvs)
    turns = [tile for pair in zip(first, second) for tile in pair]
    return turns + first[len(second):] + second[len(first):]


def w8a8_candidates(m: int) -> list[quant_tiles.Tile]:
    """The FP8/INT8 W8A8 grid: the block of rows that fits ``m``, a few widths, split K or
    not, warps, stages and resident programs."""
    out = []
    for bm in (rows_block(m),) if m <= 64 else (64, rows_block(m)):
        for bn in (64, 128, 256):
            for bk in (128,) if m <= 64 else (64, 128):
                for split in (quant_tiles.AUTO_SPLIT, 1) if m <= 128 else (1,):
                    for warps, stages in ((4, 3), (4, 4), (8, 3)):
                        for resident in (2, 3) if split == quant_tiles.AUTO_SPLIT else (2,):
                            out.append(quant_tiles.Tile(bm, bn, bk, split, warps, stages,
                                                        resident=resident))
    return out


def tile_source(tile: quant_tiles.Tile) -> str:
    """``tile`` as it is written in quant_tiles.py."""
    split = "AUTO_SPLIT" if tile.split_k == quant_tiles.AUTO_SPLIT else str(tile.split_k)
    extra = "".join(f", {name}={value}" for name, value, default in (
        ("group_m", tile.group_m, 8), ("resident", tile.resident, 2)) if value != default)
    kernel = f", kernel={tile.kernel.upper()}" if tile.kernel != quant_tiles.MMA else ""
    return (f"Tile({tile.block_m}, {tile.block_n}, {tile.block_k}, {split}, "
            f"num_warps={tile.num_warps}, num_stages={tile.num_stages}{extra}{kernel})")


def table_source(family: str, key: str, rows: list[tuple[int, quant_tiles.Tile]]) -> str:
    bound = lambda b: "UNBOUNDED" if b == quant_tiles.UNBOUNDED else str(b)  # noqa: E731
    lines = [f"# quant_tiles.TILES[{family.upper()}]:", f'"{key}": (']
    lines += [f"    ({bound(b)}, {tile_source(tile)})," for b, tile in rows]
    return "\n".join(lines + ["),"])


def tune_weight_only(family: str, device: torch.device, n: int, k: int, started: float,
                     deadline: float, smoke: bool) -> dict:
    """Time every candidate tile of each bucket of TUNE_BOUNDS for ``family`` at N=``n``
    (each checked against the reference first), print the three best, and print the best
    of every bucket as a table to paste into quant_tiles.TILES (a bucket whose time ran out
    keeps the current table's tile, and says so)."""
    kind, impl, ref = TUNED_KINDS[family]
    weights = [make_weights(kind, n, k, device, seed=c) for c in range(4)]
    base = [impl.prepare(**w) for w in weights]
    ref_state = ref.prepare(**weights[0])
    current = base[0].table
    chosen, found = [], []
    for i, bound in enumerate(TUNE_BOUNDS):
        # each bucket an equal share of what is left, so that the last are timed too
        bucket_deadline = time.perf_counter() + (deadline - time.perf_counter()) / (
            len(TUNE_BOUNDS) - i)
        m = TUNE_LARGE_M if bound == quant_tiles.UNBOUNDED else bound
        if smoke:  # the interpreter: a few rows, two candidates
            m = min(m, 40)
        x = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        want = ref.apply(ref_state, x)
        timings = []
        for tile in weight_only_candidates(m)[:2 if smoke else None]:
            if time.perf_counter() > bucket_deadline:
                print(f"  {family} M={m}: this bucket's share of {TUNE_BUDGET_S:.0f} s is spent")
                break
            # bounded, so that the counters are sized once (no allocation per call)
            table = ((bound, tile),) if bound == quant_tiles.UNBOUNDED else \
                ((bound, tile), (quant_tiles.UNBOUNDED, dataclasses.replace(tile, split_k=1)))
            try:
                states = [with_table(state, table) for state in base]
                error = max_relative_error(impl.apply(states[0], x), want)
                if error >= TOLERANCE:
                    raise AssertionError(f"max relative error {error:.2e}")
                calls = [lambda s=s: impl.apply(s, x) for s in states]
                timings.append((time_calls(calls, smoke)[0], tile))
            except Exception as exc:
                print(f"  FAILED {family} M={m} {tile_source(tile)}: {type(exc).__name__}: "
                      f"{str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}")
        timings.sort(key=lambda t: t[0])
        for us, tile in timings[:3]:
            print(f"  {family} N={n} K={k} M={m:<5} {us:8.1f} us  {tile_source(tile)}")
        print(f"  ({time.perf_counter() - started:.0f} s)")
        if timings:
            chosen.append((bound, timings[0][1]))
            found.append({"bound": bound, "m": m, "us": timings[0][0],
                          "tile": timings[0][1].__dict__})
        else:
            kept = quant_tiles.tile_for(current, m)
            print(f"  {family} M={m}: nothing timed, keeping {tile_source(kept)}")
            chosen.append((bound, kept))
    key = quant_tiles.shape_key(quant_tiles.device_key(device, smoke), n, k)
    source = table_source(family, key, chosen)
    print("\n" + source + "\n")
    return {"key": key, "buckets": found, "source": source}


def tune_w8a8(device: torch.device, n: int, deadline: float) -> dict:
    """The W8A8 sweep (FP8 kernel): the best tiles per M of W8A8_TUNE_MS."""
    name = quant_tiles.device_key(device, False)
    family, kernel = quant_tiles.W8A8, next(k for k in KERNELS if k.name == "FP8 W8A8 (triton)")
    weights = make_weights(kernel.kind, n, K, device, seed=0)
    copies = [make_weights(kernel.kind, n, K, device, seed=c) for c in range(1, 4)]
    found = []
    for m in W8A8_TUNE_MS:
        timings = []
        x = torch.randn(m, K, device=device, dtype=torch.bfloat16)
        for tile in w8a8_candidates(m):
            if time.perf_counter() > deadline:
                break
            quant_tiles.TILES[family][name] = (
                (m, tile), (quant_tiles.UNBOUNDED, dataclasses.replace(tile, split_k=1)))
            try:
                states = [kernel.impl.prepare(**w) for w in [weights, *copies]]
                calls = [lambda s=s: kernel.impl.apply(s, x) for s in states]
                timings.append((time_calls(calls, False)[0], tile))
            except Exception as exc:
                print(f"  FAILED {family} M={m} {tile}: {type(exc).__name__}: {str(exc)[:100]}")
        quant_tiles.TILES[family].pop(name, None)
        timings.sort(key=lambda t: t[0])
        for us, tile in timings[:3]:
            print(f"  {family:<12} N={n} M={m:<5} {us:8.1f} us  {tile_source(tile)}")
        if timings:
            found.append({"m": m, "us": timings[0][0], "tile": timings[0][1].__dict__})
    return {"buckets": found}


def tune(device: torch.device, n: int, k: int, families: list[str], started: float,
         smoke: bool) -> dict:
    """Each family's sweep in turn, each in an equal share of what is left of TUNE_BUDGET_S
    (a failing one is reported and the others go on)."""
    found = {}
    for i, family in enumerate(families):
        left = TUNE_BUDGET_S - (time.perf_counter() - started)
        deadline = time.perf_counter() + left / (len(families) - i)
        try:
            found[family] = tune_w8a8(device, n, deadline) if family == quant_tiles.W8A8 \
                else tune_weight_only(family, device, n, k, started, deadline, smoke)
        except Exception as exc:
            print(f"  FAILED tuning {family}: {type(exc).__name__}: {exc}")
            traceback.print_exc(limit=3)
            found[family] = {"error": f"{type(exc).__name__}: {exc}"}
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join(os.environ.get("OUT", "."),
                                                      "quant_gemm.json"))
    parser.add_argument("--plot", help="PNG path (default: --out with .png)")
    parser.add_argument("--only", help="comma-separated substrings of kernel names")
    parser.add_argument("--tune", action="store_true", help="sweep the Triton tiles per M")
    parser.add_argument("--tune-families", default="w4a16,w8a16",
                        help="comma-separated tile families to --tune (w4a16, w8a16, w8a8)")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # '|'-separated kernel names
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    started = time.perf_counter()
    if args.smoke:
        device, ns, ms, k = torch.device("cpu"), (48,), (1, 5, 33), 256
    else:
        device, ns, ms, k = torch.device("cuda"), NS, MS, K
    kernels = KERNELS
    if args.worker:  # one process's share of benchmark_apart
        names = args.worker.split("|")
        part = benchmark(tuple(kr for kr in KERNELS if kr.name in names), ns, ms, k, device,
                         args.smoke, args.deadline)
        with open(args.out, "w") as f:
            json.dump(part, f)
        return
    if args.only:
        wanted = [w.strip().lower() for w in args.only.split(",")]
        kernels = tuple(kr for kr in KERNELS if kr.name == "bf16 F.linear"
                        or any(w in kr.name.lower() for w in wanted))
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "torch": torch.__version__, "triton": __import__("triton").__version__,
              "k": k, "ns": list(ns), "ms": list(ms),
              "tiles": {family: {name: [[bound, tile.__dict__] for bound, tile in table]
                                 for name, table in tables.items()}
                        for family, tables in quant_tiles.TILES.items()}}
    if args.tune:
        report["tuned"] = tune(device, ns[0], k, args.tune_families.split(","), started,
                               args.smoke)
    else:
        report.update(benchmark_apart(kernels, args, time.time() + BUDGET_S))
        print_table(report["results"], ns, ms)
        if 14336 in ns:
            print("\ntargets at N=14336:")
            report["targets"] = check_targets(report["results"], 14336)
        if report["errors"]:
            print("\nfailures:")
            for error in report["errors"]:
                print(f"  {error['kernel']} N={error['n']} ({error['stage']}): {error['error']}")
    report["seconds"] = time.perf_counter() - started
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nJSON: {args.out} ({report['seconds']:.0f} s)")
    if not args.tune:
        plot(report, args.plot or os.path.splitext(args.out)[0] + ".png")


if __name__ == "__main__":
    main()
