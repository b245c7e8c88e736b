"""AITER's paged attention as an implementation of the ``attention`` op (rocm platform).

Decodes run ``pa_fwd_asm``, AITER's assembly paged decode; prefills run
``flash_attn_varlen_func`` (CK's FlashAttention) over the step's own keys and values, or,
for a prefill after a cached prefix, over the sequence's whole context gathered from the
cache. The cache is pa_fwd_asm's layout, written by ``reshape_and_cache`` in its assembly
layout (16 bytes per vector: x = 8 bf16/fp16 values):

    keys    [num_blocks, Hk, D / x, block_size, x]
    values  [num_blocks, Hk, block_size / x, D, x]

One layer's cache is one tensor [2, num_blocks, Hk, D / x, block_size, x]; the values
half is viewed in its own 5-D shape, with the same block and head strides, which
pa_fwd_asm requires (it is given the key strides only). The record (plugin.py) admits
head size 128, block size 16 and 8 or 16 query heads per KV head, the shapes pa_fwd_asm
has kernels for. pa_fwd_asm fixes the softmax scale at 1/sqrt(head size).

Each step's metadata are new tensors, so they never go stale; for the same reason the
implementation is not cuda_graph_safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate
from typing import Optional

import aiter
import torch

from ...core.attention import AttentionBatch, AttentionSpec
from ...core.errors import ConfigError

VECTOR_BYTES = 16  # reshape_and_cache and pa_fwd_asm move 16-byte vectors of x elements


def dense_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` [T, H, D] itself when each token's H * D values are dense (reshape_and_cache
    and the kernels step over tokens by stride only), else a contiguous copy."""
    return x if x.stride(2) == 1 and x.stride(1) == x.shape[2] else x.contiguous()


@dataclass
class AiterDecode:
    block_tables: torch.Tensor  # [B, max_blocks] int32, unused entries 0
    context_lens: torch.Tensor  # [B] int32


@dataclass
class AiterPrefill:
    cu_seqlens_q: torch.Tensor  # [P + 1] int32
    cu_seqlens_k: torch.Tensor  # [P + 1] int32
    max_seqlen_q: int
    max_seqlen_k: int
    # every prefill starts at position 0: attend over the step's own k, v. Otherwise the
    # cache slot of each context token, in sequence order, to gather keys and values
    context_slots: Optional[torch.Tensor]  # [sum of context lengths] int64


@dataclass
class AiterMetadata:
    slot_mapping: torch.Tensor  # [T] int64
    num_decode_tokens: int
    decode: Optional[AiterDecode]
    prefill: Optional[AiterPrefill]


class AiterAttention:
    """Paged attention through AITER (see the module doc)."""

    def __init__(self, spec: AttentionSpec):
        if not math.isclose(spec.scale, spec.head_dim ** -0.5, rel_tol=1e-6):
            raise ConfigError(
                f"attention=aiter: the model's softmax scale is {spec.scale}, but pa_fwd_asm "
                f"computes with 1/sqrt(head size) = {spec.head_dim ** -0.5}. Choose another "
                f"attention implementation (BASEBOARD_ATTENTION_BACKEND=triton).")
        self.spec = spec
        self.x = VECTOR_BYTES // torch.empty((), dtype=spec.dtype).element_size()

    def kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        s = self.spec
        return (2, num_blocks, s.num_kv_heads, s.head_dim // self.x, s.block_size, self.x)

    def split_cache(self, kv_cache: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(keys [nb, Hk, D/x, bs, x], values [nb, Hk, bs/x, D, x]) views of one layer's cache."""
        s, x = self.spec, self.x
        values = kv_cache[1].view(kv_cache.shape[1], s.num_kv_heads, s.block_size // x,
                                  s.head_dim, x)
        return kv_cache[0], values

    def _ints(self, values: list[int], dtype: torch.dtype) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=self.spec.device)

    def build_metadata(self, batch: AttentionBatch) -> AiterMetadata:
        n = batch.num_decodes
        decode = prefill = None
        if n:
            tables = batch.block_tables[:n]
            width = max(len(t) for t in tables)
            decode = AiterDecode(
                self._ints([t + [0] * (width - len(t)) for t in tables], torch.int32),
                self._ints(batch.context_lens[:n], torch.int32))
        queries, contexts = batch.query_lens[n:], batch.context_lens[n:]
        if queries:
            bs = self.spec.block_size
            slots = None
            if not batch.prefills_from_start:
                slots = self._ints([table[pos // bs] * bs + pos % bs
                                    for table, length in zip(batch.block_tables[n:], contexts)
                                    for pos in range(length)], torch.int64)
            keys = queries if slots is None else contexts
            prefill = AiterPrefill(self._ints([0, *accumulate(queries)], torch.int32),
                                   self._ints([0, *accumulate(keys)], torch.int32),
                                   max(queries), max(keys), slots)
        return AiterMetadata(self._ints(batch.slot_mapping, torch.int64), n, decode, prefill)

    def _gather(self, keys: torch.Tensor, values: torch.Tensor,
                slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [S, Hk, D] of the cache slots ``slots`` [S]."""
        bs, x = self.spec.block_size, self.x
        blocks, offsets = slots // bs, slots % bs
        k = keys[blocks, :, :, offsets, :].flatten(2)  # [S, Hk, D/x, x] -> [S, Hk, D]
        v = values[blocks, :, offsets // x, :, offsets % x]  # [S, Hk, D]
        return k, v

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                kv_cache: torch.Tensor, metadata: AiterMetadata) -> torch.Tensor:
        """q [T, Hq, D], k, v [T, Hk, D] (strided views are fine) -> [T, Hq, D]."""
        q, k, v = q.contiguous(), dense_rows(k), dense_rows(v)
        keys, values = self.split_cache(kv_cache)
        aiter.reshape_and_cache(k, v, keys, values, metadata.slot_mapping, "auto",
                                None, None, True)  # asm_layout: values [.., bs/x, D, x]
        out = torch.empty_like(q)
        n = metadata.num_decode_tokens
        if metadata.decode is not None:
            d = metadata.decode
            aiter.pa_fwd_asm(Q=q[:n], K=keys, V=values, block_tables=d.block_tables,
                             context_lens=d.context_lens,
                             block_tables_stride0=d.block_tables.stride(0), out_=out[:n])
        if metadata.prefill is not None:
            p = metadata.prefill
            if p.context_slots is None:
                k_ctx, v_ctx = k[n:], v[n:]
            else:
                k_ctx, v_ctx = self._gather(keys, values, p.context_slots)
            out[n:] = aiter.flash_attn_varlen_func(
                q[n:], k_ctx, v_ctx, p.cu_seqlens_q, p.cu_seqlens_k, p.max_seqlen_q,
                p.max_seqlen_k, softmax_scale=self.spec.scale, causal=True)
        return out
