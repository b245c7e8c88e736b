"""RMSNorm kernels: one program per row, statistics in float32."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import last_dim_contiguous, num_warps_for, pdl_options, pdl_prologue


@triton.jit
def _rms_norm_kernel(x_ptr, x_stride, w_ptr, out_ptr, out_stride, K, eps, BLOCK: tl.constexpr,
                     PDL: tl.constexpr):
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < K
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / K + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * out_stride + cols,
             (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _fused_add_rms_norm_kernel(x_ptr, x_stride, r_ptr, r_stride, w_ptr, K, eps,
                               BLOCK: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < K
    x = tl.load(x_ptr + row * x_stride + cols, mask=mask, other=0.0)
    r = tl.load(r_ptr + row * r_stride + cols, mask=mask, other=0.0)
    # rounded to the input dtype before the statistics, as an unfused add would be
    summed = (x.to(tl.float32) + r.to(tl.float32)).to(r_ptr.dtype.element_ty)
    tl.store(r_ptr + row * r_stride + cols, summed, mask=mask)
    s = summed.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(s * s, axis=0) / K + eps)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(x_ptr + row * x_stride + cols, (s * rstd * w).to(x_ptr.dtype.element_ty), mask=mask)


def _rows(x: torch.Tensor) -> torch.Tensor:
    return last_dim_contiguous(x.reshape(-1, x.shape[-1]))


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, K], weight [K] -> [T, K] in x's dtype."""
    rows = _rows(x)
    out = torch.empty_like(rows)
    block = triton.next_power_of_2(rows.shape[1])
    if rows.shape[0]:
        _rms_norm_kernel[(rows.shape[0],)](rows, rows.stride(0), weight, out, out.stride(0),
                                           rows.shape[1], eps, BLOCK=block,
                                           num_warps=num_warps_for(block),
                                           **pdl_options(x.device))
    return out.view(x.shape)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), in one pass. The sum is written over
    ``residual`` and the normed rows over ``x`` (when they are views of their rows)."""
    rows, res = _rows(x), _rows(residual)
    block = triton.next_power_of_2(rows.shape[1])
    if rows.shape[0]:
        _fused_add_rms_norm_kernel[(rows.shape[0],)](
            rows, rows.stride(0), res, res.stride(0), weight, rows.shape[1], eps,
            BLOCK=block, num_warps=num_warps_for(block), **pdl_options(x.device))
    return rows.view(x.shape), res.view(residual.shape)
