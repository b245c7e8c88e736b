"""The record a plugin registers for a quantization method, and how a checkpoint finds its
method.

A method reads one of two kinds of checkpoint:

- a single file (GGUF): ``suffixes`` and ``loader``, a function(path, catalog) -> Checkpoint;
- a Hugging Face directory whose config.json has ``quantization_config.quant_method`` equal
  to the method's name: ``layers``, a function(quantization_config: dict, source: str) ->
  ``LayerReader`` that parses and validates the config (a ModelError says what is
  supported). baseboard's safetensors loader then groups each quantized linear layer's
  tensors (``qweight``, ``scales``, ...) and hands them to ``LayerReader.read``; dense
  tensors pass through untouched. A method may instead give ``loader`` for the directory
  and build the Checkpoint itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch

from ..core.errors import ModelError
from ..core.quant import QuantScheme
from ..core.registry import load_object

HOOK = "baseboard_quantization_methods"


@dataclass(frozen=True)
class QuantMethod:
    """A quantization method: which checkpoints it reads and which ops its weights call.

    name      "gguf", "gptq", ... (for a Hugging Face directory: the ``quant_method`` of
              config.json's ``quantization_config``)
    doc       one line for ``baseboard info``
    ops       the GEMM ops its weight records name (``record.op``)
    loader    "package.module:function" with function(path: Path, catalog) -> Checkpoint,
              imported only when a checkpoint of this method is loaded; or ""
    suffixes  file name endings of single-file checkpoints it reads (".gguf"), or ()
    layers    "package.module:function" with function(quantization_config: dict,
              source: str) -> LayerReader, for Hugging Face directories; or ""
    """

    name: str
    doc: str
    ops: tuple[str, ...]
    loader: str = ""
    suffixes: tuple[str, ...] = ()
    layers: str = ""

    def __post_init__(self) -> None:
        if not (self.loader or self.layers):
            raise ValueError(f"quantization method {self.name!r} gives neither loader= nor "
                             f"layers=; it needs one of them to read a checkpoint")

    def load(self) -> Callable:
        return load_object(self.loader)

    def layer_reader(self, quantization_config: dict, source: str) -> LayerReader:
        """The method's reader for a directory, its config parsed and validated."""
        return load_object(self.layers)(quantization_config, source)


class LayerReader(Protocol):
    """What a Hugging Face directory method returns once its config is parsed.

    A linear layer ``<module>`` is quantized when the checkpoint holds ``<module>.<m>`` for
    one of ``markers``; its tensors are then every ``<module>.<part>`` for ``part`` in
    ``parts`` (a bias stays a dense tensor of its own).
    """

    markers: tuple[str, ...]  # e.g. ("qweight",)
    parts: tuple[str, ...]  # e.g. ("qweight", "qzeros", "scales", "g_idx")

    def scheme(self, module: str, tensors: dict[str, tuple[tuple[int, ...], str]]) -> \
            QuantScheme | None:
        """The layout ``module`` will load into, from its tensors' (shape, safetensors dtype)
        by part name, before any weight is read; None: the layer loads dense (a "gemm")."""

    def read(self, module: str, tensors: dict[str, torch.Tensor]) -> Any:
        """The layer's tensors by part name -> a ``QuantizedWeight`` (or a dense [N, K]
        tensor). A tensor whose shape or dtype contradicts the config is a ModelError
        naming ``<module>.<part>``."""


def methods_of(catalog) -> dict[str, QuantMethod]:
    """The registered methods by name."""
    return {name: method for name, (method, _) in catalog.quant_methods.items()}


def find_method(catalog, name: object, source: str) -> QuantMethod:
    """The method registered as ``name``; an unknown one is a ModelError listing the known
    methods and the hook that adds one."""
    methods = methods_of(catalog)
    if isinstance(name, str) and name in methods:
        return methods[name]
    from ..core.errors import did_you_mean

    hint = did_you_mean(name, methods) if isinstance(name, str) else ""
    raise ModelError(f"{source} names quantization method {name!r}, which no loaded plugin "
                     f"provides.{hint} Registered methods: {', '.join(sorted(methods)) or 'none'}."
                     f" A plugin adds a method through the hook {HOOK}() (see docs/plugins.md, "
                     f"'Quantization methods').")
