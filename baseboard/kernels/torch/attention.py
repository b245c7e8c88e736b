"""Paged attention reference: write the new K/V into the block cache, then attend each
sequence's new tokens causally over its whole context, one sequence at a time, in float32."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...core.attention import AttentionBatch, AttentionSpec
from .rotary import rotary_embedding


@dataclass
class PagedMetadata:
    query_lens: list[int]
    context_lens: list[int]
    block_tables: list[torch.Tensor]  # per sequence: [blocks] int64 on the device
    slot_mapping: torch.Tensor  # [T] int64 on the device


def write_kv(k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
             slot_mapping: torch.Tensor) -> None:
    """Scatter k, v [T, Hk, D] into kv_cache [2, num_blocks, block_size, Hk, D]."""
    _, _, _, heads, dim = kv_cache.shape
    kv_cache[0].view(-1, heads, dim)[slot_mapping] = k.to(kv_cache.dtype)
    kv_cache[1].view(-1, heads, dim)[slot_mapping] = v.to(kv_cache.dtype)


def gather_context(cache: torch.Tensor, block_table: torch.Tensor, length: int) -> torch.Tensor:
    """The first ``length`` tokens of one sequence: [length, Hk, D] from [blocks, bs, Hk, D]."""
    return cache[block_table].flatten(0, 1)[:length]


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """q [Q, Hq, D] are the last Q positions of a context k, v [C, Hk, D]; -> [Q, Hq, D]."""
    num_q, heads, _ = q.shape
    context = k.shape[0]
    group = heads // k.shape[1]
    k = k.float().repeat_interleave(group, dim=1)
    v = v.float().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k) * scale
    query_pos = torch.arange(context - num_q, context, device=q.device).unsqueeze(1)
    key_pos = torch.arange(context, device=q.device).unsqueeze(0)
    scores = scores.masked_fill(key_pos > query_pos, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(dim=-1), v).to(q.dtype)


class TorchAttention:
    """Reference attention over a [2, num_blocks, block_size, Hk, D] cache."""

    def __init__(self, spec: AttentionSpec):
        self.spec = spec

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        return self.spec.standard_kv_cache_shape(num_blocks)

    def build_metadata(self, batch: AttentionBatch) -> PagedMetadata:
        device = self.spec.device
        return PagedMetadata(
            query_lens=list(batch.query_lens), context_lens=list(batch.context_lens),
            block_tables=[torch.tensor(t, dtype=torch.long, device=device)
                          for t in batch.block_tables],
            slot_mapping=torch.tensor(batch.slot_mapping, dtype=torch.long, device=device))

    def forward_rotary(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor,
                       v: torch.Tensor, cos_sin_cache: torch.Tensor, kv_cache: torch.Tensor,
                       metadata: PagedMetadata) -> torch.Tensor:
        """The rotary_embedding fusion's meaning: rotate q and k, then ``forward``."""
        q, k = rotary_embedding(positions, q, k, cos_sin_cache)
        return self.forward(q, k, v, kv_cache, metadata)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: PagedMetadata) -> torch.Tensor:
        write_kv(k, v, kv_cache, metadata.slot_mapping)
        out = torch.empty_like(q)
        start = 0
        for num_q, context, table in zip(metadata.query_lens, metadata.context_lens,
                                          metadata.block_tables):
            keys = gather_context(kv_cache[0], table, context)
            values = gather_context(kv_cache[1], table, context)
            out[start:start + num_q] = causal_attention(q[start:start + num_q], keys, values,
                                                        self.spec.scale)
            start += num_q
        return out
