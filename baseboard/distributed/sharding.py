"""Which part of each checkpoint tensor a tensor-parallel rank keeps.

Megatron's split of a Llama-family decoder: q/k/v and gate/up are column-parallel (each rank
keeps whole heads, or a slice of the MLP's intermediate features: rows of the [N, K]
weight), o_proj and down_proj are row-parallel (the matching slice of their inputs: columns,
followed by an all_reduce of the partial sums), the embedding and lm_head are
vocab-parallel (rows of the vocabulary). KV heads are split like query heads; where a model
has fewer KV heads than ranks, each KV head is replicated on the ranks whose query heads
read it.

Quantized records are cut in their canonical layout (codes [N, K], scales and offsets
[N, K/G] or [N]) before any op's ``prepare``, so every kernel packs its own shard. A
row-parallel cut must fall on group boundaries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

import torch

from ..core.errors import ConfigError, ModelError

COLUMN_PARALLEL = ("mlp.gate_proj", "mlp.up_proj")
ROW_PARALLEL = ("self_attn.o_proj", "mlp.down_proj")


@dataclass(frozen=True)
class Shard:
    """Rank ``rank`` of ``size``: the heads and rows it keeps of a model of ``config``."""

    rank: int
    size: int
    num_heads: int  # query heads on this rank
    num_kv_heads: int  # KV heads on this rank (1 where they are replicated)
    first_head: int
    first_kv_head: int
    intermediate_size: int
    vocab_rows: int  # rows of the vocabulary each rank holds: ceil(V / size)

    @property
    def vocab_start(self) -> int:
        return self.rank * self.vocab_rows


def check_divisible(config: Any, size: int) -> None:
    """ConfigError unless a model of ``config`` can be split over ``size`` ranks."""
    heads, kv_heads, inter = config.num_heads, config.num_kv_heads, config.intermediate_size
    if heads % size:
        raise ConfigError(f"tensor_parallel_size={size} does not divide the model's "
                          f"{heads} attention heads; use a size that divides {heads}.")
    if kv_heads % size and size % kv_heads:
        raise ConfigError(f"tensor_parallel_size={size} and the model's {kv_heads} KV heads: "
                          f"one must divide the other (KV heads are split, or replicated "
                          f"when there are fewer than ranks); use a size that divides "
                          f"{kv_heads} or is a multiple of it.")
    if inter % size:
        raise ConfigError(f"tensor_parallel_size={size} does not divide the model's "
                          f"intermediate_size {inter}; use a size that divides it.")


def make_shard(config: Any, rank: int, size: int) -> Shard:
    check_divisible(config, size)
    heads = config.num_heads // size
    kv_heads = max(config.num_kv_heads // size, 1)
    # with fewer KV heads than ranks, rank r's query heads all read KV head r // replicas
    first_kv = rank * kv_heads if config.num_kv_heads >= size \
        else rank // (size // config.num_kv_heads)
    return Shard(rank, size, heads, kv_heads, rank * heads, first_kv,
                 config.intermediate_size // size, -(-config.vocab_size // size))


def local_config(config: Any, shard: Shard) -> Any:
    """The config a rank's decoder layers see: its own heads and intermediate features."""
    return dataclasses.replace(config, num_heads=shard.num_heads, num_kv_heads=shard.num_kv_heads,
                               intermediate_size=shard.intermediate_size)


def shard_tensor(name: str, weight: Any, config: Any, shard: Shard) -> Optional[Any]:
    """This rank's part of checkpoint tensor ``name`` (a Hugging Face name); None where the
    rank keeps nothing of it (a row-parallel bias, added once, by rank 0)."""
    d = config.head_dim
    module, _, kind = name.rpartition(".")
    if name in ("model.embed_tokens.weight", "lm_head.weight"):
        start = shard.vocab_start
        return rows(weight, start, min(start + shard.vocab_rows, config.vocab_size), module,
                    shard.size)
    if module.endswith("self_attn.q_proj"):
        return rows(weight, shard.first_head * d, (shard.first_head + shard.num_heads) * d,
                    module, shard.size)
    if module.endswith(("self_attn.k_proj", "self_attn.v_proj")):
        return rows(weight, shard.first_kv_head * d,
                    (shard.first_kv_head + shard.num_kv_heads) * d, module, shard.size)
    if module.endswith(COLUMN_PARALLEL):
        i = shard.intermediate_size
        return rows(weight, shard.rank * i, (shard.rank + 1) * i, module, shard.size)
    if module.endswith(ROW_PARALLEL):
        if kind == "bias":
            return weight if shard.rank == 0 else None
        k = weight.shape[1] // shard.size
        return columns(weight, shard.rank * k, (shard.rank + 1) * k, module, shard.size)
    return weight  # norms: every rank needs all of them


def _tensor_fields(record: Any) -> list[tuple[str, torch.Tensor]]:
    return [(f.name, getattr(record, f.name)) for f in dataclasses.fields(record)
            if isinstance(getattr(record, f.name), torch.Tensor)]


