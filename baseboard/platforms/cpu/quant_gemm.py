"""Quantized GEMMs for ``gemm_w4a16`` and ``gemm_w8a16``: ``prepare`` dequantizes the
weight once and packs it for the dense native kernels (gemm.py), so a quantized model
decodes at the dense GEMM's speed instead of dequantizing every weight on every call
(the reference's way).

The op's ``prepare`` is not told the activation dtype, so there is one implementation
per dtype, selected by the model's dtype (``supports``): ``avx512_bf16`` dequantizes to
bf16 (the cpu platform's default where the CPU has AVX512-BF16), ``dequant_f32`` to
float32 (GGUF checkpoints run in float32 by default, as llama.cpp computes).

Memory: the resident weight is dense, 2 bytes per weight in bf16 and 4 in float32,
where 4-bit codes with group scales take about 0.56: about 3.5x (bf16) or 7x (float32)
the quantized size; 2x and 4x for 8-bit codes.

Numerics: each weight value (code * scale + offset) is computed in float32 and rounded
once to the dense dtype, as a model stored in that dtype holds it; the reference rounds
it to the activation dtype too, or keeps float32 for float32 outputs (the lm_head).
"""

from __future__ import annotations

from typing import Optional

import torch

from ...kernels.torch.quant_gemm import GemmW4A16, GemmW8A16
from .gemm import Avx512Gemm, PackedLinear, pack_linear


class DequantW4A16:
    """4-bit codes (0..15 per uint8) with group scales and offsets, run as bf16."""

    dtype = torch.bfloat16  # of the dense weight, and of the model this serves

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW4A16.prepare(qweight, scales, offsets, group_size, bias)
        return pack_linear(groups.weight.dequantize(cls.dtype), groups.bias)

    apply = staticmethod(Avx512Gemm.apply)


class DequantW8A16:
    """int8 codes with group (or per-channel) scales, run as bf16."""

    dtype = torch.bfloat16

    @classmethod
    def prepare(cls, qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> PackedLinear:
        groups = GemmW8A16.prepare(qweight, scales, group_size, bias)
        return pack_linear(groups.weight.dequantize(cls.dtype), groups.bias)

    apply = staticmethod(Avx512Gemm.apply)


class DequantW4A16Float32(DequantW4A16):
    """4-bit codes dequantized once to float32, for float32 models. 4 bytes per weight."""

    dtype = torch.float32


class DequantW8A16Float32(DequantW8A16):
    """int8 codes dequantized once to float32, for float32 models."""

    dtype = torch.float32
