"""CUDA graphs for decode steps and for one-sequence prefills, and steps split into them.

At load, one graph is captured per decode batch size in ``capture_sizes(max_num_seqs)``
and per prefill length in ``EngineConfig.graph_prefill_sizes``. A decode step of n
sequences replays the smallest captured size >= n, padded with dummy sequences that read
and write only a reserved cache block (``pad_block``). A prefill of one sequence (the
first step of a lone request, where launching each kernel from Python would cost more than
running it) replays the smallest captured length >= its tokens: the padding tokens come
after the real ones, so causal attention keeps them out of every real token's result, and
they write their keys and values to the reserved block. A step that mixes decodes with a
few prefills (requests joining a running batch) replays the decodes' graph, then each
prefill's, where that was timed faster than the step launched from Python
(BASEBOARD_GRAPH_PARTS=0: never). The attention implementation needs no special case for
either padding. Graph-safe attention implementations keep every scalar of their metadata
independent of the step's context lengths when ``AttentionSpec.cuda_graphs`` is set, and
fill persistent buffers in ``build_metadata`` (see the Triton attention).
"""

from __future__ import annotations

import time
from typing import Any, Optional

import torch

from ..core.attention import AttentionBatch


# A step that mixes decodes and prefills matches no captured graph: it runs as replays
# (the decodes in one, each prefill in its own) where they cost less than the step
# launched from Python, never in more than this many.
MAX_REPLAYS = 8


def capture_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 32: padding wastes at most ~1/3."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(96, max_num_seqs + 32, 32))
    capped = sorted({min(s, max_num_seqs) for s in sizes})
    return capped


