"""Shared by every test package: throwaway installed plugin distributions, and Triton's
interpreter switch for the modules that need it.

Triton reads TRITON_INTERPRET when it is imported, so a module running Triton kernels on
the CPU sets it before its imports (at collection). Once collection is done it is put
back as the session started, and the ``triton_interpreter`` fixture sets it again only
while such a module's tests run.
"""

from __future__ import annotations

import os

import pytest

from baseboard.testing.sandbox import PluginSite

SESSION_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET")


def _restore() -> None:
    if SESSION_TRITON_INTERPRET is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = SESSION_TRITON_INTERPRET


def pytest_collection_finish(session):
    _restore()


@pytest.fixture(scope="module")
def triton_interpreter():
    os.environ["TRITON_INTERPRET"] = "1"
    yield
    _restore()


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Distributions installed for one test: a directory on sys.path."""
    plugins = PluginSite(tmp_path / "site")
    monkeypatch.syspath_prepend(str(plugins.root))
    yield plugins
    plugins.forget_modules()
