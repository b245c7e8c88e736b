"""Whether AMD's AITER kernels can serve a case on the rocm platform: the setting, the GPU
architecture, the shapes each kernel takes, and whether ``aiter`` imports.

Nothing here imports aiter until a supports() check asks, and only on the rocm platform
(selection rejects other platforms first). The import is tried once per process.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from typing import Any, Callable, Optional, Union

import torch

from ...core.registry import ENVIRONMENT, Rejection
from .platform import FNUZ_ARCHS

# Instinct MI300 (gfx942) and MI350 (gfx950): the architectures AITER ships kernels for
AITER_ARCHS = ("gfx942", "gfx950")
HALF_DTYPES = (torch.bfloat16, torch.float16)
# pa_fwd_asm, AITER's paged decode: its assembly kernels exist for these shapes only
PA_HEAD_SIZE = 128
PA_BLOCK_SIZE = 16
PA_GQA_RATIOS = (8, 16)

Verdict = Union[None, str, Rejection]
Check = Callable[[Any], Optional[str]]


@functools.cache
def aiter_import_problem() -> Optional[Rejection]:
    """None when ``aiter`` imports. Not installed is an UNSUPPORTED rejection (the Triton
    kernels serve, as BASEBOARD_ROCM_AITER=auto intends); installed but failing to import is
    an ENVIRONMENT one, which `baseboard info` turns into a warning."""
    if importlib.util.find_spec("aiter") is None:
        return Rejection("amd-aiter is not installed (pip install amd-aiter, built for this "
                         "ROCm); BASEBOARD_ROCM_AITER=auto runs the Triton kernels instead")
    try:
        importlib.import_module("aiter")
    except Exception as exc:  # a vendor library: any failure is the environment's
        return Rejection(f"aiter is installed but failed to import: {exc!r}", ENVIRONMENT)
    return None


def arch_problem(arch: str) -> Optional[str]:
    """Why AITER has no kernels for a GPU of architecture ``arch`` (None: it has)."""
    if arch in AITER_ARCHS:
        return None
    return f"AITER's kernels are built for {', '.join(AITER_ARCHS)}, and this GPU is {arch}"


def aiter_problem(arch: str) -> Optional[Rejection]:
    """Why AITER cannot run on a GPU of architecture ``arch`` (None: it can)."""
    reason = arch_problem(arch)
    return Rejection(reason) if reason else aiter_import_problem()


def _name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def half_dtype(ctx: Any) -> Optional[str]:
    if ctx.dtype in HALF_DTYPES:
        return None
    return f"dtype {_name(ctx.dtype)} is not bfloat16 or float16"


def paged_decode_shape(ctx: Any) -> Optional[str]:
    """pa_fwd_asm's shapes; unknown fields pass."""
    if ctx.head_dim is not None and ctx.head_dim != PA_HEAD_SIZE:
        return f"pa_fwd_asm takes head size {PA_HEAD_SIZE}, not {ctx.head_dim}"
    if ctx.block_size is not None and ctx.block_size != PA_BLOCK_SIZE:
        return f"pa_fwd_asm takes KV-cache block size {PA_BLOCK_SIZE}, not {ctx.block_size}"
    if ctx.num_heads is not None and ctx.num_kv_heads is not None:
        ratio = ctx.num_heads / ctx.num_kv_heads
        if ratio not in PA_GQA_RATIOS:
            return (f"pa_fwd_asm takes {' or '.join(map(str, PA_GQA_RATIOS))} query heads per "
                    f"KV head, not {ctx.num_heads}/{ctx.num_kv_heads}")
    return None


def int8_schemes(ctx: Any) -> Optional[str]:
    """gemm_a8w8's int8 path: per-channel int8 weights, per-token int8 activations."""
    for scheme in ctx.schemes_for("gemm_w8a8_int8"):
        if scheme.weight != "int8" or scheme.group_size or scheme.block:
            return (f"AITER's gemm_a8w8 takes per-channel int8 weights, not "
                    f"{scheme.describe()}")
    return None


def fp8_schemes(ctx: Any) -> Optional[str]:
    """gemm_a8w8's fp8 path: per-channel weights in the GPU's float8 type, or in
    float8_e4m3fn on gfx942, which prepare() rescales to float8_e4m3fnuz."""
    arch = ctx.platform.arch()
    accepted = ("float8_e4m3fn", "float8_e4m3fnuz") if arch in FNUZ_ARCHS \
        else ("float8_e4m3fn",)
    for scheme in ctx.schemes_for("gemm_w8a8_fp8"):
        if scheme.group_size or scheme.block:
            return (f"AITER's gemm_a8w8 takes per-channel fp8 scales, not "
                    f"{scheme.describe()}")
        if scheme.weight not in accepted:
            return (f"{arch} computes fp8 as {_name(ctx.platform.fp8_dtype())}; weights "
                    f"{scheme.weight} are not converted to it")
    return None


def aiter_supports(*checks: Check) -> Callable[[Any], Verdict]:
    """A supports() for an AITER implementation: the setting, then the architecture, then
    ``checks`` (what the case rules out), then whether aiter imports (what the machine
    lacks), so that a case AITER would never serve is not reported as a broken install."""
    def supports(ctx: Any) -> Verdict:
        if getattr(ctx.platform, "aiter", "auto") == "off":
            return "BASEBOARD_ROCM_AITER=off"
        reason = arch_problem(ctx.platform.arch())
        for check in checks:
            reason = reason or check(ctx)
        return reason or aiter_import_problem()
    return supports

