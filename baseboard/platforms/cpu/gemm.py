"""Dense GEMM ``avx512_bf16``: bf16 weights prepacked once into 32-column VNNI panels
(csrc/gemm.c) on huge pages, multiplied with vdpbf16ps and float32 accumulation.

Why not the reference: torch's F.linear (oneDNN brgemm on the row-major [N, K] weight)
streams the Qwen2.5-0.5B weights at 13-19 GB/s for M = 1..8, and oneDNN on a prepacked
weight (torch.ops.mkldnn._linear_pointwise) at 18-29 GB/s; this kernel at 30-36 GB/s,
1.6-1.8x the copy bandwidth measured beside it (benchmarks/cpu_ops.py, 2 cores, AMD
EPYC with AVX512-BF16). At M = 256 (prefill) it runs near the vdpbf16ps peak, like
oneDNN. For float32 models neither prepacked path wins everywhere (MKL's prepacked fp32
weight is 1.7x F.linear on gate_up and 0.7x on down), so float32 stays with the
reference: ``prepare`` keeps a non-bf16 weight as is and ``apply`` calls F.linear.
A bf16 weight met by non-bf16 activations takes a slow exact path (unpacked weight);
a bf16 model never does that.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from ...kernels.torch.gemm import Gemm, LinearWeights
from . import native

PANEL = 32  # output columns per packed panel (csrc/gemm.c)


class PackedLinear:
    """A bf16 weight [N, K] packed as [ceil(N/32)][ceil(K/2)][32][2], bias as float32
    padded to whole panels; the raw pointers are taken once here, not per call."""

    __slots__ = ("packed", "bias", "out_features", "in_features", "_args", "_gemm")

    def __init__(self, packed: torch.Tensor, bias: Optional[torch.Tensor], out_features: int,
                 in_features: int):
        self.packed, self.bias = packed, bias
        self.out_features, self.in_features = out_features, in_features
        self._args = (packed.data_ptr(), None if bias is None else bias.data_ptr())
        self._gemm = native.library().bb_gemm

    def unpacked(self) -> torch.Tensor:
        """The [N, K] bf16 weight, for the slow non-bf16 path and for tests."""
        n, k = self.out_features, self.in_features
        panels, pairs = -(-n // PANEL), -(-k // 2)
        w = self.packed.view(panels, pairs, PANEL, 2).permute(0, 2, 1, 3)
        return w.reshape(panels * PANEL, pairs * 2)[:n, :k]

    def matmul(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype (default x's): bf16 rows run the native kernel,
        which writes bf16 or the float32 sums themselves; anything else the slow path."""
        if x.dtype != torch.bfloat16 or x.dim() != 2 or x.stride(1) != 1 or \
                out_dtype not in _NATIVE_OUT:
            return self._general(x, out_dtype)
        rows, n = x.shape[0], self.out_features
        out_f32 = out_dtype == torch.float32
        y = torch.empty((rows, n), dtype=torch.float32 if out_f32 else torch.bfloat16)
        packed, bias = self._args
        self._gemm(x.data_ptr(), x.stride(0), packed, bias, y.data_ptr(), n, rows, n,
                   self.in_features, out_f32, torch.get_num_threads())
        return y

    def _general(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        dtype = out_dtype or x.dtype
        if x.dtype == torch.bfloat16:
            flat = x.reshape(-1, x.shape[-1]).contiguous()
            native_out = dtype if dtype in _NATIVE_OUT else torch.float32
            y = self.matmul(flat, native_out).to(dtype)
            return y.view(*x.shape[:-1], self.out_features)
        bias = None if self.bias is None else self.bias[:self.out_features].to(dtype)
        return F.linear(x.to(dtype), self.unpacked().to(dtype), bias)


_NATIVE_OUT = (None, torch.bfloat16, torch.float32)


class ReferenceLinear(LinearWeights):
    """A weight the native kernel does not take (not bf16): the reference's F.linear."""

    def matmul(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        return Gemm.apply(self, x, out_dtype)


def pack_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> PackedLinear:
    """weight [N, K] bf16 (any row stride), bias [N] or None -> PackedLinear."""
    n, k = weight.shape
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    panels, pairs = -(-n // PANEL), -(-k // 2)
    packed = native.streamed_empty(panels * pairs * PANEL * 2, torch.bfloat16)
    native.library().bb_gemm_pack(weight.data_ptr(), weight.stride(0), n, k, packed.data_ptr(),
                                  torch.get_num_threads())
    padded_bias = None
    if bias is not None:
        padded_bias = torch.zeros(panels * PANEL, dtype=torch.float32)
        padded_bias[:n] = bias.float()
    return PackedLinear(packed, padded_bias, n, k)


class Avx512Bf16Gemm:
    """y = x @ weight.T + bias; bf16 weights run through the packed native kernel."""

    @staticmethod
    def prepare(weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> Union[PackedLinear, ReferenceLinear]:
        if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
            return ReferenceLinear(weight, bias)
        return pack_linear(weight, bias)

    @staticmethod
    def apply(state: Union[PackedLinear, ReferenceLinear], x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return state.matmul(x, out_dtype)
