"""One engine step on the device: step tensors, attention metadata, forward, logits at
each sequence's last token, and sampling through the plan.

Nothing here waits for the device: inputs go through pinned memory, the sampled tokens come
back through a pinned copy that the engine reads when it needs them, and a step may be
launched before the previous step's tokens are read (its placeholders are filled on the
device), so the host prepares step N+1 while the device computes step N.
"""

from __future__ import annotations

import math
from itertools import accumulate
from typing import Any, Optional

import numpy as np
import torch

from ..core.attention import AttentionBatch
from ..core.sampling import SamplingTensors
from .config import EngineConfig
from .cuda_graphs import StepGraphs, capture_sizes
from .logprobs import TopLogprobs, prompt_logprobs
from .sequence import Sequence


CACHE_ALIGNMENT = 64  # bytes: a cache line, what torch's own CPU allocator gives


def zeroed(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A zero tensor. On the CPU its pages come zeroed from the kernel as they are first
    written (calloc of a large block maps fresh pages), instead of torch.zeros writing every
    byte up front: a KV cache of gigabytes costs nothing until it is used."""
    if device.type != "cpu":
        return torch.zeros(shape, dtype=dtype, device=device)
    nbytes = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
    raw = torch.from_numpy(np.zeros(nbytes + CACHE_ALIGNMENT, dtype=np.uint8))
    start = -raw.data_ptr() % CACHE_ALIGNMENT
    return raw[start:start + nbytes].view(dtype).view(shape)


class ModelRunner:
    """Owns the KV caches (one tensor per layer, in the attention implementation's layout).
    ``channel``: the tensor-parallel ranks' ``StepChannel`` (None for one device): rank 0
    sends each step's inputs through it, and the other ranks run them (``follow_steps``)."""

    def __init__(self, config: EngineConfig, model: Any, attention: Any, num_blocks: int,
                 generator: torch.Generator, channel: Optional[Any] = None):
        self.model = model
        self.channel = channel
        self.attention = attention
        self.sample = config.plan.sample
        self.block_size = block_size = config.block_size
        self.vocab_size = config.model_config.vocab_size
        self.max_num_seqs = max_num_seqs = config.max_num_seqs
        self.device = device = config.device
        dtype = config.dtype
        self.generator = generator
        self.pinned = device.type == "cuda"
        # with CUDA graphs, one block more: padding rows of a replayed step write there
        cache_blocks = num_blocks + 1 if config.cuda_graphs else num_blocks
        self.kv_caches = [zeroed(attention.kv_cache_shape(cache_blocks), dtype, device)
                          for _ in range(config.model_config.num_layers)]
        # Greedy steps reuse these; rows of a sampled step are rebuilt with one call each.
        self.greedy_temperature = torch.zeros(max_num_seqs, dtype=torch.float32, device=device)
        self.greedy_top_k = torch.zeros(max_num_seqs, dtype=torch.long, device=device)
        self.greedy_top_p = torch.ones(max_num_seqs, dtype=torch.float32, device=device)
        self.noise: Optional[torch.Tensor] = None  # [max_num_seqs, V] Exp(1), made on first use
        self.output_counts: Optional[torch.Tensor] = None  # penalties' buffers, likewise
        self.prompt_mask: Optional[torch.Tensor] = None
        self.graphs: Optional[StepGraphs] = None
        if config.cuda_graphs:
            with torch.inference_mode():
                self.graphs = StepGraphs(
                    model, attention, self.kv_caches, capture_sizes(max_num_seqs),
                    list(config.graph_prefill_sizes), pad_block=num_blocks,
                    block_size=block_size, max_model_len=config.max_model_len, device=device,
                    parts=config.graph_parts)
            if channel is not None:  # every rank must cut a step into the same parts
                self.graphs.max_replays = channel.min_over_ranks(self.graphs.max_replays)

    def make_batch(self, seqs: list[Sequence]) -> tuple[list[int], list[int], AttentionBatch]:
        """Token ids, positions and the AttentionBatch of one step (decodes first)."""
        bs = self.block_size
        input_ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        query_lens, context_lens, tables = [], [], []
        for seq in seqs:
            start, end = seq.num_computed_tokens, len(seq)
            input_ids.extend(seq.token_ids[start:end])
            positions.extend(range(start, end))
            table = seq.block_table
            for index in range(start // bs, (end - 1) // bs + 1):
                base = table[index] * bs
                slots.extend(range(base + max(start - index * bs, 0),
                                   base + min(end - index * bs, bs)))
            query_lens.append(end - start)
            context_lens.append(end)
            tables.append(table)
        return input_ids, positions, AttentionBatch(query_lens, context_lens, tables, slots)

    def sampling_tensors(self, seqs: list[Sequence], previous: Optional[SampledTokens] = None,
                         plain: bool = False) -> SamplingTensors:
        """Per-row parameters; each sampled row draws its noise from the request's own
        generator (seeded requests) or the engine's, so a seed fixes a request's tokens. A
        greedy step without penalties uploads nothing (preallocated tensors). ``plain``:
        every sequence's plain_sampling is known to be True (no penalties to look for)."""
        n = len(seqs)
        params = [seq.params for seq in seqs]
        penalties = {} if plain or not any(p.penalised for p in params) \
            else self._penalty_tensors(seqs, previous)
        if all(p.temperature == 0 for p in params):
            return SamplingTensors(self.greedy_temperature[:n], self.greedy_top_k[:n],
                                   self.greedy_top_p[:n], None, all_greedy=True,
                                   no_top_k=True, no_top_p=True, **penalties)
        if self.noise is None:
            self.noise = torch.ones(self.max_num_seqs, self.vocab_size, dtype=torch.float32,
                                    device=self.device)
        noise = self.noise[:n]
        seeded = [(row, seq.generator) for row, seq in enumerate(seqs)
                  if seq.generator is not None]
        if len(seeded) < n:  # one draw for every row, then the seeded rows redraw
            noise.exponential_(generator=self.generator)
        for row, generator in seeded:
            noise[row].exponential_(generator=generator)
        top_k = [max(p.top_k, 0) for p in params]
        min_p = [p.min_p for p in params]
        floats = self.upload([[p.temperature for p in params], [p.top_p for p in params],
                              min_p], torch.float32)
        return SamplingTensors(
            temperature=floats[0], top_k=self.upload(top_k), top_p=floats[1],
            noise=noise, all_greedy=False, no_top_k=not any(top_k),
            no_top_p=all(p.top_p == 1 for p in params),
            min_p=floats[2] if any(min_p) else None, **penalties)

    def _penalty_tensors(self, seqs: list[Sequence], previous: Optional[SampledTokens]
                         ) -> dict[str, torch.Tensor]:
        """The penalties' SamplingTensors fields: per-row values [B] float32, output_counts
        [B, V] int32 over each row's generated tokens and prompt_mask [B, V] bool over its
        prompt. A generated token not read back yet (placeholder -1 - r) is counted from row
        r of the previous step's tokens on the device, so async scheduling counts it too.
        Rows without penalties count nothing: their penalty values are neutral."""
        n, vocab = len(seqs), self.vocab_size
        if self.output_counts is None:  # [max_num_seqs, V], made on the first such step
            self.output_counts = torch.zeros(self.max_num_seqs, vocab, dtype=torch.int32,
                                             device=self.device)
            self.prompt_mask = torch.zeros(self.max_num_seqs, vocab, dtype=torch.bool,
                                           device=self.device)
        counts, prompt_mask = self.output_counts[:n].zero_(), self.prompt_mask[:n].zero_()
        rows: list[int] = []
        ids: list[int] = []
        prompt_rows: list[int] = []
        prompt_ids: list[int] = []
        for row, seq in enumerate(seqs):
            if seq.params.penalised:
                generated = seq.token_ids[seq.num_prompt_tokens:]
                rows += [row] * len(generated)
                ids += generated
                prompt_rows += [row] * seq.num_prompt_tokens
                prompt_ids += seq.prompt_token_ids
        index = self.upload([rows + prompt_rows, ids + prompt_ids])  # [2, N]
        tokens = index[1]
        if previous is not None:
            pending = (-1 - tokens).clamp(min=0)
            tokens = torch.where(tokens < 0, previous.device[pending], tokens)
        flat = index[0] * vocab + tokens
        counts.view(-1).index_add_(0, flat[:len(ids)],
                                   torch.ones(len(ids), dtype=torch.int32, device=self.device))
        prompt_mask.view(-1)[flat[len(ids):]] = True
        values = self.upload([[seq.params.presence_penalty for seq in seqs],
                              [seq.params.frequency_penalty for seq in seqs],
                              [seq.params.repetition_penalty for seq in seqs]], torch.float32)
        return {"presence_penalty": values[0], "frequency_penalty": values[1],
                "repetition_penalty": values[2], "output_counts": counts,
                "prompt_mask": prompt_mask}

    def _hold_back_stop_tokens(self, logits: torch.Tensor, seqs: list[Sequence]) -> None:
        """min_tokens: a row with fewer generated tokens cannot sample one that would end it
        (eos unless ignored, stop_token_ids); their logits [B, V] become -inf."""
        rows: list[int] = []
        ids: list[int] = []
        for row, seq in enumerate(seqs):
            if seq.num_generated < seq.params.min_tokens:
                banned = [t for t in seq.stop_token_ids if t < self.vocab_size]
                rows += [row] * len(banned)
                ids += banned
        if rows:
            index = self.upload([rows, ids])
            logits[index[0], index[1]] = float("-inf")

    @staticmethod
    def _prompt_rows(seqs: list[Sequence], batch: AttentionBatch) -> list[tuple[int, int, int]]:
        """(row, start, end): the step's tokens [start, end) whose logits give the prompt
        log-probabilities of a sequence that asks for them and is prefilled from position 0
        in this step."""
        found = []
        start = 0
        for row, (seq, query_len) in enumerate(zip(seqs, batch.query_lens)):
            if seq.needs_prompt_logprobs and query_len == batch.context_lens[row] \
                    and seq.num_prompt_tokens > 1:
                # position i predicts token i + 1
                found.append((row, start, start + seq.num_prompt_tokens - 1))
            start += query_len
        return found

    def _prompt_logprobs(self, seqs: list[Sequence], prompt_rows: list[tuple[int, int, int]],
                         hidden: torch.Tensor) -> dict[int, TopLogprobs]:
        """Row -> the prompt log-probabilities of the sequences of ``prompt_rows``, from
        hidden [T, hidden] of every token."""
        return {row: prompt_logprobs(self.model, hidden[start:end],
                                     self.upload(seqs[row].prompt_token_ids[1:]),
                                     seqs[row].params.prompt_logprobs, self.vocab_size)
                for row, start, end in prompt_rows}

    def upload(self, values: list, dtype: torch.dtype = torch.long,
               out: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Host values to the device without waiting for it: pinned staging memory, whose
        reuse torch holds back until the copy has run."""
        host = torch.tensor(values, dtype=dtype, pin_memory=self.pinned)
        if out is None:
            return host.to(self.device, non_blocking=True)
        return out.copy_(host, non_blocking=True)

    def _fill_placeholders(self, ids: torch.Tensor, input_ids: list[int],
                           previous: Optional[torch.Tensor]) -> None:
        """Write the tokens that the previous step sampled (on the device, not read back
        yet) over this step's placeholders -1 - row."""
        rows = [i for i, token in enumerate(input_ids) if token < 0]
        if not rows:
            return
        if previous is None:
            raise RuntimeError("a step has placeholder tokens but no previous step to read")
        sources = [-1 - input_ids[i] for i in rows]
        if rows == sources == list(range(len(rows))):  # the steady state: same order
            ids[:len(rows)].copy_(previous[:len(rows)])
        else:
            index = self.upload([rows, sources])
            ids[index[0]] = previous[index[1]]

    def _forward(self, input_ids: list[int], positions: list[int], batch: AttentionBatch,
                 previous: Optional[torch.Tensor]) -> torch.Tensor:
        """The model over one step's tokens -> hidden [T, hidden]; ``previous``: the tokens
        [B] the step before sampled, for its placeholders."""
        graph = self.graphs.fit(batch) if self.graphs is not None else None
        parts = self.graphs.split(batch) if self.graphs is not None and not graph else None
        if parts:
            return self._forward_parts(parts, input_ids, positions, previous)
        inputs = self.upload([input_ids, positions],
                             out=self.graphs.inputs[:, :len(input_ids)] if graph else None)
        self._fill_placeholders(inputs[0], input_ids, previous)
        if graph:
            return self.graphs.run(graph, batch)
        metadata = self.attention.build_metadata(batch)
        return self.model.forward(inputs[0], inputs[1], self.kv_caches, metadata)

    def _forward_parts(self, parts: list, input_ids: list[int], positions: list[int],
                       previous: Optional[torch.Tensor]) -> torch.Tensor:
        """``_forward`` of a step that StepGraphs.split cut into graph replays."""
        hidden: Optional[torch.Tensor] = None
        for key, start, part in parts:
            end = start + len(part.slot_mapping)
            inputs = self.upload([input_ids[start:end], positions[start:end]],
                                 out=self.graphs.inputs[:, :end - start])
            self._fill_placeholders(inputs[0], input_ids[start:end], previous)
            out = self.graphs.run(key, part)
            if hidden is None:
                hidden = out.new_empty(len(input_ids), out.shape[1])
            # copied out now: the graphs share one memory pool, so the next replay may
            # overwrite this one's output
            hidden[start:end] = out
        return hidden

    def _last_tokens(self, hidden: torch.Tensor, batch: AttentionBatch) -> torch.Tensor:
        """hidden [T, hidden] -> [B, hidden] at each sequence's last token."""
        if len(batch.slot_mapping) == len(batch.query_lens):  # decodes only: every token
            return hidden
        return hidden[self.upload([end - 1 for end in accumulate(batch.query_lens)])]

    @torch.inference_mode()
    def launch(self, seqs: list[Sequence],
               previous: Optional[SampledTokens] = None) -> SampledTokens:
        """Start one step for ``seqs``; the tokens they sample are read back later. Token
        -1 - r in a sequence stands for row r of ``previous``, the step launched before."""
        if self.channel is None:
            return self._launch(seqs, previous)
        try:
            return self._launch(seqs, previous)
        except RuntimeError as exc:  # a worker's death surfaces as a failed collective
            failure = self.channel.explain(exc)
            if failure is exc:
                raise
            raise failure from exc

    def _launch(self, seqs: list[Sequence], previous: Optional[SampledTokens]) -> SampledTokens:
        input_ids, positions, batch = self.make_batch(seqs)
        plain = all(seq.plain_sampling for seq in seqs)  # the common step: skip the extras
        prompt_rows = [] if plain else self._prompt_rows(seqs, batch)
        if self.channel is not None:
            self.channel.send_step((input_ids, positions, batch,
                                    [(start, end) for _, start, end in prompt_rows]))
        hidden = self._forward(input_ids, positions, batch,
                               previous.device if previous is not None else None)
        prompt = self._prompt_logprobs(seqs, prompt_rows, hidden) if prompt_rows else {}
        logits = self.model.compute_logits(self._last_tokens(hidden, batch))  # [B, V] float32
        asked = [] if plain else [seq.params.logprobs for seq in seqs
                                  if seq.params.logprobs is not None]
        raw = logits.log_softmax(dim=-1) if asked else None  # before anything changes logits
        if not plain:
            self._hold_back_stop_tokens(logits, seqs)
        tokens = self.sample(logits, self.sampling_tensors(seqs, previous, plain))
        if self.channel is not None:
            self.channel.share_tokens(tokens)
        logprobs = TopLogprobs.gather(raw, tokens, max(asked)) if asked else None
        return SampledTokens(tokens, logprobs, prompt)

    @torch.inference_mode()
    def follow_steps(self) -> None:
        """A worker rank: run each step rank 0 sends, with the same collectives in the same
        order (the forward's, the logits' for the prompt rows and the last tokens, and the
        sampled tokens' broadcast), until rank 0 sends None."""
        previous: Optional[torch.Tensor] = None
        while (message := self.channel.receive_step()) is not None:
            input_ids, positions, batch, prompt_rows = message
            hidden = self._forward(input_ids, positions, batch, previous)
            for start, end in prompt_rows:  # their logits are gathered in the same chunks
                prompt_logprobs(self.model, hidden[start:end],
                                torch.zeros(end - start, dtype=torch.long, device=self.device),
                                1, self.vocab_size)
            self.model.compute_logits(self._last_tokens(hidden, batch))
            previous = self.channel.share_tokens(
                torch.empty(len(batch.query_lens), dtype=torch.long, device=self.device))


class SampledTokens:
    """A step's sampled tokens on the device, and their copy to the host under way, with
    the log-probabilities asked for (copied alongside): logprobs for the step's rows,
    prompt_logprobs by row."""

    def __init__(self, tokens: torch.Tensor, logprobs: Optional[TopLogprobs] = None,
                 prompt_logprobs: Optional[dict[int, TopLogprobs]] = None):
        self.device = tokens
        self.ready: Optional[torch.Event] = None
        pinned = tokens.device.type != "cpu"
        self.logprobs = logprobs.to_host(pinned) if logprobs is not None else None
        self.prompt_logprobs = {row: lp.to_host(pinned)
                                for row, lp in (prompt_logprobs or {}).items()}
        if not pinned:
            self.host = tokens
        else:
            self.host = torch.empty(tokens.shape, dtype=tokens.dtype, pin_memory=True)
            self.host.copy_(tokens, non_blocking=True)
            self.ready = torch.Event(device=tokens.device)
            self.ready.record()

    def tolist(self) -> list[int]:
        """The tokens, once the step has run (the one wait for the device per step); the
        log-probabilities may be read after it."""
        if self.ready is not None:
            self.ready.synchronize()
        return self.host.tolist()
