"""What a quantized weight is, in words an op's ``supports(ctx)`` can check.

A quantization method (gptq, awq, compressed-tensors, fp8, gguf, or a plugin's) reads its
checkpoint into records (``baseboard.quantization.records``) in the op's canonical layout
(unpacked codes, scales, offsets) and describes each with a ``QuantScheme``. The schemes a
model uses reach selection as ``SelectionContext.quant_schemes``, so an implementation
rejects what its kernel cannot take ("group size 32 is not one of 64, 128") instead of
failing mid-load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

# Weight code types. "uint4" holds 0..15 with an offset per group (asymmetric, or symmetric
# stored with a fixed zero point of 8); "int4"/"int8" are signed and symmetric.
WEIGHT_TYPES = ("uint4", "int4", "int8", "float8_e4m3fn", "float8_e4m3fnuz")
# Activations: "16bit" (weight-only), or quantized per token at run time.
ACTIVATION_TYPES = ("16bit", "int8", "float8_e4m3fn", "float8_e4m3fnuz")
PER_CHANNEL = 0  # group_size for one scale per output row


@dataclass(frozen=True)
class QuantScheme:
    """One quantized layout, as an op sees it.

    op          the GEMM op its records name ("gemm_w4a16", ...)
    weight      one of WEIGHT_TYPES
    group_size  inputs sharing one scale; PER_CHANNEL (0) for one scale per output row
    symmetric   False when codes carry a zero point (offsets)
    act_order   the checkpoint's groups followed a permutation of the inputs (GPTQ
                ``desc_act``); the loader has already reordered the weight, and the
                layer gathers its input columns once per call
    activation  one of ACTIVATION_TYPES
    block       (rows, cols) of a 2-D block scale (FP8 128x128), else None
    """

    op: str
    weight: str
    group_size: int = PER_CHANNEL
    symmetric: bool = True
    act_order: bool = False
    activation: str = "16bit"
    block: Optional[tuple[int, int]] = None

    def __post_init__(self) -> None:
        if self.weight not in WEIGHT_TYPES:
            raise ValueError(f"weight type {self.weight!r} is not one of {', '.join(WEIGHT_TYPES)}")
        if self.activation not in ACTIVATION_TYPES:
            raise ValueError(f"activation type {self.activation!r} is not one of "
                             f"{', '.join(ACTIVATION_TYPES)}")

    def describe(self) -> str:
        """"uint4 g128 asym act-order, 16-bit activations" for info and error messages."""
        group = "per-channel" if self.group_size == PER_CHANNEL else f"g{self.group_size}"
        if self.block:
            group = f"block {self.block[0]}x{self.block[1]}"
        parts = [self.weight, group, "sym" if self.symmetric else "asym"]
        if self.act_order:
            parts.append("act-order")
        act = "16-bit" if self.activation == "16bit" else f"dynamic per-token {self.activation}"
        return f"{' '.join(parts)}, {act} activations"
