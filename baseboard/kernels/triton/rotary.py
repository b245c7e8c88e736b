"""Rotary position embedding (rotate-half), applied in place to q and k in one launch."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import last_dim_contiguous, pdl_options, pdl_prologue


@triton.jit
def rotate_heads(ptr, tok_stride, head_stride, token, num_heads, cos, sin, half_cols, half_mask,
                 HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    """Rotate ``num_heads`` heads of one token in place; cos, sin [1, HALF_PAD] float32."""
    for h0 in range(0, num_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        mask = (heads < num_heads)[:, None] & half_mask[None, :]
        first = ptr + token * tok_stride + heads[:, None] * head_stride + half_cols[None, :]
        x1 = tl.load(first, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(first + HALF, mask=mask, other=0.0).to(tl.float32)
        tl.store(first, (x1 * cos - x2 * sin).to(ptr.dtype.element_ty), mask=mask)
        tl.store(first + HALF, (x2 * cos + x1 * sin).to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def cos_sin_of(cache_ptr, cache_stride, position, cols, half_mask, HALF: tl.constexpr):
    """(cos, sin) of ``position``, each [1, HALF_PAD] float32 (zeros past HALF)."""
    row = cache_ptr + position * cache_stride
    cos = tl.load(row + cols, mask=half_mask, other=0.0)[None, :]
    sin = tl.load(row + HALF + cols, mask=half_mask, other=0.0)[None, :]
    return cos, sin


@triton.jit
def _rotary_kernel(pos_ptr, q_ptr, q_tok_stride, q_head_stride, k_ptr, k_tok_stride,
                   k_head_stride, cache_ptr, cache_stride, num_q_heads, num_k_heads,
                   HALF: tl.constexpr, HALF_PAD: tl.constexpr, BLOCK_H: tl.constexpr,
                   PDL: tl.constexpr):
    pdl_prologue(PDL)
    token = tl.program_id(0).to(tl.int64)
    position = tl.load(pos_ptr + token)
    cols = tl.arange(0, HALF_PAD)
    half_mask = cols < HALF
    cos, sin = cos_sin_of(cache_ptr, cache_stride, position, cols, half_mask, HALF)
    rotate_heads(q_ptr, q_tok_stride, q_head_stride, token, num_q_heads, cos, sin, cols,
                 half_mask, HALF, BLOCK_H)
    rotate_heads(k_ptr, k_tok_stride, k_head_stride, token, num_k_heads, cos, sin, cols,
                 half_mask, HALF, BLOCK_H)


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64, q [T, Hq, D], k [T, Hk, D], cos_sin_cache [max_pos, D] float32
    -> (q, k) rotated in place (views with strided tokens and heads are fine)."""
    q, k = last_dim_contiguous(q), last_dim_contiguous(k)
    num_tokens, num_q_heads, dim = q.shape
    half = dim // 2
    if num_tokens:
        _rotary_kernel[(num_tokens,)](
            positions, q, q.stride(0), q.stride(1), k, k.stride(0), k.stride(1),
            cos_sin_cache, cos_sin_cache.stride(0), num_q_heads, k.shape[1],
            HALF=half, HALF_PAD=triton.next_power_of_2(half),
            BLOCK_H=min(16, triton.next_power_of_2(max(num_q_heads, k.shape[1]))), num_warps=4,
            **pdl_options(q.device))
    return q, k
