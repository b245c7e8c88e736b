"""The CPU platform: always present."""

from __future__ import annotations

import os
import platform as host
from dataclasses import dataclass, field

import torch

from ...core.platform import Detection, Platform


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@dataclass
class CpuPlatform(Platform):
    name: str = "cpu"
    device_type: str = "cpu"
    priority: int = 10
    dist_backend: str = "gloo"
    preferences: dict = field(default_factory=lambda: {"attention": ("cpu_paged",)})
    doc: str = "Host CPU through torch (oneDNN GEMMs in bf16 where the CPU has AVX-512/AMX)."

    def detect(self) -> Detection:
        return Detection(True, "the host CPU is always present")

    def capability(self) -> str:
        flags = _cpu_flags()
        isa = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_int8") if f in flags]
        return " ".join([host.machine()] + isa)

    def memory(self) -> tuple[int, int]:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
        return free, total

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16 if "avx512_bf16" in _cpu_flags() or "amx_bf16" in _cpu_flags() \
            else torch.float32
