"""``gemm_w8a8_fp8_block``: float8_e4m3fn weights with one scale per BN x BK block
(DeepSeek-V3 / Qwen3 FP8). A small kernel quantizes x per token in groups of BK inputs,
then a tensor-core GEMM multiplies the fp8 codes one K step at a time, each step lying in
one group, and scales each step's product by its two scales before accumulating.

Tiles are fixed per M bucket (not yet tuned per device as quant_tiles.py does for the
other quantized GEMMs).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import triton
import triton.language as tl

from ...core.errors import ConfigError
from .common import last_dim_contiguous, pdl_options, pdl_prologue
from .quant_w8a8 import FP8_MAX, _round_to_e4m3

# a K step of the GEMM must lie within one activation group and be a tensor-core dot
MIN_BLOCK_K = 32
# (largest M, BLOCK_M, BLOCK_N, num_warps): decode rows, small batches, prefill
TILES = ((16, 16, 64, 4), (64, 64, 64, 4), (None, 128, 128, 8))


class BlockState(NamedTuple):
    qweight: torch.Tensor  # [N, K] float8_e4m3fn
    scales: torch.Tensor  # [ceil(N/BN), ceil(K/BK)] float32
    block_size: tuple[int, int]  # (BN, BK)
    block_k: int  # the GEMM's K step: a power of two dividing BK
    bias: Optional[torch.Tensor]


@triton.jit
def _quantize_groups_kernel(x_ptr, stride_xm, q_ptr, scale_ptr, K, GROUPS,
                            GROUP: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr):
    """Group ``program_id(1)`` of row ``program_id(0)`` of x [M, K] -> its float8_e4m3fn
    codes in q [M, K] and its scale (amax / 448) in scale [M, GROUPS]."""
    pdl_prologue(PDL)
    row = tl.program_id(0).to(tl.int64)
    group = tl.program_id(1)
    offsets = tl.arange(0, BLOCK)
    cols = group * GROUP + offsets
    mask = (offsets < GROUP) & (cols < K)
    v = tl.load(x_ptr + row * stride_xm + cols, mask=mask, other=0.0).to(tl.float32)
    scale = tl.math.div_rn(tl.maximum(tl.max(tl.abs(v), axis=0), 1e-12), FP8_MAX)
    v = _round_to_e4m3(tl.minimum(tl.maximum(tl.math.div_rn(v, scale), -FP8_MAX), FP8_MAX))
    tl.store(q_ptr + row * K + cols, v.to(q_ptr.dtype.element_ty), mask=mask)
    tl.store(scale_ptr + row * GROUPS + group, scale)


@triton.jit
def _block_kernel(a_ptr, a_scale_ptr, w_ptr, stride_wn, w_scale_ptr, bias_ptr, y_ptr,
                  stride_ym, M, N, K, GROUPS, BN, BK, HAS_BIAS: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  EVEN_K: tl.constexpr, PDL: tl.constexpr):
    """y [M, N] = sum over K steps of (a @ w.T)[step] * a_scale[m, group] *
    w_scale[n / BN, group] (+ bias); a [M, K] and w [N, K] float8_e4m3fn."""
    pdl_prologue(PDL)
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok, col_ok = rows < M, cols < N
    ks = tl.arange(0, BLOCK_K)
    a_tile = a_ptr + rows.to(tl.int64)[:, None] * K + ks[None, :]
    w_tile = w_ptr + cols.to(tl.int64)[None, :] * stride_wn + ks[:, None]
    a_scales = a_scale_ptr + rows.to(tl.int64) * GROUPS  # [BLOCK_M] row starts
    w_scales = w_scale_ptr + (cols // BN).to(tl.int64) * GROUPS  # [BLOCK_N]
    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    for step in range(0, tl.cdiv(K, BLOCK_K)):
        if EVEN_K:
            a = tl.load(a_tile, mask=row_ok[:, None], other=0.0)
            w = tl.load(w_tile, mask=col_ok[None, :], other=0.0)
        else:
            k = step * BLOCK_K + ks
            a = tl.load(a_tile, mask=row_ok[:, None] & (k < K)[None, :], other=0.0)
            w = tl.load(w_tile, mask=(k < K)[:, None] & col_ok[None, :], other=0.0)
        group = step * BLOCK_K // BK
        a_scale = tl.load(a_scales + group, mask=row_ok, other=0.0)
        w_scale = tl.load(w_scales + group, mask=col_ok, other=0.0)
        acc += tl.dot(a, w) * a_scale[:, None] * w_scale[None, :]
        a_tile += BLOCK_K
        w_tile += BLOCK_K
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rows.to(tl.int64)[:, None] * stride_ym + cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


def block_k_for(bk: int) -> Optional[int]:
    """The largest power of two up to 128 that divides BK, if at least MIN_BLOCK_K."""
    step = 128
    while step >= MIN_BLOCK_K and bk % step:
        step //= 2
    return step if step >= MIN_BLOCK_K else None


def quantize_groups(x: torch.Tensor, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] (last dim dense) -> (q [M, K] float8_e4m3fn, scale [M, ceil(K/group)]
    float32), each group of ``group`` inputs of a row scaled by its amax / 448."""
    m, k = x.shape
    groups = triton.cdiv(k, group)
    q = torch.empty((m, k), dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty((m, groups), dtype=torch.float32, device=x.device)
    if m:
        block = triton.next_power_of_2(group)
        _quantize_groups_kernel[(m, groups)](x, x.stride(0), q, scale, k, groups, GROUP=group,
                                             BLOCK=block, num_warps=max(1, min(4, block // 64)),
                                             **pdl_options(x.device))
    return q, scale


class GemmW8A8Fp8Block:
    """float8_e4m3fn weights with a scale per BN x BK block, activations quantized per token
    in groups of BK inputs to fp8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, block_size: tuple[int, int],
                bias: Optional[torch.Tensor]) -> BlockState:
        n, k = qweight.shape
        bn, bk = block_size
        want = (triton.cdiv(n, bn), triton.cdiv(k, bk))
        if qweight.dtype != torch.float8_e4m3fn or tuple(scales.shape) != want:
            raise ConfigError(f"gemm_w8a8_fp8_block: expected qweight [N, K] float8_e4m3fn and "
                              f"scales {list(want)} for blocks of {bn}x{bk}; got qweight "
                              f"{tuple(qweight.shape)} {qweight.dtype} and scales "
                              f"{tuple(scales.shape)}")
        block_k = block_k_for(bk)
        if block_k is None:
            raise ConfigError(f"gemm_w8a8_fp8_block (triton): blocks {bn}x{bk} are {bk} inputs "
                              f"wide; the kernel takes widths that are multiples of "
                              f"{MIN_BLOCK_K}.")
        return BlockState(qweight.contiguous(), scales.float().contiguous(), (bn, bk), block_k,
                          bias)

    @staticmethod
    def apply(state: BlockState, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        n, k = state.qweight.shape
        bn, bk = state.block_size
        lead = x.shape[:-1]
        x = last_dim_contiguous(x.reshape(-1, k))
        m = x.shape[0]
        y = torch.empty((m, n), dtype=out_dtype or x.dtype, device=x.device)
        if m == 0:
            return y.reshape(*lead, n)
        xq, x_scale = quantize_groups(x, bk)
        _, block_m, block_n, warps = next(t for t in TILES if t[0] is None or m <= t[0])
        bias = state.bias
        grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
        _block_kernel[grid](
            xq, x_scale, state.qweight, state.qweight.stride(0), state.scales,
            bias if bias is not None else x_scale, y, y.stride(0), m, n, k,
            state.scales.shape[1], bn, bk, HAS_BIAS=bias is not None, BLOCK_M=block_m,
            BLOCK_N=block_n, BLOCK_K=state.block_k, EVEN_K=k % state.block_k == 0,
            num_warps=warps, num_stages=3, **pdl_options(x.device))
        return y.reshape(*lead, n)
