"""Decoding of llama.cpp's (GGML) tensor types into torch tensors and quantized records.

A quantized GGML row of K values is a run of blocks. Q4_0, Q4_1 and Q8_0 blocks hold 32
weights: float16 scale(s), then 32 codes. Element j of a Q4 block is the low nibble of byte
j for j < 16 and the high nibble of byte j - 16 otherwise:

    Q4_0  d, 16 bytes of 4-bit codes q      w = d * q - 8 * d   -> gemm_w4a16, G 32
    Q4_1  d, m, 16 bytes of 4-bit codes q   w = d * q + m       -> gemm_w4a16, G 32
    Q8_0  d, 32 int8 codes q                w = d * q           -> gemm_w8a16, G 32

The K-quants hold 256 weights a super-block, in sub-blocks with small integer scales
under a float16 one:

    Q4_K  d, dmin, 12 bytes of eight 6-bit scales sc and mins m, 128 bytes of 4-bit codes
          w = (d * sc) * q - dmin * m  per sub-block of 32          -> gemm_w4a16, G 32
    Q6_K  128 bytes of low nibbles, 64 of high bit pairs, 16 int8 scales sc, d
          w = (d * sc) * (q - 32)  per sub-block of 16              -> gemm_w8a16, G 16

Their float32 scales d * sc and offsets -dmin * m are exact (a float16 times an integer of
at most 8 bits fits float32's 24-bit significand), so the records dequantize bit for bit
as llama.cpp and the gguf package do.

Block types without a GEMM op of their own (Q5_0, Q5_1, Q2_K, Q3_K, Q5_K) are dequantized
at load by the gguf package: they run as dense weights of the model's dtype, so they take
that dtype's memory and bandwidth.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ...core.quant import QuantScheme
from ..records import GroupQuantized

BLOCK = 32
SUPER_BLOCK = 256  # weights in a K-quant super-block
DENSE_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
QUANTIZED_TYPES = {"Q4_0": 2 + BLOCK // 2, "Q4_1": 4 + BLOCK // 2, "Q8_0": 2 + BLOCK,
                   "Q4_K": 4 + 12 + SUPER_BLOCK // 2,
                   "Q6_K": SUPER_BLOCK // 2 + SUPER_BLOCK // 4 + SUPER_BLOCK // 16 + 2}
# bytes per block of BLOCK_WEIGHTS weights
BLOCK_WEIGHTS = {"Q4_0": BLOCK, "Q4_1": BLOCK, "Q8_0": BLOCK, "Q4_K": SUPER_BLOCK,
                 "Q6_K": SUPER_BLOCK}
SCHEMES = {"Q4_0": QuantScheme("gemm_w4a16", "uint4", BLOCK, symmetric=True),
           "Q4_1": QuantScheme("gemm_w4a16", "uint4", BLOCK, symmetric=False),
           "Q8_0": QuantScheme("gemm_w8a16", "int8", BLOCK),
           "Q4_K": QuantScheme("gemm_w4a16", "uint4", 32, symmetric=False),
           "Q6_K": QuantScheme("gemm_w8a16", "int8", 16)}
QUANTIZED_OPS = {name: scheme.op for name, scheme in SCHEMES.items()}
DEQUANTIZED_TYPES = ("Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q5_K")
# in llama.cpp's order of the types, for messages
SUPPORTED_TYPES = tuple(DENSE_TYPES) + ("Q4_0", "Q4_1", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K",
                                        "Q4_K", "Q5_K", "Q6_K")


def matrix_op(type_name: str) -> str:
    """The GEMM op a matrix stored in ``type_name`` is multiplied by: its quantized op, or
    "gemm" for the dense and dequantized types."""
    return QUANTIZED_OPS.get(type_name, "gemm")


def decode(data: np.ndarray, type_name: str,
           shape: tuple[int, ...]) -> torch.Tensor | GroupQuantized:
    """A tensor's stored bytes (uint8, flat) -> a dense tensor of ``shape``, or a record for a
    quantized matrix of a type with a GEMM op (a quantized vector is dequantized)."""
    if type_name in DENSE_TYPES:
        return decode_dense(data, type_name).reshape(shape)
    rows = data.reshape(math.prod(shape[:-1]), -1)  # [rows, bytes of a row's blocks]
    if type_name in DEQUANTIZED_TYPES:
        return dequantize_blocks(rows, type_name).reshape(shape)
    record = decode_quantized(rows, type_name)
    return record if len(shape) == 2 else record.dequantize().reshape(shape)


def _as_torch(array: np.ndarray) -> torch.Tensor:
    # The arrays view a read-only memory map; torch warns about that on every tensor, and
    # the weights are never written.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def _float16(blocks: np.ndarray, start: int) -> torch.Tensor:
    """The float16 stored at byte ``start`` of every block: [N, K/32, B] -> [N, K/32]."""
    pairs = np.ascontiguousarray(blocks[..., start:start + 2])
    return torch.from_numpy(pairs.view(np.float16)[..., 0])


def _nibbles(packed: np.ndarray, n: int, k: int) -> torch.Tensor:
    """[N, K/32, 16] bytes -> [N, K] uint8 codes 0..15 in GGML's element order (Q4_0, Q4_1)."""
    return torch.from_numpy(np.concatenate([packed & 0x0F, packed >> 4], axis=-1).reshape(n, k))


