"""What a checkpoint loader returns: config, tokenizer, dtype, model class and weights."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch

from .config import ModelConfig


class Checkpoint:
    """A checkpoint opened for loading; nothing but its metadata is read yet.

    config       ModelConfig
    tokenizer    a transformers tokenizer, built on first access (that takes seconds)
    dtype        the float dtype the checkpoint stores its dense weights in
    model_class  the class registered for config.architecture
    weights()    an iterator of (Hugging Face name, tensor or quantization record), on the
                 CPU, memory-mapped where the file format allows
    quant_method the quantization method's name (e.g. "gguf"), or None
    """

    def __init__(self, path: Path, config: ModelConfig, dtype: torch.dtype, model_class: type,
                 weights: Callable[[], Iterator[tuple[str, Any]]],
                 tokenizer: Callable[[], Any], quant_method: Optional[str] = None):
        self.path = path
        self.config = config
        self.dtype = dtype
        self.model_class = model_class
        self.quant_method = quant_method
        self._weights = weights
        self._tokenizer = tokenizer

    @cached_property
    def tokenizer(self) -> Any:
        return self._tokenizer()

    def weights(self) -> Iterator[tuple[str, Any]]:
        return self._weights()
