"""Data passed between the engine and attention implementations."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BaseboardError


@dataclass(frozen=True)
class AttentionSpec:
    """What an attention implementation is built for; shared by every layer of a model."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    scale: float
    block_size: int
    dtype: torch.dtype
    device: torch.device
    max_num_seqs: int  # sizes of fixed metadata buffers (CUDA graphs replay them)
    max_model_len: int
    # Steps replay CUDA graphs (decodes, and one-sequence prefills of up to max_graph_tokens
    # tokens): for them build_metadata must fill the same device buffers every step and keep
    # every scalar it returns independent of the context lengths.
    cuda_graphs: bool = False
    max_graph_tokens: int = 0

    def standard_kv_cache_shape(self, num_blocks: int) -> tuple[int, ...]:
        """The cache layout of every built-in implementation: [2 (keys, values), num_blocks,
        block_size, Hk, D], each token's head D contiguous values."""
        return (2, num_blocks, self.block_size, self.num_kv_heads, self.head_dim)


@dataclass
class AttentionBatch:
    """One engine step, described per sequence. Sequences with query_len 1 (decodes)
    come first, then the others (prefills, possibly over a cached prefix).

    query_lens[i]    new tokens of sequence i in this step
    context_lens[i]  tokens of sequence i once this step's tokens are in the cache
    block_tables[i]  cache block ids of sequence i, in order
    slot_mapping[t]  block_id * block_size + offset for every new token t, in step order
    """

    query_lens: list[int]
    context_lens: list[int]
    block_tables: list[list[int]]
    slot_mapping: list[int]

    @property
    def num_decodes(self) -> int:
        return next((i for i, n in enumerate(self.query_lens) if n != 1), len(self.query_lens))

    @property
    def prefills_from_start(self) -> bool:
        """Whether every prefill of the step starts at position 0 (nothing of it cached), so
        its keys and values are all among the step's own."""
        first = self.num_decodes
        return all(q == c for q, c in zip(self.query_lens[first:], self.context_lens[first:]))



def check_metadata_current(build: int, latest: int, why: str) -> None:
    """Refuse attention metadata made by ``build_metadata`` call ``build`` once call
    ``latest`` has been made: the contract's metadata stay valid until the next build only.
    For an implementation whose metadata do not own their tensors; ``why`` says what the
    later build did to them. Raises a BaseboardError naming both calls and the rule."""
    if build != latest:
        raise BaseboardError(f"attention metadata from build_metadata call {build} were passed "
                             f"to forward after call {latest}, which {why}. Build a step's "
                             f"metadata, run every layer with them, then build the next "
                             f"step's.")
