"""What a checkpoint loader returns: config, tokenizer, dtype, model class and weights."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from ..core.errors import ModelError
from ..quantization.records import QuantizedWeight
from .config import ModelConfig


class Checkpoint:
    """A checkpoint opened for loading; nothing but its metadata is read yet.

    config       ModelConfig
    tokenizer    a transformers tokenizer, built on first access
    dtype        the float dtype the checkpoint stores its dense weights in
    model_class  the class registered for config.architecture
    weights()    a WeightStream of (Hugging Face name, tensor or quantization record), on the
                 CPU, memory-mapped where the file format allows; ``num_weights`` items
    linear_ops   the GEMM ops the model's linear layers will call, sorted, e.g.
                 ("gemm", "gemm_w4a16"); known from the metadata alone
    quant_method the quantization method's name (e.g. "gguf"), or None
    quant_schemes the distinct QuantSchemes of the quantized layers (known from the
                 metadata alone), for ``SelectionContext.quant_schemes``; () when none
    """

    def __init__(self, path: Path, config: ModelConfig, dtype: torch.dtype, model_class: type,
                 weights: Callable[[], Iterator[tuple[str, Any]]], num_weights: int,
                 tokenizer: Callable[[], Any], linear_ops: tuple[str, ...] = ("gemm",),
                 quant_method: Optional[str] = None, quant_schemes: tuple = ()):
        self.path = path
        self.config = config
        self.dtype = dtype
        self.model_class = model_class
        self.num_weights = num_weights
        self.linear_ops = tuple(sorted(set(linear_ops)))
        self.quant_method = quant_method
        self.quant_schemes = tuple(quant_schemes)
        self._weights = weights
        self._tokenizer = tokenizer

    @cached_property
    def tokenizer(self) -> Any:
        return self._tokenizer()

    def weights(self) -> WeightStream:
        return WeightStream(self._weights(), self.num_weights, self.path)


class WeightStream:
    """A checkpoint's weights as (name, tensor or record) pairs, read one at a time, whose
    number ``len()`` tells before the first is read (a progress bar's total). A weight
    holding a NaN or an infinity is a ModelError naming it: such a model loads and then
    generates nothing but padding."""

    def __init__(self, items: Iterator[tuple[str, Any]], count: int, path: Path):
        self._items = items
        self._count = count
        self._path = path

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> WeightStream:
        return self

    def __next__(self) -> tuple[str, Any]:
        name, weight = next(self._items)
        check_finite(name, weight, self._path)
        return name, weight


def check_finite(name: str, weight: Any, path: Path) -> None:
    """One isfinite reduction per float tensor; a quantized record's codes are integers, so
    its scales and offsets are what can hold a NaN."""
    tensors = weight.float_tensors() if isinstance(weight, QuantizedWeight) else [weight]
    for tensor in tensors:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise ModelError(f"tensor {name!r} of {path} holds {bad} NaN or infinite value(s) "
                             f"of {tensor.numel()}; a model with them generates nothing "
                             f"useful. The checkpoint is damaged or was saved from a diverged "
                             f"run: download or convert it again.")
