"""Prefill attention over the paged cache: causal, variable length, with a cached prefix.

One program takes a tile of query tokens of one sequence and all the query heads of one KV
head (rows = tokens x group), so each key tile is read once per group. The query tokens of
a sequence are the last ``query_len`` positions of its context. Key tiles wholly before the
tile's first query run without masks; only the tiles on the diagonal are masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .common import pdl_options, pdl_prologue
from .paged import attend_tile


@dataclass(frozen=True)
class PrefillConfig:
    block_m: int  # rows of one program: BLOCK_M // group_pad query tokens x group_pad heads
    block_n: int  # keys per step
    num_warps: int
    num_stages: int


def prefill_config(d_pad: int, group_pad: int) -> PrefillConfig:
    """Tile shapes by padded head size (for D128 the fastest of nine in benchmarks/ops.py
    --sweep; docs/benchmarks.md)."""
    if d_pad <= 128:
        config = PrefillConfig(128, 64, 4, 3)
    else:
        config = PrefillConfig(64, 32, 4, 2)
    return PrefillConfig(max(config.block_m, group_pad), config.block_n, config.num_warps,
                         config.num_stages)


@triton.jit
def query_tile(query_start_ptr, num_seqs, BLOCK_Q: tl.constexpr):
    """(sequence, its first query among the prefill tokens, its query count, the index of
    this program's tile of BLOCK_Q queries within it). Sequence i owns the tiles from
    query_start[i] // BLOCK_Q + i on (a bound that leaves a few idle tiles but needs no
    host-side table): a binary search finds the owner. The last tiles of a sequence see the
    most keys, so they start first."""
    tile = tl.num_programs(0) - 1 - tl.program_id(0)
    lo = tl.zeros([], tl.int32)
    hi = num_seqs + lo
    while lo < hi:
        mid = (lo + hi) // 2
        if tl.load(query_start_ptr + mid) // BLOCK_Q + mid <= tile:
            lo = mid + 1
        else:
            hi = mid
    seq = lo - 1
    q_start = tl.load(query_start_ptr + seq)
    q_len = tl.load(query_start_ptr + seq + 1) - q_start
    return seq, q_start, q_len, tile - q_start // BLOCK_Q - seq


# Counts that change from step to step are not specialized on (Triton would compile a
# variant for each of 1, multiples of 16 and others: a stall of seconds mid-serving).
@triton.jit(do_not_specialize=["num_seqs", "token_offset"])
def _prefill_kernel(q_ptr, q_tok_stride, q_head_stride, o_ptr, o_tok_stride, o_head_stride,
                    cache_ptr, kv_stride, block_stride, slot_stride, head_stride,
                    tables_ptr, table_stride, query_start_ptr, seq_lens_ptr, num_seqs,
                    token_offset, qk_scale,
                    GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                    D_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_M: tl.constexpr,
                    BLOCK_N: tl.constexpr, UPCAST: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    BLOCK_Q: tl.constexpr = BLOCK_M // GROUP_PAD
    kv_head = tl.program_id(1)
    seq, q_start, q_len, q_tile = query_tile(query_start_ptr, num_seqs, BLOCK_Q)
    if q_tile * BLOCK_Q < q_len:
        context = tl.load(seq_lens_ptr + seq)
        rows = tl.arange(0, BLOCK_M)
        token = q_tile * BLOCK_Q + rows // GROUP_PAD  # among the sequence's queries
        head = kv_head * GROUP + rows % GROUP_PAD
        row_ok = (token < q_len) & (rows % GROUP_PAD < GROUP)
        dims = tl.arange(0, D_PAD)
        dim_ok = dims < HEAD_DIM
        step_token = (token_offset + q_start + token).to(tl.int64)
        q = tl.load(q_ptr + step_token[:, None] * q_tok_stride + head[:, None] * q_head_stride
                    + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        position = context - q_len + token
        table = tables_ptr + seq.to(tl.int64) * table_stride
        k_base = cache_ptr + kv_head.to(tl.int64) * head_stride
        v_base = k_base + kv_stride
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        first_query = context - q_len + q_tile * BLOCK_Q
        end = tl.minimum(context, first_query + BLOCK_Q)
        unmasked_end = first_query // BLOCK_N * BLOCK_N
        for start in range(0, unmasked_end, BLOCK_N):
            m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, start, table, k_base, v_base,
                                        block_stride, slot_stride, position, context, dims,
                                        dim_ok, qk_scale, PAGE, BLOCK_N, D_PAD != HEAD_DIM,
                                        False, UPCAST)
        for start in range(unmasked_end, end, BLOCK_N):
            m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, start, table, k_base, v_base,
                                        block_stride, slot_stride, position, context, dims,
                                        dim_ok, qk_scale, PAGE, BLOCK_N, D_PAD != HEAD_DIM,
                                        True, UPCAST)
        out = acc / l_i[:, None]
        tl.store(o_ptr + step_token[:, None] * o_tok_stride + head[:, None] * o_head_stride
                 + dims[None, :], out.to(o_ptr.dtype.element_ty),
                 mask=row_ok[:, None] & dim_ok[None, :])


def prefill_attention(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                      block_tables: torch.Tensor, query_start: torch.Tensor,
                      seq_lens: torch.Tensor, num_tokens: int, token_offset: int,
                      qk_scale: float, config: PrefillConfig, upcast: bool) -> None:
    """Attention of the prefill tokens q[token_offset:token_offset + num_tokens] into out.

    q, out [T, Hq, D]; kv_cache [2, num_blocks, block_size, Hk, D]; block_tables [P, W],
    query_start [P + 1] (offsets among the prefill tokens, from 0) and seq_lens [P] int32 of
    the P prefill sequences; qk_scale = softmax scale * log2(e).
    """
    num_seqs = seq_lens.shape[0]
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    group = num_q_heads // num_kv_heads
    group_pad = triton.next_power_of_2(group)
    block_q = config.block_m // group_pad
    grid = (num_tokens // block_q + num_seqs, num_kv_heads)
    _prefill_kernel[grid](
        q, q.stride(0), q.stride(1), out, out.stride(0), out.stride(1),
        kv_cache, kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables, block_tables.stride(0), query_start, seq_lens, num_seqs, token_offset,
        qk_scale, GROUP=group, GROUP_PAD=group_pad, HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), PAGE=kv_cache.shape[2], BLOCK_M=config.block_m,
        BLOCK_N=config.block_n, UPCAST=upcast, num_warps=config.num_warps,
        num_stages=config.num_stages, **pdl_options(q.device))
