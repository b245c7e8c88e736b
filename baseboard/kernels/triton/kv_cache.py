"""Scatter the step's new keys and values into the paged cache, one program per token;
``rotary_write_kv`` also applies the rotary embedding to q and k on the way (the
``rotary_embedding`` fusion of the attention op), one launch instead of two."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import last_dim_contiguous, pdl_options, pdl_prologue
from .rotary import cos_sin_of, rotate_heads


@triton.jit
def _write_kv_kernel(k_ptr, k_tok_stride, k_head_stride, v_ptr, v_tok_stride, v_head_stride,
                     cache_ptr, kv_stride, block_stride, slot_stride, head_stride, slot_ptr,
                     num_kv_heads, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
                     PAGE: tl.constexpr, BLOCK_H: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token).to(tl.int64)
    if slot >= 0:  # a negative slot marks a padding token (CUDA-graph batches)
        heads = tl.arange(0, BLOCK_H)
        dims = tl.arange(0, D_PAD)
        dst = cache_ptr + (slot // PAGE) * block_stride + (slot % PAGE) * slot_stride
        for h0 in range(0, num_kv_heads, BLOCK_H):
            h = h0 + heads
            mask = (h < num_kv_heads)[:, None] & (dims < HEAD_DIM)[None, :]
            k = tl.load(k_ptr + token * k_tok_stride + h[:, None] * k_head_stride + dims[None, :],
                        mask=mask)
            v = tl.load(v_ptr + token * v_tok_stride + h[:, None] * v_head_stride + dims[None, :],
                        mask=mask)
            at = dst + h[:, None] * head_stride + dims[None, :]
            tl.store(at, k.to(cache_ptr.dtype.element_ty), mask=mask)
            tl.store(at + kv_stride, v.to(cache_ptr.dtype.element_ty), mask=mask)


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """k, v [T, Hk, D] -> kv_cache [2, num_blocks, block_size, Hk, D] at slot_mapping [T]
    (slot = block * block_size + offset; negative slots are skipped)."""
    num_tokens, num_kv_heads, head_dim = k.shape
    if not num_tokens:
        return
    _write_kv_kernel[(num_tokens,)](
        k, k.stride(0), k.stride(1), v, v.stride(0), v.stride(1),
        kv_cache, kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        slot_mapping, num_kv_heads, HEAD_DIM=head_dim, D_PAD=triton.next_power_of_2(head_dim),
        PAGE=kv_cache.shape[2], BLOCK_H=min(8, triton.next_power_of_2(num_kv_heads)),
        num_warps=4, **pdl_options(k.device))


@triton.jit
def _rotary_write_kv_kernel(pos_ptr, cos_sin_ptr, cos_sin_stride,
                            q_ptr, q_tok_stride, q_head_stride,
                            k_ptr, k_tok_stride, k_head_stride,
                            v_ptr, v_tok_stride, v_head_stride,
                            cache_ptr, kv_stride, block_stride, slot_stride, head_stride,
                            slot_ptr, num_q_heads, num_kv_heads, HALF: tl.constexpr,
                            HALF_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_H: tl.constexpr,
                            PDL: tl.constexpr):
    pdl_prologue(PDL)
    token = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, HALF_PAD)
    half_mask = cols < HALF
    cos, sin = cos_sin_of(cos_sin_ptr, cos_sin_stride, tl.load(pos_ptr + token), cols,
                          half_mask, HALF)
    rotate_heads(q_ptr, q_tok_stride, q_head_stride, token, num_q_heads, cos, sin, cols,
                 half_mask, HALF, BLOCK_H)
    slot = tl.load(slot_ptr + token).to(tl.int64)  # negative: a padding token, not cached
    dst = cache_ptr + (slot // PAGE) * block_stride + (slot % PAGE) * slot_stride
    for h0 in range(0, num_kv_heads, BLOCK_H):
        h = h0 + tl.arange(0, BLOCK_H)
        mask = (h < num_kv_heads)[:, None] & half_mask[None, :]
        cached = mask & (h.to(tl.int64) * 0 + slot >= 0)[:, None]
        k1_at = k_ptr + token * k_tok_stride + h[:, None] * k_head_stride + cols[None, :]
        k1 = tl.load(k1_at, mask=mask, other=0.0).to(tl.float32)
        k2 = tl.load(k1_at + HALF, mask=mask, other=0.0).to(tl.float32)
        # rounded to k's dtype first, as the rotation in place and then the write round it
        r1 = (k1 * cos - k2 * sin).to(k_ptr.dtype.element_ty)
        r2 = (k2 * cos + k1 * sin).to(k_ptr.dtype.element_ty)
        # k is rotated in place too: a prefill over the step's own keys reads it
        tl.store(k1_at, r1, mask=mask)
        tl.store(k1_at + HALF, r2, mask=mask)
        at = dst + h[:, None] * head_stride + cols[None, :]
        tl.store(at, r1.to(cache_ptr.dtype.element_ty), mask=cached)
        tl.store(at + HALF, r2.to(cache_ptr.dtype.element_ty), mask=cached)
        v1_at = v_ptr + token * v_tok_stride + h[:, None] * v_head_stride + cols[None, :]
        tl.store(at + kv_stride, tl.load(v1_at, mask=cached).to(cache_ptr.dtype.element_ty),
                 mask=cached)
        tl.store(at + kv_stride + HALF,
                 tl.load(v1_at + HALF, mask=cached).to(cache_ptr.dtype.element_ty), mask=cached)


def rotary_write_kv(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                    v: torch.Tensor, cos_sin_cache: torch.Tensor, kv_cache: torch.Tensor,
                    slot_mapping: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq, D] and k [T, Hk, D] in place (rotate-half, cos_sin_cache
    [max_pos, D] float32 at positions [T] int64) and write k and v [T, Hk, D] to kv_cache
    [2, num_blocks, block_size, Hk, D] at slot_mapping [T] (negative slots are skipped), in
    one launch. Returns the rotated (q, k)."""
    q, k, v = last_dim_contiguous(q), last_dim_contiguous(k), last_dim_contiguous(v)
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    if not num_tokens:
        return q, k
    half = head_dim // 2
    _rotary_write_kv_kernel[(num_tokens,)](
        positions, cos_sin_cache, cos_sin_cache.stride(0),
        q, q.stride(0), q.stride(1), k, k.stride(0), k.stride(1), v, v.stride(0), v.stride(1),
        kv_cache, kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        slot_mapping, num_q_heads, num_kv_heads, HALF=half,
        HALF_PAD=triton.next_power_of_2(half), PAGE=kv_cache.shape[2],
        BLOCK_H=min(16, triton.next_power_of_2(max(num_q_heads, num_kv_heads))), num_warps=4,
        **pdl_options(q.device))
    return q, k
