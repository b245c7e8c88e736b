"""What the Triton quantized GEMMs take, checked against the model's quantized layouts
(``SelectionContext.schemes_for``) at selection. Imports no triton (records.py reads it at
discovery)."""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ...core.quant import PER_CHANNEL

MIN_GROUP = 16  # a K step of the weight-only kernel is a tensor-core dot within one group
WEIGHT_TYPES = {"gemm_w4a16": ("uint4", "int4"), "gemm_w8a16": ("int8",),
                "gemm_w8a8_int8": ("int8",), "gemm_w8a8_fp8": ("float8_e4m3fn",)}
ACTIVATIONS = {"gemm_w4a16": "16bit", "gemm_w8a16": "16bit", "gemm_w8a8_int8": "int8",
               "gemm_w8a8_fp8": "float8_e4m3fn"}
FP8_CAPABILITY = (8, 9)  # Ada and Hopper multiply float8_e4m3fn on the tensor cores


def _scheme_reason(op: str, scheme: Any) -> Optional[str]:
    if scheme.weight not in WEIGHT_TYPES[op]:
        return f"weights of type {scheme.weight} (takes {', '.join(WEIGHT_TYPES[op])})"
    if scheme.activation != ACTIVATIONS[op]:
        return f"activations {scheme.activation} (takes {ACTIVATIONS[op]})"
    if scheme.block is not None:
        return "2-D block scales (takes one scale per output channel or per group of inputs)"
    if op in ("gemm_w8a8_int8", "gemm_w8a8_fp8") and scheme.group_size != PER_CHANNEL:
        return f"group size {scheme.group_size} (takes per-channel scales only)"
    if scheme.group_size != PER_CHANNEL and scheme.group_size % MIN_GROUP:
        return (f"group size {scheme.group_size} (takes multiples of {MIN_GROUP}, or "
                f"per-channel scales)")
    return None


def schemes_reason(op: str) -> Callable[[Any], Optional[str]]:
    """A ``supports`` check: None when the Triton kernel of ``op`` takes every layout the
    model hands it, else the first it does not take, described."""
    def supports(ctx: Any) -> Optional[str]:
        for scheme in ctx.schemes_for(op):
            reason = _scheme_reason(op, scheme)
            if reason:
                return f"quantized layout '{scheme.describe()}': {reason}"
        return None
    return supports


def fp8_device_reason(ctx: Any) -> Optional[str]:
    """None when the device multiplies float8_e4m3fn (CUDA compute capability 8.9 or later,
    or Triton's interpreter on the CPU)."""
    device_type = ctx.platform.device_type
    if device_type == "cpu":
        return None  # the interpreter; records.device_reason has checked it is on
    if device_type != "cuda" or ctx.platform.name == "rocm" or torch.version.hip:
        return (f"float8_e4m3fn tensor-core dots need an NVIDIA GPU of compute capability "
                f"{FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]}+; platform {ctx.platform.name!r} "
                f"is not one")
    if not torch.cuda.is_available():
        return None  # no device to ask (a context built for tests); selection never gets here
    capability = torch.cuda.get_device_capability()
    if capability < FP8_CAPABILITY:
        return (f"compute capability {capability[0]}.{capability[1]} has no float8_e4m3fn "
                f"tensor-core dots (needs {FP8_CAPABILITY[0]}.{FP8_CAPABILITY[1]}+)")
    return None


def block_schemes_reason(ctx: Any) -> Optional[str]:
    """A ``supports`` check of gemm_w8a8_fp8_block: None when every block the model uses is
    a multiple of 32 inputs wide (a K step of the kernel lies within one block)."""
    for scheme in ctx.schemes_for("gemm_w8a8_fp8_block"):
        if scheme.block is None or scheme.block[1] % 32:
            return (f"quantized layout '{scheme.describe()}': blocks must be a multiple of 32 "
                    f"inputs wide")
    return None
