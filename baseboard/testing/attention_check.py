"""The attention check: three engine steps over a paged KV cache.

Each implementation owns its cache layout, so the cache is never filled by hand:
both sides start from an empty cache of their own ``kv_cache_shape`` and run the
same steps, and every step's output is compared. The cached prefixes of step 2
were written by step 1, so a wrong cache write shows up as a wrong attention output.
Block ids are shuffled, so a sequence's blocks are neither contiguous nor in order.

Where the implementation offers ``forward_rotary`` (the rotary_embedding fusion), step 2
runs through it on both sides, so its rotation and its cache write (read by step 3) are
checked against the reference's composition.

A last step checks how long metadata stay valid: the engine builds a step's metadata,
then runs every layer with them, before it builds the next step's. An implementation may
reuse its buffers from one build to the next (CUDA graphs need it), so metadata used after
a later build must either still give the right answer or raise a BaseboardError; silently
attending over another step's tables is a failure.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ..core.attention import AttentionBatch, AttentionSpec
from ..core.errors import BaseboardError
from .cases import Case, randn
from .compare import compare

# Per step: (sequence, tokens already in the cache, new tokens). Decodes come first.
STEPS = (
    ("step 1: prefills of 16, 32 and 20 tokens",
     ((0, 0, 16), (1, 0, 32), (2, 0, 20))),
    ("step 2: 2 decodes, 13 tokens after a cached 20-token prefix, a fresh 7-token prefill",
     ((0, 16, 1), (1, 32, 1), (2, 20, 13), (3, 0, 7))),
    ("step 3: 4 decodes",
     ((0, 17, 1), (1, 33, 1), (2, 33, 1), (3, 7, 1))),
)
# Run with its own metadata after the next step's were built: the same decodes in
# reverse order, so another step's tables and slots would give other rows.
STALE_STEP = ("step 4: 4 decodes, run after the metadata of the next step were built",
              ((0, 18, 1), (1, 34, 1), (2, 34, 1), (3, 8, 1)))
SPARE_BLOCKS = 3


def _final_lengths() -> dict[int, int]:
    lengths: dict[int, int] = {}
    for _, rows in STEPS + (STALE_STEP,):
        for seq, cached, new in rows:
            lengths[seq] = cached + new
    return lengths


def _block_tables(block_size: int, gen: torch.Generator) -> tuple[dict[int, list[int]], int]:
    """Shuffled block ids per sequence, and the number of blocks in the cache."""
    needed = {seq: math.ceil(n / block_size) for seq, n in _final_lengths().items()}
    num_blocks = sum(needed.values()) + SPARE_BLOCKS
    free = torch.randperm(num_blocks, generator=gen).tolist()
    tables = {}
    for seq, count in needed.items():
        tables[seq], free = free[:count], free[count:]
    return tables, num_blocks


def _batch(rows: tuple, tables: dict[int, list[int]], block_size: int) -> AttentionBatch:
    slots = [tables[seq][pos // block_size] * block_size + pos % block_size
             for seq, cached, new in rows for pos in range(cached, cached + new)]
    return AttentionBatch(query_lens=[new for _, _, new in rows],
                          context_lens=[cached + new for _, cached, new in rows],
                          block_tables=[tables[seq] for seq, _, _ in rows],
                          slot_mapping=slots)


def _cos_sin_cache(max_position: int, head_dim: int, device: torch.device) -> torch.Tensor:
    """[max_position, head_dim] float32: cos in the first half, sin in the second."""
    inv_freq = 1.0 / 10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.outer(torch.arange(max_position, dtype=torch.float32), inv_freq)
    return torch.cat((angles.cos(), angles.sin()), dim=-1).to(device)


def _positions(rows: tuple, device: torch.device) -> torch.Tensor:
    return torch.tensor([pos for _, cached, new in rows for pos in range(cached, cached + new)],
                        dtype=torch.int64, device=device)


def check_attention(case: Case, impl: Any, reference: Any, device: torch.device) -> None:
    """Build both implementations from one AttentionSpec and run every step on both."""
    p, gen = case.params, case.generator()
    hq, hk, d, block_size = p["num_heads"], p["num_kv_heads"], p["head_dim"], p["block_size"]
    spec = AttentionSpec(num_heads=hq, num_kv_heads=hk, head_dim=d, scale=d ** -0.5,
                         block_size=block_size, dtype=case.dtype, device=device,
                         max_num_seqs=8, max_model_len=128)
    tables, num_blocks = _block_tables(block_size, gen)
    sides = []
    for cls in (impl, reference):
        attention = cls(spec)
        cache = torch.zeros(tuple(attention.kv_cache_shape(num_blocks)), dtype=case.dtype,
                            device=device)
        sides.append((attention, cache))
    def inputs(batch: AttentionBatch) -> tuple[torch.Tensor, ...]:
        tokens = len(batch.slot_mapping)
        return (randn(gen, (tokens, hq, d), case.dtype, device),
                randn(gen, (tokens, hk, d), case.dtype, device),
                randn(gen, (tokens, hk, d), case.dtype, device))

    rotary = hasattr(impl, "forward_rotary")
    cos_sin = _cos_sin_cache(spec.max_model_len, d, device) if rotary else None
    for step, (label, rows) in enumerate(STEPS):
        batch = _batch(rows, tables, block_size)
        q, k, v = inputs(batch)
        if rotary and step == 1:
            label = f"{label}, through forward_rotary"
            positions = _positions(rows, device)
            got, expected = [attention.forward_rotary(positions, q.clone(), k.clone(), v.clone(),
                                                      cos_sin, cache,
                                                      attention.build_metadata(batch))
                             for attention, cache in sides]
        else:
            got, expected = [attention.forward(q.clone(), k.clone(), v.clone(), cache,
                                               attention.build_metadata(batch))
                             for attention, cache in sides]
        compare(f"attention {label}", got, expected, case)
    label, rows = STALE_STEP
    batch = _batch(rows, tables, block_size)
    q, k, v = inputs(batch)
    (attention, cache), (reference_attention, reference_cache) = sides
    metadata = attention.build_metadata(batch)
    attention.build_metadata(_batch(tuple(reversed(rows)), tables, block_size))
    try:
        got = attention.forward(q.clone(), k.clone(), v.clone(), cache, metadata)
    except BaseboardError:
        return  # refused: the engine never does this, and it is told so
    expected = reference_attention.forward(q.clone(), k.clone(), v.clone(), reference_cache,
                                           reference_attention.build_metadata(batch))
    compare(f"attention {label} (forward with metadata older than the latest "
            f"build_metadata must be right or raise a BaseboardError)", got, expected, case)
