"""The weight-only GEMV: y [M, N] = x [M, K] @ dequantized(W).T for a few rows M, on the
CUDA cores, and the unpacking and scaling it shares with the tensor-core kernel
(quant_gemm.py).

A decode step of a few rows is bound by reading the weight. Each program streams BLOCK_N
rows of codes (in quant_gemm's packed layout, K contiguous) once, turns them into float32
in registers and multiplies them by its BLOCK_M rows of x, broadcast; the products are
summed along K once a group. With enough columns N alone fills the SMs; otherwise K is
split over several programs (splitk.py) like the tensor-core kernel's.

Codes are read as 32-bit words (eight 4-bit or four 8-bit codes), and become floats
without a conversion instruction (the int-to-float unit runs at a quarter of the FMA rate):
a 4-bit code shifted into the mantissa of 128.0 gives 128 + q, an int8 code plus 128 into
that of 256.0 gives 384 + q, exactly. The constant (CODE_BIAS)
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
        products = values * x[None, :]
    else:
        products = values * x[:, None, :]
    return products


@triton.jit
def _sum_k(products, BLOCK_M: tl.constexpr):
    """_products summed along K, in the accumulator's orientation: [BLOCK_N, 1] for one
    row (the sums stay in the codes' layout: no shuffle through shared memory each step),
    [BLOCK_M, BLOCK_N] for more."""
    if BLOCK_M == 1:
        total = tl.sum(products, 1, keep_dims=True)
    else:
        total = tl.sum(products, 2)
    return total


@triton.jit
def _load_x(x_rows, k, row_ok, K, EVEN_K: tl.constexpr, BLOCK_M: tl.constexpr):
    """x[rows, k] as float32, zero outside: [BLOCK_M, len(k)], or for one row (``x_rows``
    its pointer, a row that exists) [len(k)], which the codes' layout takes as it is."""
    if BLOCK_M == 1:
        if EVEN_K:
            x = tl.load(x_rows + k)
        else:
            x = tl.load(x_rows + k, mask=k < K, other=0.0)
    elif EVEN_K:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
    else:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
    return x.to(tl.float32)


@triton.jit
def _row_sums(x, BLOCK_M: tl.constexpr):
    """_load_x's x summed along K: [BLOCK_M]."""
    if BLOCK_M == 1:
        sums = tl.zeros([1], tl.float32) + tl.sum(x, 0)
    else:
        sums = tl.sum(x, 1)
    return sums


@triton.jit
def _byte_f32(words, PLANE: tl.constexpr):
    """Byte PLANE (0..3) of ``words``, an int8 code q, as float32 384 + q: q + 128 (the
    byte with its top bit flipped) in mantissa bits 15..22 of 256.0 (unit 1 there)."""
    if 8 * PLANE <= 15:
        bits = (words << (15 - 8 * PLANE)) & 0x7F8000
    else:
        bits = (words >> (8 * PLANE - 15)) & 0x7F8000
    # one XOR flips the top bit (bit 22) and sets 256.0's exponent (bits the byte misses)
    return (bits ^ 0x43C00000).to(tl.float32, bitcast=True)


@triton.jit
def _block_4bit(words, x_rows, k0, row_ok, K, BLOCK_M: tl.constexpr, EVEN_K: tl.constexpr):
    """One packed block of 4-bit codes (``words`` [(1,) BLOCK_N, 16], inputs k0 + 0..127):
    its codes (+ CODE_BIAS) times x, not yet summed along K, and x's row sums over it."""
    k_plane = k0 + tl.arange(0, _PLANE_K)
    x = _load_x(x_rows, k_plane, row_ok, K, EVEN_K, BLOCK_M)
    products = _products(_nibble_f32(words, 0), x, BLOCK_M)
    x_planes = x  # the planes' x added up element by element: one reduction, not eight
    for plane in tl.static_range(1, _PLANES):
        x = _load_x(x_rows, k_plane + plane * _PLANE_K, row_ok, K, EVEN_K, BLOCK_M)
        products += _products(_nibble_f32(words, plane), x, BLOCK_M)
        x_planes += x
    return products, _row_sums(x_planes, BLOCK_M)


@triton.jit
def _step_8bit(words, x_rows, k0, row_ok, K, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr,
               EVEN_K: tl.constexpr):
    """One step of int8 codes (``words`` [(1,) BLOCK_N, BLOCK_K / 4], four a word in the
    order of K): as _block_4bit, byte j of word i meeting x[k0 + 4 i + j]."""
    k_word = k0 + 4 * tl.arange(0, BLOCK_K // 4)
    x = _load_x(x_rows, k_word, row_ok, K, EVEN_K, BLOCK_M)
    products = _products(_byte_f32(words, 0), x, BLOCK_M)
    x_planes = x
    for plane in tl.static_range(1, 4):
        x = _load_x(x_rows, k_word + plane, row_ok, K, EVEN_K, BLOCK_M)
        products += _products(_byte_f32(words, plane), x, BLOCK_M)
        x_planes += x
    return products, _row_sums(x_planes, BLOCK_M)


@triton.jit
def _weight_only_gemv_kernel(
        x_ptr, stride_xm, w_ptr, stride_wn, scale_ptr, offset_ptr, bias_ptr, y_ptr, stride_ym,
        partial_ptr, counter_ptr, M, N, K, STEPS_PER_SPLIT, split_k,
        BITS: tl.constexpr, SCALE_AT: tl.constexpr, GROUP: tl.constexpr,
        HAS_OFFSETS: tl.constexpr, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
        GROUP_M: tl.constexpr, EVEN_K: tl.constexpr, PDL: tl.constexpr):
    """Codes as int32 words, ``stride_wn`` words a column: 4 bits [N, K'/8]
    (quant_gemm.pack_4bit), 8 bits [N, K'/4], four int8 codes a word in the order of K
    (K' = K padded, zero codes). A 4-bit step is BLOCK_K / PACK_K packed blocks, loaded one
    by one. SCALE_AT (scale_at) says how often a group's scales apply: "end" (per channel),
    "step", "block" or "plane" (16 inputs); an 8-bit step lies in one group."""
    pdl_prologue(PDL)
    CODE_BIAS: tl.constexpr = 128 if BITS == 4 else 384
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = output_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    if BLOCK_M == 1:  # the grid has no program past the last row
        x_rows = x_ptr + pid_m.to(tl.int64) * stride_xm
    else:
        x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    # columns past N read column N - 1 again (never stored): no mask on the code loads
    w_rows = w_ptr + tl.minimum(cols, N - 1).to(tl.int64)[:, None] * stride_wn
    LOAD_W: tl.constexpr = _PACK_K // _PLANES if BITS == 4 else BLOCK_K // 4  # words a load
    STEP_W: tl.constexpr = BLOCK_K // _PLANES if BITS == 4 else BLOCK_K // 4
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    w_tile = w_rows + first * STEP_W + tl.arange(0, LOAD_W)[None, :]  # [BLOCK_N, LOAD_W]
    if BLOCK_M > 1:
        w_tile = w_tile[None, :, :]  # see _products
    # one row accumulates y^T [BLOCK_N, 1] (see _sum_k), more rows y [BLOCK_M, BLOCK_N]
    COLUMNS_FIRST: tl.constexpr = BLOCK_M == 1
    if COLUMNS_FIRST:
        acc = tl.zeros([BLOCK_N, 1], tl.float32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    x_total = tl.zeros([BLOCK_M], tl.float32)
    for step in range(first, last):
        k0 = step * BLOCK_K
        if BITS == 4:
            # the packed blocks are padded: their words need no mask along K
            for block in tl.static_range(BLOCK_K // _PACK_K):
                words = tl.load(w_tile + block * (_PACK_K // _PLANES))
                kb = k0 + block * _PACK_K
                if SCALE_AT != "plane":
                    products, x_sum = _block_4bit(words, x_rows, kb, row_ok, K, BLOCK_M,
                                                  EVEN_K)
                    if SCALE_AT == "end":
                        acc += _sum_k(products, BLOCK_M)
                        x_total += x_sum
                    elif SCALE_AT == "step":
                        if block == 0:
                            step_products, step_sum = products, x_sum
                        else:
                            step_products += products
                            step_sum += x_sum
                    else:
                        acc = scale_group(acc, _sum_k(products, BLOCK_M), x_sum, kb // GROUP,
                                          scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                          HAS_OFFSETS, COLUMNS_FIRST)
                else:  # groups smaller than a block, or not a multiple of one
                    k_plane = kb + tl.arange(0, _PLANE_K)
                    for plane in tl.static_range(_PLANES):
                        x = _load_x(x_rows, k_plane + plane * _PLANE_K, row_ok, K, EVEN_K,
                                    BLOCK_M)
                        part = _sum_k(_products(_nibble_f32(words, plane), x, BLOCK_M),
                                      BLOCK_M)
                        # past K (a padded block) x is zero: any real group's scales serve
                        group = tl.minimum((kb + plane * _PLANE_K) // GROUP, K // GROUP - 1)
                        acc = scale_group(acc, part, _row_sums(x, BLOCK_M), group, scale_ptr,
                                          offset_ptr, cols, col_ok, N, CODE_BIAS, HAS_OFFSETS,
                                          COLUMNS_FIRST)
            if SCALE_AT == "step":
                acc = scale_group(acc, _sum_k(step_products, BLOCK_M), step_sum, k0 // GROUP,
                                  scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                  HAS_OFFSETS, COLUMNS_FIRST)
        else:
            if EVEN_K:
                words = tl.load(w_tile)
            else:  # the codes are padded to whole words: a word starting before K is real
                k_ok = (k0 + 4 * tl.arange(0, LOAD_W) < K)[None, :]
                if BLOCK_M > 1:
                    k_ok = k_ok[None, :, :]
                words = tl.load(w_tile, mask=k_ok, other=0)
            products, x_sum = _step_8bit(words, x_rows, k0, row_ok, K, BLOCK_M, BLOCK_K,
                                         EVEN_K)
            if SCALE_AT == "end":
                acc += _sum_k(products, BLOCK_M)
                x_total += x_sum
            else:
                acc = scale_group(acc, _sum_k(products, BLOCK_M), x_sum, k0 // GROUP,
                                  scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                  HAS_OFFSETS, COLUMNS_FIRST)
        w_tile += STEP_W
    if SCALE_AT == "end":
        acc = scale_group(tl.zeros_like(acc), acc, x_total, 0, scale_ptr, offset_ptr, cols,
                          col_ok, N, CODE_BIAS, HAS_OFFSETS, COLUMNS_FIRST)
    if COLUMNS_FIRST:
        acc = tl.trans(acc)
    finish_tile(acc, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                pid, pid_k, split_k, HAS_BIAS, SPLIT)


def gemv_step_k(block_k: int, bits: int, group_size: int, k: int) -> int:
    """The GEMV's K step: ``block_k`` halved until, for 4 bits, it divides the padded K (a
    whole number of packed blocks; the kernel scales any group size within a step) and,
    for 8 bits, the group size (G = 0: per channel)."""
    if bits == 4:
        padded = triton.cdiv(k, PACK_K) * PACK_K
        block_k = max(block_k, PACK_K)
        while block_k > PACK_K and padded % block_k:
            block_k //= 2
        return block_k
    block_k = max(block_k, 16)
    while block_k > 16 and group_size and group_size % block_k:
        block_k //= 2
    return block_k


def scale_at(bits: int, group_size: int, block_k: int) -> str:
    """How often the GEMV applies a group's scales (SCALE_AT) with steps of ``block_k``:
    "end" per channel (G = 0), else once a "step", "block" (of PACK_K) or "plane"."""
    if not group_size:
        return "end"
    if group_size % block_k == 0 or bits == 8:
        return "step"
    return "block" if group_size % PACK_K == 0 else "plane"


def launch_gemv(grid, x, w, stride_wn, scales, offsets, bias, y, partials, counters, m, n, k,
                steps_per_split, split, bits, group_size, tile, block_k, pdl) -> None:
    """Launch the GEMV over ``grid`` (splitk.split_launch's); ``group_size`` 0: per channel."""
    _weight_only_gemv_kernel[grid](
        x, x.stride(0), w, stride_wn, scales, offsets if offsets is not None else x,
        bias if bias is not None else x, y, y.stride(0), partials, counters,
        m, n, k, steps_per_split, split,
        BITS=bits, SCALE_AT=scale_at(bits, group_size, block_k), GROUP=group_size or k,
        HAS_OFFSETS=offsets is not None, HAS_BIAS=bias is not None, SPLIT=split > 1,
        BLOCK_M=tile.block_m, BLOCK_N=tile.block_n, BLOCK_K=block_k, GROUP_M=tile.group_m,
        EVEN_K=k % block_k == 0, num_warps=tile.num_warps, num_stages=tile.num_stages, **pdl)
