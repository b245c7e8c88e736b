"""Weight-only quantized GEMMs (``gemm_w4a16``, ``gemm_w8a16``) with the dequantization
fused into the GEMM.

Layout (``prepare``): the codes are transposed to [K, N] so that a K step reads whole rows
of N. int8 codes stay one a byte. 4-bit codes are packed two a byte so that one load serves
a whole step of P inputs without duplicates or reshapes: in each block of P consecutive k,
byte row r holds k = r in its low nibble and k = P/2 + r in its high one, so the low
nibbles of a [P/2, N] load are the first half of the step and the high nibbles the second,
each multiplied by its own half of x. Scales and offsets become [K/G, N] ([1, N] per
channel).

The kernel multiplies the raw codes, not dequantized weights: within one group every input
shares its scale s and offset o, so
    sum_k x[k] (q[k] s + o) = s * sum_k x[k] q[k] + o * sum_k x[k]
and the tensor cores take the codes as 16-bit integers-in-floats, while the scale and
offset cost one multiply-add per output element of a group's slice instead of one per
weight. The codes become floats without a conversion instruction: OR-ing a 4-bit code into
the mantissa of 128 (bf16) or 1024 (fp16) gives 128 + q (1024 + q) exactly, and the
constant is taken back out through the same sum of x (``CODE_BIAS``). A slice therefore
never spans two groups.

Small M is bound by reading the weight: K is split over several programs (splitk.py) so
that every SM streams a share. Tiles per M bucket and device are data (quant_tiles.py).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ...core.errors import ConfigError
from .common import last_dim_contiguous, mma, pdl_options, pdl_prologue, upcast_dots
from .quant_tiles import WEIGHT_ONLY, Table, device_key, max_split_tiles, table_for, tile_for
from .records import interpreting
from .splitk import arrival_counters, finish_tile, output_tile, split_launch

MIN_BLOCK_K = 16  # the smallest K of a tensor-core dot
MAX_HALF = 64  # 4 bits: a step of up to 128 inputs, 64 bytes per column


class WeightOnlyState(NamedTuple):
    codes: torch.Tensor  # 4 bits: [K'/2, N] uint8 in blocks of pack_k (K' = K padded); 8: [K, N]
    scales: torch.Tensor  # [K/G, N], per channel [1, N]; the dtype it was given in
    offsets: Optional[torch.Tensor]  # like scales; None: w = q * s
    bias: Optional[torch.Tensor]  # [N]
    bits: int
    group_size: int  # 0: one scale per output column
    pack_k: int  # 4 bits: the inputs of one packed block, the kernel's K step
    k: int
    n: int
    table: Table
    counters: torch.Tensor  # [tiles] int32, split-K arrivals (splitk.py)


@triton.jit
def _values(codes, MODE: tl.constexpr, DTYPE: tl.constexpr):
    """Codes (4-bit in uint8, or int8) as DTYPE values: code + CODE_BIAS for the magic
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
def _load_x(x_rows, k, row_ok, K, EVEN_K: tl.constexpr):
    """x[rows, k] ([BLOCK_M, len(k)]), zero outside."""
    if EVEN_K:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
    else:
        x = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
    return x


