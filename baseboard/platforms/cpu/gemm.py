"""Dense GEMM ``avx512_bf16``: bf16 weights prepacked once into 64-column VNNI panels
(csrc/gemm.c), multiplied with vdpbf16ps and float32 accumulation.

For M = 1..8 (decode) the packed panels stream at close to the memory bandwidth,
where torch's ``linear`` on the row-major [N, K] weight reaches about half of it
(numbers in benchmarks/cpu_ops.py). Weights of another dtype keep the reference
path (``F.linear``), and so does a bf16 weight met by non-bf16 activations (correct,
slow, and not what a bf16 model does).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union

import torch
import torch.nn.functional as F

from ...kernels.torch.gemm import LinearWeights
from . import native

PANEL = 64  # output columns per packed panel (csrc/gemm.c)


@dataclass(frozen=True)
class PackedLinear:
    """A bf16 weight [N, K] packed as [ceil(N/64)][ceil(K/2)][64][2], bias as float32
    padded to whole panels; the raw pointers are taken once here, not per call."""

    packed: torch.Tensor
    bias: Optional[torch.Tensor]
    out_features: int
    in_features: int
    packed_ptr: int
    bias_ptr: Optional[int]

    def unpacked(self) -> torch.Tensor:
        """The [N, K] bf16 weight, for the slow non-bf16 path and for tests."""
        n, k = self.out_features, self.in_features
        panels, pairs = -(-n // PANEL), -(-k // 2)
        w = self.packed.view(panels, pairs, PANEL, 2).permute(0, 2, 1, 3)
        return w.reshape(panels * PANEL, pairs * 2)[:n, :k]


def pack_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> PackedLinear:
    """weight [N, K] bf16 (any row stride), bias [N] or None -> PackedLinear."""
    lib = native.library()
    n, k = weight.shape
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    panels, pairs = -(-n // PANEL), -(-k // 2)
    packed = torch.empty(panels * pairs * PANEL * 2, dtype=torch.bfloat16)
    lib.bb_gemm_pack(weight.data_ptr(), weight.stride(0), n, k, packed.data_ptr(),
                     torch.get_num_threads())
    padded_bias = None
    if bias is not None:
        padded_bias = torch.zeros(panels * PANEL, dtype=torch.float32)
        padded_bias[:n] = bias.float()
    return PackedLinear(packed, padded_bias, n, k, packed.data_ptr(),
                        None if padded_bias is None else padded_bias.data_ptr())


def packed_matmul(state: PackedLinear, x: torch.Tensor) -> torch.Tensor:
    """x [T, K] bf16 -> [T, N] bf16 through the native kernel."""
    if x.stride(-1) != 1:
        x = x.contiguous()
    rows = x.shape[0]
    y = torch.empty((rows, state.out_features), dtype=torch.bfloat16)
    native.library().bb_gemm(x.data_ptr(), x.stride(0), state.packed_ptr, state.bias_ptr,
                             y.data_ptr(), state.out_features, rows, state.out_features,
                             state.in_features, torch.get_num_threads())
    return y


class Avx512Bf16Gemm:
    """y = x @ weight.T + bias; bf16 weights run through the packed native kernel."""

    @staticmethod
    def prepare(weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> Union[PackedLinear, LinearWeights]:
        if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
            return LinearWeights(weight, bias)
        return pack_linear(weight, bias)

    @staticmethod
    def apply(state: Union[PackedLinear, LinearWeights], x: torch.Tensor) -> torch.Tensor:
        if type(state) is LinearWeights:
            return F.linear(x, state.weight, state.bias)
        if x.dtype != torch.bfloat16:
            bias = None if state.bias is None else state.bias[:state.out_features]
            return F.linear(x, state.unpacked().to(x.dtype),
                            None if bias is None else bias.to(x.dtype))
        if x.dim() != 2:
            return packed_matmul(state, x.reshape(-1, x.shape[-1])).view(
                *x.shape[:-1], state.out_features)
        return packed_matmul(state, x)
