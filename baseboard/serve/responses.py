"""OpenAI response bodies and stream chunks built from the engine loop's CompletionDeltas:
/v1/completions ("text_completion") and /v1/chat/completions ("chat.completion"), their
log-probabilities and usage. Plain dicts, serialised once with json."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from ..engine.outputs import Logprob, TokenLogprobs
from .request_stream import CompletionDelta


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def sse(data: Any) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def top_entries(position: TokenLogprobs, k: int) -> list[tuple[int, Logprob]]:
    """The k most likely tokens of one position, most likely first (the engine's dict holds
    them and the chosen token, which may be less likely)."""
    return sorted(position.items(), key=lambda item: -item[1].logprob)[:k]


def token_text(logprob: Logprob) -> str:
    return logprob.decoded_token if logprob.decoded_token is not None else ""


@dataclass
class CompletionLogprobs:
    """The legacy completions log-probabilities of one choice: per token its text, its
    log-probability, the top tokens' {text: log-probability} and its offset in the text."""

    k: int
    offset: int = 0  # characters of the choice's text so far

    def entries(self, token_ids: list[int], logprobs: list[TokenLogprobs]) -> dict:
        tokens, values, tops, offsets = [], [], [], []
        for token, position in zip(token_ids, logprobs):
            chosen = position[token]
            tokens.append(token_text(chosen))
            values.append(chosen.logprob)
            top: dict[str, float] = {}
            for _, p in top_entries(position, self.k):  # tokens of one text: the likeliest
                top.setdefault(token_text(p), p.logprob)
            tops.append(top)
            offsets.append(self.offset)
            self.offset += len(token_text(chosen))
        return {"tokens": tokens, "token_logprobs": values, "top_logprobs": tops,
                "text_offset": offsets}


def chat_logprobs(token_ids: list[int], logprobs: list[TokenLogprobs], k: int) -> list[dict]:
    """Chat log-probabilities ("content" entries) of some tokens of one choice."""
    def entry(token: str, value: float) -> dict:
        return {"token": token, "logprob": value, "bytes": list(token.encode())}

    content = []
    for token, position in zip(token_ids, logprobs):
        chosen = position[token]
        content.append({**entry(token_text(chosen), chosen.logprob),
                        "top_logprobs": [entry(token_text(p), p.logprob)
                                         for _, p in top_entries(position, k)]})
    return content


@dataclass
class Choice:
    """One choice of a response, accumulated from its deltas."""

    index: int
    text: list[str] = field(default_factory=list)
    num_tokens: int = 0
    logprobs: Optional[list] = None  # completions: the CompletionLogprobs dicts; chat: entries
    finish_reason: Optional[str] = None
    stop_reason: Any = None


class ResponseBuilder:
    """Turns a request's deltas into one response, or into stream chunks.

    kind      "completion" or "chat"
    n         completions per prompt (choice index = prompt index * n + completion index)
    logprobs  top tokens per position when the request asked for log-probabilities, else
              None
    """

    def __init__(self, kind: str, model: str, n: int, logprobs: Optional[int],
                 include_usage: bool = False):
        self.kind = kind
        self.model = model
        self.n = n
        self.k = logprobs
        self.include_usage = include_usage
        self.id = new_id("chatcmpl" if kind == "chat" else "cmpl")
        self.created = int(time.time())
        self.prompt_tokens = 0
        self.choices: dict[int, Choice] = {}
        self._completion_logprobs: dict[int, CompletionLogprobs] = {}
        self._envelope: Optional[tuple[str, str]] = None  # chunk_event's text around a part

    @property
    def object(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    def started(self, prompt_token_ids: list[list[int]]) -> None:
        self.prompt_tokens = sum(len(ids) for ids in prompt_token_ids)
        for prompt_index in range(len(prompt_token_ids)):
            for index in range(self.n):
                i = prompt_index * self.n + index
                self.choices[i] = Choice(i, logprobs=[] if self.k is not None else None)

    def add(self, delta: CompletionDelta) -> Optional[dict]:
        """Account for ``delta``; the choice's part of a stream chunk (None: nothing to
        send)."""
        choice = self.choices[delta.prompt_index * self.n + delta.index]
        choice.text.append(delta.text)
        choice.num_tokens += len(delta.token_ids)
        choice.finish_reason, choice.stop_reason = delta.finish_reason, delta.stop_reason
        logprobs = None
        if self.k is not None and delta.token_ids:
            logprobs = self._logprobs(choice.index, delta)
            choice.logprobs.append(logprobs)
        if not delta.text and logprobs is None and delta.finish_reason is None:
            return None
        part: dict[str, Any] = {"index": choice.index}
        if self.kind == "chat":
            part["delta"] = {"content": delta.text} if delta.text else {}
            part["logprobs"] = None if logprobs is None else {"content": logprobs}
        else:
            part["text"] = delta.text
            part["logprobs"] = logprobs
        part["finish_reason"] = delta.finish_reason
        part["stop_reason"] = delta.stop_reason
        return part

    def _logprobs(self, index: int, delta: CompletionDelta) -> Any:
        if self.kind == "chat":
            return chat_logprobs(delta.token_ids, delta.logprobs, self.k)
        state = self._completion_logprobs.setdefault(index, CompletionLogprobs(self.k))
        return state.entries(delta.token_ids, delta.logprobs)

    @property
    def usage(self) -> dict:
        return usage(self.prompt_tokens, sum(c.num_tokens for c in self.choices.values()))

    def chunk(self, parts: list[dict]) -> dict:
        body = {"id": self.id, "object": f"{self.object}.chunk" if self.kind == "chat"
                else self.object, "created": self.created, "model": self.model,
                "choices": parts}
        if self.include_usage:
            body["usage"] = None
        return body

    def chunk_event(self, part: dict) -> str:
        """``sse(self.chunk([part]))``, with the envelope serialised once per response: a
        stream sends one per token."""
        if self._envelope is None:  # "choices" is the body's last list
            head, _, tail = sse(self.chunk([])).rpartition("[]")
            self._envelope = head + "[", "]" + tail
        head, tail = self._envelope
        return f"{head}{json.dumps(part, ensure_ascii=False)}{tail}"

    def role_chunks(self) -> list[dict]:
        """Chat streams open every choice with its role."""
        return [self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])
                for i in sorted(self.choices)]

    def usage_chunk(self) -> dict:
        return {**self.chunk([]), "usage": self.usage}

    def response(self) -> dict:
        """The whole (non-streamed) response."""
        choices = []
        for i in sorted(self.choices):
            choice = self.choices[i]
            text = "".join(choice.text)
            entry: dict[str, Any] = {"index": i}
            if self.kind == "chat":
                entry["message"] = {"role": "assistant", "content": text}
                entry["logprobs"] = None if choice.logprobs is None else {
                    "content": [e for part in choice.logprobs for e in part]}
            else:
                entry["text"] = text
                entry["logprobs"] = None if choice.logprobs is None else _join_completion(
                    choice.logprobs)
            entry["finish_reason"] = choice.finish_reason
            entry["stop_reason"] = choice.stop_reason
            choices.append(entry)
        return {"id": self.id, "object": self.object, "created": self.created,
                "model": self.model, "choices": choices, "usage": self.usage}


def _join_completion(parts: list[dict]) -> dict:
    joined: dict[str, list] = {"tokens": [], "token_logprobs": [], "top_logprobs": [],
                               "text_offset": []}
    for part in parts:
        for name in joined:
            joined[name].extend(part[name])
    return joined