@triton.jit
def _add_group(acc, part, x_sum, group, scale_ptr, offset_ptr, cols, col_ok, N,
               CODE_BIAS: tl.constexpr, HAS_OFFSETS: tl.constexpr, NEEDS_XSUM: tl.constexpr):
    """acc + part * s + x_sum * (o - CODE_BIAS * s): one group's slice, scaled. ``part`` is
    x @ codes over the slice ([BLOCK_M, BLOCK_N]), ``x_sum`` the slice's row sums of x."""
    scale = tl.load(scale_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
    acc += part * scale[None, :]
    if NEEDS_XSUM:
        shift = -CODE_BIAS * scale
        if HAS_OFFSETS:
            shift += tl.load(offset_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc += x_sum[:, None] * shift[None, :]
    return acc


@triton.jit
def _row_sums(x):
    return tl.sum(x.to(tl.float32), axis=1)


@triton.jit
def _weight_only_kernel(
        x_ptr, stride_xm, w_ptr, scale_ptr, offset_ptr, bias_ptr, y_ptr, stride_ym,
        partial_ptr, counter_ptr, M, N, K, STEPS_PER_SPLIT, split_k,
        BITS: tl.constexpr, PER_CHANNEL: tl.constexpr, GROUP: tl.constexpr,
        HAS_OFFSETS: tl.constexpr, HAS_BIAS: tl.constexpr, MODE: tl.constexpr,
        CODE_BIAS: tl.constexpr, NEEDS_XSUM: tl.constexpr, SPLIT: tl.constexpr,
        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
        EVEN_K: tl.constexpr, UPCAST: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = output_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    if BITS == 4:  # a step reads BLOCK_K // 2 byte rows, each holding two k
        ks = tl.arange(0, BLOCK_K // 2)
        w_step = BLOCK_K // 2 * N
    else:
        ks = tl.arange(0, BLOCK_K)
        w_step = BLOCK_K * N
    zeros = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    acc = zeros
    x_sum = tl.zeros([BLOCK_M], tl.float32)  # per channel: over all of this program's K
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    w_tile = w_ptr + (first.to(tl.int64) * w_step + ks[:, None] * N) + cols[None, :]
    for step in range(first, last):
        k0 = step * BLOCK_K
        if BITS == 4:  # the packed block is padded: its bytes need no mask along K
            codes = tl.load(w_tile, mask=col_ok[None, :], other=0)
            low = _values(codes & 0xF, MODE, x_ptr.dtype.element_ty)
            high = _values(codes >> 4, MODE, x_ptr.dtype.element_ty)
            x_low = _load_x(x_rows, k0 + ks, row_ok, K, EVEN_K)
            x_high = _load_x(x_rows, k0 + BLOCK_K // 2 + ks, row_ok, K, EVEN_K)
            if PER_CHANNEL:
                acc = mma(x_high, high, mma(x_low, low, acc, UPCAST), UPCAST)
                x_sum += _row_sums(x_low) + _row_sums(x_high)
            elif GROUP % BLOCK_K == 0:  # both halves in one group: scaled once
                part = mma(x_high, high, mma(x_low, low, zeros, UPCAST), UPCAST)
                acc = _add_group(acc, part, _row_sums(x_low) + _row_sums(x_high), k0 // GROUP,
                                 scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                 HAS_OFFSETS, NEEDS_XSUM)
            else:
                acc = _add_group(acc, mma(x_low, low, zeros, UPCAST), _row_sums(x_low),
                                 k0 // GROUP, scale_ptr, offset_ptr, cols, col_ok, N,
                                 CODE_BIAS, HAS_OFFSETS, NEEDS_XSUM)
                # past K (a padded block) x is zero: any real group's scales serve
                high_group = tl.minimum((k0 + BLOCK_K // 2) // GROUP, K // GROUP - 1)
                acc = _add_group(acc, mma(x_high, high, zeros, UPCAST), _row_sums(x_high),
                                 high_group, scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                 HAS_OFFSETS, NEEDS_XSUM)
        else:
            k = k0 + ks
            if EVEN_K:
                codes = tl.load(w_tile, mask=col_ok[None, :], other=0)
            else:
                codes = tl.load(w_tile, mask=(k < K)[:, None] & col_ok[None, :], other=0)
            values = _values(codes, MODE, x_ptr.dtype.element_ty)
            x = _load_x(x_rows, k, row_ok, K, EVEN_K)
            if PER_CHANNEL:
                acc = mma(x, values, acc, UPCAST)
                x_sum += _row_sums(x)
            else:
                acc = _add_group(acc, mma(x, values, zeros, UPCAST), _row_sums(x), k0 // GROUP,
                                 scale_ptr, offset_ptr, cols, col_ok, N, CODE_BIAS,
                                 HAS_OFFSETS, NEEDS_XSUM)
        w_tile += w_step
    if PER_CHANNEL:
        acc = _add_group(zeros, acc, x_sum, 0, scale_ptr, offset_ptr, cols, col_ok, N,
                         CODE_BIAS, HAS_OFFSETS, NEEDS_XSUM)
    finish_tile(acc, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                pid, pid_k, split_k, HAS_BIAS, SPLIT)


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
    """Raise ConfigError for a group size the kernel cannot take (G < K and not a multiple
    of MIN_BLOCK_K, so no tensor-core step fits in one group)."""
    if group_size != k and (group_size <= 0 or group_size % MIN_BLOCK_K or k % group_size):
        raise ConfigError(f"{op}=triton: group size {group_size} (K = {k}) is not a multiple "
                          f"of {MIN_BLOCK_K} dividing K, or K itself (per channel); use the "
                          f"torch reference ({op}=torch) for this weight")


def _groups(scales: torch.Tensor) -> torch.Tensor:
    return scales.t().contiguous()  # [N, K/G] -> [K/G, N]


def pack_block(group_size: int, k: int) -> int:
    """4 bits: the inputs of one packed block (the kernel's K step), twice the largest power
    of two up to MAX_HALF dividing the group size, so that each half lies in one group."""
    half = MAX_HALF
    while group_size != k and group_size % half:
        half //= 2
    return 2 * half


def pack_4bit(codes: torch.Tensor, block: int) -> torch.Tensor:
    """[K, N] codes 0..15 -> [K'/2, N] uint8 (K' = K rounded up to ``block``, zero codes in
    the padding): in each block, byte row r = code r | code (block/2 + r) << 4."""
    k, n = codes.shape
    padded = codes.new_zeros(triton.cdiv(k, block) * block, n, dtype=torch.uint8)
    padded[:k] = codes
    halves = padded.reshape(-1, 2, block // 2, n)
    return (halves[:, 0] | (halves[:, 1] << 4)).reshape(-1, n)


def prepare_weight_only(qweight: torch.Tensor, scales: torch.Tensor,
                        offsets: Optional[torch.Tensor], group_size: int,
                        bias: Optional[torch.Tensor], bits: int, op: str) -> WeightOnlyState:
    """Repack the canonical [N, K] codes for the kernel (see the module docstring)."""
    n, k = qweight.shape
    if k % group_size or scales.shape != (n, k // group_size):
        raise ConfigError(f"{op}: scales of shape {tuple(scales.shape)} do not match qweight "
                          f"{tuple(qweight.shape)} with group_size {group_size}")
    check_group_size(group_size, k, op)
    block = pack_block(group_size, k) if bits == 4 else 0
    codes = pack_4bit(qweight.t(), block) if bits == 4 else qweight.t().contiguous()
    table = table_for(WEIGHT_ONLY, device_key(qweight.device, interpreting()))
    return WeightOnlyState(
        codes=codes, scales=_groups(scales),
        offsets=None if offsets is None else _groups(offsets), bias=bias, bits=bits,
        group_size=0 if group_size == k else group_size, pack_k=block, k=k, n=n, table=table,
        counters=arrival_counters(max_split_tiles(table, n), qweight.device))


def weight_only_matmul(state: WeightOnlyState, x: torch.Tensor,
                       out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """y [..., N] = x [..., K] @ dequantized(weight).T + bias, in ``out_dtype`` (x's)."""
    k, n = state.k, state.n
    lead = x.shape[:-1]
    x = last_dim_contiguous(x.reshape(-1, k))
    m = x.shape[0]
    y = torch.empty((m, n), dtype=out_dtype or x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*lead, n)
    tile = tile_for(state.table, m)
    block_k = state.pack_k or step_k(tile.block_k, state.group_size)
    launch = split_launch(tile, m, n, triton.cdiv(k, block_k), state.counters, x.device)
    mode, code_bias = _mode(state.bits, x.dtype)
    offsets, bias = state.offsets, state.bias
    _weight_only_kernel[launch.grid](
        x, x.stride(0), state.codes, state.scales, offsets if offsets is not None else x,
        bias if bias is not None else x, y, y.stride(0), launch.partials, launch.counters,
        m, n, k, launch.steps_per_split, launch.split,
        BITS=state.bits, PER_CHANNEL=state.group_size == 0, GROUP=state.group_size or k,
        HAS_OFFSETS=offsets is not None, HAS_BIAS=bias is not None, MODE=mode,
        CODE_BIAS=code_bias, NEEDS_XSUM=offsets is not None or code_bias != 0,
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
