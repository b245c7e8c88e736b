"""Prefill attention over the step's own keys and values: causal, variable length, for
steps whose sequences have nothing cached yet (a prompt's first step).

The keys and values are read from the projection's output, where each token's heads sit at
one stride, instead of through the block table: with no per-key block lookup the loads are
plain strided tiles, fetched by the tensor-memory accelerator where there is one. One
program takes a tile of query tokens of one sequence and one query head; tiles wholly below
the diagonal run without masks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .common import mma, pdl_options, pdl_prologue
from .paged import fold_tile
from .prefill import query_tile
from .records import interpreting

# (BLOCK_M, BLOCK_N, num_warps, num_stages), tuned per head size and group on first use.
# For D128 on an H100 the first leads (B8 S2048 causal: 421 TFLOP/s with tensor descriptors,
# the next 412; the rest 300-400; benchmarks/ops.py --sweep); the others serve the other
# head sizes and the pointer path. The interpreter runs one, with several key tiles a query tile.
TILES = ((128, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3),
         (64, 32, 4, 2))
_INTERPRETER_TILES = ((128, 32, 4, 2),)


def _set_tile_shapes(nargs):
    """Autotune pre-hook: tensor descriptors copy tiles of the configuration being run."""
    if nargs["TMA"]:
        d_pad = nargs["D_PAD"]
        nargs["q"].block_shape = [nargs["BLOCK_M"], d_pad]
        nargs["k"].block_shape = [nargs["BLOCK_N"], d_pad]
        nargs["v"].block_shape = [nargs["BLOCK_N"], d_pad]


_CONFIGS = [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s,
                          pre_hook=_set_tile_shapes)
            for m, n, w, s in (_INTERPRETER_TILES if interpreting() else TILES)]


@triton.jit
def _load_rows(src, tok_stride, token, col, valid, BLOCK: tl.constexpr,
               HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, TMA: tl.constexpr,
               MASK: tl.constexpr):
    """Rows token..token+BLOCK-1, columns col..col+D_PAD-1 of a [tokens, heads x HEAD_DIM]
    matrix. With TMA the copy engine fetches the tile: rows past the sequence belong to the
    next one (zeros past the last token) and columns past HEAD_DIM to the next head, and the
    caller makes both harmless. With pointers, those read as zeros: rows from ``valid`` on
    when MASK, and the columns past HEAD_DIM."""
    if TMA:
        tile = src.load([token, col])
    else:
        rows = tl.arange(0, BLOCK)
        dims = tl.arange(0, D_PAD)
        ptrs = src + (token + rows).to(tl.int64)[:, None] * tok_stride + col + dims[None, :]
        if MASK:
            tile = tl.load(ptrs, mask=(rows < valid)[:, None] & (dims < HEAD_DIM)[None, :],
                           other=0.0)
        elif D_PAD != HEAD_DIM:
            tile = tl.load(ptrs, mask=(dims < HEAD_DIM)[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _dense_tile(q, m_i, l_i, acc, start, k, v, k_tok_stride, v_tok_stride, first, kv_col,
                rows, q_len, qk_scale, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr,
                D_PAD: tl.constexpr, TMA: tl.constexpr, MASK: tl.constexpr,
                UPCAST: tl.constexpr):
    """Keys start..start+BLOCK_N-1 of the sequence folded into the running softmax (see
    paged.attend_tile); with MASK, row r sees key n only when n <= r. That also hides keys
    past the sequence's end from every valid row r < q_len."""
    keys = _load_rows(k, k_tok_stride, first + start, kv_col, q_len - start, BLOCK_N,
                      HEAD_DIM, D_PAD, TMA, MASK)
    scores = mma(q, keys.T, tl.zeros([q.shape[0], BLOCK_N], tl.float32), UPCAST)
    if MASK:
        key_ids = start + tl.arange(0, BLOCK_N)
        scores = tl.where(key_ids[None, :] <= rows[:, None], scores, float("-inf"))
    values = _load_rows(v, v_tok_stride, first + start, kv_col, q_len - start, BLOCK_N,
                        HEAD_DIM, D_PAD, TMA, MASK)
    return fold_tile(scores, values, m_i, l_i, acc, qk_scale, UPCAST)


