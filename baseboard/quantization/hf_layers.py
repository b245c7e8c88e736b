"""The quantized linear layers of a Hugging Face directory: which tensors make up each
layer (read from the safetensors headers, before any weight), and the stream that joins
them into the method's records as the weights are read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..core.quant import QuantScheme
from .method import LayerReader

# tensor name -> (shape, safetensors dtype such as "I32", "F16")
Header = dict[str, tuple[tuple[int, ...], str]]
EMBEDDING = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"


@dataclass(frozen=True)
class QuantizedLayers:
    """The quantized layers of one checkpoint.

    modules  module name ("model.layers.0.self_attn.q_proj") -> the part names it holds
    schemes  module name -> its QuantScheme (None: the method loads it dense)
    """

    method: str
    reader: LayerReader
    modules: dict[str, tuple[str, ...]]
    schemes: dict[str, Optional[QuantScheme]]

    def num_weights(self, num_tensors: int) -> int:
        """How many (name, weight) pairs ``join_layers`` yields from ``num_tensors``."""
        return num_tensors - sum(len(parts) - 1 for parts in self.modules.values())

    def weight_ops(self, header: Header) -> dict[str, str]:
        """The op of every linear weight, by its dense name (``<module>.weight``)."""
        ops = {name: "gemm" for name, (shape, _) in header.items()
               if name.endswith(".weight") and len(shape) == 2 and name != EMBEDDING}
        ops.setdefault(LM_HEAD, "gemm")  # tied: the lm_head multiplies by the embedding
        for module, scheme in self.schemes.items():
            ops[f"{module}.weight"] = scheme.op if scheme else "gemm"
        return ops

    def quant_schemes(self) -> tuple[QuantScheme, ...]:
        """The distinct schemes, in a stable order."""
        return tuple(dict.fromkeys(s for s in self.schemes.values() if s is not None))


def find_layers(method: str, reader: LayerReader, header: Header) -> QuantizedLayers:
    """Group the header's tensors by quantized layer; the method's ``scheme`` sees each
    layer's shapes and dtypes, so a layout it cannot load fails here, before loading."""
    modules: dict[str, tuple[str, ...]] = {}
    for name in header:
        module, _, part = name.rpartition(".")
        if part in reader.markers and module not in modules:
            modules[module] = tuple(p for p in reader.parts if f"{module}.{p}" in header)
    schemes = {m: reader.scheme(m, {p: header[f"{m}.{p}"] for p in parts})
               for m, parts in modules.items()}
    return QuantizedLayers(method, reader, modules, schemes)


def join_layers(items: Iterator[tuple[str, Any]],
                layers: QuantizedLayers) -> Iterator[tuple[str, Any]]:
    """(name, tensor) pairs in file order -> the same pairs, except that each quantized
    layer's tensors become one (``<module>.weight``, record) pair once all have been read
    (they may lie in different shards)."""
    pending: dict[str, dict[str, Any]] = {}
    for name, tensor in items:
        module, _, part = name.rpartition(".")
        parts = layers.modules.get(module)
        if parts is None or part not in parts:
            yield name, tensor
            continue
        got = pending.setdefault(module, {})
        got[part] = tensor
        if len(got) == len(parts):
            del pending[module]
            yield f"{module}.weight", layers.reader.read(module, got)
