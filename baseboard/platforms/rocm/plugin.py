"""The rocm platform plugin: the platform and the implementations it registers."""

from __future__ import annotations

from ...core.registry import Impl
from ...kernels.triton.records import triton_impls
from ...plugins import hookimpl
from .platform import RocmPlatform

BASEBOARD_CONTRACT = 1


@hookimpl
def baseboard_platforms():
    return [RocmPlatform()]


@hookimpl
def baseboard_ops() -> list[Impl]:
    return triton_impls(("rocm",), priority=50)
