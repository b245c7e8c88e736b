"""The plugin module named by the entry point: records only.

FlagGems is imported by ``ops.py``, the loader of every record, once one is selected, and
by ``supports`` (once, cached) to find out whether it loads on this machine at all.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Optional

from baseboard.core.registry import ENVIRONMENT, Impl, Rejection
from baseboard.plugins import hookimpl

BASEBOARD_CONTRACT = 1

NAME = "flaggems"
# FlagGems runs on NVIDIA GPUs and, through its "amd" vendor backend, on ROCm; both are
# torch's "cuda" device type. Its other vendors (Cambricon, Moore Threads, Ascend, ...) have
# no baseboard platform.
PLATFORMS = ("cuda", "rocm")
# Below the built-in Triton kernels (50): on the H200 (docs/benchmarks.md, 2026-12-03) they
# beat them only on 2048-token norms of a small model. It decides little: the GPU platforms
# prefer their own kernels (Triton, AITER, IPEX) for the norms, rotary and SiLU-and-mul
# whatever the priority, and with BASEBOARD_TUNE on (the default on GPUs) the norms,
# SiLU-and-mul and every GEMM shape go to the implementation measured fastest on the
# model's own shapes.
PRIORITY = 40
VERSION = "flag-gems-5.0"
# the release the adapters are written against; older ones are not checked
REQUIRES = ("flag-gems>=5.0.2",)

# op -> (attribute of ops.py, what `baseboard info` says about it)
OPS = {
    "rms_norm": ("rms_norm", "FlagGems rms_norm_forward (one row per program)"),
    "fused_add_rms_norm": ("fused_add_rms_norm",
                           "FlagGems fused_add_rms_norm in place: normed into x, sum into "
                           "residual"),
    "rotary_embedding": ("rotary_embedding",
                         "FlagGems apply_rotary_pos_emb in place, the cos/sin halves as views"),
    "silu_and_mul": ("silu_and_mul", "FlagGems silu_and_mul_out on the two halves as views"),
    "gemm": ("FlagGemsGemm", "FlagGems mm / addmm on the weight viewed as [K, N]"),
}


@functools.lru_cache(maxsize=1)
def import_problem() -> Optional[str]:
    """None when flag_gems imports here, else the error. FlagGems looks for its device when
    it is imported (running nvidia-smi, rocm-smi, ...) and raises where it finds none."""
    try:
        importlib.import_module("flag_gems")
    except Exception as exc:  # whatever it raises, the user must hear it, not a traceback
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


def supports(ctx: Any) -> Optional[Rejection]:
    """None when FlagGems loads here; it handles every dtype and shape of the contract."""
    problem = import_problem()
    if problem:
        return Rejection(f"flag-gems is installed but does not import here ({problem}); "
                         f"check that it matches this torch and triton and sees the GPU",
                         ENVIRONMENT)
    return None


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [Impl(op=op, name=NAME, loader=f"baseboard_flaggems.ops:{attribute}",
                 platforms=PLATFORMS, priority=PRIORITY, requires=REQUIRES,
                 supports=supports, doc=doc, version=VERSION)
            for op, (attribute, doc) in OPS.items()]
