"""The cpu platform's properties, read from the host itself."""

from __future__ import annotations

import os

import pytest

from baseboard.platforms.cpu.platform import CpuPlatform, meminfo

MIB = 1 << 20


def _kib(name: str) -> int:
    with open("/proc/meminfo") as f:
        line = next(line for line in f if line.startswith(name + ":"))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not os.path.exists("/proc/meminfo"), reason="needs Linux's /proc/meminfo")
def test_available_memory_is_memavailable_not_memfree():
    before = _kib("MemAvailable")
    free, total = CpuPlatform().memory()
    after = _kib("MemAvailable")
    # other processes allocate meanwhile: allow what they may plausibly take between reads
    assert min(before, after) - 64 * MIB <= free <= max(before, after) + 64 * MIB
    assert total == _kib("MemTotal")


def test_meminfo_reads_sizes_in_bytes(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16384 kB\nMemAvailable:    2048 kB\nHugePages_Total:   "
                    "  4\n")
    assert meminfo(str(path)) == {"MemTotal": 16384 * 1024, "MemAvailable": 2048 * 1024,
                                  "HugePages_Total": 4}
    assert meminfo(str(tmp_path / "absent")) == {}
