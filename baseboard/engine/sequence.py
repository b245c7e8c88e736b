"""One request's sequence of tokens as the scheduler and the model runner see it."""

from __future__ import annotations

import enum
from typing import Optional

import torch

from .detokenizer import IncrementalDetokenizer
from .outputs import TokenLogprobs
from .sampling_params import SamplingParams


class SequenceStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Sequence:
    """Prompt and generated tokens, the KV blocks that hold them, and the output so far.

    num_computed_tokens  tokens whose keys and values are in the cache; a step computes
                         token_ids[num_computed_tokens:] (a prefill) or the last token (a decode)
    num_pending          trailing tokens sampled by launched steps but not read back yet;
                         each is a placeholder -1 - row: row ``row`` of its step's tokens
    block_table          cache block ids holding the tokens, in order
    block_hashes         prefix-cache hashes of the leading full blocks already registered
    index                which of its request's n completions this is (0..n-1)
    stop_token_ids       the ids that end it: eos (unless ignore_eos) and stop_token_ids;
                         min_tokens holds them back
    logprobs             per generated token {token id: Logprob}, when params.logprobs asks
    prompt_logprobs      per prompt token (None first), once computed; only completion 0 of
                         a request computes them
    """

    def __init__(self, request_id: str, prompt: Optional[str], prompt_token_ids: list[int],
                 params: SamplingParams, detokenizer: IncrementalDetokenizer,
                 generator: Optional[torch.Generator], index: int = 0,
                 eos_token_ids: frozenset[int] = frozenset()):
        self.request_id = request_id
        self.index = index
        self.prompt = prompt
        self.token_ids = list(prompt_token_ids)
        self.num_prompt_tokens = len(prompt_token_ids)
        self.params = params
        self.detokenizer = detokenizer
        self.generator = generator  # None: draw from the engine's generator
        self.status = SequenceStatus.WAITING
        self.num_computed_tokens = 0
        self.num_pending = 0
        self.block_table: list[int] = []
        self.block_hashes: list[int] = []
        self.text = ""
        self.streamed = False  # text is needed after every token (streaming)
        self.num_streamed_chars = 0
        self.finish_reason: Optional[str] = None
        self.stop_reason: Optional[int | str] = None
        self.stop_token_ids = params.stop_ids | (frozenset() if params.ignore_eos
                                                 else eos_token_ids)
        wants_logprobs = params.logprobs is not None
        # sampled from its logits by the sample op alone: no penalties, min_tokens or
        # log-probabilities (the runner skips their work for steps of such sequences only)
        self.plain_sampling = not (params.penalised or params.min_tokens or wants_logprobs
                                   or params.prompt_logprobs is not None)
        self.logprobs: Optional[list[TokenLogprobs]] = [] if wants_logprobs else None
        self.cumulative_logprob: Optional[float] = 0.0 if wants_logprobs else None
        self.prompt_logprobs: Optional[list[Optional[TokenLogprobs]]] = None
        self.group: list[Sequence] = [self]  # its request's sequences, by index
        self.held = False  # queued by the engine after completion 0's prefill
        self.error: Optional[Exception] = None  # why its request failed (LLMEngine._fail)

    def __len__(self) -> int:
        """Tokens the cache makes room for, pending ones included."""
        return len(self.token_ids)

    @property
    def num_known_tokens(self) -> int:
        return len(self.token_ids) - self.num_pending

    def add_pending(self, row: int) -> None:
        """Stand in for the token that row ``row`` of the step just launched samples."""
        self.token_ids.append(-1 - row)
        self.num_pending += 1

    def resolve_pending(self, token: int) -> None:
        """The oldest pending token has been read back."""
        self.token_ids[len(self.token_ids) - self.num_pending] = token
        self.num_pending -= 1

    def drop_pending(self) -> None:
        """Forget tokens of steps still running (the sequence has finished)."""
        if self.num_pending:
            del self.token_ids[-self.num_pending:]
            self.num_pending = 0

    def ends_by_length(self, num_tokens: int, max_model_len: int) -> bool:
        """Whether the sequence ends by length once it has ``num_tokens`` tokens:
        max_tokens generated or max_model_len reached."""
        return num_tokens >= max_model_len \
            or num_tokens - self.num_prompt_tokens >= self.params.max_tokens

    @property
    def prompt_token_ids(self) -> list[int]:
        return self.token_ids[:self.num_prompt_tokens]

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens:self.num_known_tokens]

    @property
    def num_output_tokens(self) -> int:
        return self.num_known_tokens - self.num_prompt_tokens

    @property
    def query_len(self) -> int:
        """Tokens the next step computes for this sequence."""
        return len(self.token_ids) - self.num_computed_tokens

    @property
    def num_generated(self) -> int:
        """Tokens generated so far, pending ones included (what min_tokens counts before
        the next token is sampled)."""
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def needs_prompt_logprobs(self) -> bool:
        """Whether the prompt's log-probabilities are asked and not computed yet: the
        prompt is then computed in full (its logits at every position), not taken from the
        prefix cache."""
        return self.params.prompt_logprobs is not None and self.index == 0 \
            and self.prompt_logprobs is None

    @property
    def finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    def take_stream_delta(self) -> str:
        """Text not yet streamed, minus a tail that could still become a stop string."""
        end = len(self.text) if self.finished else max(
            len(self.text) - self.params.stop_holdback, self.num_streamed_chars)
        delta = self.text[self.num_streamed_chars:end]
        self.num_streamed_chars = end
        return delta
