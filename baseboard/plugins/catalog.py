"""Everything the loaded plugins provide: platforms, implementations, models, quant methods.

Each plugin's hooks run, and each of its platforms is detected, before anything it returns
is registered: a plugin whose hook or ``detect()`` raises is marked ``failed`` with the
reason, exactly like one that fails to import, and registers nothing; the others load.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import RegistrationError
from ..core.platform import Detection, Platform
from ..core.registry import Impl, Registry, unmet_requirements
from .manager import LoadedPlugins, PluginRecord, check_allowed, load_plugins


@dataclass
class Catalog:
    plugins: LoadedPlugins
    registry: Registry = field(default_factory=Registry)
    platforms: dict[str, Platform] = field(default_factory=dict)
    detections: dict[str, Detection] = field(default_factory=dict)  # platform -> detect()
    models: dict[str, tuple[str, str]] = field(default_factory=dict)  # arch -> (loader, plugin)
    # name -> (method, plugin)
    quant_methods: dict[str, tuple[Any, str]] = field(default_factory=dict)


@dataclass
class Contribution:
    """What one plugin's hooks returned, with its platforms' detections."""

    platforms: list[Platform]
    impls: list[Impl]
    models: dict[str, str]
    quant_methods: list[Any]
    detections: dict[str, Detection]


class PluginFailure(Exception):
    """A plugin's hook or platform detection raised; the message says which and what."""


def _call(loaded: LoadedPlugins, module: Any, hook: str) -> Any:
    """The result of ``module``'s implementation of ``hook`` (None if it has none)."""
    impls = getattr(loaded.manager.hook, hook).get_hookimpls()
    impl = next((i for i in impls if i.plugin is module), None)
    if impl is None:
        return None
    try:
        return impl.function()
    except Exception as exc:  # third-party code: any error marks the plugin failed
        raise PluginFailure(f"hook {hook}() raised {type(exc).__name__}: {exc}") from exc


def _detect(platform: Platform) -> Detection:
    """The platform's detection; absent, without calling detect(), where a distribution
    it ``requires`` is not installed (detect() would import it)."""
    unmet = unmet_requirements(platform.requires)
    if unmet:
        return Detection(False, unmet)
    try:
        detection = platform.detect()
    except Exception as exc:  # third-party code: any error marks the plugin failed
        raise PluginFailure(f"platform {platform.name!r}: detect() raised "
                            f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(detection, Detection):
        raise PluginFailure(f"platform {platform.name!r}: detect() returned {detection!r}, "
                            f"not a baseboard.core.platform.Detection")
    return detection


def _collect(loaded: LoadedPlugins, module: Any) -> Contribution:
    platforms = list(_call(loaded, module, "baseboard_platforms") or [])
    impls = list(_call(loaded, module, "baseboard_ops") or [])
    models = dict(_call(loaded, module, "baseboard_models") or {})
    methods = list(_call(loaded, module, "baseboard_quantization_methods") or [])
    detections = {p.name: _detect(p) for p in platforms}
    return Contribution(platforms, impls, models, methods, detections)


def _fail(loaded: LoadedPlugins, record: PluginRecord, module: Any, why: str) -> None:
    record.status, record.error = "failed", why
    loaded.manager.unregister(module)


def _add(catalog: Catalog, owner: str, found: Contribution) -> None:
    """Register one plugin's contribution. Duplicates are errors naming both plugins."""
    for platform in found.platforms:
        if platform.name in catalog.platforms:
            raise RegistrationError(
                f"platform {platform.name!r} is registered by both plugin "
                f"{catalog.platforms[platform.name].plugin!r} and plugin {owner!r}. "
                f"Disable one with BASEBOARD_DISABLE_PLUGINS.")
        platform.plugin = owner
        catalog.platforms[platform.name] = platform
        catalog.detections[platform.name] = found.detections[platform.name]
    for record in found.impls:
        catalog.registry.add(record, owner)
    for arch, loader in found.models.items():
        if arch in catalog.models and catalog.models[arch][1] != owner:
            raise RegistrationError(
                f"model architecture {arch!r} is registered by both plugin "
                f"{catalog.models[arch][1]!r} and plugin {owner!r}.")
        catalog.models[arch] = (loader, owner)
    for method in found.quant_methods:
        if method.name in catalog.quant_methods:
            raise RegistrationError(
                f"quantization method {method.name!r} is registered by both plugin "
                f"{catalog.quant_methods[method.name][1]!r} and plugin {owner!r}.")
        catalog.quant_methods[method.name] = (method, owner)


def build_catalog(allow: tuple[str, ...] | None, disable: tuple[str, ...]) -> Catalog:
    """Load plugins and collect what each registers, isolating a plugin whose hooks or
    platform detection raise. A failed plugin named in ``allow`` is a PluginError."""
    plugins = load_plugins(allow, disable)
    catalog = Catalog(plugins)
    for record in plugins.report:
        if record.status != "loaded":
            continue
        module = plugins.manager.get_plugin(record.name)
        try:
            found = _collect(plugins, module)
        except PluginFailure as failure:
            _fail(plugins, record, module, str(failure))
            continue
        _add(catalog, record.name, found)
    check_allowed(plugins, allow)
    return catalog
