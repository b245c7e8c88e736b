"""baseboard: a plugin-based hardware-backend framework for LLM inference.

``from baseboard import LLM, SamplingParams`` is the engine's entry point; the names
are imported on first use so that ``import baseboard`` stays cheap.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["LLM", "SamplingParams", "resolve"]


def __getattr__(name: str):
    if name in ("LLM", "SamplingParams"):
        from . import engine

        return getattr(engine, name)
    if name == "resolve":
        from .frontend.resolve import resolve

        return resolve
    raise AttributeError(f"module 'baseboard' has no attribute {name!r}")
