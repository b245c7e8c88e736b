"""Simulated GPU environments: a torch that looks like a ROCm or an XPU build with one device,
and fake vendor packages (fake_aiter/aiter, fake_ipex_xpu/intel_extension_for_pytorch) put
on sys.path. Everything computes on the CPU; nothing here has run on an AMD or Intel GPU.

Each helper takes pytest's ``monkeypatch``, so the real torch and sys.path come back after
the test; ``forget_modules`` drops the fakes and the adapters that imported them, so one
test's fake never serves the next.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import torch

HERE = Path(__file__).parent
SITES = {"aiter": HERE / "fake_aiter", "intel_extension_for_pytorch": HERE / "fake_ipex_xpu"}
MI300X = SimpleNamespace(name="AMD Instinct MI300X", gcnArchName="gfx942:sramecc+:xnack-",
                         total_memory=192 << 30, multi_processor_count=304)
MAX_1550 = SimpleNamespace(name="Intel(R) Data Center GPU Max 1550", total_memory=64 << 30,
                           driver_version="1.6.31294", gpu_subslice_count=448,
                           gpu_eu_count=448 * 8, max_work_group_size=1024,
                           has_fp16=True, has_fp64=True)
# modules that bind a vendor package at import: dropped with the fakes
ADAPTERS = ("baseboard.platforms.rocm.aiter_ops", "baseboard.platforms.rocm.aiter_gemm",
            "baseboard.platforms.rocm.aiter_attention", "baseboard.platforms.xpu.ipex_ops",
            "baseboard.platforms.xpu.ipex_attention")


def simulate_rocm(monkeypatch, properties: SimpleNamespace = MI300X) -> None:
    """torch as a ROCm build with one AMD GPU of these device properties."""
    monkeypatch.setattr(torch.version, "hip", "6.4.43482")
    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda device=None: (properties.total_memory - (2 << 30),
                                             properties.total_memory))


def simulate_xpu(monkeypatch, properties: SimpleNamespace = MAX_1550) -> None:
    """torch with one Intel GPU of these properties behind torch.xpu."""
    monkeypatch.setattr(torch.xpu, "is_available", lambda: True)
    monkeypatch.setattr(torch.xpu, "device_count", lambda: 1)
    monkeypatch.setattr(torch.xpu, "get_device_name", lambda device=None: properties.name)
    monkeypatch.setattr(torch.xpu, "get_device_properties", lambda device=None: properties)
    monkeypatch.setattr(torch.xpu, "mem_get_info",
                        lambda device=None: (properties.total_memory - (1 << 30),
                                             properties.total_memory))


def forget_modules(*packages: str) -> None:
    """Drop ``packages`` (and their submodules) and the adapters from sys.modules, and the
    cached answer to whether aiter imports."""
    from baseboard.platforms.rocm.aiter_support import aiter_import_problem
    from baseboard.platforms.xpu.ipex_support import ipex_xpu_problem

    for name in list(sys.modules):
        if name in ADAPTERS or any(name == p or name.startswith(p + ".") for p in packages):
            del sys.modules[name]
    aiter_import_problem.cache_clear()
    ipex_xpu_problem.cache_clear()


def install_fake(monkeypatch, package: str) -> None:
    """Put the fake ``package`` first on sys.path."""
    forget_modules(package)
    monkeypatch.syspath_prepend(str(SITES[package]))
