"""Simulated ipex.llm.modules (XPU build): PagedAttention's flash-layout cache write and
its varlen attention over the paged cache."""

from __future__ import annotations

import torch

import intel_extension_for_pytorch as ipex


class PagedAttention:
    @staticmethod
    def reshape_and_cache_flash(key, value, key_cache, value_cache, slot_mapping,
                                kv_cache_dtype="auto", k_scale=1.0, v_scale=1.0):
        """key, value [T, Hk, D] -> key_cache, value_cache [nb, bs, Hk, D] at slot_mapping."""
        ipex.CALLS.append(("reshape_and_cache_flash", {"tokens": key.shape[0]}))
        block_size = key_cache.shape[1]
        slots = slot_mapping.long()
        key_cache[slots // block_size, slots % block_size] = key.to(key_cache.dtype)
        value_cache[slots // block_size, slots % block_size] = value.to(value_cache.dtype)

    @staticmethod
    def flash_attn_varlen_func(output, query, key_cache, value_cache, cu_seqlens_q,
                               cu_seqlens_kv, max_seqlen_q, max_seqlen_kv, scale, is_causal,
                               block_table, alibi_slopes=None, **options):
        """output, query [Tq, Hq, D]; caches [nb, bs, Hk, D]; cu_seqlens_* [B + 1] int32;
        block_table [B, M] int32. Causal aligned to the end of each context."""
        if cu_seqlens_q.dtype != torch.int32 or block_table.dtype != torch.int32:
            raise RuntimeError("cu_seqlens and block_table are int32")
        if not query.is_contiguous():
            raise RuntimeError("query must be contiguous")
        ipex.CALLS.append(("flash_attn_varlen_func", {"sequences": block_table.shape[0],
                                                      "causal": is_causal}))
        block_size = key_cache.shape[1]
        starts_q, starts_k = cu_seqlens_q.tolist(), cu_seqlens_kv.tolist()
        for i, (a, b) in enumerate(zip(starts_q, starts_q[1:])):
            length = starts_k[i + 1] - starts_k[i]
            if b - a > max_seqlen_q or length > max_seqlen_kv:
                raise RuntimeError("max_seqlen")
            positions = torch.arange(length, device=query.device)
            blocks = block_table[i].long()[positions // block_size]
            keys = key_cache[blocks, positions % block_size].float()  # [C, Hk, D]
            values = value_cache[blocks, positions % block_size].float()
            group = query.shape[1] // keys.shape[1]
            keys = keys.repeat_interleave(group, dim=1)
            values = values.repeat_interleave(group, dim=1)
            scores = torch.einsum("qhd,khd->hqk", query[a:b].float(), keys) * scale
            if is_causal:
                rows = torch.arange(b - a, device=query.device)[:, None] + (length - (b - a))
                scores = scores.masked_fill(positions[None, :] > rows, float("-inf"))
            output[a:b] = torch.einsum("hqk,khd->qhd", scores.softmax(-1), values).to(
                output.dtype)