def _blocks(weight: Any) -> Optional[tuple[int, int]]:
    """(BN, BK) of a block-scaled record (one scale per BN x BK block), else None."""
    block = getattr(weight, "block_size", None)
    return tuple(block) if isinstance(block, (tuple, list)) and len(block) == 2 else None


def _cut_error(weight: Any, name: str, t: torch.Tensor, layer: str, axis: str) -> ModelError:
    return ModelError(f"layer {layer}: cannot cut {type(weight).__name__}.{name} of shape "
                      f"{tuple(t.shape)} along {axis} for tensor parallelism; this quantized "
                      f"layout runs with tensor_parallel_size=1 only.")


def _check_block_cut(start: int, end: int, full: int, block: int, layer: str, axis: str,
                     size: int) -> None:
    if start % block or (end % block and end != full):
        raise ModelError(f"layer {layer}: tensor parallelism over {size} ranks cuts its "
                         f"{axis}={full} into slices of {end - start}, which does not keep its "
                         f"scale blocks of {block} whole. Use a tensor_parallel_size with "
                         f"{axis} / size a multiple of {block}.")


def rows(weight: Any, start: int, end: int, layer: str = "", size: int = 1) -> Any:
    """Rows [start, end) of a dense [N, ...] tensor or of a quantized record (every tensor
    indexed by output row: codes, scales, offsets; an input permutation is kept whole)."""
    if isinstance(weight, torch.Tensor):
        return weight[start:end].clone()  # a copy: the full tensor can be freed
    n = weight.shape[0]
    blocks = _blocks(weight)
    if blocks:
        _check_block_cut(start, end, n, blocks[0], layer, "N", size)
    changes = {}
    for name, t in _tensor_fields(weight):
        if name == "input_perm" or t.dim() == 0:
            continue
        if t.shape[0] == n:  # codes, per-row or per-group scales and offsets
            changes[name] = t[start:end].clone()
        elif blocks and t.shape[0] == -(-n // blocks[0]):  # one row of scales per BN rows
            changes[name] = t[start // blocks[0]:-(-end // blocks[0])].clone()
        else:
            raise _cut_error(weight, name, t, layer, "N")
    return dataclasses.replace(weight, **changes)


def columns(weight: Any, start: int, end: int, layer: str, size: int) -> Any:
    """Input columns [start, end) of a dense [N, K] weight or of a quantized record. A
    record's groups of G inputs are kept whole: ModelError when G does not divide the cut."""
    if isinstance(weight, torch.Tensor):
        return weight[:, start:end].contiguous()
    n, k = weight.shape
    blocks = _blocks(weight)
    group = getattr(weight, "group_size", None) or k
    per_channel = group == k
    if blocks:
        _check_block_cut(start, end, k, blocks[1], layer, "K", size)
    elif not per_channel and (start % group or end % group):
        raise ModelError(f"layer {layer}: tensor parallelism over {size} ranks cuts its "
                         f"K={k} inputs into slices of {end - start}, which does not keep "
                         f"groups of {group} whole (quantization group size {group}). Use a "
                         f"tensor_parallel_size with K / size a multiple of {group}.")
    changes: dict[str, Any] = {}
    for name, t in _tensor_fields(weight):
        if name == "input_perm":
            changes[name] = _local_permutation(t, start, end, layer)
        elif t.dim() == 2 and t.shape == (n, k):  # codes
            changes[name] = t[:, start:end].contiguous()
        elif blocks and t.dim() == 2 and t.shape == (-(-n // blocks[0]), -(-k // blocks[1])):
            changes[name] = t[:, start // blocks[1]:-(-end // blocks[1])].contiguous()
        elif not blocks and t.dim() == 2 and t.shape[0] == n and not per_channel \
                and t.shape[1] == k // group:
            changes[name] = t[:, start // group:end // group].contiguous()
        elif t.dim() == 0 or (t.shape[0] == n and t.numel() == n):
            continue  # per output row (or per tensor): the same for every slice of K
        else:
            raise _cut_error(weight, name, t, layer, "K")
    if per_channel and not blocks and hasattr(weight, "group_size"):
        changes["group_size"] = end - start
    return dataclasses.replace(weight, **changes)


def _local_permutation(perm: torch.Tensor, start: int, end: int, layer: str) -> torch.Tensor:
    """An act-order permutation restricted to one rank's inputs; ModelError when the stored
    columns [start, end) read inputs of another rank."""
    local = perm[start:end]
    if local.numel() and (int(local.min()) < start or int(local.max()) >= end):
        raise ModelError(f"layer {layer}: its act-order input permutation (GPTQ desc_act) "
                         f"mixes inputs across the tensor-parallel slice [{start}, {end}), so "
                         f"the layer cannot be split by rows of K. Use tensor_parallel_size=1, "
                         f"or a checkpoint quantized without desc_act.")
    return local - start
