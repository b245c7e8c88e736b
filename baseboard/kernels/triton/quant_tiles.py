"""Tiles of the quantized GEMM kernels, as data: per kernel family, per device name, per
bucket of input rows M.

A bucket is (largest M it serves, Tile); the first bucket whose bound is >= M serves M,
and the last bound is ``UNBOUNDED``. A table is found under "<device> <N>x<K>" (one weight
shape, as a tuning run prints them), else under the device's name, else ``DEFAULT``'s;
Triton's interpreter takes ``INTERPRETER``'s (small tiles: the tests run on the CPU).
A tile also names the kernel that runs its bucket (``Tile.kernel``): the weight-only ops
stream small M through a GEMV (quant_gemv.py), larger M through the tensor cores
(quant_gemm.py), and may hand large M to torch's GEMM on a dequantized weight
(quant_dequant.py). Nothing else reads tile sizes.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Optional

import torch

UNBOUNDED = 1 << 62
DEFAULT = "default"
INTERPRETER = "interpreter"
W4A16 = "w4a16"  # gemm_w4a16 (quant_gemm.py, quant_gemv.py)
W8A16 = "w8a16"  # gemm_w8a16 (quant_gemm.py, quant_gemv.py)
W8A8 = "w8a8"  # gemm_w8a8_fp8 and gemm_w8a8_int8 (quant_w8a8.py)
AUTO_SPLIT = 0  # split_k: as many splits as fit ``resident`` programs on every SM
MMA = "mma"  # Tile.kernel: tensor cores (every family)
GEMV = "gemv"  # Tile.kernel: CUDA-core GEMV, the weight-only families only
DEQUANT = "dequant"  # Tile.kernel: weight-only, dequantize to x's dtype, then cuBLAS


@dataclass(frozen=True)
class Tile:
    """One launch configuration. ``split_k`` splits the K loop over that many programs per
    output tile (their partial sums are added by the last to finish; see splitk.py);
    AUTO_SPLIT chooses it from the tile count and the number of SMs. The weight-only
    kernels shrink ``block_k`` to divide the group size; their tensor-core kernel steps
    through 4-bit codes one packed block (quant_gemm.PACK_K) at a time whatever ``block_k``
    says. ``kernel`` is MMA or (weight-only) GEMV, whose ``block_m`` may be 1, or DEQUANT,
    which writes the whole weight in x's dtype (``block_n`` columns a program) and hands
    it to torch's GEMM (for M where the weight's bytes no longer matter)."""

    block_m: int
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 3
    group_m: int = 8  # output tiles along M that share a column of weight tiles (L2 reuse)
    resident: int = 2  # programs an SM runs at once (registers, shared memory): AUTO_SPLIT
    kernel: str = MMA


Table = tuple[tuple[int, Tile], ...]

# Small M is bound by reading the weight. A few rows go through the GEMV: each program
# streams BLOCK_N rows of codes once and multiplies them on the CUDA cores by all its rows
# of x. Past a few rows that costs more arithmetic than the tensor cores' kernel, which
# takes the weight as the first operand of the product (y^T = W x^T: its unpacked codes
# stay in registers, and 16 rows of x fill the product's narrow side) and splits K so
# that every SM streams a share. Large M is bound by the tensor cores: the usual large
# tiles. A first guess for the H100/H200 class (compiled and inspected for sm_90a, not
# measured) until a tuning run (benchmarks/quant_gemm.py --tune) prints the device's own.
_W4A16_DEFAULT: Table = (
    (1, Tile(1, 32, 512, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (2, Tile(2, 32, 256, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (16, Tile(16, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4)),
    (32, Tile(32, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=3)),
    (128, Tile(64, 128, 128, AUTO_SPLIT, num_warps=4, num_stages=4)),
    (UNBOUNDED, Tile(128, 128, 128, 1, num_warps=8, num_stages=3)),
)
_W8A16_DEFAULT: Table = (
    (1, Tile(1, 16, 512, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (2, Tile(2, 16, 512, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (16, Tile(16, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4)),
    (32, Tile(32, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=3)),
    (128, Tile(64, 128, 128, AUTO_SPLIT, num_warps=4, num_stages=4)),
    (UNBOUNDED, Tile(128, 128, 64, 1, num_warps=8, num_stages=3)),
)
_W8A8_DEFAULT: Table = (
    (16, Tile(16, 128, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=3)),
    (64, Tile(64, 128, 128, AUTO_SPLIT, num_warps=4, num_stages=4)),
    (256, Tile(128, 128, 128, 1, num_warps=8, num_stages=4)),
    (UNBOUNDED, Tile(128, 256, 128, 1, num_warps=8, num_stages=3)),
)
# the interpreter runs one program at a time: few large programs are fast; a split of 2
# keeps the split-K reduction under test, and one and two rows take the GEMV
_INTERPRETED: Table = ((UNBOUNDED, Tile(16, 64, 32, 2, num_warps=1, num_stages=1)),)
_INTERPRETED_WEIGHT_ONLY: Table = (
    (2, Tile(2, 32, 256, 2, num_warps=1, num_stages=1, kernel=GEMV)),
    (UNBOUNDED, Tile(16, 32, 32, 2, num_warps=1, num_stages=1)),
)

# The H200's own rows: `benchmarks/quant_gemm.py --tune` at K=4096, N=14336 (2026-12-03,
# docs/benchmarks.md), used for every weight shape of the device. Past 64 rows the W4A16
# tensor-core kernel lost to dequantizing and cuBLAS; W8A16 held on to 256.
_W4A16_H200: Table = (
    (1, Tile(1, 64, 256, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (16, Tile(16, 128, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=3)),
    (64, Tile(64, 128, 128, AUTO_SPLIT, num_warps=8, num_stages=4)),
    (UNBOUNDED, Tile(1, 32, 128, 1, num_warps=4, num_stages=1, kernel=DEQUANT)),
)
_W8A16_H200: Table = (
    (1, Tile(1, 16, 512, AUTO_SPLIT, num_warps=4, num_stages=4, resident=4, kernel=GEMV)),
    (16, Tile(16, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4, resident=3)),
    (64, Tile(64, 64, 128, AUTO_SPLIT, num_warps=4, num_stages=4)),
    # split K (one program an SM): at 65-256 rows a weight of 4096 or 6144 columns makes
    # 16-48 tiles of 128x256, too few for the SMs unsplit (0.16x-0.19x bf16 at 128 rows)
    (256, Tile(128, 256, 128, AUTO_SPLIT, num_warps=8, num_stages=3, resident=1)),
    (UNBOUNDED, Tile(1, 32, 128, 1, num_warps=4, num_stages=1, kernel=DEQUANT)),
)

TILES: dict[str, dict[str, Table]] = {
    W4A16: {DEFAULT: _W4A16_DEFAULT, "NVIDIA H200": _W4A16_H200,
            INTERPRETER: _INTERPRETED_WEIGHT_ONLY},
    W8A16: {DEFAULT: _W8A16_DEFAULT, "NVIDIA H200": _W8A16_H200,
            INTERPRETER: _INTERPRETED_WEIGHT_ONLY},
    W8A8: {DEFAULT: _W8A8_DEFAULT, INTERPRETER: _INTERPRETED},
}


def shape_key(device: str, n: int, k: int) -> str:
    """The key of ``device``'s table for one weight shape: "NVIDIA H200 14336x4096"."""
    return f"{device} {n}x{k}"


