"""A quantization method of the example plugin: "example-int8-rows", int8 weights with one
float scale per output row, read from a Hugging Face directory whose config.json has
``"quantization_config": {"quant_method": "example-int8-rows"}``.

A quantized linear layer ``<module>`` stores

    <module>.weight_int8   int8 [N, K]
    <module>.weight_scale  float16 or float32 [N]       w[n, k] = weight_int8[n, k] * scale[n]

and loads as a ``gemm_w8a16`` record, so every kernel of that op runs it. Imported only
when such a checkpoint is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from baseboard.core.errors import ModelError
from baseboard.core.quant import PER_CHANNEL, QuantScheme
from baseboard.quantization.records import GroupQuantized

SCHEME = QuantScheme("gemm_w8a16", "int8", PER_CHANNEL)


@dataclass(frozen=True)
class Int8RowsReader:
    markers: tuple[str, ...] = ("weight_int8",)
    parts: tuple[str, ...] = ("weight_int8", "weight_scale")

    def scheme(self, module: str, tensors: dict) -> QuantScheme:
        if "weight_scale" not in tensors:
            raise ModelError(f"layer '{module}' has weight_int8 but no '{module}.weight_scale'.")
        (n, _k), _ = tensors["weight_int8"]
        if tensors["weight_scale"][0] != (n,):
            raise ModelError(f"tensor '{module}.weight_scale' has shape "
                             f"{tensors['weight_scale'][0]}; it needs ({n},), one scale per "
                             f"row of weight_int8.")
        return SCHEME

    def read(self, module: str, tensors: dict[str, torch.Tensor]) -> GroupQuantized:
        codes = tensors["weight_int8"]
        if codes.dtype != torch.int8:
            raise ModelError(f"tensor '{module}.weight_int8' has dtype {codes.dtype}, not int8.")
        scales = tensors["weight_scale"][:, None]  # [N, 1]: one group of K inputs per row
        return GroupQuantized("gemm_w8a16", codes, scales, None, codes.shape[1], scheme=SCHEME)


def read_config(quantization_config: dict, source: str) -> Int8RowsReader:
    """The method has no settings; anything besides quant_method is a mistake."""
    extra = sorted(set(quantization_config) - {"quant_method"})
    if extra:
        raise ModelError(f"{source}: the example-int8-rows method takes no settings, but "
                         f"quantization_config has {', '.join(extra)}.")
    return Int8RowsReader()


def quantize(weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """weight [N, K] float -> the layer's tensors by part name (round to nearest)."""
    scale = weight.float().abs().amax(dim=1).clamp(min=1e-8) / 127
    codes = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return {"weight_int8": codes, "weight_scale": scale}
