"""Pieces shared by the Triton kernels."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .records import interpreting

TORCH_TO_TL = {torch.float32: tl.float32, torch.bfloat16: tl.bfloat16, torch.float16: tl.float16}


def upcast_dots(dtype: torch.dtype) -> bool:
    """Whether ``mma`` must multiply in float32: Triton's interpreter keeps bfloat16 as raw
    uint16 and would multiply the bit patterns as integers."""
    return interpreting() and dtype == torch.bfloat16


def last_dim_contiguous(x: torch.Tensor) -> torch.Tensor:
    """``x`` itself when its last dimension is dense (the kernels index the others by stride)."""
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

