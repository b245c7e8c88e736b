"""The quantization methods baseboard ships, registered by the core plugin."""

from __future__ import annotations

from ..plugins import hookimpl
from .method import QuantMethod

GGUF = QuantMethod(
    name="gguf",
    doc="llama.cpp GGUF files: F32, F16, BF16; Q8_0 and Q6_K (gemm_w8a16), Q4_0, Q4_1 and "
        "Q4_K (gemm_w4a16); Q5_0, Q5_1, Q2_K, Q3_K, Q5_K dequantized at load",
    ops=("gemm_w4a16", "gemm_w8a16"),
    loader="baseboard.quantization.gguf.loader:load_gguf",
    suffixes=(".gguf",),
)
GPTQ = QuantMethod(
    name="gptq",
    doc="GPTQ (AutoGPTQ, optimum, GPTQModel): 4-bit (gemm_w4a16) and symmetric 8-bit "
        "(gemm_w8a16), any group size or per-channel, desc_act; asymmetric 8-bit dequantized "
        "at load",
    ops=("gemm_w4a16", "gemm_w8a16"),
    layers="baseboard.quantization.gptq:read_config",
)
AWQ = QuantMethod(
    name="awq",
    doc="AWQ (AutoAWQ's GEMM layout): 4-bit with zero points (gemm_w4a16)",
    ops=("gemm_w4a16",),
    layers="baseboard.quantization.awq:read_config",
)

COMPRESSED_TENSORS = QuantMethod(
    name="compressed-tensors",
    doc="llm-compressor's checkpoints: pack-quantized W4A16 (gemm_w4a16) and W8A16 "
        "(gemm_w8a16), int8 W8A8 (gemm_w8a8_int8), FP8 W8A8 per channel or tensor "
        "(gemm_w8a8_fp8) or in blocks (gemm_w8a8_fp8_block), dynamic activations",
    ops=("gemm_w4a16", "gemm_w8a16", "gemm_w8a8_int8", "gemm_w8a8_fp8", "gemm_w8a8_fp8_block"),
    layers="baseboard.quantization.compressed_tensors.reader:read_config",
)
FP8 = QuantMethod(
    name="fp8",
    doc="float8_e4m3fn weights (transformers' FineGrainedFP8, vLLM's fp8): per-tensor or "
        "per-channel weight_scale (gemm_w8a8_fp8), 128x128 weight_scale_inv blocks "
        "(gemm_w8a8_fp8_block), dynamic activations",
    ops=("gemm_w8a8_fp8", "gemm_w8a8_fp8_block"),
    layers="baseboard.quantization.fp8:read_config",
)


@hookimpl
def baseboard_quantization_methods() -> list[QuantMethod]:
    return [GGUF, GPTQ, AWQ, COMPRESSED_TENSORS, FP8]
