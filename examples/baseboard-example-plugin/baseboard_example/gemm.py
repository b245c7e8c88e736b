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
    def apply(state: TransposedWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype (default: x's dtype)."""
        weight, bias = state.weight_kn, state.bias
        if out_dtype is not None and out_dtype != x.dtype:
            # a float32 result must be the float32 product, not a rounded one upcast
            x, weight = x.to(out_dtype), weight.to(out_dtype)
            bias = None if bias is None else bias.to(out_dtype)
        if bias is None:
            return torch.mm(x, weight)
        return torch.addmm(bias, x, weight)
