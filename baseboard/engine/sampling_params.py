"""Sampling parameters of one request, with the vLLM names and meanings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from ..core.errors import RequestError


@dataclass
class SamplingParams:
    """How to sample one completion.

    n               completions per prompt; only 1 is supported
    temperature     0 is greedy; > 0 samples from softmax(logits / temperature)
    top_k           keep the k most likely tokens; 0 or -1 turns it off
    top_p           keep the smallest set of tokens whose probability reaches top_p; 1 is off
    seed            per-request seed: the same seed draws the same tokens whatever else runs
    max_tokens      most tokens to generate
    stop            strings that end the completion; the text stops before the string
    stop_token_ids  token ids that end the completion (kept in token_ids, like eos)
    ignore_eos      keep generating past the end-of-sequence token
    detokenize      produce text; False leaves text empty (token ids only, no tokenizer)
    """

    n: int = 1
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: Optional[int] = None
    max_tokens: int = 16
    stop: Optional[Union[str, Sequence[str]]] = None
    stop_token_ids: Optional[Sequence[int]] = None
    ignore_eos: bool = False
    detokenize: bool = True
    stop_strings: tuple[str, ...] = field(init=False, repr=False)
    stop_ids: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.verify()

    def verify(self) -> None:
        """Check every field (again, after a change) and derive the stop sets; raises
        RequestError naming the parameter, its value and the valid range."""
        self.stop_strings = _stop_strings(self.stop)
        self.stop_ids = _stop_ids(self.stop_token_ids)
        _check(self.n == 1, "n", self.n, "1 (one completion per prompt; repeat the prompt "
                                         "for more)")
        _check(_is_number(self.temperature) and math.isfinite(self.temperature)
               and self.temperature >= 0, "temperature", self.temperature,
               "a finite number >= 0 (0 is greedy)")
        _check(_is_int(self.top_k) and (self.top_k >= 0 or self.top_k == -1), "top_k",
               self.top_k, "an integer >= 1, or 0 / -1 for no top-k")
        _check(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", self.top_p,
               "a number in (0, 1]")
        _check(self.seed is None or _is_int(self.seed), "seed", self.seed,
               "an integer or None")
        _check(_is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens",
               self.max_tokens, "an integer >= 1")
        _check(self.detokenize or not self.stop_strings, "stop", self.stop,
               "no stop strings when detokenize=False (they match text)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def stop_holdback(self) -> int:
        """Characters a stream must hold back, since they may begin a stop string."""
        return max((len(s) for s in self.stop_strings), default=1) - 1


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, value: object, valid: str) -> None:
    if not ok:
        raise RequestError(f"SamplingParams {name}={value!r} is invalid; {name} must be {valid}.")


def _stop_strings(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    strings = (stop,) if isinstance(stop, str) else stop
    if not isinstance(strings, (list, tuple)) or not all(
            isinstance(s, str) and s for s in strings):
        raise RequestError(f"SamplingParams stop={stop!r} is invalid; stop must be a non-empty "
                           f"string or a list of non-empty strings.")
    return tuple(strings)


def _stop_ids(ids: object) -> frozenset[int]:
    if ids is None:
        return frozenset()
    if not isinstance(ids, (list, tuple, set, frozenset)) or not all(
            _is_int(i) and i >= 0 for i in ids):
        raise RequestError(f"SamplingParams stop_token_ids={ids!r} is invalid; it must be a "
                           f"list of token ids (integers >= 0).")
    return frozenset(ids)
