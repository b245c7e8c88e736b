"""Round-to-nearest quantization of a dense weight into groups of integer codes with a
scale and a zero point per group: what ``baseboard quantize`` writes (no calibration).

The conventions are GPTQ's quantizer's (also AWQ's): codes 0 .. 2**bits - 1 and
``w ~ (code - zero) * scale``; symmetric groups use the fixed zero ``2**(bits - 1)`` and
``scale = 2 * amax / (2**bits - 1)``; asymmetric groups stretch [min(w, 0), max(w, 0)] over
the codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class RtnResult:
    """codes [N, K] uint8; scales [N, K/G] float16; zeros [N, K/G] int64 (0 .. 2**bits - 1);
    g_idx [K] int64: the group of each input column."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor
    g_idx: torch.Tensor

    def dequantize(self) -> torch.Tensor:
        """[N, K] float32: (codes - zero) * scale of each column's group."""
        scales = self.scales.float()[:, self.g_idx]
        return (self.codes.float() - self.zeros[:, self.g_idx].float()) * scales


def quantize_rtn(weight: torch.Tensor, bits: int, group_size: int, sym: bool,
                 perm: Optional[torch.Tensor] = None) -> RtnResult:
    """weight [N, K] float -> codes, float16 scales and zeros in groups of ``group_size``
    columns (``group_size`` = K: one group per row). ``perm`` int64 [K]: the groups are
    runs of ``perm`` (the columns ``perm[0 : G]`` form group 0, as GPTQ's act-order
    makes them) instead of runs of consecutive columns."""
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"K = {k} is not a multiple of group_size {group_size}")
    perm = torch.arange(k) if perm is None else perm
    maxq = 2 ** bits - 1
    w = weight.float()[:, perm].reshape(n, k // group_size, group_size)  # [N, K/G, G]
    low = w.amin(-1).clamp(max=0)
    high = w.amax(-1).clamp(min=0)
    if sym:
        high = torch.maximum(low.abs(), high)
        low = -high
    span = high - low
    span = torch.where(span == 0, torch.full_like(span, 2.0), span)  # an all-zero group
    scales = (span / maxq).to(torch.float16)
    scales = torch.where(scales == 0, torch.full_like(scales, 2.0 ** -24), scales)
    if sym:
        zeros = torch.full_like(low, 2 ** (bits - 1), dtype=torch.int64)
    else:
        zeros = torch.round(-low / scales.float()).clamp(0, maxq).to(torch.int64)
    codes = torch.round(w / scales.float()[..., None]) + zeros[..., None]
    codes = codes.clamp(0, maxq).to(torch.uint8).reshape(n, k)
    g_idx = torch.empty(k, dtype=torch.int64)
    g_idx[perm] = torch.arange(k) // group_size
    unpermuted = torch.empty_like(codes)
    unpermuted[:, perm] = codes
    return RtnResult(unpermuted, scales, zeros, g_idx)
