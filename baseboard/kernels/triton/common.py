"""Pieces shared by the Triton kernels."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from .records import interpreting

try:  # programmatic dependent launch: Hopper and later, Triton >= 3.3
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older Triton
    gdc_launch_dependents = gdc_wait = None

def upcast_dots(dtype: torch.dtype) -> bool:
    """Whether ``mma`` must multiply in float32: Triton's interpreter keeps bfloat16 as raw
    uint16 and would multiply the bit patterns as integers."""
    return interpreting() and dtype == torch.bfloat16


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its last dimension is dense (the kernels index the others by stride).
    The dense prefill needs more, each token's heads adjacent (prefill_tiled._adjacent_heads),
    because it reads a token's heads as one row."""
    return x if x.stride(-1) == 1 else x.contiguous()


def num_warps_for(block: int) -> int:
    """Warps for a one-row program over ``block`` elements: about 512 elements a warp."""
    return min(16, max(1, block // 512))


@triton.jit
def mma(a, b, acc, UPCAST: tl.constexpr):
    """acc + a @ b on the tensor cores (in float32 under the interpreter for bfloat16)."""
    if UPCAST:
        result = tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    else:
        result = tl.dot(a, b, acc)
    return result


PDL_ALLOWED = [True]  # EngineConfig.pdl (BASEBOARD_PDL) of the engine loaded last


def allow_pdl(allowed: bool) -> None:
    """Whether the kernels may use programmatic dependent launch; the engine sets it from its
    configuration at load (it applies to every kernel launched in this process after)."""
    PDL_ALLOWED[0] = allowed
    _supports_pdl.cache_clear()


@functools.cache
def _supports_pdl(device: torch.device) -> bool:
    return (gdc_wait is not None and device.type == "cuda" and not interpreting()
            and PDL_ALLOWED[0] and torch.version.cuda is not None
            and torch.cuda.get_device_capability(device)[0] >= 9)


def pdl_options(device: torch.device) -> dict:
    """Launch options of every kernel here: with programmatic dependent launch (Hopper and
    later) a kernel is launched while the one before it is still running and waits in
    ``pdl_prologue``, which hides the launch gap between the small kernels that make up a
    batch-1 decode step."""
    return {"PDL": True, "launch_pdl": True} if _supports_pdl(device) else {"PDL": False}


@triton.jit
def pdl_prologue(PDL: tl.constexpr):
    """First in every kernel: wait until the kernel before has finished (its writes are
    visible and it reads nothing this one writes), then let the next kernel launch. Every
    kernel waits, so each one also finishes after all earlier ones."""
    if PDL:
        gdc_wait()
        gdc_launch_dependents()
