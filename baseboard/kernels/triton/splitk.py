"""Split-K for the quantized GEMMs: several programs share one output tile's K loop.

Each program stores its float32 partial tile; the last of a tile's programs to arrive (an
atomic counter per tile says which) adds the partials in split order, so the result does
not depend on which program finished last, adds the bias and writes the output. It is one
launch with no zero-filled buffer: the last program resets its counter to 0, so a weight's
counters serve the next call as they are, inside a CUDA graph too. Calls with one weight
must therefore not run concurrently (on two streams), as the engine's never do.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .quant_tiles import Tile, sm_count, splits


def partial_sums(split: int, m: int, n: int, device: torch.device) -> torch.Tensor:
    """[split, M, N] float32 for the partial tiles (one element, unused, when not split)."""
    return torch.empty((split, m, n) if split > 1 else (1,), dtype=torch.float32, device=device)


def arrival_counters(count: int, device: torch.device) -> torch.Tensor:
    """[count] int32 zeros: one counter per output tile of a split launch."""
    return torch.zeros(max(count, 1), dtype=torch.int32, device=device)


class SplitLaunch(NamedTuple):
    grid: tuple[int, int]  # (output tiles, programs per tile)
    steps_per_split: int  # K steps of each program
    split: int
    partials: torch.Tensor
    counters: torch.Tensor


def split_launch(tile: Tile, m: int, n: int, steps: int, counters: torch.Tensor,
                 device: torch.device) -> SplitLaunch:
    """The launch of an [m, n] output in ``tile``s over ``steps`` K steps: how far K is split
    (quant_tiles.splits), the partial tiles, and the weight's ``counters`` (fresh ones when
    there are more tiles than it keeps counters for)."""
    output_tiles = triton.cdiv(m, tile.block_m) * triton.cdiv(n, tile.block_n)
    per_split = triton.cdiv(steps, splits(tile, output_tiles, steps, sm_count(device)))
    split = triton.cdiv(steps, per_split)  # no program left without a step
    if split > 1 and output_tiles > counters.numel():
        counters = arrival_counters(output_tiles, device)
    return SplitLaunch((output_tiles, split), per_split, split,
                       partial_sums(split, m, n, device), counters)


@triton.jit
def _store_output(acc, rows, cols, N, mask, y_ptr, stride_ym, bias_ptr,
                  HAS_BIAS: tl.constexpr):
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols, mask=cols < N, other=0.0).to(tl.float32)[None, :]
    y_ptrs = y_ptr + rows.to(tl.int64)[:, None] * stride_ym + cols[None, :]
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def finish_tile(acc, rows, cols, M, N, y_ptr, stride_ym, bias_ptr, partial_ptr, counter_ptr,
                tile_id, pid_k, split_k, HAS_BIAS: tl.constexpr, SPLIT: tl.constexpr):
    """Write ``acc`` ([BLOCK_M, BLOCK_N] float32, this program's sum over its share of K)
    plus the bias to y[rows, cols] (y is [M, N] with row stride ``stride_ym``, N <= it),
    adding the other splits' partial tiles first when K is split (SPLIT: over ``split_k``
    programs; a run-time count, so each tile shape compiles once split and once not)."""
    mask = (rows < M)[:, None] & (cols < N)[None, :]
    if not SPLIT:
        _store_output(acc, rows, cols, N, mask, y_ptr, stride_ym, bias_ptr, HAS_BIAS)
    else:
        # M and split_k may be the constant 1 (Triton specializes an int argument equal to
        # 1), so no method is called on them
        offsets = rows.to(tl.int64)[:, None] * N + cols[None, :]
        tl.store(partial_ptr + (pid_k * M).to(tl.int64) * N + offsets, acc, mask=mask)
        # every thread's partial is stored before one thread announces the arrival
        tl.debug_barrier()
        arrived = tl.atomic_add(counter_ptr + tile_id, 1, sem="acq_rel")
        if arrived == split_k - 1:
            # .cg reads from L2, where the other programs' stores are
            split_ptr = partial_ptr + offsets
            total = tl.load(split_ptr, mask=mask, other=0.0, cache_modifier=".cg")
            for _ in range(1, split_k):
                split_ptr += M * N
                total += tl.load(split_ptr, mask=mask, other=0.0, cache_modifier=".cg")
            _store_output(total, rows, cols, N, mask, y_ptr, stride_ym, bias_ptr, HAS_BIAS)
            tl.atomic_xchg(counter_ptr + tile_id, 0)


@triton.jit
def output_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                GROUP_M: tl.constexpr):
    """(tile row, tile column) of program ``pid``: GROUP_M tile rows walk each column of
    weight tiles together, so a weight tile is read from L2 by the next rows' programs."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    width = GROUP_M * tiles_n
    first_m = (pid // width) * GROUP_M
    size_m = min(tiles_m - first_m, GROUP_M)
    return first_m + (pid % width) % size_m, (pid % width) // size_m
