"""IPEX-XPU's paged attention as an implementation of the ``attention`` op (xpu platform).

One call per step serves decodes and prefills alike: ``PagedAttention.flash_attn_varlen_func``
(ipex.llm.modules, XPU build) attends each sequence's new tokens over its whole context
straight from the paged cache, through the block table, causally aligned to the end of the
context. The cache is baseboard's standard layout [2, num_blocks, block_size, Hk, D], which
is IPEX's "flash" layout: ``reshape_and_cache_flash`` writes it. Arguments are passed by
position, as IPEX's releases spell some of their names differently.

Each step's metadata are new tensors, so they never go stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

import intel_extension_for_pytorch as ipex
import torch

from ...core.attention import AttentionBatch, AttentionSpec

PagedAttention = ipex.llm.modules.PagedAttention


@dataclass
class IpexMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    cu_seqlens_q: torch.Tensor  # [B + 1] int32
    cu_seqlens_k: torch.Tensor  # [B + 1] int32
    max_seqlen_q: int
    max_seqlen_k: int
    block_tables: torch.Tensor  # [B, max_blocks] int32, unused entries 0


class IpexXpuAttention:
    """Paged attention through IPEX's XPU kernels (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        self.spec = spec

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        return self.spec.standard_kv_cache_shape(num_blocks)

    def _ints(self, values: list, dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.spec.device)

    def build_metadata(self, batch: AttentionBatch) -> IpexMetadata:
        width = max(len(t) for t in batch.block_tables)
        return IpexMetadata(
            slot_mapping=self._ints(batch.slot_mapping, torch.int64),
            cu_seqlens_q=self._ints([0, *accumulate(batch.query_lens)], torch.int32),
            cu_seqlens_k=self._ints([0, *accumulate(batch.context_lens)], torch.int32),
            max_seqlen_q=max(batch.query_lens), max_seqlen_k=max(batch.context_lens),
            block_tables=self._ints([t + [0] * (width - len(t)) for t in batch.block_tables],
                                    torch.int32))

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: IpexMetadata) -> torch.Tensor:
        """q [T, Hq, D], k, v [T, Hk, D] (strided views are fine) -> [T, Hq, D]."""
        m = metadata
        PagedAttention.reshape_and_cache_flash(k, v, kv_cache[0], kv_cache[1], m.slot_mapping)
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        PagedAttention.flash_attn_varlen_func(
            out, q.contiguous(), kv_cache[0], kv_cache[1], m.cu_seqlens_q, m.cu_seqlens_k,
            m.max_seqlen_q, m.max_seqlen_k, self.spec.scale, True, m.block_tables, None)
        return out
