"""Dense GEMM reference: torch.nn.functional.linear (cuBLAS, oneDNN, hipBLASLt underneath)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F


class LinearWeights(NamedTuple):
    weight: torch.Tensor  # [N, K]
    bias: Optional[torch.Tensor]  # [N]


class Gemm:
    """y = x @ weight.T + bias."""

    @staticmethod
    def prepare(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> LinearWeights:
        return LinearWeights(weight, bias)

    @staticmethod
    def apply(state: LinearWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if out_dtype is None or out_dtype == x.dtype:
            return F.linear(x, state.weight, state.bias)
        bias = None if state.bias is None else state.bias.to(out_dtype)
        return F.linear(x.to(out_dtype), state.weight.to(out_dtype), bias)
