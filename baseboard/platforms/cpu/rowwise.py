"""``avx512`` row-wise ops: rms_norm, fused_add_rms_norm, silu_and_mul, rotary_embedding,
each one native pass per row (csrc/elementwise.c) where the torch references run
between two and a dozen ops with float32 temporaries.

Rows may have any stride (q and k are usually views into the fused qkv output);
only the last dimension must be contiguous, else the input is copied first.
fused_add_rms_norm and rotary_embedding work in place, as their op contracts allow.
The wrappers do as little as they can: at decode a call costs a few microseconds,
and most of that is here, not in the kernel.
"""

from __future__ import annotations

import torch

from . import native


def _matrix(x: torch.Tensor) -> torch.Tensor:
    """x as a [T, K] matrix with contiguous rows (a view when possible)."""
    if x.dim() != 2:
        x = x.reshape(-1, x.shape[-1])
    return x if x.stride(1) == 1 else x.contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[T, K] -> [T, K] in x's dtype; statistics in float32."""
    rows = _matrix(x)
    weight = weight.contiguous()
    out = torch.empty_like(rows, memory_format=torch.contiguous_format)
    tokens, width = rows.shape
    native.library().bb_rms_norm(rows.data_ptr(), rows.stride(0), out.data_ptr(), width,
                                 weight.data_ptr(), tokens, width, eps,
                                 native.dtype_code(x.dtype), native.dtype_code(weight.dtype),
                                 torch.get_num_threads())
    return out if x.dim() == 2 else out.view(x.shape)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), written into x and residual."""
    if x.dtype != residual.dtype:
        residual = residual.to(x.dtype)
    rows, res = _matrix(x), _matrix(residual)
    weight = weight.contiguous()
    tokens, width = rows.shape
    native.library().bb_fused_add_rms_norm(
        rows.data_ptr(), rows.stride(0), res.data_ptr(), res.stride(0), weight.data_ptr(),
        tokens, width, eps, native.dtype_code(x.dtype), native.dtype_code(weight.dtype),
        torch.get_num_threads())
    if x.dim() == 2:
        return rows, res
    return rows.view(x.shape), res.view(x.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:]."""
    rows = _matrix(x)
    tokens, width = rows.shape
    half = width // 2
    out = torch.empty((tokens, half), dtype=x.dtype)
    native.library().bb_silu_and_mul(rows.data_ptr(), rows.stride(0), out.data_ptr(), half,
                                     tokens, half, native.dtype_code(x.dtype),
                                     torch.get_num_threads())
    return out if x.dim() == 2 else out.view(*x.shape[:-1], half)


def adjacent_heads(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] itself when each token's heads are adjacent (rows of H x D values, any
    row stride: the kernels take a row stride only), else a contiguous copy."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64; q [T, Hq, D]; k [T, Hk, D]; cos_sin_cache [max_pos, D] float32.
    Rotates q and k in place (rotate-half style) and returns them."""
    q, k = adjacent_heads(q), adjacent_heads(k)
    if positions.dtype != torch.int64 or positions.stride(0) != 1:
        positions = positions.long().contiguous()
    cache = cos_sin_cache
    if cache.dtype != torch.float32 or not cache.is_contiguous():
        cache = cache.float().contiguous()
    tokens, heads, dim = q.shape
    native.library().bb_rotary_embedding(
        positions.data_ptr(), q.data_ptr(), q.stride(0), heads, k.data_ptr(), k.stride(0),
        k.shape[1], dim, cache.data_ptr(), tokens, native.dtype_code(q.dtype),
        torch.get_num_threads())
    return q, k
