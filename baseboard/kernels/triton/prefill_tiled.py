"""Prefill attention that reads keys and values a whole tile at a time: causal, variable
length, one program per tile of query tokens of one sequence and one query head.

Two sources of keys and values qualify, and one kernel serves both:
- the step's own projection output, when every prefill starts at position 0 (a prompt's
  first step): each token's heads sit at one stride;
- the paged cache, when a block holds a whole number of key tiles (block size a multiple
  of ``TILED_PAGE``): a tile is then one page lookup and a plain strided copy.
With no per-key block lookup, the tiles are fetched by the tensor-memory accelerator where
there is one (Hopper and later). Cache blocks smaller than a tile go through the gathering
kernel in prefill.py. Tiles wholly below the diagonal run without masks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from triton.tools.tensor_descriptor import TensorDescriptor

from .common import mma, pdl_options, pdl_prologue
from .paged import fold_tile
from .prefill import PrefillConfig, query_tile
from .records import interpreting

TILED_PAGE = 64  # cache blocks of a multiple of this many tokens are read by this kernel

# (BLOCK_M, BLOCK_N, num_warps, num_stages) for the step's own keys, tuned per head size and
# group on first use. For D128 the first led the sweeps (benchmarks/ops.py --sweep; the
# numbers are in docs/benchmarks.md); the others serve the other head sizes and the pointer
# path. The interpreter runs one, with several key tiles a query tile.
TILES = ((128, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (128, 128, 8, 3), (128, 64, 4, 3),
         (64, 32, 4, 2))
_INTERPRETER_TILES = ((128, 32, 4, 2),)


def paged_tile_config(head_dim: int) -> PrefillConfig:
    """The tile for the paged cache, fixed rather than tuned on first use, because its first
    use is a CUDA graph's warm-up on a made-up step. Its keys per tile divide TILED_PAGE.
    For D128 the leader above led here too (the best of seven tiles, benchmarks/ops.py
    --sweep, docs/benchmarks.md); D256 takes the smaller tile for its shared memory."""
    if interpreting():
        return PrefillConfig(64, 32, 4, 2)
    if triton.next_power_of_2(head_dim) <= 128:
        return PrefillConfig(128, 64, 4, 2)
    return PrefillConfig(64, 32, 4, 2)


def _set_tile_shapes(nargs):
    """Tensor descriptors copy tiles of the configuration being run (an autotune pre-hook)."""
    if nargs["TMA"]:
        d_pad = nargs["D_PAD"]
        nargs["q"].block_shape = [nargs["BLOCK_M"], d_pad]
        nargs["k"].block_shape = [nargs["BLOCK_N"], d_pad]
        nargs["v"].block_shape = [nargs["BLOCK_N"], d_pad]


@triton.jit
def _load_rows(src, row_stride, row, col, valid, BLOCK: tl.constexpr,
               HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, TMA: tl.constexpr,
               MASK: tl.constexpr):
    """Rows row..row+BLOCK-1, columns col..col+D_PAD-1 of a [rows, heads x HEAD_DIM] matrix.
    With TMA the copy engine fetches the tile: rows past the sequence are whatever follows
    (zeros past the matrix's end) and columns past HEAD_DIM belong to the next head; the
    caller makes both harmless. With pointers, those read as zeros: rows from ``valid`` on
    when MASK, and the columns past HEAD_DIM."""
    if TMA:
        tile = src.load([row, col])
    else:
        rows = tl.arange(0, BLOCK)
        dims = tl.arange(0, D_PAD)
        ptrs = src + (row + rows).to(tl.int64)[:, None] * row_stride + col + dims[None, :]
        if MASK:
            tile = tl.load(ptrs, mask=(rows < valid)[:, None] & (dims < HEAD_DIM)[None, :],
                           other=0.0)
        elif D_PAD != HEAD_DIM:
            tile = tl.load(ptrs, mask=(dims < HEAD_DIM)[None, :], other=0.0)
        else:
            tile = tl.load(ptrs)
    return tile


@triton.jit
def _attend_keys(q, m_i, l_i, acc, start, k, v, kv_row_stride, first, table, kv_col,
                 positions, context, qk_scale, PAGE: tl.constexpr, BLOCK_N: tl.constexpr,
                 HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, TMA: tl.constexpr,
                 MASK: tl.constexpr, LAST: tl.constexpr, UPCAST: tl.constexpr):
    """Keys start..start+BLOCK_N-1 of the sequence folded into the running softmax (see
    paged.fold_tile); with MASK, the query at position p sees key n only when n <= p, which
    also hides the keys from ``context`` on from every real query. LAST (for tiles copied
    whole from the cache): the tile runs past the context, into slots of its block that may
    never have been written (NaN), whose values are zeroed (masked scores alone would
    leave 0 x NaN)."""
    if PAGE:
        row = tl.load(table + start // PAGE) * PAGE + start % PAGE
    else:
        row = first + start
    keys = _load_rows(k, kv_row_stride, row, kv_col, context - start, BLOCK_N, HEAD_DIM,
                      D_PAD, TMA, MASK)
    scores = mma(q, keys.T, tl.zeros([q.shape[0], BLOCK_N], tl.float32), UPCAST)
    key_ids = start + tl.arange(0, BLOCK_N)
    if MASK:
        scores = tl.where(key_ids[None, :] <= positions[:, None], scores, float("-inf"))
    values = _load_rows(v, kv_row_stride, row, kv_col, context - start, BLOCK_N, HEAD_DIM,
                        D_PAD, TMA, MASK)
    if LAST:  # only here: it keeps the other tiles' values out of registers
        values = tl.where((key_ids < context)[:, None], values, 0.0)
    return fold_tile(scores, values, m_i, l_i, acc, qk_scale, UPCAST)


@triton.jit(do_not_specialize=["num_seqs", "token_offset"])
def _tiled_prefill_kernel(q, q_tok_stride, k, v, kv_row_stride, o_ptr, o_tok_stride,
                          o_head_stride, query_start_ptr, num_seqs, token_offset, tables_ptr,
                          table_stride, seq_lens_ptr, qk_scale, GROUP: tl.constexpr,
                          HEAD_DIM: tl.constexpr, D_PAD: tl.constexpr, PAGE: tl.constexpr,
                          TMA: tl.constexpr, UPCAST: tl.constexpr, PDL: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """PAGE = 0: keys and values are the step's rows; else cache rows, PAGE to a block."""
    pdl_prologue(PDL)
    head = tl.program_id(1)
    seq, q_start, q_len, q_tile = query_tile(query_start_ptr, num_seqs, BLOCK_M)
    if q_tile * BLOCK_M < q_len:
        first_row = q_tile * BLOCK_M
        first = token_offset + q_start  # the step row of the sequence's first query
        if PAGE:
            context = tl.load(seq_lens_ptr + seq)
        else:
            context = q_len
        table = tables_ptr + seq.to(tl.int64) * table_stride
        first_position = context - q_len + first_row
        positions = first_position + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, D_PAD)
        dim_ok = dims < HEAD_DIM
        q_rows = _load_rows(q, q_tok_stride, first + first_row, head * HEAD_DIM,
                            q_len - first_row, BLOCK_M, HEAD_DIM, D_PAD, TMA, True)
        if TMA and D_PAD != HEAD_DIM:  # columns past HEAD_DIM hold the next head
            q_rows = tl.where(dim_ok[None, :], q_rows, 0.0)
        kv_col = head // GROUP * HEAD_DIM
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
        end = tl.minimum(context, first_position + BLOCK_M)
        unmasked_end = first_position // BLOCK_N * BLOCK_N
        if PAGE and TMA:  # the tile past the context's end, if any, gets a loop of its own
            masked_end = tl.minimum(end, context // BLOCK_N * BLOCK_N)
        else:
            masked_end = end
        for start in range(0, unmasked_end, BLOCK_N):
            m_i, l_i, acc = _attend_keys(q_rows, m_i, l_i, acc, start, k, v, kv_row_stride,
                                         first, table, kv_col, positions, context, qk_scale,
                                         PAGE, BLOCK_N, HEAD_DIM, D_PAD, TMA, False, False,
                                         UPCAST)
        for start in range(unmasked_end, masked_end, BLOCK_N):
            m_i, l_i, acc = _attend_keys(q_rows, m_i, l_i, acc, start, k, v, kv_row_stride,
                                         first, table, kv_col, positions, context, qk_scale,
                                         PAGE, BLOCK_N, HEAD_DIM, D_PAD, TMA, True, False,
                                         UPCAST)
        if PAGE and TMA:
            for start in range(masked_end, end, BLOCK_N):  # at most one
                m_i, l_i, acc = _attend_keys(q_rows, m_i, l_i, acc, start, k, v,
                                             kv_row_stride, first, table, kv_col, positions,
                                             context, qk_scale, PAGE, BLOCK_N, HEAD_DIM,
                                             D_PAD, TMA, True, True, UPCAST)
        out = acc / l_i[:, None]
        rows = first_row + tl.arange(0, BLOCK_M)
        tokens = (first + rows).to(tl.int64)
        tl.store(o_ptr + tokens[:, None] * o_tok_stride + head * o_head_stride + dims[None, :],
                 out.to(o_ptr.dtype.element_ty), mask=(rows < q_len)[:, None] & dim_ok[None, :])


_dense_prefill_kernel = triton.autotune(
    configs=[triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s,
                           pre_hook=_set_tile_shapes)
             for m, n, w, s in (_INTERPRETER_TILES if interpreting() else TILES)],
    key=["HEAD_DIM", "GROUP", "TMA"])(_tiled_prefill_kernel)


