"""Weight-only quantized GEMMs (``gemm_w4a16``, ``gemm_w8a16``) with the dequantization
fused into the GEMM.

Layout (``prepare``): the codes are transposed to [K, N] so that a K step reads whole rows
of N; 4-bit codes are packed two a byte along K (even k in the low nibble), [ceil(K/2), N]
uint8; int8 codes stay one a byte. Scales and offsets become [K/G, N] ([1, N] per channel).

The kernel multiplies the raw codes, not dequantized weights: within one K step every
input shares its group's scale s and offset o, so
    sum_k x[k] (q[k] s + o) = s * sum_k x[k] q[k] + o * sum_k x[k]
and the tensor cores take the codes as 16-bit integers-in-floats, while the scale and
offset cost one multiply-add per output element of the step instead of one per weight.
The codes become floats without a conversion instruction: OR-ing a 4-bit code into the
mantissa of 128 (bf16) or 1024 (fp16) gives 128 + q (1024 + q) exactly, and the constant
is taken back out through the same sum of x (``CODE_BIAS``). A step therefore never spans
two groups: its K is a power of two dividing the group size.

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



class WeightOnlyState(NamedTuple):
    codes: torch.Tensor  # 4 bits: [ceil(K/2), N] uint8, two codes a byte; 8 bits: [K, N] int8
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
def _code_values(codes, shift, BITS: tl.constexpr, MODE: tl.constexpr, DTYPE: tl.constexpr):
    """[BLOCK_K, BLOCK_N] codes as DTYPE values (code + CODE_BIAS for the magic modes)."""
    if BITS == 4:
        q = (codes >> shift) & 0xF
        if MODE == "magic_bf16":
            values = (q.to(tl.int16) | 0x4300).to(tl.int16).to(tl.bfloat16, bitcast=True)  # 128 + q
        elif MODE == "magic_fp16":
            values = (q.to(tl.int16) | 0x6400).to(tl.int16).to(tl.float16, bitcast=True)  # 1024 + q
        else:
            values = q.to(DTYPE)
    else:
        if MODE == "magic_fp16":
            values = (codes.to(tl.int16) + 0x6480).to(tl.int16).to(tl.float16,
                                                                   bitcast=True)  # 1152 + q
        elif MODE == "via_fp32":
            # 2^23 + 128 + q as float32 bits, less the constant: q exactly, then bf16 exactly
            exact = (codes.to(tl.int32) + 0x4B000080).to(tl.float32, bitcast=True) - 8388736.0
            values = exact.to(DTYPE)
        else:
            values = codes.to(DTYPE)
    return values


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
    ks = tl.arange(0, BLOCK_K)
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    if BITS == 4:  # each byte row holds two k: both rows read it, each takes its nibble
        w_tile = w_ptr + (ks // 2).to(tl.int64)[:, None] * N + cols[None, :]
        shift = ((ks % 2) * 4).to(tl.uint8)[:, None]
        w_step = BLOCK_K // 2 * N
    else:
        w_tile = w_ptr + ks.to(tl.int64)[:, None] * N + cols[None, :]
        shift = 0
        w_step = BLOCK_K * N
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    x_sum = tl.zeros([BLOCK_M], tl.float32)
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    w_tile += first.to(tl.int64) * w_step
    for step in range(first, last):
        k = step * BLOCK_K + ks
        if EVEN_K:
            x = tl.load(x_rows + k[None, :], mask=row_ok[:, None], other=0.0)
            codes = tl.load(w_tile, mask=col_ok[None, :], other=0)
        else:
            x = tl.load(x_rows + k[None, :], mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
            codes = tl.load(w_tile, mask=(k < K)[:, None] & col_ok[None, :], other=0)
        values = _code_values(codes, shift, BITS, MODE, x_ptr.dtype.element_ty)
        if PER_CHANNEL:
            acc = mma(x, values, acc, UPCAST)
            if NEEDS_XSUM:
                x_sum += tl.sum(x.to(tl.float32), axis=1)
        else:
            part = mma(x, values, tl.zeros([BLOCK_M, BLOCK_N], tl.float32), UPCAST)
            group = (step * BLOCK_K) // GROUP
            scale = tl.load(scale_ptr + group * N + cols, mask=col_ok, other=0.0).to(tl.float32)
            acc += part * scale[None, :]
            if NEEDS_XSUM:
                shift_per_x = -CODE_BIAS * scale
                if HAS_OFFSETS:
                    shift_per_x += tl.load(offset_ptr + group * N + cols, mask=col_ok,
                                           other=0.0).to(tl.float32)
                acc += tl.sum(x.to(tl.float32), axis=1)[:, None] * shift_per_x[None, :]
        w_tile += w_step
    if PER_CHANNEL:
        scale = tl.load(scale_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        acc = acc * scale[None, :]
        if NEEDS_XSUM:
            shift_per_x = -CODE_BIAS * scale
            if HAS_OFFSETS:
                shift_per_x += tl.load(offset_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            acc += x_sum[:, None] * shift_per_x[None, :]
    finish_tile(acc, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                pid, pid_k, split_k, HAS_BIAS, SPLIT)


def _mode(bits: int, dtype: torch.dtype) -> tuple[str, int]:
    """(MODE, CODE_BIAS): how codes of ``bits`` become floats of x's ``dtype``, and the
    constant that adds to each."""
    if dtype == torch.bfloat16:
        return ("magic_bf16", 128) if bits == 4 else ("via_fp32", 0)
    if dtype == torch.float16:
        return ("magic_fp16", 1024) if bits == 4 else ("magic_fp16", 1152)
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


def prepare_weight_only(qweight: torch.Tensor, scales: torch.Tensor,
                        offsets: Optional[torch.Tensor], group_size: int,
                        bias: Optional[torch.Tensor], bits: int, op: str) -> WeightOnlyState:
    """Repack the canonical [N, K] codes for the kernel (see the module docstring)."""
    n, k = qweight.shape
    if k % group_size or scales.shape != (n, k // group_size):
        raise ConfigError(f"{op}: scales of shape {tuple(scales.shape)} do not match qweight "
                          f"{tuple(qweight.shape)} with group_size {group_size}")
    check_group_size(group_size, k, op)
    codes = qweight.t()  # [K, N]
    if bits == 4:
        if k % 2:
            codes = torch.cat([codes, codes.new_zeros(1, n)])
        pairs = codes.reshape(-1, 2, n).to(torch.uint8)
        codes = pairs[:, 0] | (pairs[:, 1] << 4)  # [ceil(K/2), N]
    table = table_for(WEIGHT_ONLY, device_key(qweight.device, interpreting()))
    return WeightOnlyState(
        codes=codes.contiguous(), scales=_groups(scales),
        offsets=None if offsets is None else _groups(offsets),
        bias=bias, bits=bits, group_size=0 if group_size == k else group_size, k=k, n=n,
        table=table, counters=arrival_counters(max_split_tiles(table, n), qweight.device))


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
    block_k = step_k(tile.block_k, state.group_size)
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
