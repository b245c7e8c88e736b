"""Round-to-nearest quantization of dense weights into compressed-tensors checkpoints, the
layouts llm-compressor writes for its W4A16, W8A16, W8A8 (int8), FP8_DYNAMIC and FP8_BLOCK
schemes. ``baseboard quantize --method w4a16|w8a8-int8|fp8`` calls ``quantize_weight`` per
linear layer and writes ``quantization_config`` into config.json."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from .. import fp8
from ..rtn import quantize_rtn
from .config import FLOAT, INT, PACKED
from .packing import pack_quantized

FP8_MAX = 448.0  # largest finite float8_e4m3fn
# scheme -> (format, weight bits, weight type, activations quantized at run time);
# llm-compressor's W4A16, W8A16, W8A8, FP8_DYNAMIC and FP8_BLOCK
SCHEMES = {"w4a16": (PACKED, 4, "int", False), "w8a16": (PACKED, 8, "int", False),
           "w8a8-int8": (INT, 8, "int", True), "fp8": (FLOAT, 8, "float", True),
           "fp8-block": (FLOAT, 8, "float", True)}


def _scheme(name: str) -> tuple[str, int, str, bool]:
    if name not in SCHEMES:
        raise ValueError(f"compressed-tensors scheme {name!r} is not one of "
                         f"{', '.join(SCHEMES)}")
    return SCHEMES[name]


def quantize_weight(weight: torch.Tensor, scheme: str, group_size: Optional[int] = 128,
                    symmetric: bool = True, block_size: tuple[int, int] = (128, 128)
                    ) -> dict[str, torch.Tensor]:
    """One linear layer's dense weight [N, K] -> the tensors compressed-tensors stores for
    it, by suffix (``weight_packed``, ``weight_scale``, ... ; prefix them with the module
    name). ``group_size`` None means one scale per output row; the W8A8 and FP8 schemes are
    always per row (fp8-block: per ``block_size`` block) and symmetric.

    w4a16, w8a16  pack-quantized: weight_packed int32, weight_shape, weight_scale float16
                  [N, K/G] (+ weight_zero_point when asymmetric)
    w8a8-int8     weight int8 [N, K], weight_scale float32 [N, 1]
    fp8           weight float8_e4m3fn [N, K], weight_scale float32 [N, 1]
    fp8-block     weight float8_e4m3fn [N, K], weight_scale float32 [N/BN, K/BK]
    """
    format, bits, _, _ = _scheme(scheme)
    n, k = weight.shape
    if scheme == "fp8-block":
        tensors = fp8.quantize_weight(weight, block_size)
        return {"weight": tensors["weight"], "weight_scale": tensors["weight_scale_inv"]}
    if format == PACKED:
        rtn = quantize_rtn(weight, bits, group_size or k, symmetric)
        return pack_quantized(rtn.codes, rtn.scales, bits,
                              None if symmetric else rtn.zeros.to(torch.uint8))
    w = weight.float()
    amax = w.abs().amax(dim=1, keepdim=True)
    if format == INT:
        scale = (amax / 127.0).clamp(min=1e-12)
        codes = torch.round(w / scale).clamp(-128, 127).to(torch.int8)
    else:
        scale = (amax / FP8_MAX).clamp(min=1e-12)
        codes = (w / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return {"weight": codes.contiguous(), "weight_scale": scale.contiguous()}


def _args(bits: int, type: str, strategy: str, symmetric: bool = True,
          group_size: Optional[int] = None, dynamic: bool = False) -> dict:
    return {"num_bits": bits, "type": type, "symmetric": symmetric, "strategy": strategy,
            "group_size": group_size, "block_structure": None, "dynamic": dynamic,
            "actorder": None, "observer": None if dynamic else "minmax",
            "observer_kwargs": {}}


def quantization_config(scheme: str, group_size: Optional[int] = 128, symmetric: bool = True,
                        ignore: Sequence[str] = ("lm_head",),
                        block_size: tuple[int, int] = (128, 128)) -> dict:
    """The ``quantization_config`` of a checkpoint whose every Linear but ``ignore`` was
    quantized by ``quantize_weight(..., scheme, group_size, symmetric, block_size)``."""
    format, bits, type, dynamic = _scheme(scheme)
    activations = _args(8, type, "token", dynamic=True) if dynamic else None
    if format == PACKED:
        strategy = "group" if group_size else "channel"
        weights = _args(bits, type, strategy, symmetric, group_size)
    elif scheme == "fp8-block":
        weights = {**_args(bits, type, "block"), "block_structure": list(block_size)}
        activations = _args(8, type, "group", group_size=block_size[1], dynamic=True)
    else:
        weights = _args(bits, type, "channel")
    group = {"targets": ["Linear"], "weights": weights, "input_activations": activations,
             "output_activations": None, "format": format}
    return {"quant_method": "compressed-tensors", "format": format,
            "quantization_status": "compressed", "config_groups": {"group_0": group},
            "ignore": list(ignore), "kv_cache_scheme": None, "sparsity_config": {},
            "global_compression_ratio": None}
