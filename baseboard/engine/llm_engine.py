"""The engine: loads a checkpoint through a resolved plan, queues requests and runs steps.

Requests are checked completely before they are queued, so a bad request never
disturbs the ones already queued or running.
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any, Iterable, Mapping, Optional, Union

import torch

from ..core.attention import AttentionSpec
from ..core.errors import ConfigError, ModelError, RequestError
from ..core.settings import read_settings
from ..frontend.resolve import Resolution, load_catalog, resolve_plan
from .block_manager import BlockManager
from .cuda_graphs import prefill_sizes
from .detokenizer import IncrementalDetokenizer
from .kv_budget import activation_bytes, block_bytes, kv_cache_budget, num_kv_blocks
from .model_runner import ModelRunner, SampledTokens
from .requests import check_prompt, finish_check, prompt_tokens
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence

logger = logging.getLogger(__name__)

DTYPES = {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
          "fp16": torch.float16, "half": torch.float16, "float32": torch.float32,
          "fp32": torch.float32, "float": torch.float32}
DEFAULT_MAX_NUM_BATCHED_TOKENS = 4096


def parse_dtype(dtype: Union[None, str, torch.dtype]) -> Optional[torch.dtype]:
    """None for "auto" (the platform's default dtype), else a torch float dtype."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype={dtype!r} is not supported; use 'auto', 'bfloat16', 'float16' "
                      f"or 'float32' (or the torch dtype).")


def checkpoint_dtype(checkpoint: Any) -> Optional[torch.dtype]:
    """What dtype="auto" means before the platform is known: float32 for GGUF files, which
    are made to compute in float32 (as llama.cpp does; in bf16, close logits of a small
    model flip its answer), else None: the platform's default dtype."""
    return torch.float32 if str(checkpoint.path).endswith(".gguf") else None


def set_cpu_threads(configured: Optional[int]) -> int:
    threads = configured or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return threads


