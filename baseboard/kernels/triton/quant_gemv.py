"""The weight-only GEMV: y [M, N] = x [M, K] @ dequantized(W).T for a few rows M, on the
CUDA cores, and the unpacking and scaling it shares with the tensor-core kernel
(quant_gemm.py).

A decode step of a few rows is bound by reading the weight. Each program streams BLOCK_N
rows of codes (in quant_gemm's packed layout, K contiguous) once, turns them into float32
in registers and multiplies them by its BLOCK_M rows of x, broadcast; the products are
summed along K once a group. With enough columns N alone fills the SMs; otherwise K is
split over several programs (splitk.py) like the tensor-core kernel's.

Codes become floats without a conversion instruction (the int-to-float unit runs at a
quarter of the FMA rate): a 4-bit code shifted into the mantissa of 128.0 gives 128 + q,
an int8 code plus 128 into that of 256.0 gives 384 + q, exactly. The constant (CODE_BIAS)
is taken back out per group through the sum of x:
    sum_k x[k] (q[k] s + o) = s * sum_k x[k] (q[k] + c) + (o - c s) * sum_k x[k].
"""

from __future__ import annotations

import triton
import triton.language as tl

from .common import pdl_prologue
from .splitk import finish_tile, output_tile

PLANES = 8  # 4-bit codes a 32-bit word holds
PLANE_K = 16  # inputs of one plane of a packed block (quant_gemm.pack_4bit)
PACK_K = PLANES * PLANE_K  # inputs of one packed block: 16 words a row
# the same, for the kernels (Triton reads only constexpr globals)
_PLANES = tl.constexpr(PLANES)
_PLANE_K = tl.constexpr(PLANE_K)
_PACK_K = tl.constexpr(PACK_K)


@triton.jit
def nibble_plane(words, PLANE: tl.constexpr):
    """Plane PLANE (0..7) of 32-bit ``words``: the 4-bit codes, as int32 0..15."""
    return (words >> (4 * PLANE)) & 0xF


@triton.jit
def _nibble_f32(words, PLANE: tl.constexpr):
    """Plane PLANE of ``words`` as float32 128 + q: the code moved to mantissa bits 16..19
    of 128.0 (whose unit there is 1)."""
    if 4 * PLANE >= 16:
        bits = (words >> (4 * PLANE - 16)) & 0xF0000
    else:
        bits = (words << (16 - 4 * PLANE)) & 0xF0000
    return (bits | 0x43000000).to(tl.float32, bitcast=True)


@triton.jit
def _int8_f32(codes):
    """int8 codes as float32 384 + q: q + 128 (0..255) in mantissa bits 15..22 of 256.0."""
    biased = (codes.to(tl.uint8, bitcast=True) ^ 0x80).to(tl.int32)
    return ((biased << 15) | 0x43800000).to(tl.float32, bitcast=True)


