"""What one library can leave behind in a Python process that slows the next one to run there.

``snapshot()`` reads torch's global settings, the environment, Python's threads, tracer and
garbage collector, and the CUDA allocator's state; ``changed(before, after)`` lists what
differs. ``launch_cost_us`` times the host's side of one small kernel launch, which is what
a host-bound ``generate`` (transformers at small batches) pays a few hundred times a token.
Used by benchmarks/e2e_gpu.py --diagnose.
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import threading
import time
from typing import Any

import torch


def snapshot() -> dict[str, Any]:
    """The process-wide settings that change how fast torch code runs here."""
    state: dict[str, Any] = {
        "torch.get_num_threads": torch.get_num_threads(),
        "torch.get_num_interop_threads": torch.get_num_interop_threads(),
        "torch.is_grad_enabled": torch.is_grad_enabled(),
        "torch.is_inference_mode_enabled": torch.is_inference_mode_enabled(),
        "torch.get_default_dtype": str(torch.get_default_dtype()),
        "torch.get_default_device": str(torch.get_default_device()),
        "torch.are_deterministic_algorithms_enabled":
            torch.are_deterministic_algorithms_enabled(),
        "torch.get_float32_matmul_precision": torch.get_float32_matmul_precision(),
        "torch.is_anomaly_enabled": torch.is_anomaly_enabled(),
        "python threads": sorted(t.name for t in threading.enumerate()),
        "sys.gettrace": repr(sys.gettrace()),
        "sys.getprofile": repr(sys.getprofile()),
        "sys.getswitchinterval": sys.getswitchinterval(),
        "gc.isenabled": gc.isenabled(),
        "gc.get_threshold": gc.get_threshold(),
        "gc.get_freeze_count": gc.get_freeze_count(),
        "gc tracked objects": len(gc.get_objects()),
        "environ": dict(os.environ),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        sdp = torch.backends.cuda
        state.update({
            "cuda.matmul.allow_tf32": sdp.matmul.allow_tf32,
            "cuda.matmul.allow_bf16_reduced_precision_reduction":
                sdp.matmul.allow_bf16_reduced_precision_reduction,
            "cudnn.enabled": torch.backends.cudnn.enabled,
            "cudnn.benchmark": torch.backends.cudnn.benchmark,
            "sdp flash / mem_efficient / math / cudnn": (
                sdp.flash_sdp_enabled(), sdp.mem_efficient_sdp_enabled(),
                sdp.math_sdp_enabled(), sdp.cudnn_sdp_enabled()),
            "cuda.current_device": torch.cuda.current_device(),
            "cuda.current_stream": torch.cuda.current_stream().cuda_stream,
            "cuda.get_sync_debug_mode": torch.cuda.get_sync_debug_mode(),
            "cuda.memory_allocated MiB": torch.cuda.memory_allocated() >> 20,
            "cuda.memory_reserved MiB": torch.cuda.memory_reserved() >> 20,
        })
    return state


def changed(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """{name: [before, after]} for every value that differs; environment variables one by
    one (None where a variable is unset)."""
    diff = {key: [before.get(key), after.get(key)] for key in sorted(set(before) | set(after))
            if key != "environ" and before.get(key) != after.get(key)}
    env_before, env_after = before.get("environ", {}), after.get("environ", {})
    for name in sorted(set(env_before) | set(env_after)):
        if env_before.get(name) != env_after.get(name):
            diff[f"environ {name}"] = [env_before.get(name), env_after.get(name)]
    return diff


def launch_cost_us(device: str, launches: int = 2000, rounds: int = 5) -> float:
    """Median host time of one small in-place add on ``device``, in microseconds."""
    x = torch.zeros(16, device=device)
    times = []
    for _ in range(rounds):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(launches):
            x.add_(1)
        times.append((time.perf_counter() - start) / launches)
        if device != "cpu":
            torch.cuda.synchronize()
    return statistics.median(times) * 1e6
