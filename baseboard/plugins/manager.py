"""Find, filter and load plugins; keep a report of what happened to each."""

from __future__ import annotations

import importlib
import importlib.metadata
import sys
from dataclasses import dataclass, field

import pluggy

from ..core.errors import PluginError, did_you_mean
from ..core.ops import SUPPORTED_CONTRACTS
from . import hookspecs

CORE_PLUGIN = "baseboard"
CORE_MODULE = "baseboard.builtin.plugin"


@dataclass
class PluginRecord:
    """What happened to one plugin. status: loaded, failed, refused, disabled, not-allowed."""

    name: str
    module: str
    distribution: str
    version: str
    status: str
    error: str = ""

    def as_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LoadedPlugins:
    manager: pluggy.PluginManager
    report: list[PluginRecord] = field(default_factory=list)

    def record(self, name: str) -> PluginRecord | None:
        return next((r for r in self.report if r.name == name), None)

    def failures(self) -> list[PluginRecord]:
        return [r for r in self.report if r.status in ("failed", "refused")]


def _entry_points() -> list[importlib.metadata.EntryPoint]:
    return sorted(importlib.metadata.entry_points(group=hookspecs.ENTRY_POINT_GROUP),
                  key=lambda ep: ep.name)


def _check_names(kind: str, names: tuple[str, ...], known: list[str]) -> None:
    for name in names:
        if name not in known:
            raise PluginError(
                f"{kind} names plugin {name!r}, which is not installed.{did_you_mean(name, known)} "
                f"Installed plugins: {', '.join(known)}.")


def load_plugins(allow: tuple[str, ...] | None, disable: tuple[str, ...]) -> LoadedPlugins:
    """Discover entry points, apply BASEBOARD_PLUGINS / BASEBOARD_DISABLE_PLUGINS, import.

    A plugin that fails to import or declares an unsupported contract is recorded and
    skipped; ``check_allowed`` makes it an error when it was named in ``allow``.
    """
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    loaded = LoadedPlugins(manager)
    eps = _entry_points()
    known = [CORE_PLUGIN] + [ep.name for ep in eps]
    _check_names("BASEBOARD_PLUGINS", allow or (), known)
    _check_names("BASEBOARD_DISABLE_PLUGINS", disable, known)
    if CORE_PLUGIN in disable:
        raise PluginError(f"BASEBOARD_DISABLE_PLUGINS names {CORE_PLUGIN!r}, the core plugin "
                          f"with the reference implementations; it cannot be disabled.")
    _register(loaded, CORE_PLUGIN, CORE_MODULE, "baseboard")
    for ep in eps:
        dist = ep.dist.name if ep.dist else "?"
        if ep.name in disable:
            loaded.report.append(PluginRecord(ep.name, ep.value, dist, _version(dist), "disabled",
                                              "named in BASEBOARD_DISABLE_PLUGINS"))
        elif allow is not None and ep.name not in allow:
            loaded.report.append(PluginRecord(ep.name, ep.value, dist, _version(dist),
                                              "not-allowed", "not named in BASEBOARD_PLUGINS"))
        else:
            _register(loaded, ep.name, ep.value, dist)
    return loaded


def check_allowed(loaded: LoadedPlugins, allow: tuple[str, ...] | None) -> None:
    """A plugin named in BASEBOARD_PLUGINS that failed or was refused is an error."""
    for name in allow or ():
        record = loaded.record(name)
        if record and record.status in ("failed", "refused"):
            raise PluginError(f"plugin {name!r}, named in BASEBOARD_PLUGINS, could not be "
                              f"loaded: {record.error}")


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _register(loaded: LoadedPlugins, name: str, module_name: str, dist: str) -> None:
    record = PluginRecord(name, module_name, dist, _version(dist), "loaded")
    loaded.report.append(record)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any error in third-party code: record it, keep the others
        record.status, record.error = "failed", f"import of {module_name} failed: {exc!r}"
        sys.modules.pop(module_name, None)
        return
    contract = getattr(module, "BASEBOARD_CONTRACT", None)
    if contract not in SUPPORTED_CONTRACTS:
        record.status = "refused"
        record.error = (f"declares BASEBOARD_CONTRACT = {contract!r}; this baseboard supports "
                        f"contract version(s) {', '.join(map(str, SUPPORTED_CONTRACTS))}. "
                        f"Install a release of the plugin written for one of them.")
        return
    loaded.manager.register(module, name=name)
