"""The ROCm platform (AMD GPUs), told from CUDA by torch.version.hip."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.platform import Detection, Platform
from ..cuda.platform import gpu_detection


@dataclass
class RocmPlatform(Platform):
    name: str = "rocm"
    device_type: str = "cuda"  # ROCm torch exposes AMD GPUs as "cuda" devices
    priority: int = 100
    dist_backend: str = "nccl"  # RCCL, under torch's nccl name
    supports_cuda_graphs: bool = True
    preferences: dict = field(default_factory=lambda: {
        "attention": ("triton",), "rms_norm": ("triton",), "fused_add_rms_norm": ("triton",),
        "rotary_embedding": ("triton",), "silu_and_mul": ("triton",), "sample": ("triton",),
    })
    doc: str = "AMD GPUs through torch's ROCm build; Triton kernels."

    def detect(self) -> Detection:
        return gpu_detection(want_hip=True)

    def capability(self) -> str:
        return torch.cuda.get_device_properties(0).gcnArchName

    def memory(self) -> tuple[int, int]:
        return torch.cuda.mem_get_info()

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16
