"""Tile tables per device: which tile each Triton kernel runs with on a given GPU.

The best GEMV tile, decode split and prefill tile differ between GPUs of one family (an
H200 has the H100's SMs with 1.4x its memory bandwidth), so they are data, not constants:

- a table shipped with the package for each GPU it was tuned on
  (``tables/<device name>.json``, written by ``benchmarks/tune_tables.py``);
- for any other GPU, the tiles tuned on first use (Triton's autotuner, timing inside a
  CUDA graph) are written to the user's cache (``~/.cache/baseboard/tuning/``), so a second
  run tunes nothing.

A shipped table overrides the cache; a shape neither holds is tuned and written. Tables are
keyed by the device name as torch reports it, and by the Triton version that the cache was
tuned with (a new Triton recompiles every kernel and may want other tiles).
"""

from __future__ import annotations

import functools
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Optional

import torch
import triton

SHIPPED = Path(__file__).parent / "tables"


def device_key(device: torch.device) -> str:
    """'nvidia_h200' for 'NVIDIA H200': the file name of the device's table."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _cache_path(key: str) -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "baseboard" / "tuning" / f"triton-tiles-{key}-{triton.__version__}.json"


class DeviceTable:
    """The tiles of one device: ``entries[kernel][shape] -> list of ints`` (the kernel's
    own meaning), from the shipped table, else from the user's cache."""

    def __init__(self, key: str):
        self.key = key
        self.cache_path = _cache_path(key)
        self.shipped = _read(SHIPPED / f"{key}.json")
        self.cached = _read(self.cache_path)

    def get(self, kernel: str, shape: str) -> Optional[list]:
        for source in (self.shipped, self.cached):
            found = source.get(kernel, {}).get(shape)
            if found is not None:
                return found
        return None

    def remember(self, kernel: str, shape: str, tile: list) -> None:
        """Write a tile tuned here to the user's cache (atomically: several processes of
        one machine may tune at once)."""
        self.cached.setdefault(kernel, {})[shape] = list(tile)
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=self.cache_path.parent, delete=False,
                                         suffix=".tmp") as f:
            json.dump(self.cached, f, indent=1, sort_keys=True)
        os.replace(f.name, self.cache_path)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # absent or unreadable: tuned afresh (and rewritten, for the cache)


@functools.cache
def table_for(device: torch.device) -> DeviceTable:
    return DeviceTable(device_key(device))
