"""Fixtures of the tensor-parallel tests: the tiny checkpoint most of them share."""

from __future__ import annotations

from pathlib import Path

import pytest
from tp_models import build


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """Llama: 4 query heads, 2 KV heads (tp=4 replicates each KV head on two ranks)."""
    return build(tmp_path_factory.mktemp("tp-llama"))
