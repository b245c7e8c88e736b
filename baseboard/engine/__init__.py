"""The inference engine: ``LLM``, ``SamplingParams`` and the outputs, shaped like vLLM's."""

from __future__ import annotations

from .llm import LLM, TextStream
from .llm_engine import LLMEngine
from .outputs import CompletionOutput, Logprob, RequestOutput
from .sampling_params import SamplingParams

__all__ = ["LLM", "LLMEngine", "SamplingParams", "RequestOutput", "CompletionOutput",
           "Logprob", "TextStream"]
