"""``avx512`` row-wise ops: rms_norm, fused_add_rms_norm, silu_and_mul, rotary_embedding,
each one native pass per row (csrc/elementwise.c) where the torch references run
between two and a dozen ops with float32 temporaries.

Rows may have any stride (q and k are usually views into the fused qkv output);
only the last dimension must be contiguous, else the input is copied first.
fused_add_rms_norm and rotary_embedding work in place, as their op contracts allow.
"""

from __future__ import annotations

import torch

from . import native

def _matrix(x: torch.Tensor) -> torch.Tensor:
    """x as a [T, K] matrix with contiguous rows (a view when possible)."""
    if x.dim() != 2:
        x = x.reshape(-1, x.shape[-1])
    return x if x.stride(-1) == 1 else x.contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[T, K] -> [T, K] in x's dtype; statistics in float32."""
    rows = _matrix(x)
    weight = weight.contiguous()
    out = torch.empty(rows.shape, dtype=x.dtype)
    native.library().bb_rms_norm(rows.data_ptr(), rows.stride(0), out.data_ptr(), out.stride(0),
                       weight.data_ptr(), rows.shape[0], rows.shape[1], eps,
                       native.dtype_code(x.dtype), native.dtype_code(weight.dtype),
                       torch.get_num_threads())
    return out.view(x.shape)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual), written into x and residual."""
    if x.dtype != residual.dtype:
        residual = residual.to(x.dtype)
    rows, res = _matrix(x), _matrix(residual)
    weight = weight.contiguous()
    native.library().bb_fused_add_rms_norm(rows.data_ptr(), rows.stride(0), res.data_ptr(), res.stride(0),
                                 weight.data_ptr(), rows.shape[0], rows.shape[1], eps,
                                 native.dtype_code(x.dtype), native.dtype_code(weight.dtype),
                                 torch.get_num_threads())
    return rows.view(x.shape), res.view(x.shape)


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:]."""
    rows = _matrix(x)
    half = rows.shape[1] // 2
    out = torch.empty((rows.shape[0], half), dtype=x.dtype)
    native.library().bb_silu_and_mul(rows.data_ptr(), rows.stride(0), out.data_ptr(), out.stride(0),
                           rows.shape[0], half, native.dtype_code(x.dtype),
                           torch.get_num_threads())
    return out.view(*x.shape[:-1], half)


def _heads(x: torch.Tensor) -> torch.Tensor:
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64; q [T, Hq, D]; k [T, Hk, D]; cos_sin_cache [max_pos, D] float32.
    Rotates q and k in place (rotate-half style) and returns them."""
    q, k = _heads(q), _heads(k)
    positions = positions.contiguous()
    if positions.dtype != torch.int64:
        positions = positions.long()
    cache = cos_sin_cache if cos_sin_cache.dtype == torch.float32 and \
        cos_sin_cache.is_contiguous() else cos_sin_cache.float().contiguous()
    native.library().bb_rotary_embedding(positions.data_ptr(), q.data_ptr(), q.stride(0), q.shape[1],
                               k.data_ptr(), k.stride(0), k.shape[1], q.shape[2],
                               cache.data_ptr(), q.shape[0], native.dtype_code(q.dtype),
                               torch.get_num_threads())
    return q, k
