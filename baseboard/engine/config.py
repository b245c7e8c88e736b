"""``EngineConfig``: the one configuration a load resolves, read by every part of the engine.

Built once by ``baseboard.resolve(model, ...)`` from the checkpoint, the arguments, the
settings and the plugins; nothing reads the environment after it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..core.attention import AttentionSpec
from ..core.platform import Platform
from ..core.selection import Plan


@dataclass(frozen=True)
class EngineConfig:
    """model            the checkpoint's path
    model_config     its ModelConfig (layers, heads, vocabulary, limits)
    quant_method     the checkpoint's quantization method, or None
    platform, device where it runs; dtype: the activations' and KV cache's dtype
    block_size       tokens per KV-cache block
    max_num_seqs, max_model_len, max_num_batched_tokens   the scheduler's limits
    kv_cache_memory  bytes for the KV cache, or None to size it from the platform's memory
    gpu_memory_utilization   the share of an accelerator's memory baseboard may use
    cuda_graphs      whether steps replay CUDA graphs; graph_prefill_sizes: the one-sequence
                     prefill lengths captured (decode sizes follow from max_num_seqs);
                     graph_parts: a step no graph runs whole may run as several replays
    async_scheduling launch each step before the previous step's tokens are read back
    pdl              programmatic dependent launch for the Triton kernels (Hopper and later)
    num_threads      torch CPU threads (CPU platforms)
    seed             the engine generator's seed, or None for a random one
    plan             the op -> implementation plan; resolution: its trace and the settings
    tensor_parallel_size   ranks the model is split over (baseboard.distributed)
    """

    model: str
    model_config: Any
    quant_method: Optional[str]
    platform: Platform
    device: torch.device
    dtype: torch.dtype
    block_size: int
    max_num_seqs: int
    max_model_len: int
    max_num_batched_tokens: int
    kv_cache_memory: Optional[int]
    gpu_memory_utilization: float
    cuda_graphs: bool
    graph_prefill_sizes: tuple[int, ...]
    graph_parts: bool
    async_scheduling: bool
    pdl: bool
    num_threads: int
    seed: Optional[int]
    plan: Plan
    resolution: Any
    tensor_parallel_size: int = 1

    def attention_spec(self) -> AttentionSpec:
        """One rank's attention: its own query heads, and its KV heads (at least one: a KV
        head is replicated where there are fewer than ranks)."""
        config, ranks = self.model_config, self.tensor_parallel_size
        return AttentionSpec(num_heads=config.num_heads // ranks,
                             num_kv_heads=max(config.num_kv_heads // ranks, 1),
                             head_dim=config.head_dim, scale=config.head_dim ** -0.5,
                             block_size=self.block_size, dtype=self.dtype, device=self.device,
                             max_num_seqs=self.max_num_seqs, max_model_len=self.max_model_len,
                             cuda_graphs=self.cuda_graphs,
                             max_graph_tokens=max(self.graph_prefill_sizes, default=0))
