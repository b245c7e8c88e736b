"""AITER's row-wise kernels behind baseboard's function ops (rocm platform).

Imported only once selected (see plugin.py). AITER's kernels write into tensors they are
given and read rotary tables in the activations' dtype, in "sbhd" layout: the adapters
allocate the outputs and keep one converted cos/sin table per cache tensor.
"""

from __future__ import annotations

import aiter
import torch

NEOX_STYLE = 0  # aiter's rotate_style for rotate-half (GPT-NeoX / Hugging Face Llama)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """x [T, K] bf16/fp16, weight [K] -> [T, K] (aiter.rmsnorm2d_fwd, CK's RMSNorm)."""
    return aiter.rmsnorm2d_fwd(x, weight, eps)


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """x, residual [T, K] -> (rms_norm(x + residual), x + residual), one kernel."""
    out = torch.empty_like(x)
    residual_out = torch.empty_like(x)
    aiter.rmsnorm2d_fwd_with_add(out, x, residual, residual_out, weight, eps)
    return out, residual_out


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [T, 2I] -> [T, I]."""
    out = torch.empty((x.shape[0], x.shape[1] // 2), dtype=x.dtype, device=x.device)
    aiter.silu_and_mul(out, x)
    return out


class _RotaryTables:
    """cos and sin of one cos_sin_cache, converted once: [max_pos, 1, 1, D/2] each, in the
    activations' dtype. The source tensor is held, so its storage is never reused for
    another table while the entry lives."""

    def __init__(self) -> None:
        self._tables: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def get(self, cos_sin_cache: torch.Tensor,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (cos_sin_cache.data_ptr(), tuple(cos_sin_cache.shape), dtype)
        found = self._tables.get(key)
        if found is None:
            half = cos_sin_cache.shape[-1] // 2
            table = cos_sin_cache.to(dtype).view(-1, 1, 1, 2 * half)
            found = (cos_sin_cache, table[..., :half].contiguous(),
                     table[..., half:].contiguous())
            self._tables[key] = found
        return found[1], found[2]


_ROTARY_TABLES = _RotaryTables()


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                     cos_sin_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [T] int64, q [T, Hq, D], k [T, Hk, D] (strided views of the QKV
    projection are fine), cos_sin_cache [max_pos, D] float32 -> (q, k), rotated in place."""
    cos, sin = _ROTARY_TABLES.get(cos_sin_cache, q.dtype)
    # sbhd with one sequence per "batch" row: s = T tokens, b = 1
    aiter.rope_cached_positions_2c_fwd_inplace(
        q.unsqueeze(1), k.unsqueeze(1), cos, sin, positions.view(-1, 1), NEOX_STYLE,
        True, False)  # reuse_freqs_front_part: tables of D/2; nope_first: no
    return q, k
