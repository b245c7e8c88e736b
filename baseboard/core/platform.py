"""The platform base class: what a hardware target is and how it is detected."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class Detection:
    present: bool
    reason: str  # why it is or is not present, shown by `baseboard info`


@dataclass
class Platform:
    """A hardware target. Subclasses override ``detect`` and the properties that differ.

    Detection must be cheap and free of side effects: no device initialisation,
    no vendor import beyond torch. ``preferences`` maps an op to implementation
    names in the order this platform prefers them; selection takes the first
    acceptable one before falling to priority.
    """

    name: str = "base"
    device_type: str = "cpu"
    priority: int = 0
    dist_backend: str = "gloo"
    supports_cuda_graphs: bool = False
    supported_dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
    kv_block_size: int = 16  # tokens per KV-cache block unless the user sets one
    preferences: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # distributions it needs (its vendor runtime): where one is missing the platform is
    # absent, with that reason, and detect() is not called
    requires: tuple[str, ...] = ()
    doc: str = ""  # one line for `baseboard info`
    plugin: str = field(default="", compare=False)

    def detect(self) -> Detection:
        raise NotImplementedError

    def capability(self) -> str:
        """Compute capability or architecture, as a string ('9.0', 'gfx942', 'x86_64 avx512')."""
        return ""

    def device(self, index: int = 0) -> torch.device:
        return torch.device(self.device_type, index) if self.device_type != "cpu" \
            else torch.device("cpu")

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes of the device memory baseboard may use."""
        raise NotImplementedError

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16 if torch.bfloat16 in self.supported_dtypes else torch.float32

    def configure(self, settings: Any) -> "Platform":
        """This platform as ``settings`` (``core.settings.Settings``) configure it, once it is
        chosen for a load. A platform with a setting of its own (rocm: BASEBOARD_ROCM_AITER)
        reads and checks it here, raising ConfigError for a value it cannot honour, and
        returns a copy that its implementations' ``supports(ctx)`` read through
        ``ctx.platform``. The default has none: the platform itself."""
        return self

    def describe(self, present: bool) -> dict:
        """Properties for `baseboard info`; device queries only when the platform is present."""
        return {
            "name": self.name, "device_type": self.device_type, "priority": self.priority,
            "capability": self.capability() if present else "", "dist_backend": self.dist_backend,
            "supports_cuda_graphs": self.supports_cuda_graphs,
            "supported_dtypes": [str(d).replace("torch.", "") for d in self.supported_dtypes],
            "kv_block_size": self.kv_block_size, "requires": list(self.requires),
            "doc": self.doc, "plugin": self.plugin,
        }
