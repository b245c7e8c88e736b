"""The rocm platform plugin: the platform and the implementations it registers.

AITER's kernels (package amd-aiter) are registered above the Triton ones for the ops they
serve; each record's supports() decides, with BASEBOARD_ROCM_AITER, the GPU architecture
and the shapes (aiter_support.py), so `baseboard info` says why one is not used.
"""

from __future__ import annotations

from ...core.registry import Impl
from ...kernels.triton.records import triton_impls
from ...plugins import hookimpl
from .aiter_support import (aiter_supports, fp8_schemes, half_dtype, int8_schemes,
                            paged_decode_shape)
from .platform import RocmPlatform

BASEBOARD_CONTRACT = 1
AITER_PRIORITY = 60  # above the Triton kernels (50)


def _aiter(op: str, target: str, supports, doc: str, **fields) -> Impl:
    return Impl(op=op, name="aiter", loader=f"baseboard.platforms.rocm.{target}",
                platforms=("rocm",), priority=AITER_PRIORITY, supports=supports, doc=doc,
                **fields)


def aiter_impls() -> list[Impl]:
    """AITER's implementations; AITER has no weight-only int4 or int8 GEMM, so
    gemm_w4a16 and gemm_w8a16 stay on Triton here."""
    half = aiter_supports(half_dtype)
    return [
        _aiter("attention", "aiter_attention:AiterAttention",
               aiter_supports(half_dtype, paged_decode_shape),
               "AITER: pa_fwd_asm decode, CK FlashAttention varlen prefill",
               cuda_graph_safe=False),
        _aiter("rms_norm", "aiter_ops:rms_norm", half, "AITER: rmsnorm2d_fwd (CK)"),
        _aiter("fused_add_rms_norm", "aiter_ops:fused_add_rms_norm", half,
               "AITER: rmsnorm2d_fwd_with_add (CK)"),
        _aiter("rotary_embedding", "aiter_ops:rotary_embedding", half,
               "AITER: rope_cached_positions_2c_fwd_inplace"),
        _aiter("silu_and_mul", "aiter_ops:silu_and_mul", half, "AITER: silu_and_mul"),
        _aiter("gemm", "aiter_gemm:AiterGemm", half,
               "AITER: tuned GEMM (hipBLASLt, skinny and assembly kernels per shape)"),
        _aiter("gemm_w8a8_int8", "aiter_gemm:AiterGemmW8A8Int8",
               aiter_supports(half_dtype, int8_schemes), "AITER: gemm_a8w8_CK, int8"),
        _aiter("gemm_w8a8_fp8", "aiter_gemm:AiterGemmW8A8Fp8",
               aiter_supports(half_dtype, fp8_schemes),
               "AITER: gemm_a8w8_CK, fp8 (float8_e4m3fnuz on gfx942)"),
    ]


@hookimpl
def baseboard_platforms():
    return [RocmPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [*triton_impls(("rocm",), priority=50), *aiter_impls()]
