"""The quantization methods baseboard ships, registered by the core plugin."""

from __future__ import annotations

from ..plugins import hookimpl
from .method import QuantMethod

GGUF = QuantMethod(
    name="gguf",
    doc="llama.cpp GGUF files: F32, F16, BF16; Q8_0 (gemm_w8a16), Q4_0 and Q4_1 (gemm_w4a16); "
        "Q5_0, Q5_1, Q2_K..Q6_K dequantized at load",
    ops=("gemm_w4a16", "gemm_w8a16"),
    loader="baseboard.quantization.gguf.loader:load_gguf",
    suffixes=(".gguf",),
)


@hookimpl
def baseboard_quantization_methods() -> list[QuantMethod]:
    return [GGUF]
