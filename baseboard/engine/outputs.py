"""What generate() returns, with vLLM's names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:
    from .sequence import Sequence


@dataclass
class Logprob:
    """One token's log-probability under the model's raw logits, its rank among the whole
    vocabulary (1 is the most likely) and its text alone (None without a tokenizer)."""

    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


# Per position: {token id: Logprob} for the chosen token and the top-k ones.
TokenLogprobs = dict[int, Logprob]


@dataclass
class CompletionOutput:
    """One completion. finish_reason is "stop" (eos, a stop token or string), "length"
    (max_tokens or max_model_len) or None while running; stop_reason is the stop string
    or token id that ended it (None for eos). logprobs (one dict per generated token) and
    cumulative_logprob (their chosen tokens' sum) are None unless
    SamplingParams.logprobs asked for them."""

    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: Optional[float] = None
    logprobs: Optional[list[TokenLogprobs]] = None
    finish_reason: Optional[str] = None
    stop_reason: Optional[int | str] = None

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass
class RequestOutput:
    """A request's prompt and its n completions (indices 0..n-1). prompt_logprobs has one
    entry per prompt token, the first None, when SamplingParams.prompt_logprobs asked."""

    request_id: str
    prompt: Optional[str]
    prompt_token_ids: list[int]
    prompt_logprobs: Optional[list[Optional[TokenLogprobs]]] = None
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = False

    @classmethod
    def from_sequences(cls, seqs: list[Sequence]) -> RequestOutput:
        """The output of one request's sequences (completion i from seqs[i])."""
        first = seqs[0]
        completions = [CompletionOutput(seq.index, seq.text, seq.output_token_ids,
                                        seq.cumulative_logprob, seq.logprobs,
                                        seq.finish_reason, seq.stop_reason) for seq in seqs]
        return cls(first.request_id, first.prompt, first.prompt_token_ids,
                   first.prompt_logprobs, completions, all(seq.finished for seq in seqs))
