"""Activation references."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """[T, 2I] -> [T, I] = silu(gate) * up, gate the first half."""
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up