def _copy_engine(device: torch.device) -> bool:
    """Whether tiles are fetched by the tensor-memory accelerator (Hopper and later; the
    interpreter emulates it), which the dense case reads faster (docs/benchmarks.md)."""
    if interpreting():
        return True
    return (device.type == "cuda" and torch.version.cuda is not None
            and torch.cuda.get_device_capability(device)[0] >= 9)


def _adjacent_heads(x: torch.Tensor) -> torch.Tensor:
    """x itself when each token's heads are adjacent, as in the views of a projection output
    that models hand over (the kernel reads [T, H x D] rows); else a copy that makes them so."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def _as_matrix(x: torch.Tensor, tma: bool, block_rows: int = 16):
    """x [rows, H, D] as the [rows, H x D] matrix the kernel reads: a tensor descriptor
    copying tiles of ``block_rows`` rows with TMA, else x itself."""
    if not tma:
        return x
    return TensorDescriptor(x, [x.shape[0], x.shape[1] * x.shape[2]], [x.stride(0), 1],
                            [block_rows, triton.next_power_of_2(x.shape[2])])


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
    if k.stride(0) != v.stride(0):  # the kernel steps through both by one stride
        k, v = k.contiguous(), v.contiguous()
    num_q_heads, head_dim = q.shape[1], q.shape[2]
    grid = lambda meta: (num_tokens // meta["BLOCK_M"] + num_seqs, num_q_heads)  # noqa: E731
    no_table = no_context = query_start  # PAGE=0: never read
    _dense_prefill_kernel[grid](
        _as_matrix(q, tma), q.stride(0), _as_matrix(k, tma), _as_matrix(v, tma), k.stride(0),
        out, out.stride(0), out.stride(1), query_start, num_seqs, token_offset, no_table, 0,
        no_context, qk_scale, GROUP=num_q_heads // k.shape[1], HEAD_DIM=head_dim,
        D_PAD=triton.next_power_of_2(head_dim), PAGE=0, TMA=tma, UPCAST=upcast,
        **pdl_options(q.device))


def paged_tile_prefill_attention(q: torch.Tensor, out: torch.Tensor, kv_cache: torch.Tensor,
                                 block_tables: torch.Tensor, query_start: torch.Tensor,
                                 seq_lens: torch.Tensor, num_tokens: int, token_offset: int,
                                 qk_scale: float, config: PrefillConfig, upcast: bool,
                                 tma: bool | None = None) -> None:
    """prefill.prefill_attention's job (same arguments) for a cache whose block size is a
    multiple of ``config.block_n``, which must be contiguous."""
    q = _adjacent_heads(q)
    tma = _copy_engine(q.device) if tma is None else tma
    _, num_blocks, page, num_kv_heads, head_dim = kv_cache.shape
    if page % config.block_n or not kv_cache.is_contiguous():
        raise ValueError(f"a contiguous cache of blocks of a multiple of {config.block_n} "
                         f"tokens is needed; got block size {page}")
    keys, values = (x.view(num_blocks * page, num_kv_heads, head_dim) for x in kv_cache)
    num_seqs, num_q_heads = seq_lens.shape[0], q.shape[1]
    d_pad = triton.next_power_of_2(head_dim)
    grid = (num_tokens // config.block_m + num_seqs, num_q_heads)
    _tiled_prefill_kernel[grid](
        _as_matrix(q, tma, config.block_m), q.stride(0), _as_matrix(keys, tma, config.block_n),
        _as_matrix(values, tma, config.block_n), keys.stride(0), out, out.stride(0),
        out.stride(1), query_start, num_seqs, token_offset, block_tables,
        block_tables.stride(0), seq_lens, qk_scale, GROUP=num_q_heads // num_kv_heads,
        HEAD_DIM=head_dim, D_PAD=d_pad, PAGE=page, TMA=tma, UPCAST=upcast,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n, num_warps=config.num_warps,
        num_stages=config.num_stages, **pdl_options(q.device))
