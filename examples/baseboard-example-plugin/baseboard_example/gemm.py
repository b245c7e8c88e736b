"""The ``gemm`` op with a layout of its own: the weight is stored pre-transposed.

``prepare`` runs once per layer at load and returns whatever state ``apply`` wants;
here the weight as a contiguous [K, N] matrix, so ``apply`` reads it row-major.
The method names and parameters must match the reference
(``baseboard.kernels.torch.gemm.Gemm``); baseboard checks them when it binds a plan.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class TransposedWeights(NamedTuple):
    weight_kn: torch.Tensor  # [K, N], contiguous
    bias: Optional[torch.Tensor]  # [N]


class TransposedGemm:
    """y = x @ weight.T + bias, with weight.T materialised once at load."""

    @staticmethod
    def prepare(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> TransposedWeights:
        """weight [N, K], bias [N] | None -> the state ``apply`` takes."""
        return TransposedWeights(weight.t().contiguous(), bias)

    @staticmethod
    def apply(state: TransposedWeights, x: torch.Tensor) -> torch.Tensor:
        """x [T, K] -> [T, N] in x's dtype."""
        if state.bias is None:
            return torch.mm(x, state.weight_kn)
        return torch.addmm(state.bias, x, state.weight_kn)
