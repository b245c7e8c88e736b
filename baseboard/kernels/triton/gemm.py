"""Dense GEMM for one row: a Triton GEMV, and cuBLAS (through torch) for more rows.

A decode step of one sequence multiplies one row by every weight; cuBLAS's kernels for that
shape split K and reduce in a second kernel, or leave SMs idle on narrow weights. The GEMV
streams each weight once: a program takes BLOCK_N rows of it, multiplies them by the input
row in float32 and sums at the end. The tile per weight shape comes from the device's table
(device_tables.py), or is tuned on first use (``triton.autotune``, timing each tile inside
a CUDA graph: at load, in the warm-up before the decode graphs are captured).

``Gemm.apply_silu_and_mul`` (the gemm op's ``silu_and_mul`` fusion) is the down projection
of a SwiGLU MLP in one kernel at one row: the GEMV reads the gate and up halves of its
input and computes silu(gate) * up per K tile, with the same roundings as silu_and_mul.
"""

from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
import triton.testing

from ..torch.gemm import Gemm as TorchGemm
from ..torch.gemm import LinearWeights
from .activation import silu_and_mul
from .norm import fused_add_rms_norm
from .common import pdl_options, pdl_prologue
from .device_tables import table_for
from .records import interpreting

# (BLOCK_N, BLOCK_K, num_warps, num_stages): narrow weights want short rows for enough
# programs. A device's table (device_tables.py) names the tile per weight shape; a shape it
# lacks is tuned over these on first use.
_TILES = ((4, 1024, 4, 3), (8, 512, 4, 3), (8, 1024, 4, 3), (16, 512, 4, 3), (16, 256, 4, 3),
          (32, 256, 4, 3), (8, 2048, 8, 3), (16, 1024, 8, 3), (16, 1024, 8, 4),
          (32, 512, 8, 4), (8, 1024, 4, 4), (16, 512, 4, 4))
_CONFIGS = [triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
            for n, k, w, s in (_TILES[:1] if interpreting() else _TILES)]


def _bench_in_graph(kernel_call, quantiles):
    """Tile timings as the decode step runs the GEMV: replayed back to back from a CUDA
    graph (timed one launch at a time, the launch overhead hides the tile's speed)."""
    return triton.testing.do_bench_cudagraph(kernel_call, rep=20, quantiles=quantiles)


@triton.jit
def _load(ptr, k, k_ok, MASKED: tl.constexpr):
    if MASKED:
        x = tl.load(ptr + k, mask=k_ok, other=0.0).to(tl.float32)
    else:
        x = tl.load(ptr + k).to(tl.float32)
    return x


@triton.jit
def _added(x_ptr, res_ptr, k, k_ok, MASKED: tl.constexpr):
    """(x + residual)[k] in float32, rounded to x's dtype as an unfused add rounds it."""
    summed = _load(x_ptr, k, k_ok, MASKED) + _load(res_ptr, k, k_ok, MASKED)
    return summed.to(x_ptr.dtype.element_ty).to(tl.float32)


@triton.jit
def _input_tile(x_ptr, k, K, k_ok, res_ptr, norm_ptr, rstd, GATED: tl.constexpr,
                NORMED: tl.constexpr, MASKED: tl.constexpr):
    """x[k] in float32, rounded as the unfused ops round it. GATED: x is [2K] and the tile
    is silu(x[k]) * x[K + k] (activation.py); NORMED: the tile is
    rms_norm(x + residual)[k] with the row's ``rstd`` and the norm's weight (norm.py)."""
    if NORMED:
        normed = _added(x_ptr, res_ptr, k, k_ok, MASKED) * rstd * _load(norm_ptr, k, k_ok, MASKED)
        x = normed.to(x_ptr.dtype.element_ty).to(tl.float32)
    else:
        x = _load(x_ptr, k, k_ok, MASKED)
    if GATED:
        if MASKED:
            up = tl.load(x_ptr + K + k, mask=k_ok, other=0.0).to(tl.float32)
        else:
            up = tl.load(x_ptr + K + k).to(tl.float32)
        silu = (x * tl.sigmoid(x)).to(x_ptr.dtype.element_ty).to(tl.float32)
        x = (silu * up).to(x_ptr.dtype.element_ty).to(tl.float32)
    return x


