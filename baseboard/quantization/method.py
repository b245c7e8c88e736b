"""The record a plugin registers for a quantization method."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..core.registry import load_object


@dataclass(frozen=True)
class QuantMethod:
    """A quantization method: which checkpoints it reads and which ops its weights call.

    name      "gguf", "gptq", ... (for a Hugging Face directory: the ``quant_method`` of
              config.json's ``quantization_config``)
    doc       one line for ``baseboard info``
    ops       the GEMM ops its weight records name (``record.op``)
    suffixes  file name endings of single-file checkpoints it reads (".gguf"), or ()
    loader    "package.module:function" with function(path: Path, catalog) -> Checkpoint,
              imported only when a checkpoint of this method is loaded
    """

    name: str
    doc: str
    ops: tuple[str, ...]
    loader: str
    suffixes: tuple[str, ...] = ()

    def load(self) -> Callable:
        return load_object(self.loader)
