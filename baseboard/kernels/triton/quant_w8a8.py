"""W8A8 GEMMs (``gemm_w8a8_fp8``, ``gemm_w8a8_int8``): a small kernel quantizes each row of
x (dynamic, per token: scale = amax / QMAX), then a tensor-core GEMM multiplies the 8-bit
rows by the 8-bit weight and rescales by both scales.

The weight keeps its [N, K] layout: K-major tiles are what the 8-bit tensor-core
instructions read. Small M splits K like the weight-only kernels (splitk.py); tiles per M
bucket and device are data (quant_tiles.py).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ...core.errors import ConfigError
from .common import last_dim_contiguous, pdl_options, pdl_prologue
from .quant_tiles import W8A8, Table, device_key, max_split_tiles, table_for, tile_for
from .records import interpreting
from .splitk import arrival_counters, finish_tile, output_tile, split_launch

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn
# 1.5 * 2^23: adding and subtracting it rounds a float32 to an integer, half to even
ROUNDING = tl.constexpr(12582912.0)
QUANTIZE_BLOCK = 1024


class ChannelState(NamedTuple):
    qweight: torch.Tensor  # [N, K] int8 or float8_e4m3fn
    scales: torch.Tensor  # [N] float32
    bias: Optional[torch.Tensor]  # [N]
    table: Table
    counters: torch.Tensor  # [tiles] int32, split-K arrivals (splitk.py)


@triton.jit
def _round_to_e4m3(v):
    """float32 ``v`` (|v| <= 448) rounded, half to even, to a float8_e4m3fn value, in float32
    arithmetic: the conversion after it is then exact on every backend (Triton's interpreter
    drops the carry when rounding up crosses a power of two)."""
    bits = v.to(tl.int32, bitcast=True)
    # 3 mantissa bits of 23 kept: add half an ulp (less one, plus the kept lsb), truncate
    normal = ((bits + 0x7FFFF + ((bits >> 20) & 1)) & -0x100000).to(tl.float32, bitcast=True)
    subnormal = ((v * 512.0 + ROUNDING) - ROUNDING) * (1.0 / 512.0)  # multiples of 2^-9
    return tl.where(tl.abs(v) < 0.015625, subnormal, normal)


@triton.jit
def _quantize_rows_kernel(x_ptr, stride_xm, q_ptr, scale_ptr, K, QMAX: tl.constexpr,
                          TO_INT8: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """One row of x [M, K] -> q [M, K] (int8 or float8_e4m3fn), scale [M] float32."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * stride_xm
    cols = tl.arange(0, BLOCK)
    amax = tl.zeros([BLOCK], tl.float32)
    for start in range(0, K, BLOCK):
        v = tl.load(x_row + start + cols, mask=start + cols < K, other=0.0).to(tl.float32)
        amax = tl.maximum(amax, tl.abs(v))
    scale = tl.math.div_rn(tl.maximum(tl.max(amax, axis=0), 1e-12), QMAX)
    for start in range(0, K, BLOCK):
        k = start + cols
        v = tl.load(x_row + k, mask=k < K, other=0.0).to(tl.float32)
        v = tl.math.div_rn(v, scale)  # divided, as the reference does: same codes
        if TO_INT8:
            v = tl.minimum(tl.maximum((v + ROUNDING) - ROUNDING, -128.0), 127.0)
        else:
            v = _round_to_e4m3(tl.minimum(tl.maximum(v, -QMAX), QMAX))
        tl.store(q_ptr + row * K + k, v.to(q_ptr.dtype.element_ty), mask=k < K)
    tl.store(scale_ptr + row, scale)


