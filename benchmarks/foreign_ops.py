"""FlagGems and Liger beside baseboard's built-in Triton kernels and the torch references.

Every implementation is taken from the plugin catalog and bound as a plan binds it, so
what is timed is the plugin packages' adapters (examples/baseboard-flaggems,
examples/baseboard-liger) with their libraries underneath. Each is first checked against
the torch reference on the same inputs (relative error of the whole output), then timed
from CUDA graphs (triton.testing.do_bench_cudagraph: many calls per replay, median), each
implementation in a process of its own with no other library loaded beside it, bfloat16,
on the shapes of an 8B (Llama-3-8B) and a 0.5B (Qwen2.5-0.5B) model at T = 1, 32 and
2048 tokens: rms_norm and fused_add_rms_norm over the hidden size,
rotary_embedding on q and k as views of one qkv projection, silu_and_mul over the MLP
width, and gemm on the qkv, o, gate_up and down weights. An implementation that raises is
reported with its error and the others go on.

FlagGems' GEMM autotunes the first call of each shape over up to 216 tile configurations of
its Hopper kernel (each compiled first), and keeps the timings in ~/.flaggems
(FLAGGEMS_CACHE_DIR): the first run of the gemm rows takes minutes, a second one does not.

    python benchmarks/foreign_ops.py [--ops gemm,...] [--json PATH]
                                                     (PATH defaults to $OUT/foreign_ops.json)
    python benchmarks/foreign_ops.py --smoke         (tiny shapes on the CPU, through Triton's
                                                      interpreter: checks the script)

benchmarks/foreign_ops.sh installs the libraries from wheels and runs this after the kit.
"""

from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv:  # must precede the first triton import
    os.environ["TRITON_INTERPRET"] = "1"

import argparse  # noqa: E402
import datetime  # noqa: E402
import importlib.metadata  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any, Callable  # noqa: E402

import torch  # noqa: E402
import triton  # noqa: E402
import triton.testing  # noqa: E402

from baseboard.core.selection import SelectionContext, bind, rejection  # noqa: E402
from baseboard.core.settings import read_settings  # noqa: E402
from baseboard.frontend.plan import load_catalog  # noqa: E402
from baseboard.testing.checks import projection_views, rotary_cache  # noqa: E402

BF16 = torch.bfloat16
CANDIDATES = ("torch", "triton", "flaggems", "liger")
OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "gemm")
MODELS = {  # hidden, MLP width, query heads, KV heads, head size
    "8B": dict(hidden=4096, intermediate=14336, heads=32, kv_heads=8, head_dim=128),
    "0.5B": dict(hidden=896, intermediate=4864, heads=14, kv_heads=2, head_dim=64),
}
SMOKE_MODELS = {"smoke": dict(hidden=96, intermediate=80, heads=4, kv_heads=2, head_dim=32)}
TOKENS = (1, 32, 2048)
SMOKE_TOKENS = (1, 3)
MAX_POSITION = 8192
EPS = 1e-6
TOLERANCE = 2e-2  # relative error of a bfloat16 output against the float32-exact reference


def timed(fn: Callable[[], Any], smoke: bool) -> float:
    """Median milliseconds per call, replayed from a CUDA graph as the engine's decode
    steps run (one wall-clock run in smoke mode). Timed one launch at a time, a kernel of
    a few microseconds measures the host's launch path instead: 25-30 us for any Triton
    kernel against 7 us for a torch op on the H200."""
    if smoke:
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3
    return triton.testing.do_bench_cudagraph(fn, rep=50, return_mode="median")


def rel_error(got: Any, want: Any) -> float:
    """Largest relative error (norm of the difference over the norm) over the outputs."""
    if isinstance(want, tuple):
        return max(rel_error(g, w) for g, w in zip(got, want))
    if not torch.isfinite(got.float()).all():
        return math.inf
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


def gemm_shapes(m: dict) -> dict[str, tuple[int, int]]:
    """weight name -> (N, K) of one layer."""
    q_width = m["heads"] * m["head_dim"]
    qkv = (m["heads"] + 2 * m["kv_heads"]) * m["head_dim"]
    return {"qkv": (qkv, m["hidden"]), "o": (m["hidden"], q_width),
            "gate_up": (2 * m["intermediate"], m["hidden"]),
            "down": (m["hidden"], m["intermediate"])}


