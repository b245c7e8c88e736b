"""Fixtures of the serve tests: a tiny random Llama checkpoint built once per session
(nothing is downloaded), one `baseboard serve` on it shared by the session, and the same
checkpoint loaded in this process as the reference."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Iterator

import pytest
from serve_process import CONTEXT, REPO, ServerProcess, running_server


def _engine_checkpoints():
    """tests/engine/conftest.py under a name of its own: imported as 'conftest' it would be
    whichever conftest.py the session imported last."""
    spec = importlib.util.spec_from_file_location(
        "engine_checkpoints", REPO / "tests" / "engine" / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """tests/engine's tiny random Llama (byte-level BPE, a chat template) with a context of
    CONTEXT tokens; RoPE without scaling never reads the length, so the weights compute
    what they compute under build_checkpoint's config."""
    path = tmp_path_factory.mktemp("serve-tiny-llama")
    _engine_checkpoints().build_checkpoint(path)
    config_path = path / "config.json"
    config = json.loads(config_path.read_text())
    config["max_position_embeddings"] = CONTEXT
    config_path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture(scope="session")
def server(tiny_model) -> Iterator[ServerProcess]:
    """`baseboard serve` on the tiny model with the default flags."""
    with running_server(tiny_model) as process:
        yield process


@pytest.fixture(scope="session")
def model_name(tiny_model) -> str:
    """The model name of requests: with no --served-model-name, the MODEL argument as
    given."""
    return str(tiny_model)


@pytest.fixture(scope="session")
def reference_llm(tiny_model):
    """The same checkpoint in this process, as `LLM.generate` users run it."""
    from baseboard import LLM

    return LLM(str(tiny_model), dtype="float32", platform="cpu", max_num_seqs=8, seed=0)
