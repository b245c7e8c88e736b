"""The null platform: a platform with no device of its own, for tests and examples.

Registry, selection and plugin loading are tested on it without any vendor library (as
tinygrad tests its machinery on a null device), and it is the smallest complete
``Platform`` a plugin author can read: a name, a detection with its reason, a capability
and a memory size. Its tensors live on the host CPU; with a priority below cpu's it is
never chosen by detection, only when asked for by name.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.platform import Detection, Platform

GIB = 1 << 30


@dataclass
class NullPlatform(Platform):
    """Present (or not, with ``present=False``), with the memory it is given."""

    name: str = "null"
    device_type: str = "cpu"
    priority: int = -100
    present: bool = True
    free_memory: int = GIB
    total_memory: int = 2 * GIB
    doc: str = "A platform with no device of its own, for tests (baseboard.testing.null)."

    def detect(self) -> Detection:
        if self.present:
            return Detection(True, "the null platform is present when asked to be")
        return Detection(False, "the null platform was made absent (present=False)")

    def capability(self) -> str:
        return "null"

    def memory(self) -> tuple[int, int]:
        return self.free_memory, self.total_memory
