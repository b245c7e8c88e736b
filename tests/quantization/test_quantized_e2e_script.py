"""benchmarks/quantized_e2e_gpu.py --smoke on the CPU: every checkpoint it writes loads with
the quantized op of its scheme, and the bf16 model agrees with itself."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "quantized_e2e_gpu.py"
OPS = {"gptq-w4-g128": "gemm_w4a16", "ct-w8a16": "gemm_w8a16", "fp8": "gemm_w8a8_fp8",
       "int8-w8a8": "gemm_w8a8_int8"}


@pytest.mark.slow  # a subprocess that writes and runs five tiny models
def test_smoke_run_loads_every_scheme_with_its_op(tmp_path):
    out = tmp_path / "e2e.json"
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--json", str(out)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    models = json.loads(out.read_text())["results"]["tiny"]["models"]
    assert set(models) == {"bf16", *OPS}
    assert models["bf16"]["agreement"]["identical"] == models["bf16"]["agreement"]["prompts"]
    assert models["bf16"]["linear_ops"] == ["gemm"]
    for name, op in OPS.items():
        assert models[name]["linear_ops"] == ["gemm", op], name
        assert all(tok_s > 0 for tok_s in models[name]["tok_s"].values())
        assert 0 <= models[name]["agreement"]["mean_prefix"] <= 32
