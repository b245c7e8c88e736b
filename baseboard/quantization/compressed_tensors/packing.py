"""compressed-tensors' tensor layouts, packed from and unpacked into baseboard's canonical
codes. Layer of N outputs and K inputs, b bits, S scales per row (K/G per group, 1 per
channel):

    pack-quantized   weight_packed      int32 [N, ceil(K*b/32)]  codes + 2**(b-1), packed
                                        along K, the first code in the lowest bits
                     weight_shape       int64 [2] = (N, K)
                     weight_scale       float [N, S]
                     weight_zero_point  int32 [ceil(N*b/32), S]   (asymmetric) zero points
                                        + 2**(b-1), packed along N
    int-quantized    weight             int8 [N, K]
                     weight_scale       float [N, 1] (channel), [N, K/G] (group) or [1]
    float-quantized  weight             float8_e4m3fn [N, K]
                     weight_scale       float [N, 1] (channel), [1] (tensor) or
                                        [ceil(N/BN), ceil(K/BK)] (block)

    w[n, k] = (q[n, k] - zero[n, k/G]) * scale[n, k/G], q and zero signed

Here "unsigned codes" are the stored values q + 2**(b-1) (0 .. 2**b - 1), which are
``gemm_w4a16``'s codes: (q - zero) * scale = u * scale - u_zero * scale.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..packing import pack_int32, unpack_int32


def _pad_to(codes: torch.Tensor, dim: int, multiple: int) -> torch.Tensor:
    extra = -codes.shape[dim] % multiple
    if not extra:
        return codes
    pad = [0, 0] * (codes.dim() - 1 - dim) + [0, extra]
    return F.pad(codes, pad)


def pack_codes(codes: torch.Tensor, bits: int, dim: int) -> torch.Tensor:
    """Unsigned codes (0 .. 2**bits - 1) -> int32 words along ``dim``, padded with zero
    codes to whole words as compressed-tensors pads them."""
    return pack_int32(_pad_to(codes.to(torch.int32), dim, 32 // bits), bits, dim)


def unpack_codes(words: torch.Tensor, bits: int, dim: int, size: int) -> torch.Tensor:
    """int32 words -> ``size`` unsigned codes along ``dim``, uint8."""
    return unpack_int32(words, bits, dim).narrow(dim, 0, size)


def pack_quantized(codes: torch.Tensor, scales: torch.Tensor, bits: int,
                   zero_points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """A pack-quantized layer's tensors, by suffix.

    codes        [N, K] unsigned codes (q + 2**(bits-1)), any integer dtype
    scales       [N, S] (S = K/G, or 1 per channel), stored as given
    zero_points  [N, S] unsigned zero points, or None for a symmetric layer
    -> {"weight_packed", "weight_shape", "weight_scale"[, "weight_zero_point"]}
    """
    tensors = {"weight_packed": pack_codes(codes, bits, dim=1).contiguous(),
               "weight_shape": torch.tensor(codes.shape, dtype=torch.int64),
               "weight_scale": scales.contiguous()}
    if zero_points is not None:
        tensors["weight_zero_point"] = pack_codes(zero_points, bits, dim=0).contiguous()
    return tensors


def unpack_quantized(tensors: dict[str, torch.Tensor], bits: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The inverse of ``pack_quantized``: (codes [N, K] uint8, scales [N, S], zero points
    [N, S] uint8 or None). Shapes are checked by the reader before this is called."""
    n, k = (int(v) for v in tensors["weight_shape"].tolist())
    codes = unpack_codes(tensors["weight_packed"], bits, dim=1, size=k)
    zeros = tensors.get("weight_zero_point")
    if zeros is not None:
        zeros = unpack_codes(zeros, bits, dim=0, size=n)
    return codes, tensors["weight_scale"], zeros

