"""AITER's GEMMs behind baseboard's weight ops (rocm platform): the tuned bf16/fp16 GEMM
(``aiter.tuned_gemm``: the fastest of hipBLASLt, its skinny kernels and its assembly
kernels, per shape, from AITER's tuning tables) and the a8w8 GEMM (``gemm_a8w8_CK``: int8 or
fp8 codes, one scale per token and one per output channel).

AITER has no weight-only int4 GEMM; gemm_w4a16 stays on the Triton kernel on this platform.
Imported only once selected (see plugin.py).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import aiter
import torch
import torch.nn.functional as F
from aiter.tuned_gemm import tgemm

from ...kernels.torch.gemm import Gemm as TorchGemm, LinearWeights
from .fp8 import e4m3fn_to_e4m3fnuz


class AiterGemm:
    """x @ weight.T + bias through aiter.tuned_gemm."""

    @staticmethod
    def prepare(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> LinearWeights:
        return LinearWeights(weight.contiguous(), bias)

    @staticmethod
    def apply(state: LinearWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype."""
        if out_dtype is not None and out_dtype != x.dtype:
            # a shape AITER has not tuned runs its torch or skinny kernels in x's dtype and
            # converts after, which would round the lm_head's float32 logits: the
            # reference's path writes the float32 accumulator itself (hipBLASLt)
            return TorchGemm.apply(state, x, out_dtype)
        return tgemm.mm(x, state.weight, state.bias)


class A8W8Weights(NamedTuple):
    qweight: torch.Tensor  # [N, K] int8, or the GPU's float8 type
    scales: torch.Tensor  # [N, 1] float32
    bias: Optional[torch.Tensor]  # [N]


def _a8w8(state: A8W8Weights, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
    """Quantize x [T, K] per token to the weights' code type, then gemm_a8w8_CK."""
    out_dtype = out_dtype or x.dtype
    x = x.contiguous()
    xq = torch.empty(x.shape, dtype=state.qweight.dtype, device=x.device)
    x_scale = torch.empty((x.shape[0], 1), dtype=torch.float32, device=x.device)
    aiter.dynamic_per_token_scaled_quant(xq, x, x_scale)
    if out_dtype == torch.float32:
        # CK's a8w8 writes bf16/fp16 only; the float32 result the lm_head asks for is the
        # same product in float32 (a quantized lm_head is rare)
        y = F.linear(xq.float(), state.qweight.float()) * x_scale * state.scales.view(1, -1)
        return y if state.bias is None else y + state.bias.float()
    bias = state.bias
    if bias is not None and bias.dtype != out_dtype:  # CK takes the bias in the output dtype
        bias = bias.to(out_dtype)
    return aiter.gemm_a8w8_CK(xq, state.qweight, x_scale, state.scales, bias, out_dtype)


class AiterGemmW8A8Int8:
    """int8 weights with per-channel scales, activations quantized per token to int8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> A8W8Weights:
        return A8W8Weights(qweight.contiguous(), scales.float().view(-1, 1), bias)

    @staticmethod
    def apply(state: A8W8Weights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _a8w8(state, x, out_dtype)


class AiterGemmW8A8Fp8:
    """fp8 weights with per-channel scales, activations quantized per token to fp8, in the
    GPU's float8 type (aiter.dtypes.fp8): float8_e4m3fnuz on gfx942, whose float8_e4m3fn
    weights are rescaled here (fp8.py), float8_e4m3fn on gfx950."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> A8W8Weights:
        if aiter.dtypes.fp8 == torch.float8_e4m3fnuz and qweight.dtype == torch.float8_e4m3fn:
            qweight, scales = e4m3fn_to_e4m3fnuz(qweight, scales)
        return A8W8Weights(qweight.contiguous(), scales.float().view(-1, 1), bias)

    @staticmethod
    def apply(state: A8W8Weights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _a8w8(state, x, out_dtype)
