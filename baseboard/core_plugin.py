"""The core plugin: the torch reference implementation of every op, and the Llama-family
models. Registered directly (it cannot be disabled), through the same hooks as any plugin."""

from __future__ import annotations

from .core.ops import OPS
from .core.registry import Impl
from .plugins import hookimpl
from .quantization.builtin import baseboard_quantization_methods  # noqa: F401 (hook)

BASEBOARD_CONTRACT = 1


@hookimpl
def baseboard_ops() -> list[Impl]:
    return [Impl(op=spec.name, name="torch", loader=spec.reference, priority=0,
                 doc="plain-torch reference implementation") for spec in OPS.values()]


@hookimpl
def baseboard_models() -> dict[str, str]:
    return {
        "LlamaForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
        "MistralForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
        "Qwen2ForCausalLM": "baseboard.models.llama:LlamaForCausalLM",
    }
