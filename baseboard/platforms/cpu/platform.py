"""The CPU platform: always present."""

from __future__ import annotations

import platform as host
from dataclasses import dataclass, field

import torch

from ...core.errors import PlatformError
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


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    """The byte counts of /proc/meminfo ("MemTotal", "MemAvailable", ...); {} where there
    is no such file."""
    found = {}
    try:
        with open(path) as f:
            for line in f:
                name, _, value = line.partition(":")
                fields = value.split()
                if fields and fields[0].isdigit():
                    found[name] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    except OSError:
        pass
    return found


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
        """(MemAvailable, MemTotal) of /proc/meminfo in bytes. MemAvailable, not MemFree:
        the page cache and reclaimable slabs are given back on demand, so free memory
        alone undercounts what a KV cache can take."""
        info = meminfo()
        missing = [k for k in ("MemAvailable", "MemTotal") if k not in info]
        if missing:
            raise PlatformError(f"/proc/meminfo gives no {', '.join(missing)} (Linux 3.14 or "
                                f"later has it); pass kv_cache_memory= to size the KV cache "
                                f"by hand.")
        return info["MemAvailable"], info["MemTotal"]

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16 if "avx512_bf16" in _cpu_flags() or "amx_bf16" in _cpu_flags() \
            else torch.float32
