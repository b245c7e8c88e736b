"""Decode attention over the paged cache, split over the context (flash-decoding).

Each program takes one sequence, one KV head (all its query heads as the rows of one
tensor-core tile) and one partition of the context; when there are several partitions a
second kernel merges their partial results. Splitting lets a few long sequences still fill
the GPU. A partition past a sequence's context leaves an empty partial that the merge
weighs zero, so a fixed partition count (for CUDA graphs) stays correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .common import pdl_options, pdl_prologue
from .paged import attend_tile


@dataclass(frozen=True)
class DecodeConfig:
    block_n: int  # keys per step
    num_warps: int
    num_stages: int
    max_splits: int  # partitions per sequence at most


# 32 keys a step and 2 stages keep a program's shared memory small, so the split grid runs
# in one wave; 64 keys and 3 stages left a tail wave and measured slower
# (docs/benchmarks.md, "Measurements behind the code").
DECODE_CONFIG = DecodeConfig(block_n=32, num_warps=4, num_stages=2, max_splits=32)


def decode_splits(num_seqs: int, num_kv_heads: int, config: DecodeConfig,
                  target_programs: int) -> int:
    """Partitions per sequence so that about ``target_programs`` programs run. It depends on
    the batch size alone, so a captured CUDA graph stays right as the contexts grow."""
    want = triton.cdiv(target_programs, max(num_seqs * num_kv_heads, 1))
    return max(1, min(want, config.max_splits))


@triton.jit
def _decode_kernel(q_ptr, q_tok_stride, q_head_stride, o_ptr, o_tok_stride, o_head_stride,
                   part_o_ptr, part_m_ptr, part_l_ptr,
                   cache_ptr, kv_stride, block_stride, slot_stride, head_stride,
                   tables_ptr, table_stride, seq_lens_ptr, qk_scale, num_q_heads,
                   GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   D_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                   SPLIT: tl.constexpr, UPCAST: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context = tl.load(seq_lens_ptr + seq)
    # each sequence's own context is cut into equal whole tiles, one per split
    partition = tl.cdiv(tl.cdiv(context, BLOCK_N), tl.num_programs(2)) * BLOCK_N
    start = split * partition
    end = tl.minimum(context, start + partition)
    rows = tl.arange(0, GROUP_PAD)
    head = kv_head * GROUP + rows
    row_ok = rows < GROUP
    dims = tl.arange(0, D_PAD)
    dim_ok = dims < HEAD_DIM
    q = tl.load(q_ptr + seq * q_tok_stride + head[:, None] * q_head_stride + dims[None, :],
                mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
    table = tables_ptr + seq * table_stride
    k_base = cache_ptr + kv_head.to(tl.int64) * head_stride
    v_base = k_base + kv_stride
    m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
    l_i = tl.zeros([GROUP_PAD], tl.float32)
    acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
    last = tl.zeros([GROUP_PAD], tl.int32) + end - 1  # every row sees keys < end
    full_end = start + tl.maximum(end - start, 0) // BLOCK_N * BLOCK_N
    for tile in range(start, full_end, BLOCK_N):
        m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, tile, table, k_base, v_base, block_stride,
                                    slot_stride, last, end, dims, dim_ok, qk_scale, PAGE,
                                    BLOCK_N, D_PAD != HEAD_DIM, False, UPCAST)
    for tile in range(full_end, end, BLOCK_N):
        m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, tile, table, k_base, v_base, block_stride,
                                    slot_stride, last, end, dims, dim_ok, qk_scale, PAGE,
                                    BLOCK_N, D_PAD != HEAD_DIM, True, UPCAST)
    if SPLIT:
        # an empty partition stores zeros with m = -inf: the merge gives it weight 0
        out = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        part = (seq * num_q_heads + head) * tl.num_programs(2) + split
        tl.store(part_o_ptr + part[:, None] * D_PAD + dims[None, :], out, mask=row_ok[:, None])
        tl.store(part_m_ptr + part, m_i, mask=row_ok)
        tl.store(part_l_ptr + part, l_i, mask=row_ok)
    else:
        out = acc / l_i[:, None]
        tl.store(o_ptr + seq * o_tok_stride + head[:, None] * o_head_stride + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


@triton.jit(do_not_specialize=["num_splits"])  # changes with the batch size
def _merge_kernel(part_o_ptr, part_m_ptr, part_l_ptr, o_ptr, o_tok_stride, o_head_stride,
                  num_q_heads, num_splits, HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr,
                  SPLITS_PAD: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    seq = tl.program_id(0).to(tl.int64)
    head = tl.program_id(1)
    splits = tl.arange(0, SPLITS_PAD)
    split_ok = splits < num_splits
    part = (seq * num_q_heads + head) * num_splits + splits
    m = tl.load(part_m_ptr + part, mask=split_ok, other=float("-inf"))
    weight = tl.exp2(m - tl.max(m, 0)) * tl.load(part_l_ptr + part, mask=split_ok, other=0.0)
    dims = tl.arange(0, D_PAD)
    parts = tl.load(part_o_ptr + part[:, None] * D_PAD + dims[None, :], mask=split_ok[:, None],
                    other=0.0)
    out = tl.sum(parts * weight[:, None], 0) / tl.sum(weight, 0)
    tl.store(o_ptr + seq * o_tok_stride + head * o_head_stride + dims,
             out.to(o_ptr.dtype.element_ty), mask=dims < HEAD_DIM)


def decode_workspace_rows(max_num_seqs: int, num_kv_heads: int, config: DecodeConfig,
                          target_programs: int) -> int:
    """The most (sequence, partition) pairs any batch of up to ``max_num_seqs`` decodes uses."""
    return max(b * decode_splits(b, num_kv_heads, config, target_programs)
               for b in range(1, max_num_seqs + 1))


def decode_attention(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                     block_tables: torch.Tensor, seq_lens: torch.Tensor, splits: int,
                     workspace: tuple[torch.Tensor, ...], qk_scale: float,
                     config: DecodeConfig, upcast: bool) -> None:
    """Attention of the B decode tokens q[:B] (one per sequence) into out[:B].

    q, out [T, Hq, D]; kv_cache [2, num_blocks, block_size, Hk, D]; block_tables [B, W] and
    seq_lens [B] int32; ``workspace``: flat float32 (partials, maxima, sums) with room for
    B * Hq * splits rows (of D_PAD values for the partials).
    """
    num_seqs = seq_lens.shape[0]
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    group = num_q_heads // num_kv_heads
    d_pad = triton.next_power_of_2(head_dim)
    part_o, part_m, part_l = workspace
    _decode_kernel[(num_seqs, num_kv_heads, splits)](
        q, q.stride(0), q.stride(1), out, out.stride(0), out.stride(1), part_o, part_m, part_l,
        kv_cache, kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables, block_tables.stride(0), seq_lens, qk_scale, num_q_heads,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        D_PAD=d_pad, PAGE=kv_cache.shape[2], BLOCK_N=config.block_n, SPLIT=splits > 1,
        UPCAST=upcast, num_warps=config.num_warps, num_stages=config.num_stages,
        **pdl_options(q.device))
    if splits > 1:
        _merge_kernel[(num_seqs, num_q_heads)](
            part_o, part_m, part_l, out, out.stride(0), out.stride(1), num_q_heads, splits,
            HEAD_DIM=head_dim, D_PAD=d_pad, SPLITS_PAD=triton.next_power_of_2(splits),
            num_warps=4, **pdl_options(q.device))
