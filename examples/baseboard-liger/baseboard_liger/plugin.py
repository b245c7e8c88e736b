"""The plugin module named by the entry point: records only.

Liger Kernel is imported by ``ops.py``, the loader of every record, once one is selected,
and by ``supports`` (once, cached) to find out whether it loads on this machine at all.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Optional

from baseboard.core.registry import ENVIRONMENT, Impl, Rejection
from baseboard.plugins import hookimpl

BASEBOARD_CONTRACT = 1

NAME = "liger"
# Liger's kernels are plain Triton, and it names NVIDIA, AMD (torch.version.hip) and Intel
# (torch.xpu) GPUs as its devices. It has no dense GEMM.
PLATFORMS = ("cuda", "rocm", "xpu")
# Below the built-in Triton kernels (50): on the H200 (docs/benchmarks.md, 2026-12-03) they
# beat them only on 2048-token norms of a small model. It decides little: the GPU platforms
# prefer their own kernels (Triton, AITER, IPEX) for the norms, rotary and SiLU-and-mul
# whatever the priority, and with BASEBOARD_TUNE on (the default on GPUs) the norms,
# SiLU-and-mul and every GEMM shape go to the implementation measured fastest on the
# model's own shapes.
PRIORITY = 40
VERSION = "liger-kernel-0.8"
# the release the adapters are written against: up to 0.8.0 at least, rope_forward took
# neither rotary_dim, which half-width cos and sin need, nor position ids
REQUIRES = ("liger-kernel>=0.8.5",)

# op -> (attribute of ops.py, what `baseboard info` says about it)
OPS = {
    "rms_norm": ("rms_norm", "Liger rms_norm_forward, float32 throughout (casting mode gemma)"),
    "fused_add_rms_norm": ("fused_add_rms_norm",
                           "Liger fused_add_rms_norm_forward, float32 throughout"),
    "rotary_embedding": ("rotary_embedding",
                         "Liger rope_forward on [1, H, T, D] views, cos/sin gathered by position"),
    "silu_and_mul": ("silu_and_mul", "Liger swiglu_forward on the two halves (copied when T > 1)"),
}


@functools.lru_cache(maxsize=1)
def import_problem() -> Optional[str]:
    """None when Liger's kernel modules import here, else the error."""
    try:
        importlib.import_module("liger_kernel.ops")
    except Exception as exc:  # whatever it raises, the user must hear it, not a traceback
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


def supports(ctx: Any) -> Optional[Rejection]:
    """None when Liger loads here; its kernels handle every dtype and shape of the contract."""
    problem = import_problem()
    if problem:
        return Rejection(f"liger-kernel is installed but does not import here ({problem}); "
                         f"check that it matches this torch and triton", ENVIRONMENT)
    return None


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [Impl(op=op, name=NAME, loader=f"baseboard_liger.ops:{attribute}",
                 platforms=PLATFORMS, priority=PRIORITY, requires=REQUIRES,
                 supports=supports, doc=doc, version=VERSION)
            for op, (attribute, doc) in OPS.items()]
