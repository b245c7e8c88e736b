"""What generate() returns, with vLLM's names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from .sequence import Sequence


@dataclass
class CompletionOutput:
    """One completion. finish_reason is "stop" (eos, a stop token or string), "length"
    (max_tokens or max_model_len) or None while running; stop_reason is the stop string
    or token id that ended it (None for eos)."""

    index: int
    text: str
    token_ids: list[int]
    finish_reason: Optional[str] = None
    stop_reason: Optional[int | str] = None
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[list] = None


@dataclass
class RequestOutput:
    """A request's prompt and its completion (one, since n is 1)."""

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def from_sequence(cls, seq: Sequence) -> RequestOutput:
        completion = CompletionOutput(0, seq.text, seq.output_token_ids, seq.finish_reason,
                                      seq.stop_reason)
        return cls(seq.request_id, seq.prompt, seq.prompt_token_ids, [completion],
                   seq.finished)