def device_key(device: torch.device, interpreting: bool) -> str:
    """The name ``TILES`` is keyed by: the GPU's name ("NVIDIA H200"), or INTERPRETER."""
    if interpreting or device.type == "cpu":
        return INTERPRETER
    return _device_name(device.type, device.index)


@functools.cache
def _device_name(device_type: str, index: Optional[int]) -> str:
    if device_type == "cuda":
        return torch.cuda.get_device_name(index)
    return device_type


@functools.cache
def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors (compute units) of ``device``; 1 off the GPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def table_for(family: str, key: str, shape: Optional[tuple[int, int]] = None) -> Table:
    """The buckets of ``family`` on the device named ``key`` for a weight of ``shape``
    (N, K): the shape's own table, else the device's, else DEFAULT's."""
    tables = TILES[family]
    if shape is not None and shape_key(key, *shape) in tables:
        return tables[shape_key(key, *shape)]
    return tables.get(key, tables[DEFAULT])


def tile_for(table: Table, m: int) -> Tile:
    """The tile of the first bucket that serves ``m`` rows."""
    for bound, tile in table:
        if m <= bound:
            return tile
    return table[-1][1]


def splits(tile: Tile, output_tiles: int, k_steps: int, sms: int) -> int:
    """How many programs share each output tile's K loop: the tile's own ``split_k``, or
    (AUTO_SPLIT) as many as run at once in one wave (a second, partial wave would leave
    SMs idle while it finishes), never more than there are K steps."""
    wanted = tile.split_k or tile.resident * sms // output_tiles
    return max(1, min(wanted, k_steps))


def max_split_tiles(table: Table, n: int) -> int:
    """The most output tiles a split bucket of bounded M launches for a weight of ``n``
    columns: the size of the arrival counters a weight keeps (splitk.py). A split bucket of
    unbounded M takes fresh counters per call instead."""
    return max([-(-bound // tile.block_m) * -(-n // tile.block_n) for bound, tile in table
                if tile.split_k != 1 and bound != UNBOUNDED], default=0)
