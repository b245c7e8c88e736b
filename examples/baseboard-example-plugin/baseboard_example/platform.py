""""sim": an accelerator simulated on the host CPU.

A real platform would detect its device here (cheaply, without initialising it).
This one is always present, with a priority below cpu's 10, so it is never chosen
over cpu by detection; ask for it with BASEBOARD_PLATFORM=sim.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from baseboard.core.platform import Detection, Platform


@dataclass
class SimPlatform(Platform):
    name: str = "sim"
    device_type: str = "cpu"  # tensors live in host memory
    priority: int = 1
    dist_backend: str = "gloo"
    supported_dtypes: tuple = (torch.float32, torch.bfloat16)
    kv_block_size: int = 32  # the KV-cache block size its kernels would want by default
    # its own GEMM first, whatever the priorities of other installed plugins
    preferences: dict = field(default_factory=lambda: {"gemm": ("transposed",)})
    doc: str = "An accelerator simulated on the host CPU (example plugin)."

    def detect(self) -> Detection:
        return Detection(True, "simulated on the host CPU, always present")

    def capability(self) -> str:
        return "sim-1"

    def memory(self) -> tuple[int, int]:
        page = os.sysconf("SC_PAGE_SIZE")
        return page * os.sysconf("SC_AVPHYS_PAGES"), page * os.sysconf("SC_PHYS_PAGES")

    def default_dtype(self) -> torch.dtype:
        return torch.float32
