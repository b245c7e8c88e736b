"""``ipex`` row-wise ops: IPEX's RMSNorm, add-then-RMSNorm, rotary and SiLU-and-mul behind
the contract's signatures.

What each adapter bridges:

* fused_add_rms_norm: IPEX has no op of that name; ``add_rmsnorm(x, residual, ...,
  add_back=True)`` adds, normalizes, and writes the sum back into ``residual``, which is
  the contract's second output.
* rotary_embedding: IPEX takes a [P, D] float32 table with sin before cos (ours is cos
  then sin) and [1, T, H, D] inputs, and returns new tensors; the reordered table is made
  once per cache tensor and kept, and the results are copied back into q and k so that
  views into a fused qkv output see them, as with the other implementations.
* silu_and_mul: IPEX's ``silu_mul`` takes the two halves as two tensors. On the CPU it is
  a ``torch.compile`` function: its first call compiles with Inductor (tens of seconds,
  once per process and then from Inductor's cache).

IPEX is imported on the first call (``ipex_runtime``), never at import of this module.
"""

from __future__ import annotations

import torch

from .ipex_runtime import ipex


def _ops():
    ipex()  # registers torch.ops.torch_ipex
    return torch.ops.torch_ipex


def _matrix(x: torch.Tensor) -> torch.Tensor:
    """x as [T, K] with contiguous rows; IPEX's kernels read rows densely."""
    x = x.reshape(-1, x.shape[-1])
    return x if x.is_contiguous() else x.contiguous()


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """[T, K] -> [T, K] in x's dtype (IPEX ``rmsnorm``, statistics in float32)."""
    weight = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    return _ops().rmsnorm(_matrix(x), weight, eps).view(x.shape)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rms_norm(x + residual), x + residual); the sum is written into ``residual``."""
    rows, res = _matrix(x), _matrix(residual.to(x.dtype))
    weight = weight if weight.dtype == x.dtype else weight.to(x.dtype)
    normed = _ops().add_rmsnorm(rows, res, weight, eps, True)
    return normed.view(x.shape), res.view(x.shape)


_sin_cos_tables: dict[tuple[int, int, tuple[int, ...]], torch.Tensor] = {}


def _sin_cos(cos_sin_cache: torch.Tensor) -> torch.Tensor:
    """The [P, D] float32 table in IPEX's order (sin columns first), made once per cache.
    A model keeps one cache for its life; the key holds its address, version and shape."""
    key = (cos_sin_cache.data_ptr(), cos_sin_cache._version, tuple(cos_sin_cache.shape))
    table = _sin_cos_tables.get(key)
    if table is None:
        half = cos_sin_cache.shape[-1] // 2
        cache = cos_sin_cache.float()
        table = torch.cat((cache[:, half:], cache[:, :half]), dim=1).contiguous()
        if len(_sin_cos_tables) > 8:  # tests build many caches; a model one
            _sin_cos_tables.clear()
        _sin_cos_tables[key] = table
    return table


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64; q [T, Hq, D]; k [T, Hk, D]; cos_sin_cache [P, D] float32.
    Rotates q and k (rotate-half style) into their own storage and returns them."""
    ops, table = _ops(), _sin_cos(cos_sin_cache)
    tokens, heads, dim = q.shape
    position_ids = positions.long().view(1, tokens)
    for x, n in ((q, heads), (k, k.shape[1])):
        rotated, _, _ = ops.rotary_position_embedding(x.unsqueeze(0), table, position_ids, n,
                                                      dim, dim // 2, dim)
        x.copy_(rotated.view(x.shape))
    return q, k


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2I] -> [T, I] = silu(x[:, :I]) * x[:, I:] (IPEX ``silu_mul`` on the halves)."""
    half = x.shape[-1] // 2
    return ipex().llm.functional.silu_mul(x[..., :half], x[..., half:])
