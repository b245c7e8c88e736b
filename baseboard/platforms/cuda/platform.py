"""The CUDA platform (NVIDIA GPUs)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ...core.platform import Detection, Platform


def gpu_detection(want_hip: bool) -> Detection:
    """Shared by cuda and rocm: torch's CUDA API serves both; torch.version.hip tells them apart."""
    vendor = "ROCm" if want_hip else "CUDA"
    build = "ROCm" if torch.version.hip else ("CUDA" if torch.version.cuda else "CPU-only")
    if build != vendor:
        return Detection(False, f"this torch is a {build} build, not a {vendor} build")
    if not torch.cuda.is_available():
        return Detection(False, f"torch is a {vendor} build but sees no device")
    return Detection(True, f"{torch.cuda.device_count()} {vendor} device(s) visible")


@dataclass
class CudaPlatform(Platform):
    name: str = "cuda"
    device_type: str = "cuda"
    priority: int = 100
    dist_backend: str = "nccl"
    supports_cuda_graphs: bool = True
    # blocks of 64 hold whole key tiles, which Triton's prefill over cached prefixes reads
    # with the copy engine instead of gathering key by key (docs/benchmarks.md)
    kv_block_size: int = 64
    preferences: dict = field(default_factory=lambda: {
        # FlashInfer's kernels measured faster than Triton's on an H100 (docs/benchmarks.md);
        # it is a candidate only where installed and CUDA graphs are off
        "attention": ("flashinfer", "triton"),
        "rms_norm": ("triton",), "fused_add_rms_norm": ("triton",),
        "rotary_embedding": ("triton",), "silu_and_mul": ("triton",), "sample": ("triton",),
    })
    doc: str = "NVIDIA GPUs through torch's CUDA build; Triton kernels, FlashInfer if installed."

    def detect(self) -> Detection:
        return gpu_detection(want_hip=False)

    def capability(self) -> str:
        major, minor = torch.cuda.get_device_capability()
        return f"{major}.{minor}"

    def memory(self) -> tuple[int, int]:
        return torch.cuda.mem_get_info()

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16
