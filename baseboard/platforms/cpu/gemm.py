"""Dense GEMMs ``avx512_bf16`` and ``avx512_f32``: weights prepacked once into 32-column
panels (csrc/gemm.c) on huge pages; bf16 multiplied with vdpbf16ps, float32 with fused
multiply-adds, both accumulating in float32.

Why not the reference: at decode (M = 1..8) torch's F.linear (oneDNN brgemm on the
row-major [N, K] weight, MKL sgemm in float32) and oneDNN on a prepacked weight stream the
weights well below the memory bandwidth, and these kernels near it; at M = 256 (prefill)
the bf16 kernel runs near the vdpbf16ps peak, like oneDNN. The measurements are in
docs/benchmarks.md ("Measurements behind the code"; benchmarks/cpu_ops.py).

``prepare`` packs bf16 and float32 weights and keeps any other (float16) as is, for
F.linear. Activations of another dtype than the packed weight take a slow exact path
(the weight unpacked); a model in one dtype never does that.
"""

from __future__ import annotations

from typing import Optional, Union

import torch
import torch.nn.functional as F

from ...kernels.torch.gemm import Gemm, LinearWeights
from . import native

PANEL = 32  # output columns per packed panel (csrc/gemm.c)
# output dtypes each kernel writes itself (None: the activations' dtype)
NATIVE_OUT = {torch.bfloat16: (None, torch.bfloat16, torch.float32),
              torch.float32: (None, torch.float32)}


class PackedLinear:
    """A weight [N, K] packed in panels, bias as float32 padded to whole panels; the raw
    pointers are taken once here, not per call. bf16 panels are
    [ceil(N/32)][ceil(K/2)][32][2] (pairs of k for vdpbf16ps), float32 [ceil(N/32)][K][32]."""

    __slots__ = ("packed", "bias", "dtype", "out_features", "in_features", "_args", "_gemm",
                 "_bf16", "_native_out")

    def __init__(self, packed: torch.Tensor, bias: Optional[torch.Tensor], out_features: int,
                 in_features: int):
        self.packed, self.bias, self.dtype = packed, bias, packed.dtype
        self.out_features, self.in_features = out_features, in_features
        self._args = (packed.data_ptr(), None if bias is None else bias.data_ptr())
        self._native_out = NATIVE_OUT[self.dtype]
        self._bf16 = self.dtype == torch.bfloat16
        lib = native.library()
        self._gemm = lib.bb_gemm if self._bf16 else lib.bb_gemm_f32

    def unpacked(self) -> torch.Tensor:
        """The [N, K] weight, for the slow mixed-dtype path and for tests."""
        n, k = self.out_features, self.in_features
        panels = -(-n // PANEL)
        if self.dtype == torch.float32:
            w = self.packed.view(panels, k, PANEL).permute(0, 2, 1)
            return w.reshape(panels * PANEL, k)[:n]
        pairs = -(-k // 2)
        w = self.packed.view(panels, pairs, PANEL, 2).permute(0, 2, 1, 3)
        return w.reshape(panels * PANEL, pairs * 2)[:n, :k]

    def matmul(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        """x [T, K] -> [T, N] in out_dtype (default x's): rows of the weight's dtype run
        the native kernel, which writes the float32 sums themselves when asked for them;
        anything else the slow path."""
        if x.dtype != self.dtype or x.dim() != 2 or x.stride(1) != 1 or \
                out_dtype not in self._native_out:
            return self._general(x, out_dtype)
        rows, n = x.shape[0], self.out_features
        packed, bias = self._args
        if self._bf16:
            out_f32 = out_dtype == torch.float32
            y = torch.empty((rows, n), dtype=torch.float32 if out_f32 else torch.bfloat16)
            self._gemm(x.data_ptr(), x.stride(0), packed, bias, y.data_ptr(), n, rows, n,
                       self.in_features, out_f32, torch.get_num_threads())
        else:
            y = torch.empty((rows, n), dtype=torch.float32)
            self._gemm(x.data_ptr(), x.stride(0), packed, bias, y.data_ptr(), n, rows, n,
                       self.in_features, torch.get_num_threads())
        return y

    def _general(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        dtype = out_dtype or x.dtype
        if x.dtype == self.dtype:
            flat = x.reshape(-1, x.shape[-1]).contiguous()
            native_out = dtype if dtype in self._native_out else torch.float32
            y = self.matmul(flat, native_out).to(dtype)
            return y.view(*x.shape[:-1], self.out_features)
        bias = None if self.bias is None else self.bias[:self.out_features].to(dtype)
        return F.linear(x.to(dtype), self.unpacked().to(dtype), bias)


class ReferenceLinear(LinearWeights):
    """A weight the native kernels do not take (float16): the reference's F.linear."""

    def matmul(self, x: torch.Tensor, out_dtype: Optional[torch.dtype]) -> torch.Tensor:
        return Gemm.apply(self, x, out_dtype)


def pack_linear(weight: torch.Tensor, bias: Optional[torch.Tensor]) -> PackedLinear:
    """weight [N, K] bf16 or float32 (any row stride), bias [N] or None -> PackedLinear."""
    n, k = weight.shape
    if weight.stride(1) != 1:
        weight = weight.contiguous()
    panels = -(-n // PANEL)
    lib = native.library()
    if weight.dtype == torch.bfloat16:
        packed = native.streamed_empty(panels * -(-k // 2) * PANEL * 2, torch.bfloat16)
        lib.bb_gemm_pack(weight.data_ptr(), weight.stride(0), n, k, packed.data_ptr(),
                         torch.get_num_threads())
    else:
        packed = native.streamed_empty(panels * k * PANEL, torch.float32)
        lib.bb_gemm_pack_f32(weight.data_ptr(), weight.stride(0), n, k, packed.data_ptr(),
                             torch.get_num_threads())
    padded_bias = None
    if bias is not None:
        padded_bias = torch.zeros(panels * PANEL, dtype=torch.float32)
        padded_bias[:n] = bias.float()
    return PackedLinear(packed, padded_bias, n, k)


class Avx512Gemm:
    """y = x @ weight.T + bias; bf16 and float32 weights run the packed native kernels."""

    @staticmethod
    def prepare(weight: torch.Tensor,
                bias: Optional[torch.Tensor]) -> Union[PackedLinear, ReferenceLinear]:
        if weight.dtype not in NATIVE_OUT or weight.device.type != "cpu":
            return ReferenceLinear(weight, bias)
        return pack_linear(weight, bias)

    @staticmethod
    def apply(state: Union[PackedLinear, ReferenceLinear], x: torch.Tensor,
              out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        return state.matmul(x, out_dtype)
