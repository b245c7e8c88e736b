"""The cuda plugin's records, selected for a CUDA context on this machine (no GPU needed:
selection reads records and supports(), and imports no implementation)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from baseboard.core.selection import SelectionContext, select_plan
from baseboard.plugins.catalog import build_catalog
from baseboard.platforms.cuda import plugin as cuda_plugin


def attention_decision(cuda_graphs=False, dtype=torch.bfloat16, head_dim=128):
    catalog = build_catalog(None, ())
    ctx = SelectionContext(catalog.platforms["cuda"], dtype=dtype, head_dim=head_dim,
                           num_heads=32, num_kv_heads=8, block_size=16,
                           cuda_graphs=cuda_graphs)
    return select_plan(catalog.registry, ctx, {}).decisions["attention"]


@pytest.mark.skipif(importlib.util.find_spec("flashinfer") is not None,
                    reason="FlashInfer is installed here")
def test_absent_flashinfer_is_a_rejected_candidate_with_the_install_command():
    decision = attention_decision()
    assert decision.selected == "triton"
    flashinfer = next(c for c in decision.candidates if c.name == "flashinfer")
    assert not flashinfer.accepted
    assert "pip install flashinfer-python" in flashinfer.reason


def test_flashinfer_supports_names_what_it_does_not_serve(monkeypatch):
    monkeypatch.setattr(cuda_plugin, "_nvcc_reason", lambda: None)
    platform = build_catalog(None, ()).platforms["cuda"]

    def reason(**fields):
        return cuda_plugin.flashinfer_reason(SelectionContext(platform, **fields))
    assert reason(dtype=torch.bfloat16, head_dim=128) is None
    assert reason(dtype=torch.float16, head_dim=64) is None
    assert "float32" in reason(dtype=torch.float32, head_dim=128)
    assert "head size 80" in reason(dtype=torch.bfloat16, head_dim=80)


def test_flashinfer_without_a_compiler_says_how_to_get_one(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    monkeypatch.setattr(cuda_plugin, "distribution_installed", lambda name: False)
    assert "nvcc" in cuda_plugin._nvcc_reason()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nvcc").touch()
    assert cuda_plugin._nvcc_reason() is None

