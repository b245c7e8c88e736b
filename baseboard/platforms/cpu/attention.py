"""Attention ``cpu_paged``: attention straight over the paged KV cache.

Cache layout is the reference's, [2, num_blocks, block_size, kv_heads, head_dim]: a
token's keys for all heads are one contiguous row, so the cache write is one copy per
token, and the kernel reads each key row in place through the block table (nothing
is gathered into a contiguous context). A head-major or transposed-key layout would
let scores vectorize without the transposing add, but the kernel is a few percent of a
decode step at the benchmark's lengths, so the reference layout stays.

Per step, ``build_metadata`` does the host work once: int32 tables (block tables
padded to [B, max_blocks], context lengths, query starts, the sequence of every token),
packed with the spec's constants into one C struct that every layer passes by pointer.
It also splits the tokens into two kinds of work:

* paged tokens: decodes, and prefills over a cached prefix, run by the native kernel
  (csrc/attention.c): each (token, KV head) does one pass of online softmax over its
  causal context, read block by block, for all the query heads of that KV head.
* fresh prefills (no cached prefix): torch's SDPA (flash attention on CPU) on the new
  k and v themselves, which are the whole context.

Per layer, ``forward`` is one native call (cache write and paged tokens) plus SDPA per
fresh prefill.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ...core.attention import AttentionBatch, AttentionSpec
from ...core.errors import ConfigError
from . import native
from .rowwise import adjacent_heads

MAX_HEAD_DIM = 256  # csrc/attention.c keeps a head in 16 vector registers

_P, _L = ctypes.c_void_p, ctypes.c_long


class AttentionStep(ctypes.Structure):
    """The C struct attention_step of csrc/attention.c, field for field."""

    _fields_ = [("block_tables", _P), ("max_blocks", _L), ("context_lens", _P),
                ("query_start", _P), ("token_seq", _P), ("paged_tokens", _P),
                ("num_paged", _L), ("slots", _P), ("num_tokens", _L), ("heads", _L),
                ("kv_heads", _L), ("head_dim", _L), ("block_size", _L),
                ("scale", ctypes.c_float), ("dtype", ctypes.c_int)]


@dataclass
class CpuPagedMetadata:
    """One step's tables (kept alive here) and the struct pointing at them."""

    tensors: tuple[torch.Tensor, ...]
    step: AttentionStep
    step_ref: int  # the address of step, passed to every layer
    fresh_prefills: list[tuple[int, int]]  # (first token, length) run by SDPA


class CpuPagedAttention:
    """Paged attention for the cpu platform (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        if spec.head_dim > MAX_HEAD_DIM:
            raise ConfigError(f"attention cpu_paged takes head_dim up to {MAX_HEAD_DIM}, and "
                              f"the model has {spec.head_dim}; choose attention=torch.")
        self.spec = spec
        self.group = spec.num_heads // spec.num_kv_heads
        self._attention = native.library().bb_attention

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        return self.spec.standard_kv_cache_shape(num_blocks)

    def build_metadata(self, batch: AttentionBatch) -> CpuPagedMetadata:
        s = self.spec
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
        tensors = (tables, torch.tensor(batch.context_lens or [0], dtype=torch.int32),
                   torch.tensor(starts, dtype=torch.int32),
                   torch.tensor(token_seq or [0], dtype=torch.int32),
                   torch.tensor(paged or [0], dtype=torch.int32),
                   torch.tensor(batch.slot_mapping or [0], dtype=torch.int64))
        ptr = [t.data_ptr() for t in tensors]
        step = AttentionStep(ptr[0], max_blocks, ptr[1], ptr[2], ptr[3], ptr[4], len(paged),
                             ptr[5], starts[-1], s.num_heads, s.num_kv_heads, s.head_dim,
                             s.block_size, s.scale, native.dtype_code(s.dtype))
        return CpuPagedMetadata(tensors, step, ctypes.addressof(step), fresh)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: CpuPagedMetadata) -> torch.Tensor:
        """q [T, Hq, D], k and v [T, Hk, D] -> [T, Hq, D]; writes k, v to the cache first."""
        dtype = kv_cache.dtype
        if dtype != self.spec.dtype:
            raise ConfigError(f"the KV cache is {dtype}, but attention was built for "
                              f"{self.spec.dtype}; allocate the cache in the spec's dtype.")
        if q.dtype != dtype or k.dtype != dtype or v.dtype != dtype:
            q, k, v = q.to(dtype), k.to(dtype), v.to(dtype)
        q, k, v = adjacent_heads(q), adjacent_heads(k), adjacent_heads(v)
        out = torch.empty(q.shape, dtype=dtype)
        self._attention(metadata.step_ref, q.data_ptr(), q.stride(0), k.data_ptr(), k.stride(0),
                        v.data_ptr(), v.stride(0), kv_cache.data_ptr(), kv_cache.shape[1],
                        out.data_ptr(), out.stride(0), torch.get_num_threads())
        for start, length in metadata.fresh_prefills:
            end = start + length
            # [1, H, L, D] views; SDPA with GQA repeats nothing in memory
            o = F.scaled_dot_product_attention(
                q[start:end].transpose(0, 1).unsqueeze(0),
                k[start:end].transpose(0, 1).unsqueeze(0),
                v[start:end].transpose(0, 1).unsqueeze(0),
                is_causal=True, scale=self.spec.scale, enable_gqa=self.group > 1)
            out[start:end] = o[0].transpose(0, 1)
        return out