class StepGraphs:
    """Captured forwards; ``run`` replays the one that ``fit`` chose."""

    def __init__(self, model: Any, attention: Any, kv_caches: list[torch.Tensor],
                 decode_sizes: list[int], prefill_sizes: list[int], pad_block: int,
                 block_size: int, max_model_len: int, device: torch.device,
                 parts: bool = True):
        self.model = model
        self.attention = attention
        self.kv_caches = kv_caches
        self.pad_block = pad_block
        self.pad_slot = pad_block * block_size
        self.block_size = block_size
        self.max_model_len = max_model_len
        self.decode_sizes = decode_sizes
        self.prefill_sizes = prefill_sizes
        # token ids [0] and positions [1] of the replayed step, written before ``run``
        width = max(decode_sizes + prefill_sizes)
        self.inputs = torch.zeros(2, width, dtype=torch.long, device=device)
        self.graphs: dict[tuple[bool, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        # Every warm-up and capture runs on this one stream: cuBLAS gives each stream it
        # meets a workspace (about 33 MiB on Hopper) that lives as long as the process,
        # so a fresh stream per graph left ~400 MiB allocated after the engine was gone.
        self.stream = torch.cuda.Stream()
        keys = [(False, n) for n in decode_sizes] + [(True, t) for t in prefill_sizes]
        for key in sorted(keys, key=lambda k: -k[1]):  # largest first: the rest reuse its pool
            self._capture(*key)
        # parts off (BASEBOARD_GRAPH_PARTS=0): no step is split, and nothing is timed
        self.max_replays = self._replays_per_eager_step() if parts else 0

    def _replays_per_eager_step(self) -> int:
        """How many replays of the one-token decode graph take the time of that step
        launched from Python, both timed here (everything compiled and warm). A small
        model's eager step is bound by its launches and costs several replays; a large
        model's is bound by the GPU, like a replay, and a step run in parts would read the
        weights once a part."""
        metadata = self.attention.build_metadata(self._padding(1))
        args = (self.inputs[0, :1], self.inputs[1, :1], self.kv_caches, metadata)
        graph = self.graphs[(False, 1)][0]
        with torch.cuda.stream(self.stream):
            eager = _seconds_per_call(lambda: self.model.forward(*args))
            replay = _seconds_per_call(graph.replay)
        return min(MAX_REPLAYS, int(eager / replay))

    def _padding(self, count: int) -> AttentionBatch:
        """``count`` one-token sequences in the reserved block."""
        return AttentionBatch([1] * count, [1] * count, [[self.pad_block]] * count,
                              [self.pad_slot] * count)

    def _capture(self, prefill: bool, size: int) -> None:
        if prefill:  # one sequence of ``size`` tokens in the reserved block
            blocks = -(-size // self.block_size)
            batch = AttentionBatch([size], [size], [[self.pad_block] * blocks],
                                   [self.pad_slot] * size)
        else:
            batch = self._padding(size)
        metadata = self.attention.build_metadata(batch)
        args = (self.inputs[0, :size], self.inputs[1, :size], self.kv_caches, metadata)
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):  # warm-up outside the graph: autotuning, lazy init
            self.model.forward(*args)
        torch.cuda.current_stream().wait_stream(self.stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool, stream=self.stream):
            hidden = self.model.forward(*args)
        self.graphs[(prefill, size)] = (graph, hidden)

    def fit(self, batch: AttentionBatch) -> Optional[tuple[bool, int]]:
        """The captured graph that can run ``batch`` (padded), or None."""
        num_seqs, num_tokens = len(batch.query_lens), len(batch.slot_mapping)
        if num_tokens == num_seqs:
            return next(((False, s) for s in self.decode_sizes if s >= num_seqs), None)
        if num_seqs != 1:
            return None
        size = next((s for s in self.prefill_sizes if s >= num_tokens), None)
        # the padded context must stay within the block table's max_model_len
        if size is None or batch.context_lens[0] + size - num_tokens > self.max_model_len:
            return None
        return (True, size)

    def split(self, batch: AttentionBatch) -> Optional[list[tuple[tuple[bool, int], int,
                                                                 AttentionBatch]]]:
        """A step that no graph runs whole (decodes and prefills together: requests joining
        a running batch; or several prefills) as parts that graphs run: (graph key, first
        token, the part's batch), the decodes in one part, each prefill in one of its own.
        None where a part fits no graph, or where the parts would be more than
        ``max_replays``."""
        first = batch.num_decodes
        num_seqs = len(batch.query_lens)
        if num_seqs - first + (first > 0) > self.max_replays:
            return None
        q = batch.query_lens
        rows = [(0, first)] if first else []  # the decodes, then each prefill alone
        rows += [(row, row + 1) for row in range(first, num_seqs)]
        parts, token = [], 0
        for start, end in rows:
            tokens = sum(q[start:end])
            part = AttentionBatch(q[start:end], batch.context_lens[start:end],
                                  batch.block_tables[start:end],
                                  batch.slot_mapping[token:token + tokens])
            key = self.fit(part)
            if key is None:
                return None
            parts.append((key, token, part))
            token += tokens
        return parts

    def run(self, key: tuple[bool, int], batch: AttentionBatch) -> torch.Tensor:
        """Replay graph ``key`` for ``batch``, whose token ids and positions are in
        ``inputs[:, :tokens]`` -> hidden [tokens, hidden]."""
        prefill, size = key
        tokens = len(batch.slot_mapping)
        if prefill:
            pad = size - tokens
            padded = AttentionBatch([size], [batch.context_lens[0] + pad], batch.block_tables,
                                    batch.slot_mapping + [self.pad_slot] * pad)
        else:
            pad = self._padding(size - tokens)
            padded = AttentionBatch(
                batch.query_lens + pad.query_lens, batch.context_lens + pad.context_lens,
                batch.block_tables + pad.block_tables, batch.slot_mapping + pad.slot_mapping)
        self.attention.build_metadata(padded)
        graph, hidden = self.graphs[key]
        graph.replay()
        return hidden[:tokens]


def _seconds_per_call(call, repeats: int = 5) -> float:
    """Wall time per call of ``call`` run back to back, once warm: the host's launches or
    the GPU's work, whichever is longer."""
    call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats
