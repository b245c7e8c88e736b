"""pytest fixtures of the simulated environments (imported by the test modules that use
them): ``rocm`` and ``xpu`` simulate the device, ``fake_aiter`` and ``fake_ipex_xpu`` put
the fake vendor package on sys.path and give its module (its ``CALLS`` cleared)."""

from __future__ import annotations

import importlib

import pytest

from .environment import MI300X, forget_modules, install_fake, simulate_rocm, simulate_xpu


@pytest.fixture
def rocm(monkeypatch):
    simulate_rocm(monkeypatch, MI300X)
    yield monkeypatch
    forget_modules("aiter")


@pytest.fixture
def fake_aiter(rocm):
    install_fake(rocm, "aiter")
    aiter = importlib.import_module("aiter")
    aiter.CALLS.clear()
    yield aiter
    forget_modules("aiter")


@pytest.fixture
def xpu(monkeypatch):
    simulate_xpu(monkeypatch)
    yield monkeypatch
    forget_modules("intel_extension_for_pytorch")


@pytest.fixture
def fake_ipex_xpu(xpu):
    install_fake(xpu, "intel_extension_for_pytorch")
    ipex = importlib.import_module("intel_extension_for_pytorch")
    ipex.CALLS.clear()
    yield ipex
    forget_modules("intel_extension_for_pytorch")