@triton.autotune(configs=_CONFIGS, key=["HEAD_DIM", "GROUP", "TMA"])
@triton.jit(do_not_specialize=["num_seqs", "token_offset"])
def _dense_prefill_kernel(q, q_tok_stride, k, k_tok_stride, v, v_tok_stride, o_ptr,
                          o_tok_stride, o_head_stride, query_start_ptr, num_seqs, token_offset,
                          qk_scale, GROUP: tl.constexpr, HEAD_DIM: tl.constexpr,
                          D_PAD: tl.constexpr, TMA: tl.constexpr, UPCAST: tl.constexpr,
                          PDL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    pdl_prologue(PDL)
    head = tl.program_id(1)
    _, q_start, q_len, q_tile = query_tile(query_start_ptr, num_seqs, BLOCK_M)
    if q_tile * BLOCK_M < q_len:
        first_row = q_tile * BLOCK_M
        rows = first_row + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, D_PAD)
        dim_ok = dims < HEAD_DIM
        first = token_offset + q_start
        q_rows = _load_rows(q, q_tok_stride, first + first_row, head * HEAD_DIM,
                            q_len - first_row, BLOCK_M, HEAD_DIM, D_PAD, TMA, True)
        if TMA and D_PAD != HEAD_DIM:  # columns past HEAD_DIM hold the next head
            q_rows = tl.where(dim_ok[None, :], q_rows, 0.0)
        kv_col = head // GROUP * HEAD_DIM
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        end = tl.minimum(q_len, first_row + BLOCK_M)
        unmasked_end = first_row // BLOCK_N * BLOCK_N
        for start in range(0, unmasked_end, BLOCK_N):
            m_i, l_i, acc = _dense_tile(q_rows, m_i, l_i, acc, start, k, v, k_tok_stride,
                                        v_tok_stride, first, kv_col, rows, q_len, qk_scale,
                                        BLOCK_N, HEAD_DIM, D_PAD, TMA, False, UPCAST)
        for start in range(unmasked_end, end, BLOCK_N):
            m_i, l_i, acc = _dense_tile(q_rows, m_i, l_i, acc, start, k, v, k_tok_stride,
                                        v_tok_stride, first, kv_col, rows, q_len, qk_scale,
                                        BLOCK_N, HEAD_DIM, D_PAD, TMA, True, UPCAST)
        out = acc / l_i[:, None]
        tokens = (first + rows).to(tl.int64)
        tl.store(o_ptr + tokens[:, None] * o_tok_stride + head * o_head_stride + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=(rows < q_len)[:, None] & dim_ok[None, :])


def _copy_engine(device: torch.device) -> bool:
    """Whether tiles are fetched by the tensor-memory accelerator (Hopper and later; the
    interpreter emulates it). On an H100 it raised this kernel from 354 to 387 TFLOP/s."""
    if interpreting():
        return True
    return (device.type == "cuda" and torch.version.cuda is not None
            and torch.cuda.get_device_capability(device)[0] >= 9)


def _adjacent_heads(x: torch.Tensor) -> torch.Tensor:
    """x itself when each token's heads are adjacent, as in the views of a projection output
    that models hand over (the kernel reads [T, H x D] rows); else a copy that makes them so."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def _as_matrix(x: torch.Tensor, tma: bool):
    """x [T, H, D] as the [T, H x D] matrix the kernel reads: a tensor descriptor with TMA
    (its tile shape is filled in per configuration by _set_tile_shapes), else x itself."""
    if not tma:
        return x
    return TensorDescriptor(x, [x.shape[0], x.shape[1] * x.shape[2]], [x.stride(0), 1],
                            [16, 16])


def dense_prefill_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                            out: torch.Tensor, query_start: torch.Tensor, num_seqs: int,
                            num_tokens: int, token_offset: int, qk_scale: float,
                            upcast: bool, tma: bool | None = None) -> None:
    """Attention of the prefill tokens q[token_offset:token_offset + num_tokens] into out,
    over k and v of the same tokens (every prefill sequence starts at position 0).

    q, out [T, Hq, D]; k, v [T, Hk, D] (any strides with a dense last dim: views into a
    projection output cost no copy); query_start [P + 1] int32 offsets among the prefill
    tokens, from 0. ``tma`` forces the tile copies on or off (default: by device).
    """
    q, k, v = _adjacent_heads(q), _adjacent_heads(k), _adjacent_heads(v)
    tma = _copy_engine(q.device) if tma is None else tma
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    grid = lambda meta: (num_tokens // meta["BLOCK_M"] + num_seqs, num_q_heads)  # noqa: E731
    _dense_prefill_kernel[grid](
        _as_matrix(q, tma), q.stride(0), _as_matrix(k, tma), k.stride(0), _as_matrix(v, tma),
        v.stride(0), out, out.stride(0), out.stride(1), query_start, num_seqs, token_offset,
        qk_scale, GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), TMA=tma, UPCAST=upcast,
        **pdl_options(q.device))
