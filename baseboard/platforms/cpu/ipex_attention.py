"""Attention ``ipex``: IPEX's paged attention (``ipex.llm.modules.PagedAttention``'s ops)
behind the contract's attention class.

The cache is IPEX's layout, not the reference's: [2 (keys, values), num_blocks, Hk,
block_size, D], each block holding one head's keys of block_size tokens contiguously.
Per layer, ``forward`` writes the step's keys and values with ``reshape_and_cache``, then
runs decodes with ``single_query_cached_kv_attention`` and every other sequence (fresh
prefills and prefills over a cached prefix) with ``flash_attn_varlen_func`` over the
paged cache (its causal flag is spelled ``is_cusal`` in IPEX's signature, passed here by
position). ``build_metadata`` makes the int32 tables once per step; metadata own them,
so older metadata stay valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ...core.attention import AttentionBatch, AttentionSpec
from ...core.errors import ConfigError
from .ipex_runtime import ipex

HEAD_DIMS = (32, 64, 80, 96, 112, 128, 256)  # the head sizes IPEX's CPU kernels take


@dataclass
class IpexAttentionMetadata:
    """One step's tables. Decodes are the first ``num_decodes`` tokens and sequences."""

    slots: torch.Tensor  # [T] int32
    num_decodes: int
    decode_tables: torch.Tensor  # [decodes, max_blocks] int32
    decode_lens: torch.Tensor  # [decodes] int32
    max_decode_len: int
    prefill: Optional[tuple]  # (cu_q, cu_kv, max_q, max_kv, tables) of the other sequences


def _tables(block_tables: list[list[int]]) -> torch.Tensor:
    width = max((len(t) for t in block_tables), default=0) or 1
    out = torch.zeros((max(len(block_tables), 1), width), dtype=torch.int32)
    for i, table in enumerate(block_tables):
        if table:
            out[i, :len(table)] = torch.tensor(table, dtype=torch.int32)
    return out


def _cumulative(lengths: list[int]) -> torch.Tensor:
    return torch.tensor([0] + lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32)


class IpexPagedAttention:
    """Paged attention on IPEX's CPU kernels (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        if spec.head_dim not in HEAD_DIMS:
            raise ConfigError(f"attention ipex takes head_dim {HEAD_DIMS}, and the model has "
                              f"{spec.head_dim}; choose attention=cpu_paged.")
        self.spec = spec
        self.paged = ipex().llm.modules.PagedAttention
        group = spec.num_heads // spec.num_kv_heads
        # query head -> its KV head, as single_query_cached_kv_attention takes it
        self.head_mapping = torch.arange(spec.num_kv_heads, dtype=torch.int32) \
            .repeat_interleave(group)

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        s = self.spec
        return (2, num_blocks, s.num_kv_heads, s.block_size, s.head_dim)

    def build_metadata(self, batch: AttentionBatch) -> IpexAttentionMetadata:
        decodes = batch.num_decodes
        prefill = None
        if decodes < len(batch.query_lens):
            query_lens = batch.query_lens[decodes:]
            context_lens = batch.context_lens[decodes:]
            prefill = (_cumulative(query_lens), _cumulative(context_lens), max(query_lens),
                       max(context_lens), _tables(batch.block_tables[decodes:]))
        return IpexAttentionMetadata(
            slots=torch.tensor(batch.slot_mapping, dtype=torch.int32),
            num_decodes=decodes,
            decode_tables=_tables(batch.block_tables[:decodes]),
            decode_lens=torch.tensor(batch.context_lens[:decodes] or [0], dtype=torch.int32),
            max_decode_len=max(batch.context_lens[:decodes], default=0),
            prefill=prefill)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: IpexAttentionMetadata) -> torch.Tensor:
        """q [T, Hq, D], k and v [T, Hk, D] -> [T, Hq, D]; writes k, v to the cache first."""
        s = self.spec
        if kv_cache.dtype != s.dtype:
            raise ConfigError(f"the KV cache is {kv_cache.dtype}, but attention was built for "
                              f"{s.dtype}; allocate the cache in the spec's dtype.")
        q, k, v = (t.to(s.dtype).contiguous() for t in (q, k, v))
        key_cache, value_cache = kv_cache[0], kv_cache[1]
        self.paged.reshape_and_cache(k, v, key_cache, value_cache, metadata.slots)
        out = torch.empty_like(q)
        d = metadata.num_decodes
        if d:
            self.paged.single_query_cached_kv_attention(
                out[:d], q[:d], key_cache, value_cache, self.head_mapping, s.scale,
                metadata.decode_tables, metadata.decode_lens, s.block_size,
                metadata.max_decode_len, None)
        if metadata.prefill is not None:
            cu_q, cu_kv, max_q, max_kv, tables = metadata.prefill
            self.paged.flash_attn_varlen_func(
                out[d:], q[d:], key_cache, value_cache, cu_q, cu_kv, max_q, max_kv, s.scale,
                True, tables, None)
        return out
