"""compressed-tensors checkpoints, what llm-compressor writes (quant_method
"compressed-tensors"): pack-quantized W4A16 / W8A16, int-quantized W8A8 int8 and
float-quantized FP8 (per channel, per tensor, or in blocks).

    config    quantization_config: config groups, targets, ignore; what is supported
    reader    each quantized layer's tensors checked and loaded into baseboard's records
    packing   the tensor layouts, packed from and unpacked into canonical codes
    quantize  round-to-nearest quantization into those layouts, for ``baseboard quantize``:
              ``quantize_weight(weight, scheme, group_size, symmetric)`` and
              ``quantization_config(scheme, group_size, symmetric, ignore)``, scheme one
              of ``SCHEMES`` ("w4a16", "w8a16", "w8a8-int8", "fp8")
"""

from .packing import pack_quantized, unpack_quantized
from .quantize import SCHEMES, quantization_config, quantize_weight
from .reader import read_config

__all__ = ["SCHEMES", "pack_quantized", "quantization_config", "quantize_weight",
           "read_config", "unpack_quantized"]
