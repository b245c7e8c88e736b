"""Turning what a user passes (prompts, sampling parameters) into checked requests, and
deciding when a sequence is done."""

from __future__ import annotations

from typing import Any, Optional, Sequence as Seq, Union

from ..core.errors import RequestError
from .sampling_params import SamplingParams
from .sequence import Sequence

Prompt = Union[str, dict]


def pair_params(num_prompts: int, params: Union[None, SamplingParams, Seq[SamplingParams]]
                ) -> list[SamplingParams]:
    """One SamplingParams per prompt: None means the defaults, one is shared by all."""
    if params is None:
        return [SamplingParams() for _ in range(num_prompts)]
    if isinstance(params, SamplingParams):
        return [params] * num_prompts
    params = list(params)
    if len(params) != num_prompts:
        raise RequestError(f"sampling_params has {len(params)} entries for {num_prompts} "
                           f"prompts; give one SamplingParams, or one per prompt.")
    for i, p in enumerate(params):
        if not isinstance(p, SamplingParams):
            raise RequestError(f"sampling_params[{i}] is a {type(p).__name__}, not a "
                               f"SamplingParams.")
    return params


def prompt_tokens(prompt: Any, tokenizer: Any) -> tuple[Optional[str], list[int]]:
    """(prompt text or None, token ids) of a str, {"prompt": str} or
    {"prompt_token_ids": [...]} prompt; the text is tokenized with the special tokens
    (BOS) the tokenizer adds, as vLLM does."""
    if isinstance(prompt, dict) and "prompt_token_ids" in prompt:
        ids = prompt["prompt_token_ids"]
        if not isinstance(ids, (list, tuple)) or not all(
                isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise RequestError(f"prompt_token_ids must be a list of integers, got "
                               f"{_short(ids)}.")
        return prompt.get("prompt"), list(ids)
    text = prompt.get("prompt") if isinstance(prompt, dict) else prompt
    if not isinstance(text, str):
        raise RequestError(f"a prompt must be a str, {{'prompt': str}} or "
                           f"{{'prompt_token_ids': [int, ...]}}, got {_short(prompt)}.")
    if not text:
        raise RequestError("the prompt is the empty string; give at least one character "
                           "(or prompt_token_ids).")
    return text, tokenizer(text).input_ids


def check_prompt(ids: list[int], vocab_size: int, max_model_len: int) -> None:
    if not ids:
        raise RequestError("the prompt has no tokens; give at least one token.")
    bad = next((i for i in ids if not 0 <= i < vocab_size), None)
    if bad is not None:
        raise RequestError(f"prompt token id {bad} is outside the vocabulary "
                           f"(0..{vocab_size - 1}).")
    if len(ids) > max_model_len:
        raise RequestError(f"the prompt has {len(ids)} tokens, more than max_model_len="
                           f"{max_model_len}. Shorten the prompt, or load the "
                           f"model with a larger max_model_len.")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def finish_check(seq: Sequence, token: int, eos_ids: frozenset[int],
                 max_model_len: int) -> None:
    """Append ``token``'s text to the sequence and mark it finished when it should stop:
    eos (unless ignore_eos), a stop token id, a stop string (the text ends before it),
    max_tokens, or max_model_len. Checked in vLLM's order; as in vLLM, stop tokens count
    from the min_tokens-th generated token on, stop strings only after it."""
    params = seq.params
    reason, stop_reason = None, None
    stops_allowed = seq.num_output_tokens >= params.min_tokens
    if stops_allowed and token in eos_ids and not params.ignore_eos:
        reason = "stop"
    elif stops_allowed and token in params.stop_ids:
        reason, stop_reason = "stop", token
    elif seq.ends_by_length(seq.num_known_tokens, max_model_len):
        reason = "length"
    if not params.detokenize:
        if reason is not None:
            seq.finish_reason, seq.stop_reason = reason, stop_reason
        return
    if not (params.stop_strings or seq.streamed):  # text is read only at the end
        seq.detokenizer.hold(token)
        if reason is not None:
            seq.text += seq.detokenizer.flush()
            seq.finish_reason, seq.stop_reason = reason, stop_reason
        return
    delta = seq.detokenizer.add(token)
    if reason is not None:
        delta += seq.detokenizer.flush()
    if params.stop_strings and delta and seq.num_output_tokens > params.min_tokens:
        # A stop string may begin in earlier text and end in this delta.
        start = len(seq.text)
        seq.text += delta
        hits = [(at, stop) for stop in params.stop_strings
                if (at := seq.text.find(stop, max(start - len(stop) + 1, 0))) != -1]
        if hits:
            at, stop = min(hits)
            seq.text = seq.text[:at]
            reason, stop_reason = "stop", stop
    else:
        seq.text += delta
    if reason is not None:
        seq.finish_reason, seq.stop_reason = reason, stop_reason
