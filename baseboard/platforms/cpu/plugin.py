"""The cpu platform plugin: the platform and its CPU-specific implementations.

Every implementation here runs native kernels (``native.py``, built on first use);
each is rejected with the reason where they cannot run, and selection then takes the
torch references: a CPU without AVX512-BF16 is an unsupported case, a kernel build
that fails (no C compiler, an unwritable cache) an environment problem that
``plan_warnings`` reports, since the references are many times slower. The GEMMs have one
implementation per dtype (bf16, float32), selected by the model's dtype; float16 models
keep the reference GEMMs. The quantized GEMMs keep their codes packed (quant_gemm.py); the
ones that dequantize once at load stay registered at a lower priority. The other ops take bf16, float16 and float32.

The Triton kernels are registered too, at priority -10: on the CPU they run only in
Triton's interpreter (TRITON_INTERPRET=1), for tests, and only when asked for by name.
"""

from __future__ import annotations

from typing import Optional, Union

import torch

from ...core.registry import Impl, Rejection
from ...kernels.triton.records import triton_impls
from ...plugins import hookimpl
from .ipex_records import ipex_impls
from .platform import CpuPlatform

BASEBOARD_CONTRACT = 1

_CPU = ("cpu",)
_HERE = "baseboard.platforms.cpu"


@hookimpl
def baseboard_platforms():
    return [CpuPlatform()]


def native_supported(ctx) -> Optional[Rejection]:
    from .native import rejection  # imported here: plugin discovery stays cheap
    return rejection()


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def bf16_native_supported(ctx) -> Union[None, str, Rejection]:
    if ctx.dtype != torch.bfloat16:
        return f"bf16 models only; this one runs in {_dtype_name(ctx.dtype)}"
    return native_supported(ctx)


def float32_native_supported(ctx) -> Union[None, str, Rejection]:
    if ctx.dtype != torch.float32:
        return f"float32 models only; this one runs in {_dtype_name(ctx.dtype)}"
    return native_supported(ctx)


def _odd_groups(ctx) -> Optional[str]:
    # the bf16 kernel multiplies pairs of inputs, which must not straddle two groups
    for op in ("gemm_w4a16", "gemm_w8a16"):
        for scheme in ctx.schemes_for(op):
            if scheme.group_size % 2:
                return (f"{scheme.describe()}: an odd group size pairs inputs across groups; "
                        f"dequant_bf16 takes it")
    return None


def bf16_quant_supported(ctx) -> Union[None, str, Rejection]:
    return _odd_groups(ctx) or bf16_native_supported(ctx)


def float32_quant_supported(ctx) -> Union[None, str, Rejection]:
    return float32_native_supported(ctx)


def attention_supported(ctx) -> Union[None, str, Rejection]:
    from .attention import MAX_HEAD_DIM

    if ctx.head_dim is not None and ctx.head_dim > MAX_HEAD_DIM:
        return f"head_dim {ctx.head_dim} is more than the kernel's {MAX_HEAD_DIM}"
    return native_supported(ctx)


@hookimpl
def baseboard_ops() -> list[Impl]:
    def impl(op: str, name: str, loader: str, supports, doc: str, priority: int = 10) -> Impl:
        return Impl(op=op, name=name, loader=f"{_HERE}.{loader}", platforms=_CPU,
                    priority=priority, supports=supports, cuda_graph_safe=False, doc=doc)

    return triton_impls(_CPU, priority=-10) + ipex_impls() + [
        impl("gemm", "avx512_bf16", "gemm:Avx512Gemm", bf16_native_supported,
             "bf16 weights packed in VNNI panels, vdpbf16ps; near memory bandwidth at M<=8"),
        impl("gemm", "avx512_f32", "gemm:Avx512Gemm", float32_native_supported,
             "float32 weights packed in panels, FMA; near memory bandwidth at M<=8"),
        impl("gemm_w4a16", "avx512_bf16", "quant_gemm:Avx512W4A16", bf16_quant_supported,
             "4-bit codes kept packed; decoded in registers at M<=8, per panel above"),
        impl("gemm_w8a16", "avx512_bf16", "quant_gemm:Avx512W8A16", bf16_quant_supported,
             "int8 codes kept packed; decoded in registers at M<=8, per panel above"),
        impl("gemm_w4a16", "avx512_f32", "quant_gemm:Avx512W4A16Float32",
             float32_quant_supported, "4-bit codes kept packed, float32 activations"),
        impl("gemm_w8a16", "avx512_f32", "quant_gemm:Avx512W8A16Float32",
             float32_quant_supported, "int8 codes kept packed, float32 activations"),
        impl("gemm_w4a16", "dequant_bf16", "quant_gemm:DequantW4A16", bf16_native_supported,
             "dequantized to bf16 once at load, then the avx512_bf16 GEMM", priority=5),
        impl("gemm_w8a16", "dequant_bf16", "quant_gemm:DequantW8A16", bf16_native_supported,
             "dequantized to bf16 once at load, then the avx512_bf16 GEMM", priority=5),
        impl("gemm_w4a16", "dequant_f32", "quant_gemm:DequantW4A16Float32",
             float32_native_supported, "dequantized to float32 once at load, then avx512_f32",
             priority=5),
        impl("gemm_w8a16", "dequant_f32", "quant_gemm:DequantW8A16Float32",
             float32_native_supported, "dequantized to float32 once at load, then avx512_f32",
             priority=5),
        impl("attention", "cpu_paged", "attention:CpuPagedAttention", attention_supported,
             "online-softmax kernel over the paged cache; SDPA for fresh prefills"),
        impl("rms_norm", "avx512", "rowwise:rms_norm", native_supported,
             "one native pass per row"),
        impl("fused_add_rms_norm", "avx512", "rowwise:fused_add_rms_norm", native_supported,
             "one native pass per row, in place"),
        impl("silu_and_mul", "avx512", "rowwise:silu_and_mul", native_supported,
             "one native pass per row"),
        impl("rotary_embedding", "avx512", "rowwise:rotary_embedding", native_supported,
             "one native pass per token, in place"),
        impl("sample", "avx512", "sampling:sample", native_supported,
             "native argmax when every row is greedy; otherwise the reference"),
    ]
