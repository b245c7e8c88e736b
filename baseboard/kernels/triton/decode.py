"""Decode attention over the paged cache, split over the context (flash-decoding).

Each program takes one sequence, one KV head (all its query heads as the rows of one
tensor-core tile) and one partition of the context. A sequence's context is cut into
partitions of at least ``min_partition`` keys, so a short context is one partition and its
program writes the output directly; with several, the last of a (sequence, KV head)'s
programs to finish (an atomic counter says which, as in splitk.py) merges their partial
results. Either way a decode is one launch. The partition count per sequence is fixed by
the batch size (for CUDA graphs); programs past a sequence's partitions return at once.

With ``rotary`` (the rotary_embedding fusion) the kernel also rotates q and the new key,
and the program whose partition holds the new position writes the key and value to the
cache before reading it: a decode step needs no separate KV write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional

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
    min_partition: int = 256  # keys a partition holds at least


# 32 keys a step and 2 stages keep a program's shared memory small, so the split grid runs
# in one wave; 64 keys and 3 stages left a tail wave and measured slower
# (docs/benchmarks.md, "Measurements behind the code").
DECODE_CONFIG = DecodeConfig(block_n=32, num_warps=4, num_stages=2, max_splits=32)


class DecodeRotary(NamedTuple):
    """What the fused form needs: the decode tokens' positions [B] int64, the cos/sin
    cache [max_pos, D] float32, their unrotated keys and values [B, Hk, D] (strided views
    are fine) and cache slots [B] (negative: not written)."""
    positions: torch.Tensor
    cos_sin_cache: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    slot_mapping: torch.Tensor


def decode_splits(num_seqs: int, num_kv_heads: int, config: DecodeConfig,
                  target_programs: int) -> int:
    """Partitions per sequence so that about ``target_programs`` programs run. It depends on
    the batch size alone, so a captured CUDA graph stays right as the contexts grow."""
    want = triton.cdiv(target_programs, max(num_seqs * num_kv_heads, 1))
    return max(1, min(want, config.max_splits))


@triton.jit
def _rotated(ptr, dims, dim_ok, cos, sin, HALF: tl.constexpr):
    """The rotate-half rotation of the vectors at ``ptr`` (rows by the pointer's shape,
    ``dims`` along the last axis), rounded to their dtype as the separate kernel rounds it."""
    first = dims < HALF
    x = tl.load(ptr, mask=dim_ok, other=0.0).to(tl.float32)
    partner = tl.load(ptr + tl.where(first, HALF, -HALF), mask=dim_ok, other=0.0).to(tl.float32)
    return (x * cos + tl.where(first, -partner, partner) * sin).to(ptr.dtype.element_ty)


@triton.jit
def _decode_kernel(q_ptr, q_tok_stride, q_head_stride, o_ptr, o_tok_stride, o_head_stride,
                   part_o_ptr, part_m_ptr, part_l_ptr, counters_ptr,
                   cache_ptr, kv_stride, block_stride, slot_stride, head_stride,
                   tables_ptr, table_stride, seq_lens_ptr, qk_scale, num_q_heads,
                   pos_ptr, cos_sin_ptr, cos_sin_stride, k_ptr, k_tok_stride, k_head_stride,
                   v_ptr, v_tok_stride, v_head_stride, slot_ptr,
                   GROUP: tl.constexpr, GROUP_PAD: tl.constexpr, HEAD_DIM: tl.constexpr,
                   D_PAD: tl.constexpr, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                   MIN_PARTITION: tl.constexpr, ROTARY: tl.constexpr, UPCAST: tl.constexpr,
                   PDL: tl.constexpr):
    pdl_prologue(PDL)
    seq = tl.program_id(0).to(tl.int64)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context = tl.load(seq_lens_ptr + seq)
    # equal whole tiles, one partition per split, but no fewer than MIN_PARTITION keys
    partition = tl.maximum(tl.cdiv(tl.cdiv(context, BLOCK_N), tl.num_programs(2)) * BLOCK_N,
                           MIN_PARTITION)
    parts = tl.cdiv(context, partition)
    start = split * partition
    if split < parts:
        end = tl.minimum(context, start + partition)
        rows = tl.arange(0, GROUP_PAD)
        head = kv_head * GROUP + rows
        row_ok = rows < GROUP
        dims = tl.arange(0, D_PAD)
        dim_ok = dims < HEAD_DIM
        q_at = q_ptr + seq * q_tok_stride + head[:, None] * q_head_stride + dims[None, :]
        q_ok = row_ok[:, None] & dim_ok[None, :]
        k_base = cache_ptr + kv_head.to(tl.int64) * head_stride
        v_base = k_base + kv_stride
        if ROTARY:
            HALF: tl.constexpr = HEAD_DIM // 2
            cs_row = cos_sin_ptr + tl.load(pos_ptr + seq) * cos_sin_stride + dims % HALF
            cos = tl.load(cs_row, mask=dim_ok, other=0.0)
            sin = tl.load(cs_row + HALF, mask=dim_ok, other=0.0)
            q = _rotated(q_at, dims[None, :], q_ok, cos[None, :], sin[None, :], HALF)
            slot = tl.load(slot_ptr + seq).to(tl.int64)
            if (split == parts - 1) & (slot >= 0):  # this partition ends at the new key
                key = _rotated(k_ptr + seq * k_tok_stride + kv_head * k_head_stride + dims,
                               dims, dim_ok, cos, sin, HALF)
                value = tl.load(v_ptr + seq * v_tok_stride + kv_head * v_head_stride + dims,
                                mask=dim_ok)
                at = k_base + (slot // PAGE) * block_stride + (slot % PAGE) * slot_stride + dims
                tl.store(at, key.to(cache_ptr.dtype.element_ty), mask=dim_ok)
                tl.store(at + kv_stride, value.to(cache_ptr.dtype.element_ty), mask=dim_ok)
                tl.debug_barrier()  # the loop below reads them back, in other threads
        else:
            q = tl.load(q_at, mask=q_ok, other=0.0)
        table = tables_ptr + seq * table_stride
        m_i = tl.full([GROUP_PAD], float("-inf"), tl.float32)
        l_i = tl.zeros([GROUP_PAD], tl.float32)
        acc = tl.zeros([GROUP_PAD, D_PAD], tl.float32)
        last = tl.zeros([GROUP_PAD], tl.int32) + end - 1  # every row sees keys < end
        full_end = start + (end - start) // BLOCK_N * BLOCK_N
        for tile in range(start, full_end, BLOCK_N):
            m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, tile, table, k_base, v_base,
                                        block_stride, slot_stride, last, end, dims, dim_ok,
                                        qk_scale, PAGE, BLOCK_N, D_PAD != HEAD_DIM, False,
                                        UPCAST)
        for tile in range(full_end, end, BLOCK_N):
            m_i, l_i, acc = attend_tile(q, m_i, l_i, acc, tile, table, k_base, v_base,
                                        block_stride, slot_stride, last, end, dims, dim_ok,
                                        qk_scale, PAGE, BLOCK_N, D_PAD != HEAD_DIM, True,
                                        UPCAST)
        o_at = o_ptr + seq * o_tok_stride + head[:, None] * o_head_stride + dims[None, :]
        if parts == 1:
            tl.store(o_at, (acc / l_i[:, None]).to(o_ptr.dtype.element_ty), mask=q_ok)
        else:
            first = (seq * num_q_heads + head) * tl.num_programs(2)  # the rows' split 0
            tl.store(part_o_ptr + (first + split)[:, None] * D_PAD + dims[None, :],
                     acc / l_i[:, None], mask=row_ok[:, None])
            tl.store(part_m_ptr + first + split, m_i, mask=row_ok)
            tl.store(part_l_ptr + first + split, l_i, mask=row_ok)
            # every thread's partial is stored before one thread announces the arrival
            tl.debug_barrier()
            counter = counters_ptr + seq * tl.num_programs(1) + kv_head
            if tl.atomic_add(counter, 1, sem="acq_rel") == parts - 1:
                _merge(part_o_ptr, part_m_ptr, part_l_ptr, first, parts, row_ok, dims, o_at,
                       q_ok, D_PAD)
                tl.atomic_xchg(counter, 0)  # ready for the next call (and graph replay)


@triton.jit
def _merge(part_o_ptr, part_m_ptr, part_l_ptr, first, parts, row_ok, dims, o_at, o_ok,
           D_PAD: tl.constexpr):
    """The output of ``parts`` partials (rows' split 0 at ``first``), each weighed by its
    sum of exponentials relative to the largest maximum. .cg reads from L2, where the
    other programs' stores are."""
    top = tl.load(part_m_ptr + first, mask=row_ok, other=0.0, cache_modifier=".cg")
    for split in range(1, parts):
        top = tl.maximum(top, tl.load(part_m_ptr + first + split, mask=row_ok, other=0.0,
                                      cache_modifier=".cg"))
    total = tl.zeros_like(top)
    out = tl.zeros([top.shape[0], D_PAD], tl.float32)
    for split in range(parts):
        weight = tl.exp2(tl.load(part_m_ptr + first + split, mask=row_ok, other=0.0,
                                 cache_modifier=".cg") - top) \
            * tl.load(part_l_ptr + first + split, mask=row_ok, other=0.0, cache_modifier=".cg")
        part = tl.load(part_o_ptr + (first + split)[:, None] * D_PAD + dims[None, :],
                       mask=row_ok[:, None], other=0.0, cache_modifier=".cg")
        out += part * weight[:, None]
        total += weight
    tl.store(o_at, (out / tl.where(row_ok, total, 1.0)[:, None]).to(o_at.dtype.element_ty),
             mask=o_ok)


def decode_workspace_rows(max_num_seqs: int, num_kv_heads: int, config: DecodeConfig,
                          target_programs: int) -> int:
    """The most (sequence, partition) pairs any batch of up to ``max_num_seqs`` decodes uses."""
    return max(b * decode_splits(b, num_kv_heads, config, target_programs)
               for b in range(1, max_num_seqs + 1))


def decode_attention(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                     block_tables: torch.Tensor, seq_lens: torch.Tensor, splits: int,
                     workspace: tuple[torch.Tensor, ...], qk_scale: float,
                     config: DecodeConfig, upcast: bool,
                     rotary: Optional[DecodeRotary] = None) -> None:
    """Attention of the B decode tokens q[:B] (one per sequence) into out[:B].

    q, out [T, Hq, D]; kv_cache [2, num_blocks, block_size, Hk, D]; block_tables [B, W] and
    seq_lens [B] int32; ``workspace``: flat float32 (partials, maxima, sums) with room for
    B * Hq * splits rows (of D_PAD values for the partials), and int32 zeros (arrival
    counters, left zero by every call) for B * Hk (sequence, KV head) pairs. With
    ``rotary``, q and the keys are rotated here and the keys and values written (see the
    module doc); without, the cache already holds them.
    """
    num_seqs = seq_lens.shape[0]
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    num_kv_heads = kv_cache.shape[3]
    group = num_q_heads // num_kv_heads
    if rotary is None:
        k = v = q  # not read
        rotary_args = (seq_lens, q, 0, k, 0, 0, v, 0, 0, seq_lens)
    else:
        k, v, cos_sin = rotary.k, rotary.v, rotary.cos_sin_cache
        rotary_args = (rotary.positions, cos_sin, cos_sin.stride(0), k, k.stride(0),
                       k.stride(1), v, v.stride(0), v.stride(1), rotary.slot_mapping)
    part_o, part_m, part_l, counters = workspace
    _decode_kernel[(num_seqs, num_kv_heads, splits)](
        q, q.stride(0), q.stride(1), out, out.stride(0), out.stride(1), part_o, part_m, part_l,
        counters, kv_cache, kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2),
        kv_cache.stride(3), block_tables, block_tables.stride(0), seq_lens, qk_scale,
        num_q_heads, *rotary_args,
        GROUP=group, GROUP_PAD=max(16, triton.next_power_of_2(group)), HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), PAGE=kv_cache.shape[2],
        BLOCK_N=config.block_n, MIN_PARTITION=config.min_partition,
        ROTARY=rotary is not None, UPCAST=upcast, num_warps=config.num_warps,
        num_stages=config.num_stages, **pdl_options(q.device))
