"""Decoding of llama.cpp's (GGML) tensor types into torch tensors and quantized records.

A quantized GGML row of K values is K/32 blocks; each block stores float16 scale(s) then
32 codes. Element j of a Q4 block is the low nibble of byte j for j < 16 and the high
nibble of byte j - 16 otherwise:

    Q4_0  d, 16 bytes of 4-bit codes q      w = d * q - 8 * d   -> gemm_w4a16
    Q4_1  d, m, 16 bytes of 4-bit codes q   w = d * q + m       -> gemm_w4a16
    Q8_0  d, 32 int8 codes q                w = d * q           -> gemm_w8a16

Block types without a GEMM op of their own (Q5_0, Q5_1 and the K-quants Q2_K..Q6_K, common
in mixed files such as Q4_K_M) are dequantized at load by the gguf package: they run as
dense weights of the model's dtype, so they take that dtype's memory and bandwidth.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..records import GroupQuantized

BLOCK = 32
DENSE_TYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
QUANTIZED_TYPES = {"Q4_0": 2 + BLOCK // 2, "Q4_1": 4 + BLOCK // 2, "Q8_0": 2 + BLOCK}  # bytes/block
QUANTIZED_OPS = {"Q4_0": "gemm_w4a16", "Q4_1": "gemm_w4a16", "Q8_0": "gemm_w8a16"}
DEQUANTIZED_TYPES = ("Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_TYPES = tuple(DENSE_TYPES) + tuple(QUANTIZED_TYPES) + DEQUANTIZED_TYPES


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
    """[N, K/32, 16] bytes -> [N, K] uint8 codes 0..15 in GGML's element order."""
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
    """A Q4_0, Q4_1 or Q8_0 matrix (bytes [N, K/32 * bytes per block]) -> a GroupQuantized
    record with [N, K] codes and [N, K/32] float16 scales."""
    n = data.shape[0]
    blocks = data.reshape(n, -1, QUANTIZED_TYPES[type_name])
    k = blocks.shape[1] * BLOCK
    d = _float16(blocks, 0)
    op = QUANTIZED_OPS[type_name]
    if type_name == "Q8_0":
        codes = torch.from_numpy(np.ascontiguousarray(blocks[..., 2:]).view(np.int8).reshape(n, k))
        return GroupQuantized(op, codes, d, None, BLOCK)
    if type_name == "Q4_0":
        return GroupQuantized(op, _nibbles(blocks[..., 2:], n, k), d, d * -8, BLOCK)
    return GroupQuantized(op, _nibbles(blocks[..., 4:], n, k), d, _float16(blocks, 2), BLOCK)
