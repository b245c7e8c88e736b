"""Dispatch cost: a call through the plan vs calling the implementation directly, and the
start-up cost of `import baseboard` and `baseboard info` over `import torch`.

    python benchmarks/dispatch.py [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch


def _direct(fn, x, w, calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn(x, w, 1e-6)
    return (time.perf_counter_ns() - start) / calls


def dispatch_ratio(rounds: int = 15, calls: int = 20000) -> dict:
    from baseboard.kernels.torch.norm import rms_norm
    from baseboard.frontend.plan import resolve_plan

    plan = resolve_plan(platform="cpu", backends={"rms_norm": "torch"}).plan
    x, w = torch.randn(1, 64), torch.randn(64)
    direct, planned = [], []
    with torch.inference_mode():
        for _ in range(rounds):  # interleaved, so drift hits both sides alike
            direct.append(_direct(rms_norm, x, w, calls))
            planned.append(_through_plan(plan, x, w, calls))
    d, p = statistics.median(direct), statistics.median(planned)
    return {"direct_ns": d, "plan_ns": p, "ratio": p / d}


def _through_plan(plan, x, w, calls: int) -> float:
    # the same loop as _direct, with the function looked up on the plan at every call
    start = time.perf_counter_ns()
    for _ in range(calls):
        plan.rms_norm(x, w, 1e-6)
    return (time.perf_counter_ns() - start) / calls


def wall(code: list[str], repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(code, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def startup() -> dict:
    py = sys.executable
    torch_s = wall([py, "-c", "import torch"])
    import_s = wall([py, "-c", "import torch, baseboard"])
    info_s = wall([py, "-m", "baseboard.cli", "info", "--json"])
    return {"import_torch_s": torch_s, "import_baseboard_s": import_s,
            "baseboard_info_s": info_s, "info_over_torch_s": info_s - torch_s,
            "import_over_torch_s": import_s - torch_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write results to this file")
    args = parser.parse_args()
    result = {"dispatch": dispatch_ratio(), "startup": startup()}
    d, s = result["dispatch"], result["startup"]
    print(f"{'measure':<38}{'value':>12}")
    print(f"{'rms_norm direct call (ns)':<38}{d['direct_ns']:>12.0f}")
    print(f"{'rms_norm through plan (ns)':<38}{d['plan_ns']:>12.0f}")
    print(f"{'plan / direct (goal <= 1.05)':<38}{d['ratio']:>12.3f}")
    print(f"{'import torch (s)':<38}{s['import_torch_s']:>12.3f}")
    print(f"{'import torch, baseboard (s)':<38}{s['import_baseboard_s']:>12.3f}")
    print(f"{'baseboard info --json (s)':<38}{s['baseboard_info_s']:>12.3f}")
    print(f"{'info minus import torch (s)':<38}{s['info_over_torch_s']:>12.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
