"""CUDA graphs for decode steps.

At load, one graph is captured per batch size in ``capture_sizes(max_num_seqs)``; a
decode step of n sequences replays the smallest captured size >= n, padded with dummy
sequences that read and write only a reserved cache block (``pad_block``), so the
attention implementation needs no special case for padding. Graph-safe attention
implementations keep every scalar of their metadata independent of the step's context
lengths when ``AttentionSpec.cuda_graphs`` is set, and fill persistent buffers in
``build_metadata`` (see the Triton attention).
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.attention import AttentionBatch


def capture_sizes(max_num_seqs: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 32: padding wastes at most ~1/3."""
    sizes = [1, 2, 4] + list(range(8, 65, 8)) + list(range(96, max_num_seqs + 32, 32))
    capped = sorted({min(s, max_num_seqs) for s in sizes})
    return capped


class DecodeGraphs:
    """Captured decode forwards; ``run`` replays the one that fits."""

    def __init__(self, model: Any, attention: Any, kv_caches: list[torch.Tensor],
                 max_num_seqs: int, pad_block: int, block_size: int, device: torch.device):
        self.model = model
        self.attention = attention
        self.kv_caches = kv_caches
        self.pad_block = pad_block
        self.pad_slot = pad_block * block_size
        self.sizes = capture_sizes(max_num_seqs)
        # token ids [0] and positions [1] of the replayed step, written before ``run``
        self.inputs = torch.zeros(2, max_num_seqs, dtype=torch.long, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()
        for size in reversed(self.sizes):  # largest first: smaller ones reuse its pool
            self._capture(size)

    def _padding(self, count: int) -> AttentionBatch:
        return AttentionBatch([1] * count, [1] * count, [[self.pad_block]] * count,
                              [self.pad_slot] * count)

    def _capture(self, size: int) -> None:
        metadata = self.attention.build_metadata(self._padding(size))
        args = (self.inputs[0, :size], self.inputs[1, :size], self.kv_caches, metadata)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside the graph: autotuning, lazy init
            self.model.forward(*args)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            hidden = self.model.forward(*args)
        self.graphs[size] = (graph, hidden)

    def fits(self, num_seqs: int) -> bool:
        return num_seqs <= self.sizes[-1]

    def run(self, n: int, batch: AttentionBatch) -> torch.Tensor:
        """Replay the decode step of ``batch`` (query_len 1 each, its token ids and positions
        in ``inputs[:, :n]``) -> hidden [n, hidden]."""
        size = next(s for s in self.sizes if s >= n)
        pad = self._padding(size - n)
        self.attention.build_metadata(AttentionBatch(
            batch.query_lens + pad.query_lens, batch.context_lens + pad.context_lens,
            batch.block_tables + pad.block_tables, batch.slot_mapping + pad.slot_mapping))
        graph, hidden = self.graphs[size]
        graph.replay()
        return hidden[:n]