def workloads(op: str, m: dict, tokens: int, device: torch.device):
    """(shape label, make_args) pairs: make_args() -> fresh inputs of one call."""
    def rand(*shape):
        return torch.randn(shape, dtype=BF16, device=device)

    t, hidden = tokens, m["hidden"]
    if op == "rms_norm":
        weight = 1 + 0.1 * rand(hidden)
        x = rand(t, hidden)
        yield f"[{t}, {hidden}]", lambda: (x.clone(), weight, EPS)
    elif op == "fused_add_rms_norm":
        weight = 1 + 0.1 * rand(hidden)
        x, residual = rand(t, hidden), rand(t, hidden)
        yield f"[{t}, {hidden}]", lambda: (x.clone(), residual.clone(), weight, EPS)
    elif op == "rotary_embedding":
        hq, hk, d = m["heads"], m["kv_heads"], m["head_dim"]
        cache = rotary_cache(MAX_POSITION, d, device)
        positions = torch.randint(0, MAX_POSITION, (t,), device=device)
        q, k = rand(t, hq, d), rand(t, hk, d)
        yield (f"q [{t}, {hq}, {d}] k [{t}, {hk}, {d}]",
               lambda: (positions, *projection_views(q, k), cache))
    elif op == "silu_and_mul":
        x = rand(t, 2 * m["intermediate"])
        yield f"[{t}, {2 * m['intermediate']}]", lambda: (x,)
    else:
        for name, (n, k) in gemm_shapes(m).items():
            weight = rand(n, k) / k ** 0.5
            x = rand(t, k)
            yield f"{name} [{t}, {k}] x [{n}, {k}]", (lambda x=x: (x,)), weight


def candidates(catalog, op: str, ctx: SelectionContext, names: tuple[str, ...]
               ) -> tuple[dict, dict]:
    """({name: bound implementation}, {name: why it is not timed}) of ``names``."""
    registry, bound, skipped = catalog.registry, {}, {}
    reference = registry.reference(op)
    for name in names:
        impl = next((i for i in registry.for_op(op)
                     if i.name == name and (name == "torch" or i.runs_on(ctx.platform.name))),
                    None)
        if impl is None:
            skipped[name] = f"no {op} implementation named {name} on {ctx.platform.name}"
            continue
        why_not = rejection(impl, ctx) if name != "torch" else None
        if why_not is not None:
            skipped[name] = why_not.reason
            continue
        try:
            bound[name] = bind(impl, reference)
        except Exception as exc:
            skipped[name] = f"failed to load: {exc}"
    return bound, skipped


def run_one(impl: Any, reference: Any, op: str, make_args, weight, smoke: bool):
    """(milliseconds, relative error) of one implementation on one workload."""
    if op == "gemm":
        state, ref_state = impl.prepare(weight, None), reference.prepare(weight, None)
        (x,) = make_args()
        error = rel_error(impl.apply(state, x), reference.apply(ref_state, x))
        return timed(lambda: impl.apply(state, x), smoke), error
    error = rel_error(impl(*make_args()), reference(*make_args()))
    args = make_args()  # in-place implementations keep rewriting these while timed
    return timed(lambda: impl(*args), smoke), error


def bench(catalog, platform, device: torch.device, ops: list[str], smoke: bool, timed_name: str,
          save: Callable[[list, dict], None]) -> tuple[list, dict]:
    """Rows of ``timed_name``'s times (checked against the torch reference, which is only
    timed when it is ``timed_name``)."""
    rows, skipped_all = [], {}
    models, tokens_list = (SMOKE_MODELS, SMOKE_TOKENS) if smoke else (MODELS, TOKENS)
    for op in ops:
        for model, m in models.items():
            ctx = SelectionContext(platform, dtype=BF16, head_dim=m["head_dim"],
                                   num_heads=m["heads"], num_kv_heads=m["kv_heads"])
            bound, skipped = candidates(catalog, op, ctx, tuple({"torch", timed_name}))
            skipped_all[op] = skipped
            reference = bound["torch"]
            bound = {n: i for n, i in bound.items() if n == timed_name}
            for tokens in tokens_list:
                for label, make_args, *weight in workloads(op, m, tokens, device):
                    row = {"op": op, "model": model, "tokens": tokens, "shape": label,
                           "ms": {}, "error": {}, "failed": {}}
                    for name, impl in bound.items():
                        try:
                            ms, error = run_one(impl, reference, op, make_args,
                                                weight[0] if weight else None, smoke)
                            row["ms"][name], row["error"][name] = ms, error
                        except Exception as exc:  # reported in the table, the rest go on
                            row["failed"][name] = f"{type(exc).__name__}: {exc}"[:300]
                    rows.append(row)
                    save(rows, skipped_all)
    return rows, skipped_all


