"""A conformance run: the plugins under test, the platform, and what each case needs.

Independent of pytest; ``pytest_plugin.py`` turns a Kit into test items.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import torch

from ..core.errors import BaseboardError, ConfigError, SelectionError, did_you_mean
from ..core.ops import OPS
from ..core.platform import Detection, Platform
from ..core.registry import Impl, unmet_requirements
from ..core.selection import SelectionContext, bind, decide
from ..core.settings import read_settings
from ..plugins.catalog import Catalog
from ..frontend.plan import choose_platform, load_catalog


@dataclass
class Kit:
    """The catalog as the current environment loads it, and the platform to run on."""

    catalog: Catalog
    platform: Platform
    platform_why: str
    plugins: list[str]
    _bound: dict[tuple[str, str, tuple[str, ...]], Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return self.platform.device()

    def impls(self, plugin: str) -> list[Impl]:
        """The implementations ``plugin`` registers, in op order."""
        order = list(OPS)
        found = [i for i in self.catalog.registry.impls.values() if i.plugin == plugin]
        return sorted(found, key=lambda i: (order.index(i.op), i.name))

    def platforms(self, plugin: str) -> list[Platform]:
        return [p for p in self.catalog.platforms.values() if p.plugin == plugin]

    def unavailable(self, impl: Impl) -> Optional[str]:
        """Why ``impl`` cannot even be imported here (wrong platform, missing distribution)."""
        if not impl.runs_on(self.platform.name):
            return f"runs on {', '.join(impl.platforms)}, not on {self.platform.name}"
        return unmet_requirements(impl.requires)

    def rejection(self, impl: Impl, ctx: SelectionContext) -> Optional[str]:
        """Why selection would reject ``impl`` in ``ctx`` (None: it would accept it).

        Asks selection itself, so the kit skips exactly what the engine would never pick.
        An exception from ``supports`` propagates: selection would hide it as a rejection.
        """
        unavailable = self.unavailable(impl)
        if unavailable:
            return unavailable
        if impl.supports is not None:
            impl.supports(ctx)
        try:
            _, decision = decide(self.catalog.registry, ctx, impl.op, None)
        except SelectionError as exc:  # not even the reference accepts this context
            return str(exc)
        # names are unique per op and platform, so the candidate of this name is ``impl``
        candidate = next(c for c in decision.candidates if c.name == impl.name)
        return None if candidate.accepted else candidate.reason

    def bound(self, impl: Impl) -> Any:
        """The imported, signature-checked implementation; a failure is kept and re-raised."""
        key = (impl.op, impl.name, impl.platforms)
        if key not in self._bound:
            try:
                self._bound[key] = bind(impl, self.catalog.registry.reference(impl.op))
            except BaseboardError as exc:
                self._bound[key] = exc
        value = self._bound[key]
        if isinstance(value, BaseboardError):
            raise value
        return value

    def reference(self, op: str) -> Any:
        """The op's torch reference, as the core plugin registers it."""
        return self.bound(self.catalog.registry.reference(op))


def open_kit(plugins: list[str], platform: Optional[str],
             environ: Mapping[str, str] | None = None) -> Kit:
    """Load plugins as ``resolve()`` would and check that each named plugin is testable.

    Raises a BaseboardError (a usage error for pytest) for a name that is not
    installed, or is excluded by BASEBOARD_PLUGINS / BASEBOARD_DISABLE_PLUGINS.
    """
    settings = read_settings(environ)
    catalog = load_catalog(settings)
    installed = [r.name for r in catalog.plugins.report]
    for name in plugins:
        record = catalog.plugins.record(name)
        if record is None:
            raise ConfigError(
                f"--baseboard-plugin {name!r}: no installed plugin has this name."
                f"{did_you_mean(name, installed)} Installed plugins: {', '.join(installed)}. "
                f"A plugin is installed when its distribution declares an entry point in group "
                f"'baseboard.plugins' (for example `pip install -e path/to/your-plugin`).")
        if record.status in ("disabled", "not-allowed"):
            raise ConfigError(
                f"--baseboard-plugin {name!r}: the plugin is {record.status} ({record.error}). "
                f"Unset BASEBOARD_PLUGINS / BASEBOARD_DISABLE_PLUGINS to test it.")
    if platform:
        requested, source = platform, "--baseboard-platform"
    else:
        requested, source = settings["BASEBOARD_PLATFORM"], "BASEBOARD_PLATFORM"
    chosen = choose_platform(catalog, requested, source)
    return Kit(catalog, chosen.platform, chosen.why, list(dict.fromkeys(plugins)))


def platform_problems(platform: Platform, detection: Optional[Detection] = None) -> list[str]:
    """What is wrong with a platform a plugin registers ([] when nothing is). ``detection``:
    the catalog's, made when the plugin loaded; else ``detect()`` is called here."""
    problems = []
    detection = platform.detect() if detection is None else detection
    if not isinstance(detection, Detection):
        return [f"detect() returned {detection!r}, not a baseboard.core.platform.Detection"]
    if not detection.reason:
        problems.append("detect() gives no reason; `baseboard info` shows it to users")
    try:
        torch.device(platform.device_type)
    except (RuntimeError, TypeError) as exc:
        problems.append(f"device_type {platform.device_type!r} is not a torch device type: {exc}")
    unknown = [op for op in platform.preferences if op not in OPS]
    if unknown:
        problems.append(f"preferences name unknown ops {unknown}; known ops: {', '.join(OPS)}")
    if platform.default_dtype() not in platform.supported_dtypes:
        problems.append(f"default_dtype() {platform.default_dtype()} is not among "
                        f"supported_dtypes {platform.supported_dtypes}")
    if detection.present:
        if not isinstance(platform.capability(), str):
            problems.append(f"capability() returned {platform.capability()!r}, not a str")
        free, total = platform.memory()
        if not 0 <= free <= total:
            problems.append(f"memory() returned (free={free}, total={total}); "
                            f"expected 0 <= free <= total bytes")
    return problems
