"""Quantized GEMM references: dequantize, then multiply. Correct, not fast; each faster
implementation is tested against these."""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F

from ...quantization.records import GroupQuantized

FP8_MAX = 448.0  # largest finite float8_e4m3fn


class GroupQuantWeights(NamedTuple):
    weight: GroupQuantized  # [N, K] codes, [N, K/G] scales and offsets (None: symmetric)
    bias: Optional[torch.Tensor]


class ChannelQuantWeights(NamedTuple):
    qweight: torch.Tensor  # [N, K] int8 or float8_e4m3fn
    scales: torch.Tensor  # [N] float32
    bias: Optional[torch.Tensor]


def _dequantized_linear(state: GroupQuantWeights, x: torch.Tensor,
                        dtype: torch.dtype) -> torch.Tensor:
    bias = None if state.bias is None else state.bias.to(dtype)
    return F.linear(x.to(dtype), state.weight.dequantize(dtype), bias)


def _check_groups(qweight: torch.Tensor, scales: torch.Tensor, group_size: int) -> None:
    n, k = qweight.shape
    if k % group_size or scales.shape != (n, k // group_size):
        raise ValueError(f"scales of shape {tuple(scales.shape)} do not match qweight "
                         f"{tuple(qweight.shape)} with group_size {group_size}")


class GemmW4A16:
    """4-bit weights (one code 0..15 per uint8), 16-bit activations."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor,
                group_size: int, bias: Optional[torch.Tensor]) -> GroupQuantWeights:
        _check_groups(qweight, scales, group_size)
        return GroupQuantWeights(
            GroupQuantized("gemm_w4a16", qweight, scales, offsets, group_size), bias)

    @staticmethod
    def apply(state: GroupQuantWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _dequantized_linear(state, x, out_dtype or x.dtype)


class GemmW8A16:
    """int8 weights with per-group (or per-channel, G = K) scales, 16-bit activations."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, group_size: int,
                bias: Optional[torch.Tensor]) -> GroupQuantWeights:
        _check_groups(qweight, scales, group_size)
        return GroupQuantWeights(
            GroupQuantized("gemm_w8a16", qweight, scales, None, group_size), bias)

    @staticmethod
    def apply(state: GroupQuantWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return _dequantized_linear(state, x, out_dtype or x.dtype)


def quantize_per_token(x: torch.Tensor, qmax: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row quantization: (x / scale, scale [T, 1]) with scale = amax / qmax."""
    scale = x.float().abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    return x.float() / scale, scale


class GemmW8A8Int8:
    """int8 weights (per-channel scales), activations quantized per token to int8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ChannelQuantWeights:
        return ChannelQuantWeights(qweight, scales, bias)

    @staticmethod
    def apply(state: ChannelQuantWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        xq, x_scale = quantize_per_token(x, 127.0)
        xq = xq.round().clamp(-128, 127)
        # float64 holds every int8 x int8 dot product of realistic K exactly
        acc = xq.double() @ state.qweight.double().T
        y = acc.float() * x_scale * state.scales.float()
        if state.bias is not None:
            y = y + state.bias.float()
        return y.to(out_dtype or x.dtype)


class GemmW8A8Fp8:
    """float8_e4m3fn weights (per-channel scales), activations quantized per token to fp8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor,
                bias: Optional[torch.Tensor]) -> ChannelQuantWeights:
        return ChannelQuantWeights(qweight, scales, bias)

    @staticmethod
    def apply(state: ChannelQuantWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        xq, x_scale = quantize_per_token(x, FP8_MAX)
        xq = xq.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        acc = xq.float() @ state.qweight.float().T
        y = acc * x_scale * state.scales.float()
        if state.bias is not None:
            y = y + state.bias.float()
        return y.to(out_dtype or x.dtype)


class BlockQuantWeights(NamedTuple):
    qweight: torch.Tensor  # [N, K] float8_e4m3fn
    scales: torch.Tensor  # [ceil(N/BN), ceil(K/BK)] float32
    block_size: tuple[int, int]  # (BN, BK)
    bias: Optional[torch.Tensor]


def expand_blocks(scales: torch.Tensor, block_size: tuple[int, int],
                  shape: tuple[int, int]) -> torch.Tensor:
    """[ceil(N/BN), ceil(K/BK)] block scales -> [N, K], one per weight element."""
    bn, bk = block_size
    n, k = shape
    return scales.repeat_interleave(bn, dim=0)[:n].repeat_interleave(bk, dim=1)[:, :k]


def check_blocks(qweight: torch.Tensor, scales: torch.Tensor,
                 block_size: tuple[int, int]) -> None:
    n, k = qweight.shape
    bn, bk = block_size
    want = (-(-n // bn), -(-k // bk))
    if tuple(scales.shape) != want:
        raise ValueError(f"block scales of shape {tuple(scales.shape)} do not match qweight "
                         f"{tuple(qweight.shape)} with blocks of {bn}x{bk}: expected {want}")


def quantize_per_token_group(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """x [T, K] -> the float32 values a float8_e4m3fn activation quantized per token in
    groups of ``group_size`` inputs (scale = group amax / 448) stands for, [T, K]."""
    t, k = x.shape
    groups = -(-k // group_size)
    padded = F.pad(x.float(), (0, groups * group_size - k)).view(t, groups, group_size)
    scale = padded.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / FP8_MAX
    codes = (padded / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return (codes.float() * scale).view(t, groups * group_size)[:, :k]


class GemmW8A8Fp8Block:
    """float8_e4m3fn weights with one scale per BN x BK block (DeepSeek-V3 / Qwen3 FP8),
    activations quantized per token in groups of BK inputs to fp8."""

    @staticmethod
    def prepare(qweight: torch.Tensor, scales: torch.Tensor, block_size: tuple[int, int],
                bias: Optional[torch.Tensor]) -> BlockQuantWeights:
        check_blocks(qweight, scales, block_size)
        return BlockQuantWeights(qweight, scales, tuple(block_size), bias)

    @staticmethod
    def apply(state: BlockQuantWeights, x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        weight = state.qweight.float() * expand_blocks(state.scales.float(), state.block_size,
                                                       tuple(state.qweight.shape))
        y = quantize_per_token_group(x, state.block_size[1]) @ weight.T
        if state.bias is not None:
            y = y + state.bias.float()
        return y.to(out_dtype or x.dtype)