def print_row(row: dict) -> None:
    base = row["ms"].get("triton")
    cells = []
    for name in CANDIDATES:
        if name in row["ms"]:
            ms, error = row["ms"][name], row["error"][name]
            ratio = f" {base / ms:4.2f}x" if base and name != "triton" else ""
            flag = " WRONG" if error > TOLERANCE else ""
            cells.append(f"{name} {ms * 1e3:9.1f} us{ratio}{flag}")
        elif name in row["failed"]:
            cells.append(f"{name} raised")
    print(f"{row['op']:<19} {row['model']:>5} T={row['tokens']:<5} {row['shape']:<34} "
          + " | ".join(cells), flush=True)


def summary(rows: list) -> dict:
    """Per plugin and op: in how many workloads it beat the built-in Triton kernel."""
    wins: dict = {}
    for row in rows:
        base = row["ms"].get("triton")
        for name in ("flaggems", "liger"):
            if base is None or name not in row["ms"]:
                continue
            entry = wins.setdefault(name, {}).setdefault(row["op"], [0, 0])
            entry[0] += row["ms"][name] < base
            entry[1] += 1
    return wins


def versions() -> dict:
    found = {"torch": torch.__version__, "triton": triton.__version__}
    for dist in ("flag-gems", "liger-kernel", "baseboard-flaggems", "baseboard-liger"):
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found[dist] = None
    return found


def worker(args, ops: list[str]) -> None:
    """Time one implementation (``--worker NAME``) and write its rows to ``--json``."""
    catalog = load_catalog(read_settings({}))  # the plugins as installed, none disabled
    # the records timed are those for the cuda platform; --smoke runs them on the CPU
    platform = catalog.platforms["cuda"]
    device = torch.device("cpu" if args.smoke else "cuda")

    def save(rows: list, skipped: dict) -> None:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "not_timed": skipped}, f)

    save(*bench(catalog, platform, device, ops, args.smoke, args.worker, save))


def run_workers(args) -> tuple[list, dict]:
    """Each implementation timed in a process of its own (nothing of another library loaded
    beside it), the rows joined per workload."""
    rows: dict[tuple, dict] = {}
    skipped: dict[str, dict] = {}
    for name in CANDIDATES:
        with tempfile.TemporaryDirectory() as scratch:
            out = os.path.join(scratch, "rows.json")
            command = [sys.executable, __file__, "--worker", name, "--ops", args.ops,
                       "--json", out] + (["--smoke"] if args.smoke else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if not os.path.exists(out):
                print(f"{name}: its process ended with status {done.returncode} before a row:\n"
                      f"{done.stderr[-2000:]}")
                continue
            with open(out) as f:
                record = json.load(f)
        for op, reasons in record["not_timed"].items():
            skipped.setdefault(op, {}).update(reasons)
        for row in record["rows"]:
            key = (row["op"], row["model"], row["tokens"], row["shape"])
            joined = rows.setdefault(key, {**row, "ms": {}, "error": {}, "failed": {}})
            for field in ("ms", "error", "failed"):
                joined[field].update(row[field])
    return list(rows.values()), skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", default=os.path.join(os.environ.get("OUT", "."),
                                                       "foreign_ops.json"))
    parser.add_argument("--ops", default=",".join(OPS),
                        help=f"comma-separated, of {', '.join(OPS)} (default: all)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--worker", choices=CANDIDATES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    ops = [op for op in args.ops.split(",") if op]
    unknown = [op for op in ops if op not in OPS]
    if unknown:
        parser.error(f"--ops: unknown {unknown}; choose from {', '.join(OPS)}")
    if args.worker:
        return worker(args, ops)
    name = "cpu (interpreter)" if args.smoke else torch.cuda.get_device_name()
    print(f"device: {name}; {versions()}")
    print("median microseconds per call, bfloat16, each implementation in a process of its "
          "own; Nx: speed against triton (above 1 is faster); "
          f"WRONG: relative error above {TOLERANCE}")
    rows, skipped = run_workers(args)
    for row in rows:
        print_row(row)
    for op, reasons in skipped.items():
        for impl, reason in reasons.items():
            print(f"not timed: {op}={impl}: {reason}")
    wins = summary(rows)
    for plugin, won_ops in wins.items():
        print(f"{plugin} faster than triton: " + ", ".join(
            f"{op} {won}/{total}" for op, (won, total) in won_ops.items()))
    failures = [(r["op"], r["shape"], n, e) for r in rows for n, e in r["failed"].items()]
    wrong = [(r["op"], r["shape"], n, e) for r in rows for n, e in r["error"].items()
             if e > TOLERANCE]
    for failure in failures + wrong:
        print("PROBLEM:", *failure)
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "device": name, "versions": versions(), "rows": rows,
              "not_timed": skipped, "faster_than_triton": wins}
    with open(args.json, "w") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
