"""Sampling parameters of one request, with the vLLM names and meanings."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

from ..core.errors import RequestError

# torch.Generator.manual_seed takes any integer in this range (a negative seed is its
# value modulo 2**64).
SEED_MIN, SEED_MAX = -2**63, 2**64 - 1


@dataclass
class SamplingParams:
    """How to sample the completions of one prompt.

    n                   completions per prompt, returned together in one RequestOutput
                        (indices 0..n-1); with a seed, completion i draws with seed + i
    temperature         0 is greedy; > 0 samples from softmax(logits / temperature)
    top_k               keep the k most likely tokens; 0 or -1 turns it off
    top_p               keep the smallest set of tokens whose probability reaches top_p; 1 is off
    seed                per-request seed: the same seed draws the same tokens whatever else runs
    max_tokens          most tokens to generate
    stop                strings that end the completion; the text stops before the string
    stop_token_ids      token ids that end the completion (kept in token_ids, like eos)
    ignore_eos          keep generating past the end-of-sequence token
    detokenize          produce text; False leaves text empty (token ids only, no tokenizer)
    presence_penalty    subtracted once from the logit of every token already generated
                        (-2..2, 0 is off; OpenAI's meaning)
    frequency_penalty   subtracted from a token's logit once per time it was generated
                        (-2..2, 0 is off)
    repetition_penalty  a token seen in the prompt or the output has a positive logit
                        divided by it, a negative one multiplied (> 0, 1 is off)
    min_p               drop tokens whose probability is below min_p times the most likely
                        one's (0..1, 0 is off)
    min_tokens          no end-of-sequence or stop token (nor stop string) before this many
                        tokens are generated
    logprobs            per generated token, the log-probabilities of the ``logprobs`` most
                        likely tokens and of the sampled one; None asks for none
    prompt_logprobs     the same for every prompt token (the first has none); the prompt
                        is then computed in full, without the prefix cache
    skip_special_tokens leave special tokens (eos, chat markers) out of the text

    Log-probabilities are those of the model's raw logits: log_softmax before penalties,
    temperature, top-k/top-p/min-p and min_tokens, as vLLM returns them by default.
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
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    min_p: float = 0.0
    min_tokens: int = 0
    logprobs: Optional[int] = None
    prompt_logprobs: Optional[int] = None
    skip_special_tokens: bool = True
    stop_strings: tuple[str, ...] = field(init=False, repr=False)
    stop_ids: frozenset[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.verify()

    def verify(self) -> None:
        """Check every field (again, after a change) and derive the stop sets; raises
        RequestError naming the parameter, its value and the valid range. Numbers of other
        numeric types (numpy's) become Python ints and floats."""
        self.stop_strings = _stop_strings(self.stop)
        self.stop_ids = _stop_ids(self.stop_token_ids)
        self.n = _int("n", self.n, lambda v: v >= 1, "an integer >= 1")
        self.temperature = _float("temperature", self.temperature, lambda v: v >= 0,
                                  "a finite number >= 0 (0 is greedy)")
        self.top_k = _int("top_k", self.top_k, lambda v: v >= 0 or v == -1,
                          "an integer >= 1, or 0 / -1 for no top-k")
        self.top_p = _float("top_p", self.top_p, lambda v: 0 < v <= 1, "a number in (0, 1]")
        self.min_p = _float("min_p", self.min_p, lambda v: 0 <= v <= 1,
                            "a number in [0, 1] (0 is off)")
        for name in ("presence_penalty", "frequency_penalty"):
            setattr(self, name, _float(name, getattr(self, name), lambda v: -2 <= v <= 2,
                                       "a number in [-2, 2] (0 is off)"))
        self.repetition_penalty = _float("repetition_penalty", self.repetition_penalty,
                                         lambda v: v > 0, "a finite number > 0 (1 is off)")
        if self.seed is not None:
            self.seed = _int("seed", self.seed, lambda v: SEED_MIN <= v <= SEED_MAX,
                             f"None or an integer in [-2**63, 2**64 - 1] (the range "
                             f"torch.Generator.manual_seed takes)")
        self.max_tokens = _int("max_tokens", self.max_tokens, lambda v: v >= 1,
                               "an integer >= 1")
        self.min_tokens = _int("min_tokens", self.min_tokens,
                               lambda v: 0 <= v <= self.max_tokens,
                               f"an integer in [0, max_tokens={self.max_tokens}]")
        for name in ("logprobs", "prompt_logprobs"):
            if getattr(self, name) is not None:
                setattr(self, name, _int(name, getattr(self, name), lambda v: v >= 0,
                                         "None or an integer >= 0 (0: the chosen token's own)"))
        for name in ("ignore_eos", "detokenize", "skip_special_tokens"):
            _check(isinstance(getattr(self, name), bool), name, getattr(self, name),
                   "True or False")
        _check(self.detokenize or not self.stop_strings, "stop", self.stop,
               "no stop strings when detokenize=False (they match text)")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    @property
    def penalised(self) -> bool:
        """Whether any of the three penalties is on (the sampler then counts tokens)."""
        return self.presence_penalty != 0 or self.frequency_penalty != 0 \
            or self.repetition_penalty != 1

    def child_seed(self, index: int) -> Optional[int]:
        """The seed of completion ``index`` (vLLM's seed + index), kept in the generator's
        range."""
        return None if self.seed is None else (self.seed + index) % 2**64

    @property
    def stop_holdback(self) -> int:
        """Characters a stream must hold back, since they may begin a stop string."""
        return max((len(s) for s in self.stop_strings), default=1) - 1


def _int(name: str, value: object, ok, valid: str) -> int:
    _check(isinstance(value, numbers.Integral) and not isinstance(value, bool)
           and ok(int(value)), name, value, valid)
    return int(value)


def _float(name: str, value: object, ok, valid: str) -> float:
    _check(isinstance(value, numbers.Real) and not isinstance(value, bool)
           and math.isfinite(value) and ok(float(value)), name, value, valid)
    return float(value)


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
            isinstance(i, numbers.Integral) and not isinstance(i, bool) and i >= 0
            for i in ids):
        raise RequestError(f"SamplingParams stop_token_ids={ids!r} is invalid; it must be a "
                           f"list of token ids (integers >= 0).")
    return frozenset(int(i) for i in ids)
