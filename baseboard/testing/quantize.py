"""Small quantizers that make the inputs of the quantized GEMM ops from a dense weight.

They follow the layouts of ``baseboard.core.ops`` exactly (codes [N, K], scales per
group or per channel) and compute in float32, so every implementation under test
receives the same codes and scales. Not tuned for accuracy: a test only needs
valid, varied inputs.
"""

from __future__ import annotations

import torch

INT8_MAX = 127.0
FP8_MAX = 448.0  # largest finite float8_e4m3fn


def _groups(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    n, k = weight.shape
    if k % group_size:
        raise ValueError(f"group_size {group_size} does not divide K = {k}; use a divisor of K "
                         f"(or K itself for one group per row)")
    return weight.float().reshape(n, k // group_size, group_size)


def quantize_4bit_groups(weight: torch.Tensor, group_size: int
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit group quantization for ``gemm_w4a16``.

    weight [N, K] -> (qweight [N, K] uint8 holding 0..15, scales [N, K/G] float32,
    offsets [N, K/G] float32) with weight ~= qweight * scale + offset; the offset is
    the group minimum (as GGUF Q4_1 stores it).
    """
    groups = _groups(weight, group_size)
    low = groups.amin(dim=-1, keepdim=True)
    high = groups.amax(dim=-1, keepdim=True)
    scales = ((high - low) / 15.0).clamp(min=1e-8)
    codes = ((groups - low) / scales).round().clamp(0, 15)
    return (codes.reshape(weight.shape).to(torch.uint8), scales.squeeze(-1), low.squeeze(-1))


def quantize_4bit_symmetric(weight: torch.Tensor, group_size: int
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Symmetric 4-bit group quantization for ``gemm_w4a16``, as GPTQ (sym) and GGUF Q4_0
    store it: codes 0..15 around a zero point of 8, offsets = -8 * scales.

    weight [N, K] -> (qweight [N, K] uint8, scales [N, K/G] float32, offsets [N, K/G]).
    """
    groups = _groups(weight, group_size)
    scales = (groups.abs().amax(dim=-1, keepdim=True) / 7.0).clamp(min=1e-8)
    codes = (groups / scales).round().clamp(-8, 7) + 8
    return (codes.reshape(weight.shape).to(torch.uint8), scales.squeeze(-1),
            -8 * scales.squeeze(-1))


def quantize_int8_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 group quantization for ``gemm_w8a16``.

    weight [N, K] -> (qweight [N, K] int8, scales [N, K/G] float32); G = K is per-channel.
    """
    groups = _groups(weight, group_size)
    scales = (groups.abs().amax(dim=-1, keepdim=True) / INT8_MAX).clamp(min=1e-8)
    codes = (groups / scales).round().clamp(-INT8_MAX, INT8_MAX)
    return codes.reshape(weight.shape).to(torch.int8), scales.squeeze(-1)


def quantize_int8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8 for ``gemm_w8a8_int8``.

    weight [N, K] -> (qweight [N, K] int8, scales [N] float32).
    """
    qweight, scales = quantize_int8_groups(weight, weight.shape[1])
    return qweight, scales.squeeze(-1)


def quantize_fp8_per_channel(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel float8_e4m3fn for ``gemm_w8a8_fp8``.

    weight [N, K] -> (qweight [N, K] float8_e4m3fn, scales [N] float32).
    """
    w = weight.float()
    scales = (w.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    qweight = (w / scales).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return qweight, scales.squeeze(-1)


def quantize_fp8_blocks(weight: torch.Tensor, block_size: tuple[int, int]
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """float8_e4m3fn with one scale per BN x BK block for ``gemm_w8a8_fp8_block`` (the last
    blocks of a row or column may be partial).

    weight [N, K] -> (qweight [N, K] float8_e4m3fn, scales [ceil(N/BN), ceil(K/BK)] float32).
    """
    (bn, bk), (n, k) = block_size, weight.shape
    rows, cols = -(-n // bn), -(-k // bk)
    padded = torch.nn.functional.pad(weight.float(), (0, cols * bk - k, 0, rows * bn - n))
    blocks = padded.view(rows, bn, cols, bk)
    scales = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)  # [rows, cols]
    codes = (blocks / scales[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    qweight = codes.view(rows * bn, cols * bk)[:n, :k].to(torch.float8_e4m3fn)
    return qweight, scales
