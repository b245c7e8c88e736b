"""The hooks a baseboard plugin may implement.

A plugin is a module named by an entry point in group ``baseboard.plugins``. It sets
``BASEBOARD_CONTRACT = 1`` (the contract version it was written for) and implements
any of these hooks with ``@baseboard.plugins.hookimpl``. Hooks run once, at
discovery; nothing here is on the hot path.
"""

from __future__ import annotations

import pluggy

PROJECT = "baseboard"
ENTRY_POINT_GROUP = "baseboard.plugins"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def baseboard_platforms() -> list:
    """Return ``baseboard.core.platform.Platform`` instances this plugin provides."""


@hookspec
def baseboard_ops() -> list:
    """Return ``baseboard.core.registry.Impl`` records: op implementations."""


@hookspec
def baseboard_quantization_methods() -> list:
    """Return ``baseboard.quantization.QuantMethod`` records."""


@hookspec
def baseboard_models() -> dict:
    """Return {architecture name: "package.module:Class"} for model classes."""