class LLMEngine:
    """Owns the model, the KV cache, the scheduler and the tokenizer. See ``LLM`` for the
    arguments; ``cli_backends`` and ``plan_path`` are the command line's --backend and
    --plan."""

    def __init__(self, model: str, *, dtype: Union[None, str, torch.dtype] = None,
                 platform: Optional[str] = None, backends: Optional[Mapping[str, str]] = None,
                 cli_backends: Optional[Mapping[str, str]] = None,
                 plan_path: Optional[str] = None, max_num_seqs: int = 256,
                 max_model_len: Optional[int] = None,
                 max_num_batched_tokens: Optional[int] = None,
                 kv_cache_memory: Optional[int] = None, block_size: Optional[int] = None,
                 seed: Optional[int] = None, skip_tokenizer_init: bool = False,
                 async_scheduling: Optional[bool] = None):
        _check_positive(max_num_seqs=max_num_seqs, block_size=block_size,
                        max_model_len=max_model_len, kv_cache_memory=kv_cache_memory,
                        max_num_batched_tokens=max_num_batched_tokens)
        from ..models.loader import load_checkpoint

        catalog = load_catalog(read_settings())
        checkpoint = load_checkpoint(model, catalog)
        config = self.config = checkpoint.config
        self.resolution: Resolution = resolve_plan(
            platform=platform, backends=backends, cli_backends=cli_backends,
            plan_path=plan_path, dtype=parse_dtype(dtype) or checkpoint_dtype(checkpoint),
            head_dim=config.head_dim, num_heads=config.num_heads,
            num_kv_heads=config.num_kv_heads, block_size=block_size, catalog=catalog)
        self.plan = self.resolution.plan
        target = self.resolution.platform.platform
        self.dtype = self.resolution.context.dtype  # the platform's default when not given
        block_size = self.resolution.context.block_size  # likewise
        if self.dtype not in target.supported_dtypes:
            raise ConfigError(f"dtype {self.dtype} is not supported on platform {target.name} "
                              f"(supported: {', '.join(map(str, target.supported_dtypes))}).")
        self.device = target.device()
        if target.device_type == "cpu":
            set_cpu_threads(self.resolution.settings["BASEBOARD_NUM_THREADS"])

        limit = config.max_position_embeddings
        if max_model_len is not None and max_model_len > limit:
            raise ModelError(f"max_model_len={max_model_len} is more than the model's "
                             f"{limit} positions (max_position_embeddings); use at most {limit}.")
        self.max_model_len = max_model_len or limit
        self.max_num_seqs = max_num_seqs
        batched = max_num_batched_tokens or max(DEFAULT_MAX_NUM_BATCHED_TOKENS,
                                                self.max_model_len)
        if batched < self.max_model_len:
            raise ConfigError(f"max_num_batched_tokens={batched} is less than max_model_len="
                              f"{self.max_model_len}; a whole prompt must fit one step.")

        graphs = self.resolution.context.cuda_graphs
        graph_prefills = prefill_sizes(batched, self.max_model_len) if graphs else []
        spec = AttentionSpec(num_heads=config.num_heads, num_kv_heads=config.num_kv_heads,
                             head_dim=config.head_dim, scale=config.head_dim ** -0.5,
                             block_size=block_size, dtype=self.dtype, device=self.device,
                             max_num_seqs=max_num_seqs, max_model_len=self.max_model_len,
                             cuda_graphs=graphs, max_graph_tokens=max(graph_prefills, default=0))
        attention = self.plan.attention(spec)
        self.model = checkpoint.model_class(config, self.plan, attention, self.dtype,
                                            self.device)
        self.model.load_weights(checkpoint.weights())
        self.tokenizer = None if skip_tokenizer_init else checkpoint.tokenizer

        per_block = block_bytes(attention, config.num_layers, self.dtype)
        needed = max_num_seqs * -(-self.max_model_len // block_size) * per_block
        budget, source = kv_cache_budget(
            target, kv_cache_memory, needed,
            activation_bytes(config, batched, max_num_seqs, self.dtype),
            self.resolution.settings["BASEBOARD_GPU_MEMORY_UTILIZATION"])
        num_blocks = num_kv_blocks(budget, source, per_block, block_size, self.max_model_len)
        logger.info("KV cache: %d blocks of %d tokens (%.1f MiB, from %s)", num_blocks,
                    block_size, num_blocks * per_block / 2**20, source)

        self.generator = torch.Generator(device=self.device)
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(seed)
        self.block_manager = BlockManager(num_blocks, block_size)
        self.scheduler = Scheduler(self.block_manager, max_num_seqs, batched, self.max_model_len)
        self.runner = ModelRunner(self.model, attention, self.plan, num_blocks, block_size,
                                  config.num_layers, config.vocab_size, max_num_seqs,
                                  self.dtype, self.device, self.generator,
                                  cuda_graphs=spec.cuda_graphs, graph_prefills=graph_prefills,
                                  max_model_len=self.max_model_len)
        eos = set(config.eos_token_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.requests: dict[str, Sequence] = {}
        self._ids = itertools.count()
        self.async_scheduling = self.resolution.settings["BASEBOARD_ASYNC_SCHEDULING"] \
            if async_scheduling is None else async_scheduling
        if self.async_scheduling is None:  # only a device running apart from the host gains
            self.async_scheduling = target.device_type != "cpu"
        self.in_flight: Optional[tuple[list[Sequence], SampledTokens]] = None

    def make_sequence(self, prompt: Any, params: SamplingParams) -> Sequence:
        """Check and tokenize one request without queueing it; RequestError if it is bad."""
        if not isinstance(params, SamplingParams):
            raise RequestError(f"sampling_params is a {type(params).__name__}, not a "
                               f"SamplingParams.")
        params.verify()
        if self.tokenizer is None and (params.detokenize or not isinstance(prompt, dict)
                                       or "prompt_token_ids" not in prompt):
            raise RequestError("the engine was loaded with skip_tokenizer_init=True: give "
                               "{'prompt_token_ids': [...]} prompts and "
                               "SamplingParams(detokenize=False).")
        text, ids = prompt_tokens(prompt, self.tokenizer)
        check_prompt(ids, self.config.vocab_size, self.max_model_len)
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.seed)
        request_id = str(next(self._ids))
        return Sequence(request_id, text, ids, params, IncrementalDetokenizer(self.tokenizer, ids),
                        generator)

    def enqueue(self, seqs: Iterable[Sequence]) -> None:
        for seq in seqs:
            self.requests[seq.request_id] = seq
            self.scheduler.add(seq)

    def add_request(self, prompt: Any, params: Optional[SamplingParams] = None) -> Sequence:
        """Check and queue one request; a bad one raises RequestError and changes nothing."""
        seq = self.make_sequence(prompt, params if params is not None else SamplingParams())
        self.enqueue([seq])
        return seq

    def abort(self, request_id: str) -> None:
        seq = self.requests.pop(request_id, None)
        if seq is not None and not seq.finished:
            self.scheduler.finish(seq)

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or (
            self.in_flight is not None and not all(s.finished for s in self.in_flight[0]))

    def step(self) -> list[Sequence]:
        """Launch one step and read one step's tokens back; returns the sequences whose
        token was read (finished ones are released). With async scheduling the step read is
        the one launched by the previous call, so that the host's work for this step (and
        the reading) overlaps the device's work on the previous one."""
        seqs = self.scheduler.schedule()
        launched = None
        if seqs:
            previous = self.in_flight[1] if self.in_flight is not None else None
            launched = (seqs, self.runner.launch(seqs, previous))
            for row, seq in enumerate(seqs):
                seq.num_computed_tokens = len(seq)
                seq.add_pending(row)
        if self.async_scheduling:
            done, self.in_flight = self.in_flight, launched
        else:
            done = launched
        return self._read(*done) if done is not None else []

    def _read(self, seqs: list[Sequence], sampled: SampledTokens) -> list[Sequence]:
        advanced = []
        for seq, token in zip(seqs, sampled.tolist()):
            if seq.finished:  # finished or aborted while its step ran: the token is void
                continue
            seq.resolve_pending(token)
            self.block_manager.register_full_blocks(seq)
            finish_check(seq, token, self.eos_token_ids, self.max_model_len)
            if seq.finish_reason is not None:
                self.scheduler.finish(seq)
                self.requests.pop(seq.request_id, None)
            advanced.append(seq)
        return advanced

    def is_idle(self) -> bool:
        """No request queued or running and every KV block free (nothing leaked)."""
        return (not self.has_unfinished() and not self.requests
                and self.block_manager.num_free_blocks == self.block_manager.num_blocks)

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions


def _check_positive(**values: Optional[int]) -> None:
    for name, value in values.items():
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(f"{name}={value!r} is invalid; give a positive integer.")
