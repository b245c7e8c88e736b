"""Everything the loaded plugins provide: platforms, implementations, models, quant methods."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..core.errors import RegistrationError
from ..core.platform import Platform
from ..core.registry import Registry
from .manager import LoadedPlugins, load_plugins


@dataclass
class Catalog:
    plugins: LoadedPlugins
    registry: Registry = field(default_factory=Registry)
    platforms: dict[str, Platform] = field(default_factory=dict)
    models: dict[str, tuple[str, str]] = field(default_factory=dict)  # arch -> (loader, plugin)
    quant_methods: dict[str, tuple[Any, str]] = field(default_factory=dict)  # name -> (method, plugin)


def _owner(manager, hookimpl) -> str:
    return manager.get_name(hookimpl.plugin)


def build_catalog(allow: tuple[str, ...] | None, disable: tuple[str, ...]) -> Catalog:
    """Load plugins and collect what each registers. Duplicates are errors naming both."""
    plugins = load_plugins(allow, disable)
    catalog = Catalog(plugins)
    hook = plugins.manager.hook
    for impl in hook.baseboard_platforms.get_hookimpls():
        owner = _owner(plugins.manager, impl)
        for platform in impl.function() or []:
            if platform.name in catalog.platforms:
                raise RegistrationError(
                    f"platform {platform.name!r} is registered by both plugin "
                    f"{catalog.platforms[platform.name].plugin!r} and plugin {owner!r}. "
                    f"Disable one with BASEBOARD_DISABLE_PLUGINS.")
            platform.plugin = owner
            catalog.platforms[platform.name] = platform
    for impl in hook.baseboard_ops.get_hookimpls():
        owner = _owner(plugins.manager, impl)
        for record in impl.function() or []:
            catalog.registry.add(record, owner)
    for impl in hook.baseboard_models.get_hookimpls():
        owner = _owner(plugins.manager, impl)
        for arch, loader in (impl.function() or {}).items():
            if arch in catalog.models and catalog.models[arch][1] != owner:
                raise RegistrationError(
                    f"model architecture {arch!r} is registered by both plugin "
                    f"{catalog.models[arch][1]!r} and plugin {owner!r}.")
            catalog.models[arch] = (loader, owner)
    for impl in hook.baseboard_quantization_methods.get_hookimpls():
        owner = _owner(plugins.manager, impl)
        for method in impl.function() or []:
            if method.name in catalog.quant_methods:
                raise RegistrationError(
                    f"quantization method {method.name!r} is registered by both plugin "
                    f"{catalog.quant_methods[method.name][1]!r} and plugin {owner!r}.")
            catalog.quant_methods[method.name] = (method, owner)
    return catalog
