"""Implementation records of the Triton kernels, for any platform plugin to register.

Nothing here imports triton: the records are read at discovery, and each kernel module is
imported by its loader only once selected. On a GPU platform the kernels compile for the
device; on the cpu platform they run only in Triton's interpreter (TRITON_INTERPRET=1, read
when a plan is resolved), which is how the test suite checks them without a GPU.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch

from ...core.registry import Impl
from .quant_support import block_schemes_reason, fp8_device_reason, schemes_reason

GPU_DEVICE_TYPES = ("cuda", "xpu")
HEAD_SIZES = (64, 80, 96, 128, 256)
INTERPRETER_HEAD_SIZES = (16, 32)  # small heads keep interpreter tests fast
BLOCK_SIZES = (16, 32, 64)
HALF_DTYPES = (torch.bfloat16, torch.float16)

Supports = Callable[[Any], Optional[str]]

_MODULES = {
    "rms_norm": "norm:rms_norm",
    "fused_add_rms_norm": "norm:fused_add_rms_norm",
    "rotary_embedding": "rotary:rotary_embedding",
    "silu_and_mul": "activation:silu_and_mul",
    "attention": "attention:TritonAttention",
    "sample": "sampling:sample",
    "gemm": "gemm:Gemm",
    "gemm_w4a16": "quant_gemm:GemmW4A16",
    "gemm_w8a16": "quant_gemm:GemmW8A16",
    "gemm_w8a8_int8": "quant_w8a8:GemmW8A8Int8",
    "gemm_w8a8_fp8": "quant_w8a8:GemmW8A8Fp8",
    "gemm_w8a8_fp8_block": "quant_fp8_block:GemmW8A8Fp8Block",
}


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def device_reason(ctx: Any) -> Optional[str]:
    """None when Triton can run on the platform of ``ctx`` (a GPU, or the interpreter)."""
    device_type = ctx.platform.device_type
    if device_type in GPU_DEVICE_TYPES or (device_type == "cpu" and interpreting()):
        return None
    if device_type == "cpu":
        return (f"Triton kernels need a GPU and platform {ctx.platform.name!r} is the CPU; "
                f"set TRITON_INTERPRET=1 to run them in Triton's interpreter (slow: for "
                f"tests; it must be set before the kernel modules are imported)")
    return f"Triton does not compile for device type {device_type!r}"


def dtype_reason(ctx: Any) -> Optional[str]:
    """None when ``ctx.dtype`` is one the kernels are written for."""
    allowed = HALF_DTYPES + ((torch.float32,) if interpreting() else ())
    if ctx.dtype in allowed:
        return None
    names = ", ".join(str(d).replace("torch.", "") for d in allowed)
    return (f"dtype {str(ctx.dtype).replace('torch.', '')} is not supported (supported: {names}"
            f"{'' if interpreting() else '; float32 only under TRITON_INTERPRET=1'})")


def attention_reason(ctx: Any) -> Optional[str]:
    """None when the attention shape of ``ctx`` fits the kernels; unknown fields pass."""
    sizes = HEAD_SIZES + (INTERPRETER_HEAD_SIZES if interpreting() else ())
    if ctx.head_dim is not None and ctx.head_dim not in sizes:
        return f"head size {ctx.head_dim} is not one of {', '.join(map(str, sizes))}"
    if ctx.block_size is not None and ctx.block_size not in BLOCK_SIZES:
        return (f"KV-cache block size {ctx.block_size} is not one of "
                f"{', '.join(map(str, BLOCK_SIZES))}")
    if ctx.num_heads is not None and ctx.num_kv_heads is not None \
            and ctx.num_heads % ctx.num_kv_heads:
        return (f"{ctx.num_heads} query heads are not a multiple of "
                f"{ctx.num_kv_heads} KV heads")
    return None


def _first(*checks: Supports) -> Supports:
    def supports(ctx: Any) -> Optional[str]:
        for check in checks:
            reason = check(ctx)
            if reason:
                return reason
        return None
    return supports


def _checks(op: str) -> tuple[Supports, ...]:
    if op == "sample":  # logits are float32 whatever the model's dtype
        return (device_reason,)
    if op == "attention":
        return (device_reason, dtype_reason, attention_reason)
    if op == "gemm_w8a8_fp8":
        return (device_reason, dtype_reason, fp8_device_reason, schemes_reason(op))
    if op == "gemm_w8a8_fp8_block":
        return (device_reason, dtype_reason, fp8_device_reason, block_schemes_reason)
    if op.startswith("gemm_w"):
        return (device_reason, dtype_reason, schemes_reason(op))
    return (device_reason, dtype_reason)


# the ops whose work a kernel here also does (core.ops.FUSIONS), by the op it serves
_FUSES = {"attention": ("rotary_embedding",), "gemm": ("silu_and_mul", "fused_add_rms_norm")}


def triton_impls(platforms: tuple[str, ...], priority: int) -> list[Impl]:
    """Records named "triton" for every op that has a Triton kernel.

    ``platforms``: the platforms the calling plugin registers them for; ``priority``:
    their priority there.
    """
    return [Impl(op=op, name="triton", loader=f"baseboard.kernels.triton.{target}",
                 platforms=tuple(platforms), priority=priority, requires=("triton",),
                 supports=_first(*_checks(op)), fuses=_FUSES.get(op, ()),
                 doc=f"Triton kernel ({target.split(':')[0]}.py)")
            for op, target in _MODULES.items()]
