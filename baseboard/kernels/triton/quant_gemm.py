"""Weight-only quantized GEMMs (``gemm_w4a16``, ``gemm_w8a16``) with the dequantization
fused into the GEMM: the tensor-core kernel here, the GEMV for a few rows in
quant_gemv.py; each M bucket's tile (quant_tiles.py) names which runs it.

Layout (``prepare``): the codes stay [N, K], K contiguous, so that both kernels read a
column's codes as one run. int8 codes stay one a byte. 4-bit codes are packed eight to a
32-bit word in blocks of PACK_K = 128 inputs (K padded with zero codes): word w of a block
holds k = 16 j + w in its nibble j ("plane" j), so that unpacking one plane of a block's 16
words gives 16 consecutive inputs, which meet a contiguous slice of x. Scales and offsets
become [K/G, N] ([1, N] per channel). int8 codes are padded to K' = K rounded up to
INT8_PAD_K, so that the GEMV reads their rows as 32-bit words.

The tensor-core kernel computes y^T = W x^T: the unpacked codes are the product's first
operand, which the tensor cores take from registers (Hopper's wgmma reads only the second
from shared memory), and the rows of x its second, whose narrow side 16 rows fill.
It multiplies the raw codes, not dequantized weights: within one group every input
shares its scale s and offset o, so
    sum_k x[k] (q[k] s + o) = s * sum_k x[k] q[k] + o * sum_k x[k]
and the scale and offset cost one multiply-add per output element of a group's slice
instead of one per weight. The codes become floats without a conversion instruction:
OR-ing a 4-bit code into the mantissa of 128 (bf16) or 1024 (fp16) gives 128 + q
(1024 + q) exactly, and the constant is taken back out through the same sum of x
(``CODE_BIAS``). A slice therefore never spans two groups.

Small M is bound by reading the weight: K is split over several programs (splitk.py) so
that every SM streams a share.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from ...core.errors import ConfigError
from .common import last_dim_contiguous, mma, pdl_options, pdl_prologue, upcast_dots
from .quant_dequant import dequantize, dequantized, group_scales
from .quant_gemv import _PLANE_K, _PLANES, PACK_K, PLANE_K, PLANES, gemv_step_k, launch_gemv, \
    nibble_plane, scale_group
from .quant_tiles import DEQUANT, GEMV, W4A16, W8A16, Table, device_key, max_split_tiles, \
    table_for, tile_for
from .records import interpreting
from .splitk import arrival_counters, finish_tile, output_tile, split_launch

MIN_BLOCK_K = 16  # the smallest K of a tensor-core dot
DEQUANT_ROWS = 64  # tiles of this many rows or more scale grouped codes in registers
INT8_PAD_K = 16  # int8 rows padded to whole 16-byte vectors


class WeightOnlyState(NamedTuple):
    codes: torch.Tensor  # 4 bits: [N, K'/8] int32 (K' = K padded to PACK_K); 8: [N, K'] int8
    scales: torch.Tensor  # [K/G, N], per channel [1, N]; the dtype it was given in
    offsets: Optional[torch.Tensor]  # like scales; None: w = q * s
    bias: Optional[torch.Tensor]  # [N]
    bits: int
    group_size: int  # 0: one scale per output column
    k: int
    n: int
    table: Table
    counters: torch.Tensor  # [tiles] int32, split-K arrivals (splitk.py)


@triton.jit
def _values(codes, MODE: tl.constexpr, DTYPE: tl.constexpr):
    """Codes (4-bit in int32, or int8) as DTYPE values: code + CODE_BIAS for the magic
    modes (see the module docstring), the code itself otherwise."""
    if MODE == "magic4_bf16":
        values = (codes.to(tl.int16) | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)
    elif MODE == "magic4_fp16":
        values = (codes.to(tl.int16) | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)
    elif MODE == "magic8_fp16":  # 1152 + q
        values = (codes.to(tl.int16) + 0x6480).to(tl.int16).to(tl.float16, bitcast=True)
    elif MODE == "via_fp32":
        # 2^23 + 128 + q as float32 bits, less the constant: q exactly, then bf16 exactly
        exact = (codes.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
        values = exact.to(DTYPE)
    else:
        tl.static_assert(MODE == "convert", "unknown MODE")
        values = codes.to(DTYPE)
    return values


@triton.jit
def _load_xt(x_cols, k, row_ok, K, EVEN_K: tl.constexpr):
    """x[rows, k] transposed ([len(k), BLOCK_M]), zero outside."""
    if EVEN_K:
        x = tl.load(x_cols + k[:, None], mask=row_ok[None, :], other=0.0)
    else:
        x = tl.load(x_cols + k[:, None], mask=row_ok[None, :] & (k < K)[:, None], other=0.0)
    return x


@triton.jit
def _col_sums(xt):
    return tl.sum(xt.to(tl.float32), axis=0)


@triton.jit
def _weight_only_kernel(
        x_ptr, stride_xm, w_ptr, stride_wn, scale_ptr, offset_ptr, bias_ptr, y_ptr, stride_ym,
        partial_ptr, counter_ptr, M, N, K, STEPS_PER_SPLIT, split_k,
        BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, GROUP: tl.constexpr,
        HAS_OFFSETS: tl.constexpr, HAS_BIAS: tl.constexpr, MODE: tl.constexpr,
        CODE_BIAS: tl.constexpr, DEQUANT: tl.constexpr, SPLIT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        EVEN_K: tl.constexpr, UPCAST: tl.constexpr, PDL: tl.constexpr):
    """The accumulator is [BLOCK_N, BLOCK_M] (y^T). 4 bits: a step is one packed block
    (BLOCK_K = PACK_K), one product per plane; 8 bits: BLOCK_K divides the group. DEQUANT
    (groups, many rows): the codes are scaled in registers and every product adds to the
    one accumulator, instead of a group's products being summed apart and scaled after
    (half the accumulator registers; the unpacking is shared by BLOCK_M rows)."""
    pdl_prologue(PDL)
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = output_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    x_cols = x_ptr + rows.to(tl.int64)[None, :] * stride_xm
    # columns past N read column N - 1 again (never stored): no mask on the code loads
    w_rows = w_ptr + tl.minimum(cols, N - 1).to(tl.int64)[:, None] * stride_wn
    STEP_W: tl.constexpr = BLOCK_K // _PLANES if BITS == 4 else BLOCK_K
    zeros = tl.zeros([BLOCK_N, BLOCK_M], tl.float32)
    acc = zeros
    x_sum = tl.zeros([BLOCK_M], tl.float32)  # per channel: over all of this program's K
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    w_tile = w_rows + first * STEP_W + tl.arange(0, STEP_W)[None, :]
    for step in range(first, last):
        k0 = step * BLOCK_K
        if BITS == 4:  # the packed block is padded: its words need no mask along K
            words = tl.load(w_tile)  # [BLOCK_N, 16]
            k_plane = k0 + tl.arange(0, _PLANE_K)
            part = zeros
            part_sum = tl.zeros([BLOCK_M], tl.float32)
            if DEQUANT and GROUP % BLOCK_K == 0:
                scale, offset = group_scales(k0 // GROUP, scale_ptr, offset_ptr, cols, col_ok,
                                              N, HAS_OFFSETS)
            for plane in tl.static_range(_PLANES):
                xt = _load_xt(x_cols, k_plane + plane * _PLANE_K, row_ok, K, EVEN_K)
                if DEQUANT:
                    if GROUP % BLOCK_K != 0:
                        # past K (the padded block) x is zero: any real group's scales serve
                        group = tl.minimum((k0 + plane * _PLANE_K) // GROUP, K // GROUP - 1)
                        scale, offset = group_scales(group, scale_ptr, offset_ptr, cols,
                                                      col_ok, N, HAS_OFFSETS)
                    values = dequantized(nibble_plane(words, plane), scale, offset, BITS,
                                          HAS_OFFSETS, x_ptr.dtype.element_ty)
                    acc = mma(values, xt, acc, UPCAST)
                elif PER_CHANNEL:
                    values = _values(nibble_plane(words, plane), MODE, x_ptr.dtype.element_ty)
                    acc = mma(values, xt, acc, UPCAST)
                    x_sum += _col_sums(xt)
                elif GROUP % BLOCK_K == 0:  # the whole block in one group: scaled once
                    values = _values(nibble_plane(words, plane), MODE, x_ptr.dtype.element_ty)
                    part = mma(values, xt, part, UPCAST)
                    part_sum += _col_sums(xt)
                else:
                    values = _values(nibble_plane(words, plane), MODE, x_ptr.dtype.element_ty)
                    group = tl.minimum((k0 + plane * _PLANE_K) // GROUP, K // GROUP - 1)
                    acc = scale_group(acc, mma(values, xt, zeros, UPCAST), _col_sums(xt),
                                      group, scale_ptr, offset_ptr, cols, col_ok, N,
                                      CODE_BIAS, HAS_OFFSETS, True)
            if not PER_CHANNEL and not DEQUANT and GROUP % BLOCK_K == 0:
                acc = scale_group(acc, part, part_sum, k0 // GROUP, scale_ptr, offset_ptr,
                                  cols, col_ok, N, CODE_BIAS, HAS_OFFSETS, True)
        else:
            k = k0 + tl.arange(0, BLOCK_K)
            if EVEN_K:
                codes = tl.load(w_tile)
            else:
                codes = tl.load(w_tile, mask=(k < K)[None, :], other=0)
            xt = _load_xt(x_cols, k, row_ok, K, EVEN_K)
            if DEQUANT:
                scale, offset = group_scales(k0 // GROUP, scale_ptr, offset_ptr, cols, col_ok,
                                              N, HAS_OFFSETS)
                values = dequantized(codes, scale, offset, BITS, HAS_OFFSETS,
                                      x_ptr.dtype.element_ty)
                acc = mma(values, xt, acc, UPCAST)
            elif PER_CHANNEL:
                values = _values(codes, MODE, x_ptr.dtype.element_ty)
                acc = mma(values, xt, acc, UPCAST)
                x_sum += _col_sums(xt)
            else:
                values = _values(codes, MODE, x_ptr.dtype.element_ty)
                acc = scale_group(acc, mma(values, xt, zeros, UPCAST), _col_sums(xt),
                                  k0 // GROUP, scale_ptr, offset_ptr, cols, col_ok, N,
                                  CODE_BIAS, HAS_OFFSETS, True)
        w_tile += STEP_W
    if PER_CHANNEL:
        acc = scale_group(zeros, acc, x_sum, 0, scale_ptr, offset_ptr, cols, col_ok, N,
                          CODE_BIAS, HAS_OFFSETS, True)
    finish_tile(tl.trans(acc), rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr,
                counter_ptr, pid, pid_k, split_k, HAS_BIAS, SPLIT)


def _mode(bits: int, dtype: torch.dtype) -> tuple[str, int]:
    """(MODE, CODE_BIAS): how codes of ``bits`` become floats of x's ``dtype``, and the
    constant that adds to each."""
    if dtype == torch.bfloat16:
        return ("magic4_bf16", 128) if bits == 4 else ("via_fp32", 0)
    if dtype == torch.float16:
        return ("magic4_fp16", 1024) if bits == 4 else ("magic8_fp16", 1152)
    return "convert", 0


def step_k(block_k: int, group_size: int) -> int:
    """The K of one step: ``block_k``, halved until it divides the group size."""
    while group_size and group_size % block_k:
        block_k //= 2
    return block_k


def check_group_size(group_size: int, k: int, op: str) -> None:
    """Raise ConfigError for a group size the kernels cannot take (G < K and not a multiple
    of MIN_BLOCK_K, so no tensor-core step fits in one group)."""
    if group_size != k and (group_size <= 0 or group_size % MIN_BLOCK_K or k % group_size):
        raise ConfigError(f"{op}=triton: group size {group_size} (K = {k}) is not a multiple "
                          f"of {MIN_BLOCK_K} dividing K, or K itself (per channel); use the "
                          f"torch reference ({op}=torch) for this weight")


def _groups(scales: torch.Tensor) -> torch.Tensor:
    return scales.t().contiguous()  # [N, K/G] -> [K/G, N]


def pack_4bit(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] codes 0..15 -> [N, K'/8] int32 (K' = K rounded up to PACK_K, zero codes in the
    padding): in each block of PACK_K inputs, word w holds input PLANE_K * j + w in bits
    4j..4j+3."""
    n, k = codes.shape
    padded = codes.new_zeros(n, triton.cdiv(k, PACK_K) * PACK_K, dtype=torch.uint8)
    padded[:, :k] = codes
    planes = padded.reshape(n, -1, PLANES, PLANE_K).transpose(2, 3)  # [N, blocks, w, j]
    # byte c of a (little-endian) word holds planes 2c and 2c + 1
    pairs = planes[..., 0::2] | (planes[..., 1::2] << 4)  # [N, blocks, 16, 4]
    return pairs.contiguous().view(torch.int32).reshape(n, -1)


