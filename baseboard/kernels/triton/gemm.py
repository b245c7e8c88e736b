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
def _input_tile(x_ptr, k, K, k_ok, GATED: tl.constexpr, MASKED: tl.constexpr):
    """x[k] in float32; GATED: x is [2K] and the tile is silu(x[k]) * x[K + k], each
    product rounded to x's dtype as silu_and_mul rounds it (activation.py)."""
    if MASKED:
        x = tl.load(x_ptr + k, mask=k_ok, other=0.0).to(tl.float32)
    else:
        x = tl.load(x_ptr + k).to(tl.float32)
    if GATED:
        if MASKED:
            up = tl.load(x_ptr + K + k, mask=k_ok, other=0.0).to(tl.float32)
        else:
            up = tl.load(x_ptr + K + k).to(tl.float32)
        silu = (x * tl.sigmoid(x)).to(x_ptr.dtype.element_ty).to(tl.float32)
        x = (silu * up).to(x_ptr.dtype.element_ty).to(tl.float32)
    return x


@triton.heuristics({"EVEN_K": lambda args: args["K"] % args["BLOCK_K"] == 0})
@triton.jit
def _gemv_kernel(x_ptr, w_ptr, w_stride, bias_ptr, y_ptr, N, K, HAS_BIAS: tl.constexpr,
                 GATED: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                 EVEN_K: tl.constexpr, PDL: tl.constexpr):
    pdl_prologue(PDL)
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
    row_ok = rows < N
    # rows past N read row N - 1 again (never stored): no mask on the weight loads
    w_rows = w_ptr + tl.minimum(rows, N - 1).to(tl.int64)[:, None] * w_stride
    cols = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for start in range(0, K, BLOCK_K):
        k = start + cols
        if EVEN_K:
            x = _input_tile(x_ptr, k, K, k < K, GATED, False)
            w = tl.load(w_rows + k[None, :])
        else:
            k_ok = k < K
            x = _input_tile(x_ptr, k, K, k_ok, GATED, True)
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
         y: torch.Tensor, gated: bool = False) -> None:
    """y [1, N] = x [1, K] @ weight [N, K].T (+ bias), with the device's tile for this shape.
    ``gated``: x is [1, 2K] and the product is silu_and_mul(x) @ weight.T (+ bias)."""
    n, k = weight.shape
    args = (x, weight, weight.stride(0), bias if bias is not None else x, y, n, k)
    options = dict(HAS_BIAS=bias is not None, GATED=gated, **pdl_options(x.device))
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


def _one_row(state: LinearWeights, x: torch.Tensor) -> bool:
    """Whether ``x`` is one row the GEMV multiplies (else cuBLAS, through torch)."""
    weight = state.weight
    return x.dim() == 2 and x.shape[0] == 1 and weight.stride(1) == 1 and x.dtype == weight.dtype
