"""``LLM``: the vLLM-shaped entry point (generate, chat, stream).

A batch is checked in full before anything runs: if any prompt or SamplingParams is
bad, generate() raises RequestError naming it (and its index) and runs nothing, so no
accepted request is lost and the call can simply be repeated without the bad one.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence as Seq, Union

import torch

from ..core.errors import ModelError, RequestError
from .llm_engine import LLMEngine
from .outputs import RequestOutput
from .requests import Prompt, pair_params
from .sampling_params import SamplingParams
from .sequence import Sequence

Conversation = list[dict]


class LLM:
    """Load ``model`` (a Hugging Face directory or a .gguf file) and generate.

    dtype            "auto" / None (the platform's default), "bfloat16", "float16",
                     "float32" or a torch dtype
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
    """

    def __init__(self, model: str, dtype: Union[None, str, torch.dtype] = None,
                 platform: Optional[str] = None, backends: Optional[Mapping[str, str]] = None,
                 max_num_seqs: int = 256, max_model_len: Optional[int] = None,
                 kv_cache_memory: Optional[int] = None, block_size: Optional[int] = None,
                 seed: Optional[int] = None, *, max_num_batched_tokens: Optional[int] = None,
                 cli_backends: Optional[Mapping[str, str]] = None,
                 plan_path: Optional[str] = None, skip_tokenizer_init: bool = False,
                 async_scheduling: Optional[bool] = None):
        self.engine = LLMEngine(
            model, dtype=dtype, platform=platform, backends=backends, cli_backends=cli_backends,
            plan_path=plan_path, max_num_seqs=max_num_seqs, max_model_len=max_model_len,
            max_num_batched_tokens=max_num_batched_tokens, kv_cache_memory=kv_cache_memory,
            block_size=block_size, seed=seed, skip_tokenizer_init=skip_tokenizer_init,
            async_scheduling=async_scheduling)
        self.resolution = self.engine.resolution
        self.plan = self.engine.plan

    def get_tokenizer(self) -> Any:
        return self.engine.tokenizer

    def generate(self, prompts: Union[Prompt, Seq[Prompt]],
                 sampling_params: Union[None, SamplingParams, Seq[SamplingParams]] = None,
                 use_tqdm: bool = False) -> list[RequestOutput]:
        """One RequestOutput per prompt, in the order given. A prompt is a str,
        {"prompt": str} or {"prompt_token_ids": [int, ...]}."""
        prompts = list(prompts) if isinstance(prompts, (list, tuple)) else [prompts]
        params = pair_params(len(prompts), sampling_params)
        seqs = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            try:
                seqs.append(self.engine.make_sequence(prompt, p))
            except RequestError as exc:
                where = f"prompt {i} of {len(prompts)}" if len(prompts) > 1 else "the prompt"
                raise RequestError(f"{where}: {exc} Nothing was run.") from None
        return [RequestOutput.from_sequence(s) for s in self._run(seqs, use_tqdm)]

    def chat(self, messages: Union[Conversation, Seq[Conversation]],
             sampling_params: Union[None, SamplingParams, Seq[SamplingParams]] = None,
             use_tqdm: bool = False) -> list[RequestOutput]:
        """generate() over the tokenizer's chat template (with the generation prompt).
        ``messages`` is one conversation ([{"role": ..., "content": ...}, ...]) or a list."""
        single = isinstance(messages, list) and (not messages or isinstance(messages[0], dict))
        conversations = [messages] if single else list(messages)
        return self.generate([self.apply_chat_template(c) for c in conversations],
                             sampling_params, use_tqdm)

    def apply_chat_template(self, conversation: Conversation) -> dict:
        """{"prompt": text, "prompt_token_ids": ids} of one conversation; the template
        brings its own special tokens, so none are added when tokenizing."""
        tokenizer = self.engine.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise ModelError("this model's tokenizer has no chat template; use generate() "
                             "with a prompt formatted for the model.")
        if not isinstance(conversation, list) or not conversation or not all(
                isinstance(m, dict) and "role" in m and "content" in m for m in conversation):
            raise RequestError(f"a conversation must be a non-empty list of {{'role': ..., "
                               f"'content': ...}} messages, got {str(conversation)[:80]!r}.")
        text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True,
                                             tokenize=False)
        return {"prompt": text,
                "prompt_token_ids": tokenizer(text, add_special_tokens=False).input_ids}

    def stream(self, prompt: Prompt, sampling_params: Optional[SamplingParams] = None
               ) -> TextStream:
        """Generate for one prompt and iterate over the text as it is produced."""
        return TextStream(self.engine, self.engine.add_request(prompt, sampling_params))

    def _run(self, seqs: list[Sequence], use_tqdm: bool) -> list[Sequence]:
        self.engine.enqueue(seqs)
        progress = None
        if use_tqdm:
            from tqdm.auto import tqdm

            progress = tqdm(total=len(seqs), desc="Generating", unit="prompt")
        try:
            remaining = len(seqs)
            while remaining:
                self.engine.step()
                done = sum(s.finished for s in seqs)
                if progress is not None:
                    progress.update(done - (len(seqs) - remaining))
                remaining = len(seqs) - done
        finally:
            if progress is not None:
                progress.close()
            for seq in seqs:  # interrupted: leave nothing behind in the engine
                self.engine.abort(seq.request_id)
        return seqs


class TextStream:
    """Iterates over text deltas of one request (each step runs the whole engine).
    ``output`` is the RequestOutput so far; closing the stream early aborts the request."""

    def __init__(self, engine: LLMEngine, seq: Sequence):
        self.engine = engine
        self.seq = seq
        seq.streamed = True

    def __iter__(self) -> TextStream:
        return self

    def __next__(self) -> str:
        while True:
            delta = self.seq.take_stream_delta()
            if delta:
                return delta
            if self.seq.finished:
                raise StopIteration
            self.engine.step()

    @property
    def output(self) -> RequestOutput:
        return RequestOutput.from_sequence(self.seq)

    def close(self) -> None:
        self.engine.abort(self.seq.request_id)

    def __del__(self) -> None:
        self.close()