def pad_int8(codes: torch.Tensor) -> torch.Tensor:
    """[N, K] int8 -> [N, K'] (K' = K rounded up to INT8_PAD_K, zero codes past K)."""
    n, k = codes.shape
    padded = codes.new_zeros(n, triton.cdiv(k, INT8_PAD_K) * INT8_PAD_K)
    padded[:, :k] = codes
    return padded


def prepare_weight_only(qweight: torch.Tensor, scales: torch.Tensor,
                        offsets: Optional[torch.Tensor], group_size: int,
                        bias: Optional[torch.Tensor], bits: int, op: str) -> WeightOnlyState:
    """Repack the canonical [N, K] codes for the kernels (see the module docstring)."""
    n, k = qweight.shape
    if k % group_size or scales.shape != (n, k // group_size):
        raise ConfigError(f"{op}: scales of shape {tuple(scales.shape)} do not match qweight "
                          f"{tuple(qweight.shape)} with group_size {group_size}")
    check_group_size(group_size, k, op)
    codes = pack_4bit(qweight) if bits == 4 else pad_int8(qweight)
    table = table_for(W4A16 if bits == 4 else W8A16,
                      device_key(qweight.device, interpreting()), (n, k))
    return WeightOnlyState(
        codes=codes, scales=_groups(scales),
        offsets=None if offsets is None else _groups(offsets), bias=bias, bits=bits,
        group_size=0 if group_size == k else group_size, k=k, n=n, table=table,
        counters=arrival_counters(max_split_tiles(table, n), qweight.device))


def weight_only_matmul(state: WeightOnlyState, x: torch.Tensor,
                       out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """y [..., N] = x [..., K] @ dequantized(weight).T + bias, in ``out_dtype`` (x's)."""
    k, n = state.k, state.n
    lead = x.shape[:-1]
    x = last_dim_contiguous(x.reshape(-1, k))
    m = x.shape[0]
    tile = tile_for(state.table, max(m, 1))
    if tile.kernel == DEQUANT and m:
        bias = None if state.bias is None else state.bias.to(x.dtype)
        y = F.linear(x, dequantize(state, x.dtype, tile.block_n), bias)
        return y.to(out_dtype or x.dtype).reshape(*lead, n)
    y = torch.empty((m, n), dtype=out_dtype or x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*lead, n)
    if tile.kernel == GEMV:
        block_k = gemv_step_k(tile.block_k, state.bits, state.group_size, k)
    else:
        block_k = PACK_K if state.bits == 4 else step_k(tile.block_k, state.group_size)
    launch = split_launch(tile, m, n, triton.cdiv(k, block_k), state.counters, x.device)
    offsets, bias = state.offsets, state.bias
    if tile.kernel == GEMV:
        words = state.codes if state.bits == 4 else state.codes.view(torch.int32)
        launch_gemv(launch.grid, x, words, words.stride(0), state.scales, offsets,
                    bias, y, launch.partials, launch.counters, m, n, k,
                    launch.steps_per_split, launch.split, state.bits, state.group_size, tile,
                    block_k, pdl_options(x.device))
        return y.reshape(*lead, n)
    mode, code_bias = _mode(state.bits, x.dtype)
    _weight_only_kernel[launch.grid](
        x, x.stride(0), state.codes, state.codes.stride(0), state.scales,
        offsets if offsets is not None else x, bias if bias is not None else x, y, y.stride(0),
        launch.partials, launch.counters, m, n, k, launch.steps_per_split, launch.split,
        BITS=state.bits, PER_CHANNEL=state.group_size == 0, GROUP=state.group_size or k,
        HAS_OFFSETS=offsets is not None, HAS_BIAS=bias is not None, MODE=mode,
        CODE_BIAS=code_bias, DEQUANT=state.group_size != 0 and tile.block_m >= DEQUANT_ROWS,
        SPLIT=launch.split > 1, BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n, BLOCK_K=block_k, GROUP_M=tile.group_m, EVEN_K=k % block_k == 0,
        UPCAST=upcast_dots(x.dtype), num_warps=tile.num_warps, num_stages=tile.num_stages,
        **pdl_options(x.device))
    return y.reshape(*lead, n)


class GemmW4A16:
    """4-bit codes 0..15 with per-group scales and offsets, 16-bit activations."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> WeightOnlyState:
        return prepare_weight_only(qweight, scales, offsets, group_size, bias, 4, "gemm_w4a16")

    apply = staticmethod(weight_only_matmul)


class GemmW8A16:
    """int8 codes with per-group (or per-channel) scales, 16-bit activations."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> WeightOnlyState:
        return prepare_weight_only(qweight, scales, None, group_size, bias, 8, "gemm_w8a16")

    apply = staticmethod(weight_only_matmul)
