"""Intel Extension for PyTorch's XPU kernels behind baseboard's function ops (xpu platform),
through ``ipex.llm.functional``. Imported only once selected (see plugin.py)."""

from __future__ import annotations

import intel_extension_for_pytorch as ipex
import torch


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, K] bf16/fp16, weight [K] -> [T, K]."""
    return ipex.llm.functional.rms_norm(x, weight, eps)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, K] -> (rms_norm(x + residual), x + residual). IPEX names it
    add_rms_norm, residual first; add_back writes the sum into residual's storage."""
    normed = ipex.llm.functional.add_rms_norm(residual, x, weight, None, eps, True)
    return normed, residual


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] -> [T, I]."""
    out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
    ipex.llm.functional.silu_and_mul(x, out)
    return out


_TABLES: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}


def _table(cos_sin_cache: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """cos_sin_cache in the activations' dtype, converted once per cache tensor (which is
    held, so its storage is not reused by another while the entry lives)."""
    key = (cos_sin_cache.data_ptr(), tuple(cos_sin_cache.shape), dtype)
    if key not in _TABLES:
        _TABLES[key] = (cos_sin_cache, cos_sin_cache.to(dtype))
    return _TABLES[key][1]


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64, q [T, Hq, D], k [T, Hk, D] (row-strided views are fine),
    cos_sin_cache [max_pos, D] (cos, then sin) -> (q, k) rotated in place, rotate-half."""
    head_size = q.shape[-1]
    # [T, H * D]: views when each token's heads are adjacent, as in the QKV projection
    q_rows, k_rows = q.flatten(1), k.flatten(1)
    ipex.llm.functional.rotary_embedding_batched(
        positions, q_rows, k_rows, head_size, _table(cos_sin_cache, q.dtype),
        True, head_size)  # is_neox (rotate-half), rotary dim = the whole head
    return q_rows.view(q.shape), k_rows.view(k.shape)
