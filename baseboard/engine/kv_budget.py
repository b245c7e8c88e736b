"""How many KV-cache blocks to allocate, from a memory budget.

On an accelerator the cache takes what BASEBOARD_GPU_MEMORY_UTILIZATION leaves after the
weights and an estimate of the step's activations (vLLM's rule). On the CPU, whose
memory is shared with everything else on the host, it takes a fraction of the available
RAM. Neither takes more than max_num_seqs sequences of max_model_len tokens need, so
that several engines can share a device.
"""

from __future__ import annotations

import math
from typing import Any, Optional

import torch

from ..core.errors import ModelError
from ..core.platform import Platform

CPU_RAM_FRACTION = 0.25


def block_bytes(attention: Any, num_layers: int, dtype: torch.dtype) -> int:
    """Bytes of one block across every layer's cache."""
    element = torch.empty((), dtype=dtype).element_size()
    return math.prod(attention.kv_cache_shape(1)) * element * num_layers


def activation_bytes(config: Any, max_num_batched_tokens: int, max_num_seqs: int,
                     dtype: torch.dtype) -> int:
    """A generous estimate of one step's peak activations: the widest per-token tensors
    (q/k/v, the gate/up product, the residual stream) plus float32 logits and the
    sampler's copies of them."""
    element = torch.empty((), dtype=dtype).element_size()
    qkv = (config.num_heads + 2 * config.num_kv_heads) * config.head_dim
    per_token = (4 * config.hidden_size + 3 * config.intermediate_size + 2 * qkv) * element
    logits = max_num_seqs * config.vocab_size * 4 * 6
    return max_num_batched_tokens * per_token + logits


def kv_cache_budget(platform: Platform, requested: Optional[int], needed: int,
                    activations: int, memory_utilization: float,
                    ranks: int = 1) -> tuple[int, str]:
    """(bytes for the KV cache, where that number comes from). ``ranks``: the
    tensor-parallel ranks of this engine; on the CPU they share the host's RAM, and each
    takes its part of the fraction (an accelerator rank has a device of its own)."""
    if requested is not None:
        return requested, f"kv_cache_memory={requested}"
    free, total = platform.memory()
    if platform.device_type == "cpu":
        share = int(CPU_RAM_FRACTION * free) // ranks
        if needed <= share:
            return needed, "max_num_seqs x max_model_len tokens"
        of_ranks = f", shared by {ranks} ranks" if ranks > 1 else ""
        return share, (f"{CPU_RAM_FRACTION:.0%} of the available RAM ({free / 2**30:.1f} GiB)"
                       f"{of_ranks}")
    budget = free - int((1 - memory_utilization) * total) - activations
    if needed <= budget:
        return needed, "max_num_seqs x max_model_len tokens"
    return budget, (f"BASEBOARD_GPU_MEMORY_UTILIZATION={memory_utilization} of "
                    f"{total / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free after the weights, "
                    f"{activations / 2**30:.1f} GiB kept for activations")


def num_kv_blocks(budget: int, source: str, per_block: int, block_size: int,
                  max_model_len: int) -> int:
    """Blocks that fit in ``budget``; a ModelError when not even one sequence of
    max_model_len tokens fits (a sequence must always be able to run alone)."""
    blocks = max(budget, 0) // per_block
    needed = -(-max_model_len // block_size)
    if blocks < needed:
        raise ModelError(
            f"the KV cache budget ({max(budget, 0) / 2**20:.1f} MiB, from {source}) holds "
            f"{blocks * block_size} tokens, fewer than one sequence of max_model_len="
            f"{max_model_len} tokens ({needed * per_block / 2**20:.1f} MiB). Lower max_model_len, "
            f"or give more memory (kv_cache_memory=, BASEBOARD_GPU_MEMORY_UTILIZATION).")
    return blocks
