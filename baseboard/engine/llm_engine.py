"""The engine: loads a checkpoint through a resolved plan, queues requests and runs steps.

Requests are checked completely before they are queued, so a bad request never
disturbs the ones already queued or running.
"""

from __future__ import annotations

import itertools
import logging
import sys
import weakref
from pathlib import Path
from typing import Any, Iterable, Optional

import torch

from ..core.errors import BaseboardError, ModelError, RequestError
from ..core.selection import plan_warnings
from ..core.settings import read_settings
from .args import EngineArgs
from .block_manager import BlockManager
from .detokenizer import IncrementalDetokenizer
from .load_progress import LoadProgress
from .kv_budget import activation_bytes, block_bytes, kv_cache_budget, num_kv_blocks
from .logprobs import token_texts
from .model_runner import ModelRunner, SampledTokens
from .outputs import TokenLogprobs
from .requests import check_prompt, finish_check, prompt_tokens
from .sampling_params import SamplingParams
from .scheduler import Scheduler
from .sequence import Sequence, SequenceStatus

logger = logging.getLogger(__name__)


class LLMEngine:
    """Owns the model, the KV cache, the scheduler and the tokenizer. ``args``: the
    checked ``EngineArgs`` (see ``LLM`` for each one's meaning)."""

    def __init__(self, args: EngineArgs, launch: Optional[Any] = None):
        """``launch``: this process's rank among tensor-parallel ranks (a worker's
        ``baseboard.distributed.launch.Launch``); None to start or join them as rank 0."""
        self.channel = None
        progress = LoadProgress(Path(args.model).name)
        try:
            self._load(args, progress, launch)
        except BaseException as exc:
            if self.channel is None:
                raise
            # this rank's own error (a BaseboardError) is the one to tell; a failed
            # collective is explained by the worker that died, when one did
            failure = exc if isinstance(exc, BaseboardError) else self.channel.explain(exc)
            self.channel.abandon()
            if failure is exc:
                raise
            raise failure from exc
        finally:
            progress.close()
        if self.channel is not None:
            self._close = weakref.finalize(self, self.channel.close)
            if self.channel.rank != 0:  # a worker: serve rank 0's steps until it closes
                self._serve()
                return
        model_config = self.config.model_config
        eos = set(model_config.eos_token_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.requests: dict[str, Sequence] = {}
        self._ids = itertools.count()
        self.async_scheduling = self.config.async_scheduling
        self.in_flight: Optional[tuple[list[Sequence], SampledTokens]] = None

    def _load(self, args: EngineArgs, progress: LoadProgress, launch: Optional[Any]) -> None:
        # frontend.resolve builds on this package's EngineArgs and EngineConfig
        from ..frontend.plan import load_catalog
        from ..frontend.resolve import configure, open_checkpoint

        # load: the checkpoint's metadata, then every decision (EngineConfig), then the weights
        settings = read_settings()
        catalog = load_catalog(settings)
        checkpoint = open_checkpoint(args, catalog)
        progress.step("metadata")
        size = args.tensor_parallel_size
        if launch is None and size > 1:
            from ..distributed.launch import from_environment

            launch = from_environment(size)
        # the plan is resolved once, on rank 0; the other ranks are sent its choices
        config = configure(args, checkpoint, settings, catalog) \
            if launch is None or launch.rank == 0 else None
        if size > 1:
            from ..distributed.launch import connect, spawn_workers

            launch = launch or spawn_workers(args, size)
            self.channel, config = connect(
                launch, args, config, lambda a: configure(a, checkpoint, settings, catalog))
        self.config = config
        progress.step("plan")
        self.resolution = config.resolution
        self.plan = config.plan
        # nobody should be slow without knowing why: failed plugins, preferred kernels lost
        self.warnings = plan_warnings(catalog.plugins.report, self.plan)
        for line in self.warnings:
            logger.warning(line)
        self.dtype, self.device = config.dtype, config.device
        self.max_model_len = config.max_model_len
        if config.platform.device_type == "cpu":
            torch.set_num_threads(config.num_threads)
        apply_pdl(config.pdl)
        attention = self.plan.attention(config.attention_spec())
        self.model = self._make_model(checkpoint, attention)
        weights = checkpoint.weights()
        self.model.load_weights(progress.weights(weights, len(weights)))
        worker = self.channel is not None and self.channel.rank != 0
        self.tokenizer = None if args.skip_tokenizer_init or worker \
            else load_tokenizer(args, checkpoint)
        progress.step("tokenizer")

        # allocate: the KV cache in what memory is left, the scheduler and the runner
        num_blocks = self._num_kv_blocks(attention)
        if self.channel is not None:  # every rank's own memory; all must hold as many blocks
            num_blocks = self.channel.min_over_ranks(num_blocks)
        self.generator = torch.Generator(device=self.device)
        if config.seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(config.seed)
        self.block_manager = BlockManager(num_blocks, config.block_size)
        self.scheduler = Scheduler(config, self.block_manager)
        self.runner = ModelRunner(config, self.model, attention, num_blocks, self.generator,
                                  self.channel)
        progress.step("KV cache")

    def _make_model(self, checkpoint: Any, attention: Any) -> Any:
        config = self.config
        if self.channel is None:
            return checkpoint.model_class(config.model_config, self.plan, attention, self.dtype,
                                          self.device)
        from ..distributed.parallel import TensorParallel
        from ..distributed.sharding import make_shard

        model_config = config.model_config
        parallel = TensorParallel(make_shard(model_config, self.channel.rank, self.channel.size),
                                  self.channel.device_group, self.plan.all_reduce,
                                  self.plan.all_gather)
        try:
            return checkpoint.model_class(model_config, self.plan, attention, self.dtype,
                                          self.device, parallel=parallel)
        except TypeError as exc:
            if "parallel" not in str(exc):
                raise
            raise ModelError(f"the model class of {model_config.architecture} "
                             f"({checkpoint.model_class.__qualname__}) takes no 'parallel' "
                             f"argument: it does not support tensor parallelism. Use "
                             f"tensor_parallel_size=1.") from None

    def _serve(self) -> None:
        """A worker rank: run every step rank 0 sends, until it closes the engine."""
        try:
            self.runner.follow_steps()
        finally:
            self.close()
        if self.channel.launch.serve_and_exit:  # torchrun: nothing more for this rank
            raise SystemExit(0)

    def close(self) -> None:
        """Stop the tensor-parallel workers (if any) and leave their process groups; the
        engine cannot run after it. An engine of one device has nothing to close."""
        if self.channel is not None:
            self.channel.close()

    def _num_kv_blocks(self, attention: Any) -> int:
        config, model_config = self.config, self.config.model_config
        per_block = block_bytes(attention, model_config.num_layers, self.dtype)
        needed = config.max_num_seqs * -(-config.max_model_len // config.block_size) * per_block
        budget, source = kv_cache_budget(
            config.platform, config.kv_cache_memory, needed,
            activation_bytes(model_config, config.max_num_batched_tokens, config.max_num_seqs,
                             self.dtype),
            config.gpu_memory_utilization, config.tensor_parallel_size)
        num_blocks = num_kv_blocks(budget, source, per_block, config.block_size,
                                   config.max_model_len)
        logger.info("KV cache: %d blocks of %d tokens (%.1f MiB, from %s)", num_blocks,
                    config.block_size, num_blocks * per_block / 2**20, source)
        return num_blocks

    def make_sequence(self, prompt: Any, params: SamplingParams) -> Sequence:
        """Check and tokenize one request without queueing it; RequestError if it is bad.
        Returns its first completion's sequence; ``make_siblings`` makes the other n - 1."""
        if not isinstance(params, SamplingParams):
            raise RequestError(f"sampling_params is a {type(params).__name__}, not a "
                               f"SamplingParams.")
        params.verify()
        if self.tokenizer is None and (params.detokenize or not isinstance(prompt, dict)
                                       or "prompt_token_ids" not in prompt):
            raise RequestError("the engine was loaded with skip_tokenizer_init=True: give "
                               "{'prompt_token_ids': [...]} prompts and "
                               "SamplingParams(detokenize=False).")
        vocab_size = self.config.model_config.vocab_size
        for name in ("logprobs", "prompt_logprobs"):
            if (getattr(params, name) or 0) > vocab_size:
                raise RequestError(f"SamplingParams {name}={getattr(params, name)} is invalid; "
                                   f"{name} must be at most the vocabulary's {vocab_size} "
                                   f"tokens.")
        text, ids = prompt_tokens(prompt, self.tokenizer)
        check_prompt(ids, vocab_size, self.max_model_len)
        return self._sequence(str(next(self._ids)), text, ids, params, index=0)

    def make_siblings(self, first: Sequence) -> list[Sequence]:
        """Completions 1..n-1 of ``first``'s request: the same prompt, each its own draws
        (seed + index when seeded, as vLLM). The request's sequences share ``group``."""
        siblings = [self._sequence(first.request_id, first.prompt, first.prompt_token_ids,
                                   first.params, index)
                    for index in range(1, first.params.n)]
        first.group.extend(siblings)
        for seq in siblings:
            seq.group = first.group
        return siblings

    def _sequence(self, request_id: str, text: Optional[str], ids: list[int],
                  params: SamplingParams, index: int) -> Sequence:
        generator = None
        if params.seed is not None and params.temperature > 0:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(params.child_seed(index))
        detokenizer = IncrementalDetokenizer(self.tokenizer, ids, params.skip_special_tokens)
        return Sequence(request_id, text, ids, params, detokenizer, generator, index=index,
                        eos_token_ids=self.eos_token_ids)

    def enqueue(self, seqs: Iterable[Sequence]) -> None:
        """Queue sequences. Completions 1..n-1 of a prompt with a full block are held back
        until completion 0's prefill is read: its prompt blocks are in the prefix cache by
        then, so they compute only the prompt's last block."""
        for seq in seqs:
            if seq.index == 0:
                self.requests[seq.request_id] = seq
            if seq.index > 0 and not seq.group[0].finished and \
                    seq.num_prompt_tokens > self.block_manager.block_size:
                seq.held = True
            else:
                self.scheduler.add(seq)

    def add_request(self, prompt: Any, params: Optional[SamplingParams] = None) -> Sequence:
        """Check and queue one request of one completion (stream() reads its text); a bad
        one raises RequestError and changes nothing. generate() takes n > 1."""
        params = params if params is not None else SamplingParams()
        if isinstance(params, SamplingParams) and params.n != 1:
            raise RequestError(f"SamplingParams n={params.n} is invalid here: a stream (and "
                               f"add_request) gives one completion; use generate() for n > 1.")
        seq = self.make_sequence(prompt, params)
        self.enqueue([seq])
        return seq

    def abort(self, request_id: str) -> None:
        """Stop every completion of a request (those finished keep their output)."""
        first = self.requests.pop(request_id, None)
        if first is not None:
            self._stop_group(first.group)

    def _stop_group(self, group: list[Sequence]) -> None:
        for seq in group:
            if seq.held:  # never queued
                seq.held = False
                seq.status = SequenceStatus.FINISHED
            elif not seq.finished:
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
        tokens = sampled.tolist()
        logprobs = self._logprobs(seqs, sampled)
        for row, (seq, token) in enumerate(zip(seqs, tokens)):
            if seq.finished:  # finished or aborted while its step ran: the token is void
                continue
            try:
                self._advance(seq, row, token, logprobs[row], sampled)
            except Exception as exc:  # handed to the request's caller through seq.error
                self._fail(seq, exc)
            advanced.append(seq)
        return advanced

    def _advance(self, seq: Sequence, row: int, token: int,
                 logprobs: Optional[TokenLogprobs], sampled: SampledTokens) -> None:
        """The host's work for one sequence's token read back: text, stops, logprobs."""
        seq.resolve_pending(token)
        if seq.logprobs is not None:
            seq.logprobs.append(logprobs)
            seq.cumulative_logprob += logprobs[token].logprob
        if seq.needs_prompt_logprobs and (row in sampled.prompt_logprobs
                                          or seq.num_prompt_tokens == 1):
            seq.prompt_logprobs = [None] + self._prompt_logprobs(seq, sampled, row)
        self.block_manager.register_full_blocks(seq)
        if seq.index == 0:
            self._release_siblings(seq)
        finish_check(seq, token, self.eos_token_ids, self.max_model_len)
        if seq.finish_reason is not None:
            self.scheduler.finish(seq)
            if all(s.finished for s in seq.group):
                self.requests.pop(seq.request_id, None)

    def _fail(self, seq: Sequence, exc: Exception) -> None:
        """End ``seq``'s request with ``exc`` (set as each completion's ``error``). The
        host's work for one sequence (its tokenizer's decode, a stop string, its
        log-probabilities) failing ends that request alone: the step's other sequences, and
        the requests after it, go on."""
        for s in seq.group:
            s.error = exc
        self.requests.pop(seq.request_id, None)
        self._stop_group(seq.group)

    def _release_siblings(self, first: Sequence) -> None:
        """Queue the completions held back for ``first``'s prefill: its prompt blocks are
        registered now, and they find them in the prefix cache."""
        for seq in first.group:
            if seq.held:
                seq.held = False
                self.scheduler.add(seq)

    def _logprobs(self, seqs: list[Sequence], sampled: SampledTokens
                  ) -> list[Optional[TokenLogprobs]]:
        """Per row, the sampled token's {token id: Logprob} when its request asks."""
        if sampled.logprobs is None:
            return [None] * len(seqs)
        return sampled.logprobs.to_dicts([seq.params.logprobs for seq in seqs],
                                         token_texts(self.tokenizer))

    def _prompt_logprobs(self, seq: Sequence, sampled: SampledTokens, row: int
                         ) -> list[Optional[TokenLogprobs]]:
        if row not in sampled.prompt_logprobs:  # a one-token prompt: nothing to predict
            return []
        positions = seq.num_prompt_tokens - 1
        return sampled.prompt_logprobs[row].to_dicts([seq.params.prompt_logprobs] * positions,
                                                     token_texts(self.tokenizer))

    def is_idle(self) -> bool:
        """No request queued or running and every KV block free (nothing leaked)."""
        return (not self.has_unfinished() and not self.requests
                and self.block_manager.num_free_blocks == self.block_manager.num_blocks)

    @property
    def num_preemptions(self) -> int:
        return self.scheduler.num_preemptions


def apply_pdl(allowed: bool) -> None:
    """Hand EngineConfig.pdl to the shared Triton kernels, when the plan bound any of them
    (binding imported their module), so they never read the environment themselves."""
    kernels = sys.modules.get("baseboard.kernels.triton.common")
    if kernels is not None:
        kernels.allow_pdl(allowed)


def load_tokenizer(args: EngineArgs, checkpoint: Any) -> Any:
    """The checkpoint's tokenizer, or the one ``args.tokenizer`` names."""
    if args.tokenizer is None:
        return checkpoint.tokenizer
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(args.tokenizer)
    except (OSError, ValueError) as exc:
        raise ModelError(f"tokenizer={args.tokenizer!r} could not be loaded ({exc}); give a "
                         f"directory holding a Hugging Face tokenizer.") from None
