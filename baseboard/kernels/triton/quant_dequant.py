"""Weight-only codes back to weights: q s + o in x's dtype, rounded once. The tensor-core
kernel (quant_gemm.py) scales its codes in registers this way for large tiles, and a
DEQUANT tile (quant_tiles.py) writes the whole weight for torch's GEMM."""

from __future__ import annotations

from typing import Any

import torch
import triton
import triton.language as tl

from .common import pdl_options, pdl_prologue
from .quant_gemv import _PLANE_K, _PLANES, PACK_K, nibble_plane


@triton.jit
def group_scales(group, scale_ptr, offset_ptr, cols, col_ok, N, HAS_OFFSETS: tl.constexpr):
    """The scales and offsets (zero without) of ``group`` for ``cols``: float32 [BLOCK_N]."""
    scale = tl.load(scale_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
    if HAS_OFFSETS:
        offset = tl.load(offset_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
    else:
        offset = tl.zeros_like(scale)
    return scale, offset


@triton.jit
def dequantized(codes, scale, offset, BITS: tl.constexpr, HAS_OFFSETS: tl.constexpr,
                DTYPE: tl.constexpr):
    """codes [BLOCK_N, k] (4 bits: int32 0..15, 8 bits: int8) as DTYPE weights q s + o.
    The codes reach float32 through its mantissa (2^23 + q), not the conversion unit."""
    if BITS == 4:
        q = (codes | 0x4B000000).to(tl.float32, bitcast=True) - 8388608.0
    else:
        q = (codes.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
    weights = q * scale[:, None]
    if HAS_OFFSETS:
        weights += offset[:, None]
    return weights.to(DTYPE)


@triton.jit
def _dequantize_kernel(w_ptr, stride_wn, scale_ptr, offset_ptr, out_ptr, N, K,
                       BITS: tl.constexpr, GROUP: tl.constexpr, HAS_OFFSETS: tl.constexpr,
                       BLOCK_N: tl.constexpr, PDL: tl.constexpr):
    """out [N, K] = the weights q s + o in out's dtype; a program writes BLOCK_N columns of
    one packed block (4 bits: PACK_K inputs) or of 64 inputs (8 bits)."""
    pdl_prologue(PDL)
    cols = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < N
    w_rows = w_ptr + tl.minimum(cols, N - 1).to(tl.int64)[:, None] * stride_wn
    out_rows = out_ptr + cols.to(tl.int64)[:, None] * K
    if BITS == 4:
        words = tl.load(w_rows + tl.program_id(1) * _PLANE_K + tl.arange(0, _PLANE_K)[None, :])
        for plane in tl.static_range(_PLANES):
            k0 = tl.program_id(1) * (_PLANES * _PLANE_K) + plane * _PLANE_K
            k = k0 + tl.arange(0, _PLANE_K)
            scale, offset = group_scales(tl.minimum(k0 // GROUP, K // GROUP - 1), scale_ptr,
                                          offset_ptr, cols, col_ok, N, HAS_OFFSETS)
            weights = dequantized(nibble_plane(words, plane), scale, offset, BITS,
                                   HAS_OFFSETS, out_ptr.dtype.element_ty)
            tl.store(out_rows + k[None, :], weights, mask=col_ok[:, None] & (k < K)[None, :])
    else:
        k = tl.program_id(1) * 64 + tl.arange(0, 64)
        k_ok = k < K
        codes = tl.load(w_rows + k[None, :], mask=k_ok[None, :], other=0)
        # groups of 16 may change within the 64 inputs: a scale per element
        group = tl.minimum(k // GROUP, K // GROUP - 1)
        scale = tl.load(scale_ptr + group[None, :] * N + cols[:, None],
                        mask=col_ok[:, None], other=0.0).to(tl.float32)
        q = (codes.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
        tl.store(out_rows + k[None, :], (q * scale).to(out_ptr.dtype.element_ty),
                 mask=col_ok[:, None] & k_ok[None, :])


def dequantize(state: Any, dtype: torch.dtype, block_n: int) -> torch.Tensor:
    """The weight [N, K] in ``dtype`` (q s + o rounded once), ``block_n`` columns a
    program."""
    k, n = state.k, state.n
    weight = torch.empty((n, k), dtype=dtype, device=state.codes.device)
    inputs = PACK_K if state.bits == 4 else 64
    offsets = state.offsets
    _dequantize_kernel[(triton.cdiv(n, block_n), triton.cdiv(k, inputs))](
        state.codes, state.codes.stride(0), state.scales,
        offsets if offsets is not None else state.scales, weight, n, k,
        BITS=state.bits, GROUP=state.group_size or k, HAS_OFFSETS=offsets is not None,
        BLOCK_N=block_n, **pdl_options(state.codes.device))
    return weight
