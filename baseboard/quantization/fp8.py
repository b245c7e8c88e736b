"""FP8 checkpoints (quant_method "fp8"), as transformers' FineGrainedFP8 and vLLM's Fp8
read them: float8_e4m3fn weights and one of

    weight_scale      float [] or [1] (per tensor), or [N] / [N, 1] (per output row)
                      -> gemm_w8a8_fp8, activations quantized per token
    weight_scale_inv  float32 [ceil(N/BN), ceil(K/BK)], with ``weight_block_size``
                      [BN, BK] in the config (DeepSeek-V3, Qwen3 FP8: 128x128)
                      -> gemm_w8a8_fp8_block, activations quantized per token in groups of BK

w[n, k] = weight[n, k] * scale (the "inv" is the name's only: the scale multiplies).
Activations are quantized at run time (``activation_scheme: "dynamic"``); checkpoints with
static input scales are refused. Layers named in ``modules_to_not_convert`` (transformers)
or ``ignored_layers`` (vLLM) stay dense.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch

from ..core.errors import ModelError
from ..core.quant import QuantScheme
from .layer_tensors import (FLOATS, LayerCheck, Parts, block_scale_shape, describe,
                            per_row_scales)
from .records import BlockQuantized, ChannelQuantized

FP8_MAX = 448.0  # largest finite float8_e4m3fn
PARTS = ("weight", "weight_scale", "weight_scale_inv", "input_scale")
SUPPORTED = ("float8 e4m3 weights with a per-tensor or per-channel weight_scale "
             "(gemm_w8a8_fp8), or weight_block_size [BN, BK] and weight_scale_inv "
             "(gemm_w8a8_fp8_block); activation_scheme 'dynamic'")


@dataclass(frozen=True)
class Fp8Reader:
    """A parsed fp8 ``quantization_config``; reads its checkpoint's layers. A module is
    quantized when it holds a ``weight_scale`` or ``weight_scale_inv``."""

    block_size: Optional[tuple[int, int]]
    not_converted: tuple[str, ...]
    markers: tuple[str, ...] = ("weight_scale", "weight_scale_inv")
    parts: tuple[str, ...] = PARTS

    @property
    def layout(self) -> QuantScheme:
        if self.block_size:
            return QuantScheme("gemm_w8a8_fp8_block", "float8_e4m3fn",
                               activation="float8_e4m3fn", block=self.block_size)
        return QuantScheme("gemm_w8a8_fp8", "float8_e4m3fn", activation="float8_e4m3fn")

    def scheme(self, module: str, tensors: Parts) -> QuantScheme:
        self._check(module, tensors)
        return self.layout

    def read(self, module: str, tensors: dict[str, torch.Tensor]
             ) -> Union[ChannelQuantized, BlockQuantized]:
        n, _ = self._check(module, describe(tensors))
        if self.block_size:
            return BlockQuantized("gemm_w8a8_fp8_block", tensors["weight"],
                                  tensors["weight_scale_inv"].float(), self.block_size,
                                  self.layout)
        return ChannelQuantized("gemm_w8a8_fp8", tensors["weight"],
                                per_row_scales(tensors["weight_scale"], n), self.layout)

    def _check(self, module: str, parts: Parts) -> tuple[int, int]:
        if any(name in module for name in self.not_converted):
            raise ModelError(f"module '{module}' holds FP8 scales, but quantization_config "
                             f"lists it as not converted {list(self.not_converted)}. The "
                             f"checkpoint does not match its quantization_config.")
        block = f"{self.block_size[0]}x{self.block_size[1]} blocks" if self.block_size \
            else "a per-tensor or per-channel scale"
        check = LayerCheck(module, parts, f"the fp8 method with {block}")
        check.absent("input_scale", because="activations are quantized dynamically; static "
                     "input scales are not read")
        n, k = check.matrix("weight", "F8_E4M3")
        if self.block_size:
            check.absent("weight_scale", because="its scales are weight_scale_inv blocks")
            check.expect("weight_scale_inv", block_scale_shape((n, k), self.block_size), *FLOATS)
        else:
            check.absent("weight_scale_inv", because="quantization_config has no "
                         "weight_block_size")
            check.per_row_scale("weight_scale", n)
        return n, k


def read_config(config: dict, source: str) -> Fp8Reader:
    """Parse and validate an fp8 ``quantization_config``; a ModelError says what is
    supported."""
    scheme = config.get("activation_scheme", "dynamic")
    if scheme != "dynamic":
        raise ModelError(f"{source}: activation_scheme {scheme!r} is not supported; "
                         f"supported: {SUPPORTED}.")
    fmt = config.get("fmt", "e4m3")
    if fmt != "e4m3":
        raise ModelError(f"{source}: fmt {fmt!r} is not supported; supported: {SUPPORTED}.")
    block = config.get("weight_block_size")
    if block is not None:
        if not (isinstance(block, list) and len(block) == 2
                and all(isinstance(b, int) and b > 0 for b in block)):
            raise ModelError(f"{source}: weight_block_size {block!r} is not two positive "
                             f"integers [BN, BK] such as [128, 128].")
        block = (block[0], block[1])
    not_converted = []
    for key in ("modules_to_not_convert", "ignored_layers"):
        value = config.get(key) or []
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ModelError(f"{source}: {key} is {value!r}; it must be a list of module names.")
        not_converted += value
    return Fp8Reader(block, tuple(not_converted))


def quantize_weight(weight: torch.Tensor, block_size: Optional[tuple[int, int]] = (128, 128)
                    ) -> dict[str, torch.Tensor]:
    """One linear layer's dense weight [N, K] -> its fp8-method tensors by suffix: "weight"
    float8_e4m3fn [N, K] and "weight_scale_inv" float32 [ceil(N/BN), ceil(K/BK)] (one scale
    per block, block amax / 448), or with ``block_size`` None "weight_scale" float32 [N, 1]
    (per output row)."""
    w = weight.float()
    if block_size is None:
        scale = (w.abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
        codes = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
        return {"weight": codes.contiguous(), "weight_scale": scale}
    (bn, bk), (n, k) = block_size, w.shape
    rows, cols = block_scale_shape((n, k), block_size)
    padded = torch.nn.functional.pad(w, (0, cols * bk - k, 0, rows * bn - n))
    blocks = padded.view(rows, bn, cols, bk)
    scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=1e-12)  # [rows, cols]
    codes = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX)
    codes = codes.view(rows * bn, cols * bk)[:n, :k].to(torch.float8_e4m3fn)
    return {"weight": codes.contiguous(), "weight_scale_inv": scale.contiguous()}


def quantization_config(block_size: Optional[tuple[int, int]] = (128, 128),
                        ignore: Sequence[str] = ("lm_head",)) -> dict:
    """The ``quantization_config`` of a checkpoint quantized by ``quantize_weight`` (the
    fields transformers' FineGrainedFP8Config and vLLM's Fp8Config read)."""
    return {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
            "weight_block_size": list(block_size) if block_size else None,
            "modules_to_not_convert": list(ignore)}
