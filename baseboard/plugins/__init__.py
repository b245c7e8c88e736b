"""Plugin discovery on pluggy: hook specs, entry points, filtering and the load report."""

from .hookspecs import hookimpl

__all__ = ["hookimpl"]
