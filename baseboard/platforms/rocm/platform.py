"""The ROCm platform (AMD GPUs), told from CUDA by torch.version.hip."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from ...core.errors import ConfigError
from ...core.platform import Detection, Platform
from ..cuda.platform import gpu_detection

# Instinct MI300 (gfx942) computes fp8 as float8_e4m3fnuz (exponent bias 8, no negative
# zero); MI350 (gfx950) as float8_e4m3fn, like NVIDIA GPUs.
FNUZ_ARCHS = ("gfx942",)
# ops AITER serves, preferred above the Triton kernels where its supports() accepts
AITER_OPS = ("attention", "rms_norm", "fused_add_rms_norm", "rotary_embedding",
             "silu_and_mul", "gemm", "gemm_w8a8_int8", "gemm_w8a8_fp8")


def _preferences() -> dict[str, tuple[str, ...]]:
    preferred = {op: ("aiter", "triton") for op in AITER_OPS}
    preferred["sample"] = ("triton",)
    return preferred


@dataclass
class RocmPlatform(Platform):
    name: str = "rocm"
    device_type: str = "cuda"  # ROCm torch exposes AMD GPUs as "cuda" devices
    priority: int = 100
    dist_backend: str = "nccl"  # RCCL, under torch's nccl name
    supports_cuda_graphs: bool = True
    preferences: dict = field(default_factory=_preferences)
    doc: str = "AMD GPUs through torch's ROCm build; AITER's kernels if installed, else Triton."
    aiter: str = "auto"  # BASEBOARD_ROCM_AITER, as configure() read it

    def detect(self) -> Detection:
        return gpu_detection(want_hip=True)

    def capability(self) -> str:
        """The GPU's full architecture name, 'gfx942:sramecc+:xnack-'."""
        return torch.cuda.get_device_properties(0).gcnArchName

    def arch(self) -> str:
        """The GPU's architecture without its feature flags: 'gfx942'."""
        return self.capability().split(":")[0]

    def fp8_dtype(self) -> torch.dtype:
        """The float8 type this GPU's fp8 instructions compute in."""
        return torch.float8_e4m3fnuz if self.arch() in FNUZ_ARCHS else torch.float8_e4m3fn

    def memory(self) -> tuple[int, int]:
        return torch.cuda.mem_get_info()

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16

    def configure(self, settings: Any) -> "RocmPlatform":
        """Read BASEBOARD_ROCM_AITER. ``on`` where AITER cannot run here is a ConfigError
        naming why; ``auto`` leaves it to each AITER implementation's supports(), which
        rejects with the reason (an info line in `baseboard info`)."""
        from .aiter_support import aiter_problem

        mode = settings["BASEBOARD_ROCM_AITER"]
        if mode == "on":
            problem = aiter_problem(self.arch())
            if problem is not None:
                raise ConfigError(
                    f"BASEBOARD_ROCM_AITER=on, but AITER cannot run here: {problem.reason}. "
                    f"Install amd-aiter for this GPU, or set BASEBOARD_ROCM_AITER=auto (AITER "
                    f"where it runs, Triton elsewhere) or off.")
        return replace(self, aiter=mode)
