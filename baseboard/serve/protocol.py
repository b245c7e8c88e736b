"""The OpenAI request bodies the server accepts (pydantic models), and their translation into
the engine's SamplingParams. Types are checked here (strictly: "7" is not a number); ranges
are SamplingParams' own checks, so the server and ``LLM`` accept the same values.

Fields beyond OpenAI's are vLLM's (top_k, min_p, repetition_penalty, min_tokens,
stop_token_ids, ignore_eos, skip_special_tokens). A field the server does not implement is
refused by name, never ignored.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, ValidationError

from ..core.errors import RequestError
from ..engine.sampling_params import SamplingParams

# Most top tokens a response lists per position: OpenAI's top_logprobs limit (and vLLM's
# default max_logprobs).
MAX_LOGPROBS = 20
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


class FieldError(RequestError):
    """A request field has a value the server cannot use; ``param`` names the field."""

    def __init__(self, message: str, param: Optional[str]):
        super().__init__(message)
        self.param = param

    def __reduce__(self) -> tuple:  # both fields through the engine process's pipe
        return FieldError, (str(self), self.param)


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class StreamOptions(StrictModel):
    include_usage: Optional[bool] = None


class SamplingFields(StrictModel):
    """The fields /v1/completions and /v1/chat/completions share. None (or a field left
    out) is the default."""

    model: str
    n: Optional[int] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    stop: Union[str, list[str], None] = None
    stop_token_ids: Optional[list[int]] = None
    min_tokens: Optional[int] = None
    ignore_eos: Optional[bool] = None
    skip_special_tokens: Optional[bool] = None
    max_tokens: Optional[int] = None
    stream: Optional[bool] = None
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None  # OpenAI's end-user id, for their abuse monitoring: unused
    logit_bias: Optional[dict[str, float]] = None  # refused unless empty

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("logit_bias",)
    LOGPROBS_FIELD: ClassVar[str] = "logprobs"  # the field behind SamplingParams.logprobs

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def sampling_params(self, max_tokens: int, logprobs: Optional[int],
                        max_tokens_field: str = "max_tokens") -> SamplingParams:
        """The request's SamplingParams; FieldError names the field out of range."""
        self._refuse_unsupported()
        given = {name: getattr(self, name) for name in (
            "n", "temperature", "top_p", "top_k", "min_p", "presence_penalty",
            "frequency_penalty", "repetition_penalty", "seed", "stop", "stop_token_ids",
            "min_tokens", "ignore_eos", "skip_special_tokens") if getattr(self, name) is not None}
        if logprobs is not None and logprobs > MAX_LOGPROBS:
            raise FieldError(f"{self.LOGPROBS_FIELD}={logprobs} is more than the server "
                             f"returns; ask for at most {MAX_LOGPROBS}.", self.LOGPROBS_FIELD)
        try:
            return SamplingParams(**given, max_tokens=max_tokens, logprobs=logprobs)
        except RequestError as exc:
            raise FieldError(str(exc), self._field_of(exc, max_tokens_field)) from None

    def _field_of(self, exc: RequestError, max_tokens_field: str) -> Optional[str]:
        """The request field a SamplingParams error names ("SamplingParams top_p=...")."""
        match = re.match(r"SamplingParams (\w+)=", str(exc))
        if match is None:
            return None
        return {"logprobs": self.LOGPROBS_FIELD,
                "max_tokens": max_tokens_field}.get(match.group(1), match.group(1))

    def _refuse_unsupported(self) -> None:
        for name in self.UNSUPPORTED:
            value = getattr(self, name)
            if value not in (None, False, {}, [], ""):
                raise FieldError(f"{name} is not supported by this server; leave it out.",
                                 name)


PromptField = Union[str, list[str], list[int], list[list[int]]]


