"""Fixtures of the quantization tests: the tiny models of tests/models, and a plan of
torch references on the CPU."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from baseboard.core.ops import OPS
from baseboard.frontend.plan import resolve_plan

# tiny_models.py and paged_runner.py, shared with the model tests
sys.path.insert(0, str(Path(__file__).parent.parent / "models"))


@pytest.fixture(scope="session")
def reference_resolution():
    """cpu platform, float32, every op pinned to its torch reference."""
    return resolve_plan(platform="cpu", dtype=torch.float32, backends={op: "torch" for op in OPS})
