"""The XPU platform (Intel GPUs through torch.xpu)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.platform import Detection, Platform

# ops Intel Extension for PyTorch's XPU build serves, preferred above the Triton kernels
IPEX_OPS = ("attention", "rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul")


def _preferences() -> dict[str, tuple[str, ...]]:
    return {op: ("ipex", "triton") for op in IPEX_OPS}


@dataclass
class XpuPlatform(Platform):
    name: str = "xpu"
    device_type: str = "xpu"
    priority: int = 90
    dist_backend: str = "xccl"  # oneCCL, torch.distributed's backend for XPU
    preferences: dict = field(default_factory=_preferences)
    doc: str = "Intel GPUs through torch.xpu; Triton kernels, IPEX's if its XPU build is installed."

    def detect(self) -> Detection:
        xpu = getattr(torch, "xpu", None)
        if xpu is None:
            return Detection(False, "this torch has no torch.xpu module")
        if not xpu.is_available():
            return Detection(False, "torch.xpu sees no device")
        return Detection(True, f"{xpu.device_count()} XPU device(s) visible")

    def capability(self) -> str:
        """The device's name and its number of Xe cores (subslices)."""
        props = torch.xpu.get_device_properties(0)
        return f"{props.name}, {props.gpu_subslice_count} Xe cores"

    def memory(self) -> tuple[int, int]:
        free, total = torch.xpu.mem_get_info()
        return free, total
