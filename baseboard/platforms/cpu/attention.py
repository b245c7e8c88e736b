"""Attention ``cpu_paged``: attention straight over the paged KV cache.

Cache layout is the reference's, [2, num_blocks, block_size, kv_heads, head_dim]: a
token's keys for all heads are one contiguous row, so the cache write is one copy per
token, and the kernel reads each key row in place through the block table (nothing
is gathered into a contiguous context).

Per step, ``build_metadata`` turns the batch into int32 tables once (block tables
padded to [B, max_blocks], context lengths, query starts, the sequence of every token)
and splits the tokens into two kinds of work:

* paged tokens: decodes, and prefills over a cached prefix, run by one native call per
  layer (csrc/attention.c): each (token, head) does one pass of online softmax over its
  causal context, read block by block.
* fresh prefills (no cached prefix): torch's SDPA (flash attention on CPU) on the new
  k and v themselves, which are the whole context.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.attention import AttentionBatch, AttentionSpec
from ...core.errors import ConfigError
from . import native

MAX_HEAD_DIM = 256  # csrc/attention.c keeps a head in 16 vector registers


@dataclass
class CpuPagedMetadata:
    """Per-step tables; tensors are kept alive here, their pointers taken once."""

    slot_mapping: torch.Tensor  # [T] int64
    block_tables: torch.Tensor  # [B, max_blocks] int32, padded with 0
    context_lens: torch.Tensor  # [B] int32
    query_start: torch.Tensor  # [B + 1] int32
    token_seq: torch.Tensor  # [T] int32
    paged_tokens: torch.Tensor  # [P] int32: tokens run by the paged kernel
    fresh_prefills: list[tuple[int, int]]  # (first token, length) run by SDPA
    num_tokens: int
    pointers: tuple[int, ...]  # block_tables, context_lens, query_start, token_seq, paged


class CpuPagedAttention:
    """Paged attention for the cpu platform (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        if spec.head_dim > MAX_HEAD_DIM:
            raise ConfigError(f"attention cpu_paged takes head_dim up to {MAX_HEAD_DIM}, and "
                              f"the model has {spec.head_dim}; choose attention=torch.")
        self.spec = spec
        self.group = spec.num_heads // spec.num_kv_heads
        self._lib = native.library()

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        s = self.spec
        return (2, num_blocks, s.block_size, s.num_kv_heads, s.head_dim)

    def build_metadata(self, batch: AttentionBatch) -> CpuPagedMetadata:
        num_seqs = len(batch.query_lens)
        max_blocks = max((len(t) for t in batch.block_tables), default=0) or 1
        tables = torch.zeros((max(num_seqs, 1), max_blocks), dtype=torch.int32)
        for i, table in enumerate(batch.block_tables):
            if table:
                tables[i, :len(table)] = torch.tensor(table, dtype=torch.int32)
        starts = [0]
        for n in batch.query_lens:
            starts.append(starts[-1] + n)
        token_seq, paged, fresh = [], [], []
        for i, (num_q, context) in enumerate(zip(batch.query_lens, batch.context_lens)):
            token_seq.extend([i] * num_q)
            if num_q > 1 and num_q == context:
                fresh.append((starts[i], num_q))
            else:
                paged.extend(range(starts[i], starts[i] + num_q))
        metadata = CpuPagedMetadata(
            slot_mapping=torch.tensor(batch.slot_mapping, dtype=torch.int64),
            block_tables=tables,
            context_lens=torch.tensor(batch.context_lens or [0], dtype=torch.int32),
            query_start=torch.tensor(starts, dtype=torch.int32),
            token_seq=torch.tensor(token_seq or [0], dtype=torch.int32),
            paged_tokens=torch.tensor(paged or [0], dtype=torch.int32),
            fresh_prefills=fresh, num_tokens=starts[-1], pointers=())
        metadata.pointers = (tables.data_ptr(), metadata.context_lens.data_ptr(),
                             metadata.query_start.data_ptr(), metadata.token_seq.data_ptr(),
                             metadata.paged_tokens.data_ptr(), len(paged), max_blocks)
        return metadata

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: CpuPagedMetadata) -> torch.Tensor:
        """q [T, Hq, D], k and v [T, Hk, D] -> [T, Hq, D]; writes k, v to the cache first."""
        s = self.spec
        dtype = kv_cache.dtype
        if q.dtype != dtype or k.dtype != dtype or v.dtype != dtype:
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        k, v = _rows(k), _rows(v)
        q = _rows(q)
        code = native.dtype_code(dtype)
        threads = torch.get_num_threads()
        num_blocks = kv_cache.shape[1]
        lib = self._lib
        lib.bb_kv_write(k.data_ptr(), k.stride(0), v.data_ptr(), v.stride(0),
                        kv_cache.data_ptr(), num_blocks, s.block_size,
                        s.num_kv_heads * s.head_dim, metadata.slot_mapping.data_ptr(),
                        metadata.num_tokens, code)
        out = torch.empty((q.shape[0], s.num_heads, s.head_dim), dtype=dtype)
        tables, contexts, starts, token_seq, paged, num_paged, max_blocks = metadata.pointers
        if num_paged:
            lib.bb_paged_attention(q.data_ptr(), q.stride(0), out.data_ptr(), out.stride(0),
                                   kv_cache.data_ptr(), num_blocks, tables, max_blocks,
                                   contexts, starts, token_seq, paged, num_paged, s.num_heads,
                                   s.num_kv_heads, s.head_dim, s.block_size, s.scale, code,
                                   threads)
        for start, length in metadata.fresh_prefills:
            end = start + length
            # [1, H, L, D] views; SDPA with GQA repeats nothing in memory
            o = F.scaled_dot_product_attention(
                q[start:end].transpose(0, 1).unsqueeze(0),
                k[start:end].transpose(0, 1).unsqueeze(0),
                v[start:end].transpose(0, 1).unsqueeze(0),
                is_causal=True, scale=s.scale, enable_gqa=self.group > 1)
            out[start:end] = o[0].transpose(0, 1)
        return out


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x [T, H, D] with contiguous heads (any row stride), copying only when it is not."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2]:
        return x.contiguous()
    return x
