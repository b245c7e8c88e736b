"""Scatter the step's new keys and values into the paged cache, one program per token."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import pdl_options, pdl_prologue


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
