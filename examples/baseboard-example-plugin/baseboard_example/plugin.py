"""The plugin module named by the entry point: hook functions, nothing heavy.

baseboard imports this module at discovery time, so it only builds records; the
kernel module (``gemm.py``) is imported when its implementation is selected.
"""

from __future__ import annotations

from typing import Optional

import torch

from baseboard.core.registry import Impl
from baseboard.plugins import hookimpl
from baseboard.quantization.method import QuantMethod

from .platform import SimPlatform

BASEBOARD_CONTRACT = 1  # the op contract this plugin is written for


def supports(ctx) -> Optional[str]:
    """None when the GEMM can run in ``ctx``; otherwise the reason, shown by `baseboard info`."""
    if ctx.dtype not in (torch.float32, torch.bfloat16):
        return f"dtype {ctx.dtype} is not supported (the kernel is written for float32 and bfloat16)"
    return None


@hookimpl
def baseboard_platforms() -> list:
    return [SimPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [Impl(op="gemm", name="transposed", loader="baseboard_example.gemm:TransposedGemm",
                 platforms=("cpu", "sim"), priority=5, supports=supports,
                 doc="weight stored pre-transposed [K, N]; one addmm per call")]


@hookimpl
def baseboard_quantization_methods() -> list[QuantMethod]:
    return [QuantMethod(name="example-int8-rows", doc="int8 weights, one scale per row",
                        ops=("gemm_w8a16",),
                        layers="baseboard_example.int8_rows:read_config")]
