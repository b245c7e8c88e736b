"""baseboard's exception types. Every message names the problem, the value given and the fix."""

from __future__ import annotations

import difflib
from typing import Iterable


class BaseboardError(Exception):
    """Base class of every error baseboard raises on purpose."""


class ConfigError(BaseboardError):
    """A setting, environment variable or CLI flag has a value baseboard cannot use."""


class PluginError(BaseboardError):
    """A plugin could not be loaded, or was asked for and is not usable."""


class PlatformError(BaseboardError):
    """The requested platform is unknown, absent or not installed."""


class SelectionError(BaseboardError):
    """No implementation of an op could be selected under the given constraints."""


class RegistrationError(BaseboardError):
    """An implementation, platform or model was registered twice or malformed."""


class ModelError(BaseboardError):
    """A model path, checkpoint or config cannot be used."""


class RequestError(BaseboardError, ValueError):
    """A generation request (prompt or sampling parameters) is invalid."""


def did_you_mean(value: str, known: Iterable[str]) -> str:
    """A ' Did you mean X?' suffix naming the closest known value, or ''."""
    close = difflib.get_close_matches(value, list(known), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""
