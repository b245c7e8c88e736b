"""Prefill attention over the step's own keys and values: causal, variable length, for
steps whose sequences have nothing cached yet (a prompt's first step).

The keys and values are read from the projection's output, where each token's heads sit at
one stride, instead of through the block table: with no per-key block lookup the loads are
plain strided tiles that Triton pipelines. One program takes a tile of query tokens of one
sequence and one query head; tiles wholly below the diagonal run without masks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import mma, pdl_options, pdl_prologue
from .paged import fold_tile
from .prefill import query_tile
from .records import interpreting

# (BLOCK_M, BLOCK_N, num_warps, num_stages), tuned per head size and group on first use
_TILES = ((128, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 128, 8, 2),
          (128, 64, 8, 4), (64, 64, 4, 3), (128, 32, 4, 4))
_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s)
            for m, n, w, s in (_TILES[-2:-1] if interpreting() else _TILES)]


@triton.jit
def _dense_tile(q, m_i, l_i, acc, start, k_ptrs, v_ptrs, k_tok_stride, v_tok_stride, rows,
                q_len, qk_scale, dim_ok, BLOCK_N: tl.constexpr, PAD_D: tl.constexpr,
                MASK: tl.constexpr, UPCAST: tl.constexpr):
    """Keys start..start+BLOCK_N-1 of the sequence folded into the running softmax (see
    paged.attend_tile); with MASK, row r sees key n only when n <= r and n < q_len."""
    keys = (start + tl.arange(0, BLOCK_N)).to(tl.int64)
    k_offsets = keys * k_tok_stride
    v_offsets = keys * v_tok_stride
    if MASK:
        key_ok = keys < q_len
        k = tl.load(k_ptrs + k_offsets[None, :], mask=key_ok[None, :] & dim_ok[:, None],
                    other=0.0)
    elif PAD_D:
        k = tl.load(k_ptrs + k_offsets[None, :], mask=dim_ok[:, None], other=0.0)
    else:
        k = tl.load(k_ptrs + k_offsets[None, :])
    scores = mma(q, k, tl.zeros([q.shape[0], BLOCK_N], tl.float32), UPCAST)
    if MASK:
        visible = (keys[None, :] <= rows[:, None]) & key_ok[None, :]
        scores = tl.where(visible, scores, float("-inf"))
        v = tl.load(v_ptrs + v_offsets[:, None], mask=key_ok[:, None] & dim_ok[None, :],
                    other=0.0)
    elif PAD_D:
        v = tl.load(v_ptrs + v_offsets[:, None], mask=dim_ok[None, :], other=0.0)
    else:
        v = tl.load(v_ptrs + v_offsets[:, None])
    return fold_tile(scores, v, m_i, l_i, acc, qk_scale, UPCAST)


@triton.autotune(configs=_CONFIGS, key=["HEAD_DIM", "GROUP"])
@triton.jit(do_not_specialize=["num_seqs", "token_offset"])
def _dense_prefill_kernel(q_ptr, q_tok_stride, q_head_stride, k_ptr, k_tok_stride,
                          k_head_stride, v_ptr, v_tok_stride, v_head_stride, o_ptr,
                          o_tok_stride, o_head_stride, query_start_ptr,
                          num_seqs, token_offset, qk_scale, GROUP: tl.constexpr,
                          HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, UPCAST: tl.constexpr,
                          PDL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pdl_prologue(PDL)
    head = tl.program_id(1)
    _, q_start, q_len, q_tile = query_tile(query_start_ptr, num_seqs, BLOCK_M)
    if q_tile * BLOCK_M < q_len:
        rows = q_tile * BLOCK_M + tl.arange(0, BLOCK_M)
        row_ok = rows < q_len
        dims = tl.arange(0, D_PAD)
        dim_ok = dims < HEAD_DIM
        tokens = (token_offset + q_start + rows).to(tl.int64)
        q = tl.load(q_ptr + tokens[:, None] * q_tok_stride + head * q_head_stride
                    + dims[None, :], mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        kv_head = head // GROUP
        first = (token_offset + q_start).to(tl.int64)
        k_ptrs = k_ptr + first * k_tok_stride + kv_head * k_head_stride + dims[:, None]
        v_ptrs = v_ptr + first * v_tok_stride + kv_head * v_head_stride + dims[None, :]
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        first_row = q_tile * BLOCK_M
        end = tl.minimum(q_len, first_row + BLOCK_M)
        unmasked_end = first_row // BLOCK_N * BLOCK_N
        for start in range(0, unmasked_end, BLOCK_N):
            m_i, l_i, acc = _dense_tile(q, m_i, l_i, acc, start, k_ptrs, v_ptrs, k_tok_stride,
                                        v_tok_stride, rows, q_len, qk_scale, dim_ok, BLOCK_N,
                                        D_PAD != HEAD_DIM, False, UPCAST)
        for start in range(unmasked_end, end, BLOCK_N):
            m_i, l_i, acc = _dense_tile(q, m_i, l_i, acc, start, k_ptrs, v_ptrs, k_tok_stride,
                                        v_tok_stride, rows, q_len, qk_scale, dim_ok, BLOCK_N,
                                        D_PAD != HEAD_DIM, True, UPCAST)
        out = acc / l_i[:, None]
        tl.store(o_ptr + tokens[:, None] * o_tok_stride + head * o_head_stride + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])


def dense_prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            out: torch.Tensor, query_start: torch.Tensor, num_seqs: int,
                            num_tokens: int, token_offset: int, qk_scale: float,
                            upcast: bool) -> None:
    """Attention of the prefill tokens q[token_offset:token_offset + num_tokens] into out,
    over k and v of the same tokens (every prefill sequence starts at position 0).

    q, out [T, Hq, D]; k, v [T, Hk, D] (strided views are fine, the last dim dense);
    query_start [P + 1] int32 offsets among the prefill tokens, from 0.
    """
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    grid = lambda meta: (num_tokens // meta["BLOCK_M"] + num_seqs, num_q_heads)  # noqa: E731
    _dense_prefill_kernel[grid](
        q, q.stride(0), q.stride(1), k, k.stride(0), k.stride(1), v, v.stride(0), v.stride(1),
        out, out.stride(0), out.stride(1), query_start, num_seqs, token_offset, qk_scale,
        GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), UPCAST=upcast, **pdl_options(q.device))