@triton.jit
def _row_rstd(x_ptr, res_ptr, sum_ptr, K, eps, cols, BLOCK_K: tl.constexpr):
    """1 / rms of the row x + residual (over K, in float32); the first program also
    stores the sum (rounded to x's dtype) in sum_ptr."""
    first = cols * 0 + tl.program_id(0) == 0  # a vector: the interpreter takes no scalar mask
    squares = tl.zeros([BLOCK_K], tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + cols
        k_ok = k < K
        summed = _added(x_ptr, res_ptr, k, k_ok, True)
        squares += summed * summed
        tl.store(sum_ptr + k, summed.to(sum_ptr.dtype.element_ty), mask=k_ok & first)
    return tl.rsqrt(tl.sum(squares, axis=0) / K + eps)


@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _gemv_kernel(x_ptr, w_ptr, w_stride, bias_ptr, y_ptr, N, K, res_ptr, norm_ptr, sum_ptr,
                 eps, HAS_BIAS: tl.constexpr, GATED: tl.constexpr, NORMED: tl.constexpr,
                 BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, EVEN_K: tl.constexpr,
                 PDL: tl.constexpr):
    pdl_prologue(PDL)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    # rows past N read row N - 1 again (never stored): no mask on the weight loads
    w_rows = w_ptr + tl.minimum(rows, N - 1).to(tl.int64)[:, None] * w_stride
    cols = tl.arange(0, BLOCK_K)
    rstd = 1.0
    if NORMED:  # every program needs the row's statistics before its first tile
        rstd = _row_rstd(x_ptr, res_ptr, sum_ptr, K, eps, cols, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + cols
        if EVEN_K:
            x = _input_tile(x_ptr, k, K, k < K, res_ptr, norm_ptr, rstd, GATED, NORMED, False)
            w = tl.load(w_rows + k[None, :])
        else:
            k_ok = k < K
            x = _input_tile(x_ptr, k, K, k_ok, res_ptr, norm_ptr, rstd, GATED, NORMED, True)
            w = tl.load(w_rows + k[None, :], mask=k_ok[None, :], other=0.0)
        acc += w.to(tl.float32) * x[None, :]
    y = tl.sum(acc, 1)
    if HAS_BIAS:
        y += tl.load(bias_ptr + rows, mask=row_ok, other=0.0).to(tl.float32)
    tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=row_ok)


_gemv_tuned = triton.autotune(configs=_CONFIGS, key=["N", "K"],
                              do_bench=_bench_in_graph)(_gemv_kernel)


_TILES: dict[tuple, list] = {}  # (device, N, K, dtype) -> tile, so a call looks up one key


def gemv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
         y: torch.Tensor, gated: bool = False, normed: Optional[tuple] = None) -> None:
    """y [1, N] = x [1, K] @ weight [N, K].T (+ bias), with the device's tile for this shape.
    ``gated``: x is [1, 2K] and the product is silu_and_mul(x) @ weight.T (+ bias).
    ``normed``: (residual [1, K], norm weight [K], eps, summed [1, K]): the product is
    rms_norm(x + residual) @ weight.T (+ bias), and x + residual is written to summed."""
    n, k = weight.shape
    residual, norm_weight, eps, summed = normed if normed is not None else (x, x, 0.0, x)
    args = (x, weight, weight.stride(0), bias if bias is not None else x, y, n, k, residual,
            norm_weight, summed, eps)
    options = dict(HAS_BIAS=bias is not None, GATED=gated, NORMED=normed is not None,
                   **pdl_options(x.device))
    if interpreting():
        _gemv_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **options)
        return
    key = (x.device, n, k, weight.dtype)
    tile = _TILES.get(key)
    if tile is None:  # first call of this shape in this process
        table = table_for(x.device)
        shape = f"{n}x{k}:{str(weight.dtype).removeprefix('torch.')}"
        tile = table.get("gemv", shape)
        if tile is None:  # tuned here, once: the next process reads it from the cache
            _gemv_tuned[lambda meta: (triton.cdiv(n, meta["BLOCK_N"]),)](*args, **options)
            best = _gemv_tuned.best_config
            tile = [best.kwargs["BLOCK_N"], best.kwargs["BLOCK_K"], best.num_warps,
                    best.num_stages]
            table.remember("gemv", shape, tile)
            _TILES[key] = tile
            return
        _TILES[key] = tile
    block_n, block_k, warps, stages = tile
    _gemv_kernel[(triton.cdiv(n, block_n),)](*args, BLOCK_N=block_n, BLOCK_K=block_k,
                                             num_warps=warps, num_stages=stages, **options)


class Gemm:
    """y = x @ weight.T + bias; one row through the GEMV, more through cuBLAS."""

    prepare = staticmethod(TorchGemm.prepare)

    @staticmethod
    def apply(state: LinearWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if not _one_row(state, x):
            return TorchGemm.apply(state, x, out_dtype)
        y = torch.empty(1, state.weight.shape[0], dtype=out_dtype or x.dtype, device=x.device)
        gemv(x.contiguous(), state.weight, state.bias, y)
        return y

    @staticmethod
    def apply_silu_and_mul(state: LinearWeights, x: torch.Tensor,
                           out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, 2K] -> [T, N] = apply(state, silu_and_mul(x)): one kernel at one row."""
        if not _one_row(state, x):
            return Gemm.apply(state, silu_and_mul(x), out_dtype)
        y = torch.empty(1, state.weight.shape[0], dtype=out_dtype or x.dtype, device=x.device)
        gemv(x.contiguous(), state.weight, state.bias, y, gated=True)
        return y

    @staticmethod
    def apply_add_rms_norm(state: LinearWeights, x: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor, eps: float,
                           out_dtype: Optional[torch.dtype] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """x, residual [T, K], weight [K] -> (apply(state, rms_norm(x + residual)),
        x + residual): one kernel at one row, the sum in a new tensor (the GEMV's programs
        all read the residual, so none may overwrite it)."""
        if not _one_row(state, x) or residual.shape != x.shape or residual.dtype != x.dtype:
            normed, summed = fused_add_rms_norm(x, residual, weight, eps)
            return Gemm.apply(state, normed, out_dtype), summed
        y = torch.empty(1, state.weight.shape[0], dtype=out_dtype or x.dtype, device=x.device)
        summed = torch.empty_like(x)
        gemv(x.contiguous(), state.weight, state.bias, y,
             normed=(residual.contiguous(), weight, eps, summed))
        return y, summed


def _one_row(state: LinearWeights, x: torch.Tensor) -> bool:
    """Whether ``x`` is one row the GEMV multiplies (else cuBLAS, through torch)."""
    weight = state.weight
    return x.dim() == 2 and x.shape[0] == 1 and weight.stride(1) == 1 and x.dtype == weight.dtype
