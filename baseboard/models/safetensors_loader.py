"""Hugging Face directories: config.json and model.safetensors, single or sharded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from safetensors import SafetensorError, safe_open

from ..core.errors import ModelError
from ..quantization.hf_layers import Header, find_layers, join_layers
from ..quantization.method import QuantMethod
from .checkpoint import Checkpoint
from .config import ModelConfig, architecture_of
from .llama import fused_linear_ops
from .registry import model_class

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
EMBEDDING = "model.embed_tokens.weight"


def safetensors_files(path: Path) -> list[Path]:
    """The weight files of a directory: the shards its index names, or model.safetensors."""
    if (path / INDEX).is_file():
        try:
            weight_map = json.loads((path / INDEX).read_text())["weight_map"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelError(f"{path / INDEX} is not a safetensors index with a 'weight_map' "
                             f"({exc!r}).") from None
        files = [path / name for name in dict.fromkeys(weight_map.values())]
        for file in files:
            if not file.is_file():
                raise ModelError(f"{path / INDEX} names shard {file.name!r}, which is missing "
                                 f"from {str(path)!r}.")
        return files
    if (path / SINGLE).is_file():
        return [path / SINGLE]
    raise ModelError(f"directory {str(path)!r} has neither {SINGLE} nor {INDEX}. baseboard "
                     f"reads safetensors weights only (convert .bin files with "
                     f"save_pretrained(safe_serialization=True)).")


def read_headers(files: list[Path]) -> Header:
    """Every tensor's (shape, safetensors dtype) by name; reads only the headers, so a
    truncated or corrupt file fails here, before loading."""
    header: Header = {}
    for file in files:
        try:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    part = f.get_slice(name)
                    header[name] = (tuple(part.get_shape()), part.get_dtype())
        except (SafetensorError, OSError) as exc:
            raise ModelError(f"{file} is not a readable safetensors file ({exc}); it may be "
                             f"truncated or corrupt. Download or save it again.") from None
    return header


def _float_dtype(header: Header) -> Optional[torch.dtype]:
    """The dtype of the token embedding, else of the first float tensor (norms are
    sometimes kept in float32 beside bfloat16 matrices)."""
    dtypes = {name: DTYPES[dtype] for name, (_, dtype) in header.items() if dtype in DTYPES}
    return dtypes.get(EMBEDDING, next(iter(dtypes.values()), None))


def load_hf_directory(path: Path, config: dict, generation_config: Optional[dict],
                      catalog, method: Optional[QuantMethod] = None) -> Checkpoint:
    """A Checkpoint over the safetensors weights of a Hugging Face directory. With a
    quantization ``method`` (one with ``layers``), each quantized linear layer's tensors
    are joined into the method's record as they are read."""
    files = safetensors_files(path)
    header = read_headers(files)
    # an architecture no plugin provides is named before its config is parsed
    cls = model_class(architecture_of(config, str(path / "config.json")), catalog)
    model_config = ModelConfig.from_hf(config, generation_config,
                                       source=str(path / "config.json"))

    layers = None
    if method is not None:
        reader = method.layer_reader(config.get("quantization_config") or {},
                                     f"{path / 'config.json'} quantization_config")
        layers = find_layers(method.name, reader, header)

    def tensors() -> Iterator[tuple[str, Any]]:
        for file in files:
            with safe_open(file, framework="pt") as f:
                for name in f.keys():
                    yield name, f.get_tensor(name)

    def weights() -> Iterator[tuple[str, Any]]:
        return join_layers(tensors(), layers) if layers else tensors()

    def tokenizer() -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise ModelError(f"no tokenizer could be loaded from {str(path)!r} ({exc}). The "
                             f"directory needs the tokenizer files (tokenizer.json, "
                             f"tokenizer_config.json).") from None

    dtype = _float_dtype(header) or torch.float32
    if layers is None:
        return Checkpoint(path, model_config, dtype, cls, weights, len(header), tokenizer,
                          linear_ops=("gemm",))
    return Checkpoint(path, model_config, dtype, cls, weights, layers.num_weights(len(header)),
                      tokenizer, linear_ops=fused_linear_ops(layers.weight_ops(header)),
                      quant_method=method.name, quant_schemes=layers.quant_schemes())