class CompletionRequest(SamplingFields):
    """POST /v1/completions."""

    prompt: PromptField
    logprobs: Optional[int] = None
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("logit_bias", "echo", "suffix")

    def prompts(self) -> list[Union[str, dict]]:
        """The prompts as the engine takes them: a string, a list of strings, a list of
        token ids, or a list of lists of token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if not prompt:
            raise FieldError("prompt is an empty list; give a string, a list of strings or "
                             "a list of token ids.", "prompt")
        # strict validation leaves one kind of element per list: the first tells which
        if isinstance(prompt[0], int):
            return [{"prompt_token_ids": list(prompt)}]
        if isinstance(prompt[0], str):
            return list(prompt)
        return [{"prompt_token_ids": list(p)} for p in prompt]

    def to_sampling_params(self) -> SamplingParams:
        if self.best_of is not None and self.best_of != (self.n or 1):
            raise FieldError(f"best_of={self.best_of} is not supported (only best_of equal to "
                             f"n); leave it out.", "best_of")
        max_tokens = COMPLETION_DEFAULT_MAX_TOKENS if self.max_tokens is None \
            else self.max_tokens
        return self.sampling_params(max_tokens, self.logprobs)


class TextPart(StrictModel):
    type: Literal["text"]
    text: str


class ChatMessage(StrictModel):
    role: str
    content: Union[str, list[TextPart], None] = None
    name: Optional[str] = None
    # what clients send back with an assistant turn; refused unless empty
    tool_calls: Optional[list[Any]] = None
    tool_call_id: Optional[str] = None
    refusal: Optional[str] = None
    function_call: Optional[Any] = None

    def as_template_message(self, position: int) -> dict:
        """{"role", "content"[, "name"]} for the chat template."""
        for name in ("tool_calls", "tool_call_id", "function_call"):
            if getattr(self, name):
                raise FieldError(f"messages[{position}].{name}: tool calls are not supported "
                                 f"by this server.", "messages")
        if self.content is None:
            raise FieldError(f"messages[{position}] has no content; give a string or a list "
                             f"of text parts.", "messages")
        message = {"role": self.role, "content": self.content if isinstance(self.content, str)
                   else [part.model_dump() for part in self.content]}
        if self.name is not None:
            message["name"] = self.name
        return message


class ChatCompletionRequest(SamplingFields):
    """POST /v1/chat/completions."""

    messages: list[ChatMessage]
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    add_generation_prompt: Optional[bool] = None
    tools: Optional[list[Any]] = None
    tool_choice: Optional[Any] = None
    parallel_tool_calls: Optional[bool] = None
    functions: Optional[list[Any]] = None
    function_call: Optional[Any] = None
    response_format: Optional[dict[str, Any]] = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("logit_bias", "tools", "tool_choice",
                                              "functions", "function_call")
    LOGPROBS_FIELD: ClassVar[str] = "top_logprobs"

    @property
    def max_tokens_given(self) -> Optional[int]:
        """max_completion_tokens, else the older max_tokens (None: neither was given)."""
        return self.max_completion_tokens if self.max_completion_tokens is not None \
            else self.max_tokens

    def template_messages(self) -> list[dict]:
        if not self.messages:
            raise FieldError("messages is empty; give at least one message.", "messages")
        return [m.as_template_message(i) for i, m in enumerate(self.messages)]

    def to_sampling_params(self, max_model_len: int) -> SamplingParams:
        """Without max_tokens or max_completion_tokens a chat completion may run to the end
        of the context (OpenAI's default)."""
        if self.response_format not in (None, {"type": "text"}):
            raise FieldError("response_format other than {'type': 'text'} is not supported "
                             "by this server.", "response_format")
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs needs logprobs=true.", "top_logprobs")
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        max_tokens = self.max_tokens_given
        field = "max_completion_tokens" if self.max_completion_tokens is not None \
            else "max_tokens"
        return self.sampling_params(max_model_len if max_tokens is None else max_tokens,
                                    logprobs, field)


def parse_request(model: type[StrictModel], body: Any) -> Any:
    """``body`` (decoded JSON) as ``model``; FieldError naming the first field at fault."""
    if not isinstance(body, dict):
        raise FieldError(f"the request body must be a JSON object, got "
                         f"{type(body).__name__}.", None)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        path = field_path(error["loc"])
        top = str(path[0]) if path else None
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
        if error["type"] == "missing":
            message = f"{where} is required."
        elif error["type"] == "extra_forbidden":
            message = f"{where} is not a field this server knows; leave it out."
        elif len(path) < len(error["loc"]):  # one of several allowed types
            allowed = UNION_FIELDS.get(str(path[-1]) if path else "", "of another type")
            message = f"{where} must be {allowed}; got {_short(error['input'])}."
        else:
            message = f"{where}: {error['msg']}; got {_short(error['input'])}."
        raise FieldError(message, top) from None


UNION_FIELDS = {
    "prompt": "a string, a list of strings, a list of token ids or a list of lists of token "
              "ids",
    "stop": "a string or a list of strings",
    "content": "a string or a list of text parts ({'type': 'text', 'text': ...})",
}
_TYPE_TAG = re.compile(r"[^A-Za-z0-9_]|^(str|int|float|bool|list|dict|none)$")


def field_path(loc: tuple) -> tuple:
    """A pydantic error location without the type tags that unions add ('list[str]')."""
    path = []
    for part in loc:
        if isinstance(part, str) and _TYPE_TAG.search(part):
            break
        path.append(part)
    return tuple(path)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