@triton.jit
def _w8a8_kernel(a_ptr, a_scale_ptr, w_ptr, stride_wn, w_scale_ptr, bias_ptr, y_ptr, stride_ym,
                 partial_ptr, counter_ptr, M, N, K, STEPS_PER_SPLIT, split_k,
                 HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr, BLOCK_M: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
                 EVEN_K: tl.constexpr, INTEGER: tl.constexpr, PDL: tl.constexpr):
    """y = (a [M, K] @ w [N, K].T) * a_scale [M, 1] * w_scale [N] + bias; INTEGER: int8
    operands, accumulated in int32."""
    pdl_prologue(PDL)
    pid, pid_k = tl.program_id(0), tl.program_id(1)
    pid_m, pid_n = output_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    ks = tl.arange(0, BLOCK_K)
    first = pid_k * STEPS_PER_SPLIT
    last = tl.minimum(first + STEPS_PER_SPLIT, tl.cdiv(K, BLOCK_K))
    a_tile = a_ptr + rows.to(tl.int64)[:, None] * K + (first * BLOCK_K + ks)[None, :]
    w_tile = w_ptr + cols.to(tl.int64)[None, :] * stride_wn + (first * BLOCK_K + ks)[:, None]
    if INTEGER:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
    else:
        acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for step in range(first, last):
        if EVEN_K:
            a = tl.load(a_tile, mask=row_ok[:, None], other=0.0)
            w = tl.load(w_tile, mask=col_ok[None, :], other=0.0)
        else:
            k = step * BLOCK_K + ks
            a = tl.load(a_tile, mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
            w = tl.load(w_tile, mask=(k < K)[:, None] & col_ok[None, :], other=0.0)
        if INTEGER:  # Triton 3.6 checks the accumulator against out_dtype (default float32)
            acc = tl.dot(a, w, acc, out_dtype=tl.int32)
        else:
            acc = tl.dot(a, w, acc)
        a_tile += BLOCK_K
        w_tile += BLOCK_K
    a_scale = tl.load(a_scale_ptr + rows, mask=row_ok, other=0.0)
    w_scale = tl.load(w_scale_ptr + cols, mask=col_ok, other=0.0)
    y = acc.to(tl.float32) * a_scale[:, None] * w_scale[None, :]
    finish_tile(y, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                pid, pid_k, split_k, HAS_BIAS, SPLIT)


def quantize_rows(x: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (last dim dense) -> (q [M, K] ``dtype``, scale [M] float32) with
    q = x / scale rounded (int8: to nearest, even on ties) and scale = amax / QMAX per row."""
    m, k = x.shape
    q = torch.empty((m, k), dtype=dtype, device=x.device)
    scale = torch.empty(m, dtype=torch.float32, device=x.device)
    if m:
        to_int8 = dtype == torch.int8
        block = min(QUANTIZE_BLOCK, triton.next_power_of_2(k))
        _quantize_rows_kernel[(m,)](x, x.stride(0), q, scale, k,
                                    QMAX=INT8_MAX if to_int8 else FP8_MAX, TO_INT8=to_int8,
                                    BLOCK=block, num_warps=max(1, min(8, block // 256)),
                                    **pdl_options(x.device))
    return q, scale


def prepare_channel(qweight: torch.Tensor, scales: torch.Tensor, bias: Optional[torch.Tensor],
                    dtype: torch.dtype, op: str) -> ChannelState:
    n, k = qweight.shape
    if qweight.dtype != dtype or scales.shape != (n,):
        raise ConfigError(f"{op}: expected qweight [N, K] {dtype} and scales [N]; got qweight "
                          f"{tuple(qweight.shape)} {qweight.dtype} and scales "
                          f"{tuple(scales.shape)}")
    table = table_for(W8A8, device_key(qweight.device, interpreting()))
    return ChannelState(qweight.contiguous(), scales.float().contiguous(), bias, table,
                        arrival_counters(max_split_tiles(table, n), qweight.device))


def w8a8_matmul(state: ChannelState, x: torch.Tensor,
                out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """y [..., N] = quantize(x [..., K]) @ qweight.T, rescaled, + bias, in ``out_dtype``."""
    n, k = state.qweight.shape
    lead = x.shape[:-1]
    x = last_dim_contiguous(x.reshape(-1, k))
    m = x.shape[0]
    y = torch.empty((m, n), dtype=out_dtype or x.dtype, device=x.device)
    if m == 0:
        return y.reshape(*lead, n)
    xq, x_scale = quantize_rows(x, state.qweight.dtype)
    tile = tile_for(state.table, m)
    launch = split_launch(tile, m, n, triton.cdiv(k, tile.block_k), state.counters, x.device)
    bias = state.bias
    _w8a8_kernel[launch.grid](
        xq, x_scale, state.qweight, state.qweight.stride(0), state.scales,
        bias if bias is not None else x_scale, y, y.stride(0), launch.partials,
        launch.counters, m, n, k, launch.steps_per_split, launch.split,
        HAS_BIAS=bias is not None, SPLIT=launch.split > 1, BLOCK_M=tile.block_m,
        BLOCK_N=tile.block_n, BLOCK_K=tile.block_k, GROUP_M=tile.group_m,
        EVEN_K=k % tile.block_k == 0, INTEGER=xq.dtype == torch.int8,
        num_warps=tile.num_warps, num_stages=tile.num_stages, **pdl_options(x.device))
    return y.reshape(*lead, n)


class GemmW8A8Fp8:
    """float8_e4m3fn weights (per-channel scales), activations quantized per token to fp8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ChannelState:
        return prepare_channel(qweight, scales, bias, torch.float8_e4m3fn, "gemm_w8a8_fp8")

    apply = staticmethod(w8a8_matmul)


class GemmW8A8Int8:
    """int8 weights (per-channel scales), activations quantized per token to int8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ChannelState:
        return prepare_channel(qweight, scales, bias, torch.int8, "gemm_w8a8_int8")

    apply = staticmethod(w8a8_matmul)
