"""The cuda platform plugin: the platform and the implementations it registers."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from ...core.registry import Impl, distribution_installed
from ...kernels import gemlite_gemm
from ...kernels.torch import quant_alternatives
from ...kernels.triton.records import triton_impls
from ...plugins import hookimpl
from .platform import CudaPlatform

BASEBOARD_CONTRACT = 1
FLASHINFER_HEAD_SIZES = (64, 128, 256)


def _nvcc_reason() -> Optional[str]:
    """None when FlashInfer can build its kernels: a prebuilt cache, or nvcc where it looks."""
    if distribution_installed("flashinfer-jit-cache"):
        return None
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    if shutil.which("nvcc") or (Path(cuda_home) / "bin" / "nvcc").exists():
        return None
    return ("FlashInfer compiles its kernels with nvcc on first use and none was found (on "
            "PATH or under CUDA_HOME); install the CUDA toolkit or flashinfer-jit-cache")


def flashinfer_reason(ctx: Any) -> Optional[str]:
    """None when FlashInfer's attention can serve ``ctx``; unknown fields pass."""
    if ctx.dtype not in (torch.bfloat16, torch.float16):
        return f"dtype {str(ctx.dtype).replace('torch.', '')} is not bfloat16 or float16"
    if ctx.head_dim is not None and ctx.head_dim not in FLASHINFER_HEAD_SIZES:
        return (f"head size {ctx.head_dim} is not one of "
                f"{', '.join(map(str, FLASHINFER_HEAD_SIZES))}")
    return _nvcc_reason()


FLASHINFER = Impl(
    op="attention", name="flashinfer",
    loader="baseboard.platforms.cuda.flashinfer_attention:FlashInferAttention",
    platforms=("cuda",), priority=60, requires=("flashinfer-python",),
    supports=flashinfer_reason, cuda_graph_safe=False,
    doc="FlashInfer's paged attention (FA3 prefill on Hopper), planned per step on the host")


_TORCH_QUANT = "baseboard.kernels.torch.quant_alternatives"
# torch's own quantized GEMMs, below the Triton kernels (50) until measured faster
TORCH_QUANT_GEMMS = [
    Impl(op="gemm_w8a8_fp8", name="scaled_mm", loader=f"{_TORCH_QUANT}:ScaledMmFp8",
         platforms=("cuda",), priority=40, supports=quant_alternatives.supports_scaled_mm,
         doc="torch._scaled_mm, row-wise scales; activations quantized by torch ops"),
    Impl(op="gemm_w8a8_int8", name="int_mm", loader=f"{_TORCH_QUANT}:IntMmInt8",
         platforms=("cuda",), priority=40, supports=quant_alternatives.supports_int_mm,
         doc="torch._int_mm into int32, rescaled by torch ops"),
    Impl(op="gemm_w4a16", name="tinygemm", loader=f"{_TORCH_QUANT}:TinyGemmW4A16",
         platforms=("cuda",), priority=30, supports=quant_alternatives.supports_tinygemm,
         doc="torch._weight_int4pack_mm (tinygemm); bf16 results only"),
]

_GEMLITE = "baseboard.kernels.gemlite_gemm"
# gemlite (optional): below the Triton kernels and tinygemm, so chosen only by name
GEMLITE_GEMMS = [
    Impl(op=op, name="gemlite", loader=f"{_GEMLITE}:{cls}", platforms=("cuda",),
         priority=20, requires=("gemlite>=0.6",), supports=gemlite_gemm.supports_gemlite(op),
         version="1", doc="gemlite's Triton low-bit GEMMs (GEMV, split-K, GEMM by rows)")
    for op, cls in (("gemm_w4a16", "GemliteW4A16"), ("gemm_w8a16", "GemliteW8A16"))
]


@hookimpl
def baseboard_platforms():
    return [CudaPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [*triton_impls(("cuda",), priority=50), FLASHINFER, *TORCH_QUANT_GEMMS,
            *GEMLITE_GEMMS]