def decode_dense(data: np.ndarray, type_name: str) -> torch.Tensor:
    """The bytes of an F32, F16 or BF16 tensor -> a flat torch tensor of that dtype, sharing
    the file's memory."""
    return _as_torch(data.reshape(-1).view(np.uint8)).view(DENSE_TYPES[type_name])


def dequantize_blocks(data: np.ndarray, type_name: str) -> torch.Tensor:
    """A matrix of one of DEQUANTIZED_TYPES (bytes [N, row bytes]) -> dense [N, K] float32."""
    import gguf

    return torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name]))


def decode_quantized(data: np.ndarray, type_name: str) -> GroupQuantized:
    """A matrix of one of QUANTIZED_TYPES (bytes [N, blocks * bytes per block]) -> a
    GroupQuantized record with [N, K] codes, its scales (float16 as stored, or float32 for
    the K-quants' exact products) and its QuantScheme."""
    n = data.shape[0]
    blocks = data.reshape(n, -1, QUANTIZED_TYPES[type_name])
    k = blocks.shape[1] * BLOCK_WEIGHTS[type_name]
    scheme = SCHEMES[type_name]
    if type_name == "Q4_K":
        codes, scales, offsets = _q4_k(blocks)
    elif type_name == "Q6_K":
        codes, scales, offsets = _q6_k(blocks)
    elif type_name == "Q8_0":
        codes = torch.from_numpy(np.ascontiguousarray(blocks[..., 2:]).view(np.int8))
        scales, offsets = _float16(blocks, 0), None
    elif type_name == "Q4_0":
        scales = _float16(blocks, 0)
        codes, offsets = _nibbles(blocks[..., 2:], n, k), scales * -8
    else:
        codes, scales, offsets = _nibbles(blocks[..., 4:], n, k), _float16(blocks, 0), \
            _float16(blocks, 2)
    return GroupQuantized(scheme.op, codes.reshape(n, k), scales.reshape(n, -1),
                          None if offsets is None else offsets.reshape(n, -1),
                          scheme.group_size, scheme=scheme)


def _q4_k(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Q4_K super-blocks [N, B, 144] -> codes [N, B, 256] uint8, scales and offsets
    [N, B, 8] float32.

    Bytes 4..15 pack eight 6-bit scales and eight 6-bit mins: sub-blocks 0-3 in the low six
    bits of bytes 0-3 (scales) and 4-7 (mins); sub-blocks 4-7 in the nibbles of bytes 8-11
    (low: scale, high: min) with their top two bits in the top bits of bytes 0-3 (scales)
    and 4-7 (mins). Codes: each 32 bytes hold two sub-blocks, low nibbles first."""
    d = _float16(blocks, 0).float()[..., None]
    dmin = _float16(blocks, 2).float()[..., None]
    packed = torch.from_numpy(np.ascontiguousarray(blocks[..., 4:16])).to(torch.int32)
    low, mid, high = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = torch.cat([low & 63, (high & 15) | (low >> 6) << 4], dim=-1)
    mins = torch.cat([mid & 63, (high >> 4) | (mid >> 6) << 4], dim=-1)
    qs = torch.from_numpy(np.ascontiguousarray(blocks[..., 16:])).view(*blocks.shape[:2], 4, 32)
    codes = torch.stack([qs & 15, qs >> 4], dim=-2)  # [N, B, 4, 2, 32]: sub-block 2c + half
    return codes.reshape(*blocks.shape[:2], SUPER_BLOCK), d * sc, -(dmin * mins)


def _q6_k(blocks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, None]:
    """Q6_K super-blocks [N, B, 210] -> codes [N, B, 256] int8 (-32..31), scales [N, B, 16]
    float32.

    Each half of 128 weights takes 64 bytes of low nibbles and 32 of high bit pairs: its
    four runs of 32 are the low nibbles of bytes 0-31 and 32-63, then their high nibbles,
    each with bit pair 0, 1, 2, 3 (from the low end) of the 32 high bytes."""
    nb = blocks.shape[:2]
    ql = torch.from_numpy(np.ascontiguousarray(blocks[..., :128])).view(*nb, 2, 2, 32)
    qh = torch.from_numpy(np.ascontiguousarray(blocks[..., 128:192])).view(*nb, 2, 1, 32)
    low = torch.cat([ql & 15, ql >> 4], dim=-2)  # [N, B, 2, 4, 32]
    high = (qh >> torch.tensor([0, 2, 4, 6], dtype=torch.uint8).view(4, 1)) & 3
    codes = (low | high << 4).to(torch.int8) - 32
    sc = torch.from_numpy(np.ascontiguousarray(blocks[..., 192:208]).view(np.int8))
    d = _float16(blocks, 208).float()[..., None]
    return codes.reshape(*nb, SUPER_BLOCK), d * sc.float(), None