@triton.jit
def scale_group(acc, part, x_sum, group, scale_ptr, offset_ptr, cols, col_ok, N,
                CODE_BIAS: tl.constexpr, HAS_OFFSETS: tl.constexpr,
                COLUMNS_FIRST: tl.constexpr):
    """acc + part * s + x_sum * (o - CODE_BIAS * s) for one group's slice of K: ``part``
    is x @ codes over it ([BLOCK_M, BLOCK_N], or [BLOCK_N, BLOCK_M] when COLUMNS_FIRST),
    ``x_sum`` ([BLOCK_M]) the slice's row sums of x, s and o the group's scales and
    offsets of ``cols``."""
    scale = tl.load(scale_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
    if COLUMNS_FIRST:
        acc += part * scale[:, None]
    else:
        acc += part * scale[None, :]
    if CODE_BIAS != 0 or HAS_OFFSETS:
        shift = -CODE_BIAS * scale
        if HAS_OFFSETS:
            shift += tl.load(offset_ptr + group * N + cols, mask=col_ok,
                             other=0.0).to(tl.float32)
        if COLUMNS_FIRST:
            acc += shift[:, None] * x_sum[None, :]
        else:
            acc += x_sum[:, None] * shift[None, :]
    return acc


@triton.jit
def _products(values, x, BLOCK_M: tl.constexpr):
    """values times x [BLOCK_M, W] broadcast: for one row values [BLOCK_N, W] and products
    [BLOCK_N, W] (the cheap 2-D form), for more values [1, BLOCK_N, W] and products
    [BLOCK_M, BLOCK_N, W]. The codes are loaded in that 3-D shape, so that only x (small)
    changes layout, never the codes."""
    if BLOCK_M == 1:
        products = values * tl.sum(x, 0)[None, :]  # a sum over one row: its values
    else:
        products = values * x[:, None, :]
    return products


@triton.jit
def _sum_k(products, BLOCK_M: tl.constexpr):
    """_products summed along K: [BLOCK_M, BLOCK_N]."""
    if BLOCK_M == 1:
        total = tl.sum(products, 1)[None, :]
    else:
        total = tl.sum(products, 2)
    return total


@triton.jit
def _load_x(x_rows, k, row_ok, K, EVEN_K: tl.constexpr):
    """x[rows, k] as float32 ([BLOCK_M, len(k)]), zero outside."""
    if EVEN_K:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
    else:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
    return x.to(tl.float32)


@triton.jit
def _step_4bit(w_tile, x_rows, k0, row_ok, K, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
               EVEN_K: tl.constexpr):
    """One step of BLOCK_K inputs (BLOCK_K / PACK_K packed blocks): the products of its
    codes (+ CODE_BIAS) with x, not yet summed along K, and x's row sums over it."""
    words = tl.load(w_tile)  # [(1,) BLOCK_N, BLOCK_K / 8]: no mask (rows clamped, K padded)
    i = tl.arange(0, BLOCK_K // _PLANES)
    k_word = k0 + (i // _PLANE_K) * _PACK_K + i % _PLANE_K  # the k of each word's plane 0
    x = _load_x(x_rows, k_word, row_ok, K, EVEN_K)
    products = _products(_nibble_f32(words, 0), x, BLOCK_M)
    x_sum = tl.sum(x, 1)
    for plane in tl.static_range(1, _PLANES):
        x = _load_x(x_rows, k_word + plane * _PLANE_K, row_ok, K, EVEN_K)
        products += _products(_nibble_f32(words, plane), x, BLOCK_M)
        x_sum += tl.sum(x, 1)
    return products, x_sum


@triton.jit
def _weight_only_gemv_kernel(
        x_ptr, stride_xm, w_ptr, stride_wn, scale_ptr, offset_ptr, bias_ptr, y_ptr, stride_ym,
        partial_ptr, counter_ptr, M, N, K, STEPS_PER_SPLIT, split_k,
        BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, GROUP: tl.constexpr,
        HAS_OFFSETS: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, PDL: tl.constexpr):
    """Codes: 4 bits [N, K'/8] int32 words (quant_gemm.pack_4bit), 8 bits [N, K] int8;
    ``stride_wn`` in those elements. A step lies in one group (G % BLOCK_K == 0) or is one
    packed block whose planes are scaled one by one (G < BLOCK_K or not its multiple)."""
    pdl_prologue(PDL)
    CODE_BIAS: tl.constexpr = 128 if BITS == 4 else 384
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = output_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    # columns past N read column N - 1 again (never stored): no mask on the code loads
    w_rows = w_ptr + tl.minimum(cols, N - 1).to(tl.int64)[:, None] * stride_wn
    STEP_W: tl.constexpr = BLOCK_K // _PLANES if BITS == 4 else BLOCK_K
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    w_tile = w_rows + first * STEP_W + tl.arange(0, STEP_W)[None, :]  # [BLOCK_N, STEP_W]
    if BLOCK_M > 1:
        w_tile = w_tile[None, :, :]  # see _products
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    x_total = tl.zeros([BLOCK_M], tl.float32)
    for step in range(first, last):
        k0 = step * BLOCK_K
        if BITS == 4:
            if PER_CHANNEL or GROUP % BLOCK_K == 0:
                products, x_sum = _step_4bit(w_tile, x_rows, k0, row_ok, K, BLOCK_M, BLOCK_K,
                                             EVEN_K)
                part = _sum_k(products, BLOCK_M)
            else:  # one packed block whose planes span groups
                tl.static_assert(BLOCK_K == _PACK_K, "planes scaled one by one: one block")
                words = tl.load(w_tile)
                k_plane = k0 + tl.arange(0, _PLANE_K)
                for plane in tl.static_range(_PLANES):
                    x = _load_x(x_rows, k_plane + plane * _PLANE_K, row_ok, K, EVEN_K)
                    part = _sum_k(_products(_nibble_f32(words, plane), x, BLOCK_M), BLOCK_M)
                    # past K (the padded block) x is zero: any real group's scales serve
                    group = tl.minimum((k0 + plane * _PLANE_K) // GROUP, K // GROUP - 1)
                    acc = scale_group(acc, part, tl.sum(x, 1), group, scale_ptr, offset_ptr,
                                      cols, col_ok, N, CODE_BIAS, HAS_OFFSETS, False)
        else:
            k = k0 + tl.arange(0, BLOCK_K)
            if EVEN_K:
                codes = tl.load(w_tile)
            else:
                k_ok = (k < K)[None, :]
                if BLOCK_M > 1:
                    k_ok = k_ok[None, :, :]
                codes = tl.load(w_tile, mask=k_ok, other=0)
            x = _load_x(x_rows, k, row_ok, K, EVEN_K)
            part = _sum_k(_products(_int8_f32(codes), x, BLOCK_M), BLOCK_M)
            x_sum = tl.sum(x, 1)
        if BITS == 8 or PER_CHANNEL or GROUP % BLOCK_K == 0:
            if PER_CHANNEL:
                acc += part
                x_total += x_sum
            else:
                acc = scale_group(acc, part, x_sum, k0 // GROUP, scale_ptr, offset_ptr, cols,
                                  col_ok, N, CODE_BIAS, HAS_OFFSETS, False)
        w_tile += STEP_W
    if PER_CHANNEL:
        acc = scale_group(tl.zeros([BLOCK_M, BLOCK_N], tl.float32), acc, x_total, 0,
                          scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS, HAS_OFFSETS, False)
    finish_tile(acc, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                pid, pid_k, split_k, HAS_BIAS, SPLIT)


def gemv_step_k(block_k: int, bits: int, group_size: int, k: int) -> int:
    """The GEMV's K step: ``block_k`` halved until it divides the group size (G = 0: per
    channel) and, for 4 bits, the padded K; never below one packed block (4 bits), whose
    planes are then scaled one by one."""
    least = PACK_K if bits == 4 else 16
    padded = triton.cdiv(k, PACK_K) * PACK_K
    block_k = max(block_k, least)
    while block_k > least and ((group_size and group_size % block_k)
                               or (bits == 4 and padded % block_k)):
        block_k //= 2
    return block_k


def launch_gemv(grid, x, w, stride_wn, scales, offsets, bias, y, partials, counters, m, n, k,
                steps_per_split, split, bits, group_size, tile, block_k, pdl) -> None:
    """Launch the GEMV over ``grid`` (splitk.split_launch's); ``group_size`` 0: per channel."""
    _weight_only_gemv_kernel[grid](
        x, x.stride(0), w, stride_wn, scales, offsets if offsets is not None else x,
        bias if bias is not None else x, y, y.stride(0), partials, counters,
        m, n, k, steps_per_split, split,
        BITS=bits, PER_CHANNEL=group_size == 0, GROUP=group_size or k,
        HAS_OFFSETS=offsets is not None, HAS_BIAS=bias is not None, SPLIT=split > 1,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=block_k, GROUP_M=tile.group_m,
        EVEN_K=k % block_k == 0, num_warps=tile.num_warps, num_stages=tile.num_stages, **pdl)
