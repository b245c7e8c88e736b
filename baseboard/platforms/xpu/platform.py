"""The XPU platform (Intel GPUs through torch.xpu)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.platform import Detection, Platform


@dataclass
class XpuPlatform(Platform):
    name: str = "xpu"
    device_type: str = "xpu"
    priority: int = 90
    dist_backend: str = "xccl"
    preferences: dict = field(default_factory=lambda: {"attention": ("triton",)})
    doc: str = "Intel GPUs through torch.xpu; Triton kernels."

    def detect(self) -> Detection:
        xpu = getattr(torch, "xpu", None)
        if xpu is None:
            return Detection(False, "this torch has no torch.xpu module")
        if not xpu.is_available():
            return Detection(False, "torch.xpu sees no device")
        return Detection(True, f"{xpu.device_count()} XPU device(s) visible")

    def capability(self) -> str:
        return torch.xpu.get_device_name(0)

    def memory(self) -> tuple[int, int]:
        free, total = torch.xpu.mem_get_info()
        return free, total
