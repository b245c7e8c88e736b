"""Quantized GEMMs ``avx512_bf16`` for ``gemm_w4a16`` and ``gemm_w8a16``: ``prepare``
dequantizes the weight once to bf16 and packs it for the dense native kernel, so a
quantized model decodes at the bf16 GEMM's speed.

Memory: the resident weight is bf16, 2 bytes per weight, where 4-bit codes with
group scales take about 0.5-0.6 (so about 3.5-4x the quantized size; 2x for 8-bit).
The op's ``prepare`` is not told the activation dtype; these implementations are
selected only when the model runs in bf16 (``supports``), the cpu platform's default
where the CPU has AVX512-BF16, so bf16 is the dtype to dequantize to. Each weight
value (code * scale + offset) is rounded once to bf16, as a bf16 model's weights are;
the reference computes it in the activation dtype, or float32 for float32 outputs.
"""

from __future__ import annotations

from typing import Optional

import torch

from ...kernels.torch.gemm import Gemm, LinearWeights
from ...kernels.torch.quant_gemm import GemmW4A16, GemmW8A16, dequantize_groups
from .gemm import Avx512Bf16Gemm, PackedLinear, pack_linear


class DequantW4A16:
    """4-bit codes (0..15 per uint8) with group scales and offsets, run as bf16."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW4A16.prepare(qweight, scales, offsets, group_size, bias)
        return pack_linear(dequantize_groups(groups, torch.bfloat16), bias)

    apply = staticmethod(Avx512Bf16Gemm.apply)


class DequantW8A16:
    """int8 codes with group (or per-channel) scales, run as bf16."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW8A16.prepare(qweight, scales, group_size, bias)
        return pack_linear(dequantize_groups(groups, torch.bfloat16), bias)

    apply = staticmethod(Avx512Bf16Gemm.apply)


class DequantW4A16Float32:
    """4-bit codes dequantized once to float32 for float32 models (GGUF files compute in
    float32, as llama.cpp does); then MKL's sgemm. 4 bytes per weight."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> LinearWeights:
        groups = GemmW4A16.prepare(qweight, scales, offsets, group_size, bias)
        return LinearWeights(dequantize_groups(groups, torch.float32),
                             None if bias is None else bias.float())

    apply = staticmethod(Gemm.apply)


class DequantW8A16Float32:
    """int8 codes dequantized once to float32 for float32 models; then MKL's sgemm."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> LinearWeights:
        groups = GemmW8A16.prepare(qweight, scales, group_size, bias)
        return LinearWeights(dequantize_groups(groups, torch.float32),
                             None if bias is None else bias.float())

    apply = staticmethod(Gemm.apply)
