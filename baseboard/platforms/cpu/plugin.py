"""The cpu platform plugin: the platform and its CPU-specific implementations."""

from __future__ import annotations

from ...core.registry import Impl
from ...plugins import hookimpl
from .platform import CpuPlatform

BASEBOARD_CONTRACT = 1


@hookimpl
def baseboard_platforms():
    return [CpuPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return []
