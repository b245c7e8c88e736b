"""SiLU-and-multiply (the gate of a SwiGLU MLP)."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import last_dim_contiguous, pdl_options, pdl_prologue

BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, x_stride, out_ptr, out_stride, inner, BLOCK: tl.constexpr,
                         PDL: tl.constexpr):
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < inner
    gate = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    up = tl.load(x_ptr + row * x_stride + inner + cols, mask=mask, other=0.0).to(tl.float32)
    # silu rounded to the dtype before the product, as the unfused reference rounds it
    silu = (gate * tl.sigmoid(gate)).to(out_ptr.dtype.element_ty).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols, (silu * up).to(out_ptr.dtype.element_ty),
             mask=mask)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:]."""
    x = last_dim_contiguous(x)
    rows = x.reshape(-1, x.shape[-1])
    inner = rows.shape[1] // 2
    out = torch.empty((rows.shape[0], inner), dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(inner, BLOCK))](
            rows, rows.stride(0), out, out.stride(0), inner, BLOCK=BLOCK, num_warps=4,
            **pdl_options(x.device))
    return out.view(*x.shape[:-1], inner)
