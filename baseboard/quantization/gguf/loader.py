"""llama.cpp GGUF files as Checkpoints: the header parsed once (config, tokenizer, tensor
table), the weights decoded one at a time into dense tensors or ``GroupQuantized`` records
under Hugging Face names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from ...core.errors import ModelError
from ...core.quant import QuantScheme
from ...models.checkpoint import Checkpoint
from ...models.config import ModelConfig
from ...models.llama import fused_linear_ops
from ...models.registry import model_class
from ..records import GroupQuantized
from .blocks import DENSE_TYPES, QUANTIZED_TYPES, SCHEMES, SUPPORTED_TYPES, decode, matrix_op
from .metadata import ARCHITECTURES, ROPE_FREQS, gguf_architecture, gguf_config, hf_name
from .reader import GgufFile, TensorInfo, read_gguf
from .tokenizer import gguf_tokenizer

EMBEDDING = "token_embd.weight"


def load_gguf(path: Path, catalog) -> Checkpoint:
    """A Checkpoint over a GGUF file. Q4_0/Q4_1/Q4_K matrices become gemm_w4a16 records,
    Q8_0/Q6_K gemm_w8a16 records; a quantized token embedding is dequantized (and, when the
    output layer is tied to it, also handed over quantized as lm_head.weight)."""
    file = read_gguf(path)
    gguf_architecture(file)
    _check_tensors(file)
    config = gguf_config(file)
    cls = model_class(config.architecture, catalog)
    tensors = [t for t in file.tensors if t.name != ROPE_FREQS]
    tied_record = config.tie_word_embeddings and _type_of(file, EMBEDDING) in QUANTIZED_TYPES
    return Checkpoint(path, config, _dtype(file), cls,
                      weights=lambda: _weights(file, tensors, config),
                      num_weights=len(tensors) + tied_record,
                      tokenizer=lambda: gguf_tokenizer(file),
                      linear_ops=_linear_ops(file, config), quant_method="gguf",
                      quant_schemes=_quant_schemes(file, config))


def _type_of(file: GgufFile, name: str) -> str:
    return next((t.type_name for t in file.tensors if t.name == name), "")


def _check_tensors(file: GgufFile) -> None:
    for t in file.tensors:
        if t.name != ROPE_FREQS and hf_name(t.name) is None:
            raise ModelError(f"{file.path.name} has tensor {t.name!r}, which a Llama-family "
                             f"model does not have.")
        if t.type_name not in SUPPORTED_TYPES:
            raise ModelError(f"tensor {t.name!r} of {file.path.name} has GGUF type "
                             f"{t.type_name}, which is not supported. Supported types: "
                             f"{', '.join(SUPPORTED_TYPES)}. Convert the file with llama.cpp's "
                             f"llama-quantize to one of them.")


def _dtype(file: GgufFile) -> torch.dtype:
    """The dtype of the dense matrices, or float16 (the type of the block scales) when every
    matrix is quantized."""
    for t in file.tensors:
        if len(t.shape) == 2 and t.type_name in DENSE_TYPES:
            return DENSE_TYPES[t.type_name]
    return torch.float16


def _linear_ops(file: GgufFile, config: ModelConfig) -> tuple[str, ...]:
    """The GEMM ops of the linear layers, from the tensor types alone."""
    ops = {hf_name(t.name): matrix_op(t.type_name) for t in file.tensors
           if len(t.shape) == 2 and t.name != EMBEDDING}
    if config.tie_word_embeddings:  # the output layer multiplies by the token embedding
        ops["lm_head.weight"] = matrix_op(_type_of(file, EMBEDDING))
    return fused_linear_ops(ops)


def _quant_schemes(file: GgufFile, config: ModelConfig) -> tuple[QuantScheme, ...]:
    """The distinct layouts of the quantized linear layers, from the tensor types alone."""
    types = [t.type_name for t in file.tensors if len(t.shape) == 2 and t.name != EMBEDDING]
    if config.tie_word_embeddings:
        types.append(_type_of(file, EMBEDDING))
    return tuple(dict.fromkeys(SCHEMES[t] for t in types if t in SCHEMES))


def unpermute_rows(rows: int, num_heads: int) -> np.ndarray:
    """Row index that undoes llama.cpp's q/k permutation: per head, llama.cpp stores row
    pairs (i, i + D/2) next to each other; Hugging Face stores the two halves apart."""
    half = rows // num_heads // 2
    return np.arange(rows).reshape(num_heads, half, 2).transpose(0, 2, 1).reshape(-1)


def _weights(file: GgufFile, tensors: list[TensorInfo],
             config: ModelConfig) -> Iterator[tuple[str, Any]]:
    _, permuted = ARCHITECTURES[file.metadata["general.architecture"]]
    # q_proj / k_proj weight and bias -> the row order that undoes llama.cpp's permutation
    unpermute = {".q_proj.": unpermute_rows(config.num_heads * config.head_dim, config.num_heads),
                 ".k_proj.": unpermute_rows(config.num_kv_heads * config.head_dim,
                                            config.num_kv_heads)} if permuted else {}
    for tensor in tensors:
        name = hf_name(tensor.name)
        data = file.data(tensor)
        rows = next((r for key, r in unpermute.items() if key in name), None)
        if rows is not None:  # rows are whole blocks: reorder the stored bytes, one copy
            data = data.reshape(tensor.shape[0], -1)[rows]
        weight = decode(data, tensor.type_name, tensor.shape)
        if name == "model.embed_tokens.weight" and isinstance(weight, GroupQuantized):
            if config.tie_word_embeddings:
                yield "lm_head.weight", weight
            weight = weight.dequantize()
        yield name, weight
