"""Dense GEMM reference: torch.nn.functional.linear (cuBLAS, oneDNN, hipBLASLt underneath)."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from .activation import silu_and_mul
from .norm import fused_add_rms_norm


HALF_DTYPES = (torch.bfloat16, torch.float16)


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
        if out_dtype == torch.float32 and x.is_cuda and x.dtype == state.weight.dtype \
                and x.dtype in HALF_DTYPES and x.dim() == 2:
            # cuBLAS multiplies the half weight and writes float32 directly: upcasting
            # the weight instead would move three times its bytes every call (the lm_head)
            y = torch.mm(x, state.weight.t(), out_dtype=torch.float32)
            return y if bias is None else y + bias
        return F.linear(x.to(out_dtype), state.weight.to(out_dtype), bias)

    @staticmethod
    def apply_silu_and_mul(state: LinearWeights, x: torch.Tensor,
                           out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """The silu_and_mul fusion's meaning: x [T, 2I] -> apply(state, silu_and_mul(x))."""
        return Gemm.apply(state, silu_and_mul(x), out_dtype)

    @staticmethod
    def apply_add_rms_norm(state: LinearWeights, x: torch.Tensor, residual: torch.Tensor,
                           weight: torch.Tensor, eps: float,
                           out_dtype: Optional[torch.dtype] = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
        """The fused_add_rms_norm fusion's meaning: x, residual [T, K], weight [K] ->
        (apply(state, rms_norm(x + residual)), x + residual)."""
        normed, summed = fused_add_rms_norm(x, residual, weight, eps)
        return Gemm.apply(state, normed, out_dtype), summed
