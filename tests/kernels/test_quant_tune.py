"""benchmarks/quant_gemm.py --tune, run through Triton's interpreter on tiny shapes: what it
prints for the tile tables is Python that quant_tiles takes as it is."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from baseboard.kernels.triton import quant_tiles

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "quant_gemm.py"


@pytest.mark.slow
def test_tune_prints_tables_to_paste_into_quant_tiles(tmp_path):
    pytest.importorskip("triton")
    out = tmp_path / "tune.json"
    environ = dict(os.environ, TRITON_INTERPRET="1")
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--tune", "--out", str(out)],
                         env=environ, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    tuned = json.loads(out.read_text())["tuned"]
    assert set(tuned) == {quant_tiles.W4A16, quant_tiles.W8A16}
    names = {name: getattr(quant_tiles, name)
             for name in ("Tile", "AUTO_SPLIT", "GEMV", "DEQUANT", "UNBOUNDED")}
    for family, found in tuned.items():
        assert found["source"] in run.stdout  # printed, not only saved
        tables = eval("{" + found["source"] + "}", names)  # as it would be pasted
        table = tables[found["key"]]
        bounds = [bound for bound, _ in table]
        assert bounds == sorted(bounds) and bounds[-1] == quant_tiles.UNBOUNDED
        assert all(isinstance(tile, quant_tiles.Tile) for _, tile in table)
        # every bucket measured (none kept from the current table) on the tiny shape
        assert len(found["buckets"]) == len(table), family
        kernels = {quant_tiles.GEMV, quant_tiles.MMA, quant_tiles.DEQUANT}
        assert {tile.kernel for _, tile in table} <= kernels
