"""The inner step shared by the prefill and decode kernels: one tile of keys from the paged
cache, folded into a flash-attention running softmax (base-2 exponents)."""

from __future__ import annotations

import triton
import triton.language as tl

from .common import mma


@triton.jit
def attend_tile(q, m_i, l_i, acc, start, table, k_base, v_base, block_stride, slot_stride,
                position, limit, dims, dim_ok, qk_scale,
                PAGE: tl.constexpr, BLOCK_N: tl.constexpr, PAD_D: tl.constexpr,
                MASK: tl.constexpr, UPCAST: tl.constexpr):
    """Keys start..start+BLOCK_N-1. q [M, D_PAD]; m_i, l_i [M]; acc [M, D_PAD] float32.
    With MASK, row r sees key n only when n <= position[r] and n < limit; without, every
    key of the tile is visible to every row."""
    keys = start + tl.arange(0, BLOCK_N)
    if MASK:
        key_ok = keys < limit
        blocks = tl.load(table + keys // PAGE, mask=key_ok, other=0)
    else:
        blocks = tl.load(table + keys // PAGE)
    slots = blocks.to(tl.int64) * block_stride + (keys % PAGE) * slot_stride
    k_ptrs = k_base + slots[None, :] + dims[:, None]  # [D_PAD, BLOCK_N]
    v_ptrs = v_base + slots[:, None] + dims[None, :]  # [BLOCK_N, D_PAD]
    # masked keys read block 0 (always mapped); their scores are dropped below, and their
    # values, which may be uninitialised (NaN), are zeroed
    if PAD_D:
        k = tl.load(k_ptrs, mask=dim_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs)
    scores = mma(q, k, tl.zeros([q.shape[0], BLOCK_N], tl.float32), UPCAST)
    if MASK:
        visible = (keys[None, :] <= position[:, None]) & key_ok[None, :]
        scores = tl.where(visible, scores, float("-inf"))
        v = tl.load(v_ptrs, mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
    elif PAD_D:
        v = tl.load(v_ptrs, mask=dim_ok[None, :], other=0.0)
    else:
        v = tl.load(v_ptrs)
    return fold_tile(scores, v, m_i, l_i, acc, qk_scale, UPCAST)


@triton.jit
def fold_tile(scores, v, m_i, l_i, acc, qk_scale, UPCAST: tl.constexpr):
    """Fold a tile's raw scores [M, N] and values [N, D_PAD] into the running maximum m_i,
    sum l_i and output acc. The scale is applied inside the exponent (one fused
    multiply-add per score)."""
    m_new = tl.maximum(m_i, tl.max(scores, 1) * qk_scale)
    alpha = tl.exp2(m_i - m_new)
    p = tl.exp2(scores * qk_scale - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = mma(p.to(v.dtype), v, acc * alpha[:, None], UPCAST)
    return m_new, l_i, acc

