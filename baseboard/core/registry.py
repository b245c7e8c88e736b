"""Implementation records, the registry that holds them, and ``load_object``, which
imports what a record's ``"package.module:attribute"`` names."""

from __future__ import annotations

import importlib
import importlib.metadata
import shlex
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Optional, Union

from packaging.requirements import InvalidRequirement, Requirement

from .errors import RegistrationError, did_you_mean
from .ops import FUSIONS, OPS

ANY_PLATFORM = "*"
REFERENCE_NAME = "torch"  # the name of every op's reference implementation

# Why a candidate was rejected, which decides whether a user is told about it:
# UNSUPPORTED  the implementation does not handle this case (platform, shape, dtype, mode);
#              nothing is wrong, another one serves it.
# ENVIRONMENT  it would run here but something on this machine is missing or broken (a
#              distribution not installed, a library that fails to build or import); the
#              user can fix it, and is told when a preferred implementation is lost to it.
UNSUPPORTED = "unsupported"
ENVIRONMENT = "environment"
REJECTION_KINDS = (UNSUPPORTED, ENVIRONMENT)


@dataclass(frozen=True)
class Rejection:
    """What ``supports(ctx)`` returns to reject with a kind other than UNSUPPORTED (a plain
    string is an UNSUPPORTED reason): ``Rejection("libfoo failed to load: ...", ENVIRONMENT)``."""

    reason: str
    kind: str = UNSUPPORTED

    def __post_init__(self) -> None:
        if self.kind not in REJECTION_KINDS:
            raise RegistrationError(f"Rejection kind {self.kind!r} is not one of "
                                    f"{', '.join(REJECTION_KINDS)}.")


def load_object(loader: str) -> Any:
    """The attribute ``"package.module:attribute"`` names, importing its module."""
    module_name, _, attr = loader.partition(":")
    return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class Impl:
    """One implementation of one op.

    op          an op name of ``baseboard.core.ops.OPS``
    name        open string chosen by the plugin ("triton", "aiter", "mykernels"...)
    loader      "package.module:attribute", imported only when this impl is chosen
    platforms   platform names it runs on, or ("*",) for every platform
    priority    breaks ties between acceptable candidates (higher wins)
    requires    distributions that must be installed (checked without importing)
    supports    ``supports(ctx) -> None | reason | Rejection``: None when it can run in
                ``ctx``; a string (an UNSUPPORTED reason) or a Rejection with its kind
    cuda_graph_safe   False if it cannot be captured in a CUDA graph
    version     the kernel's version, part of the key of measured times (BASEBOARD_TUNE):
                change it when the code changes, and the cached times are measured again
    fuses       ops whose work it can also do (``ops.FUSIONS`` keys, each with the method
                it then offers); used where the plan runs that op by the same name
    plugin      filled in by the registry: the plugin that registered it
    """

    op: str
    name: str
    loader: str
    platforms: tuple[str, ...] = (ANY_PLATFORM,)
    priority: int = 0
    requires: tuple[str, ...] = ()
    supports: Optional[Callable[[Any], Union[None, str, Rejection]]] = None
    cuda_graph_safe: bool = True
    doc: str = ""
    version: str = ""
    fuses: tuple[str, ...] = ()
    plugin: str = field(default="", compare=False)

    def runs_on(self, platform: str) -> bool:
        return ANY_PLATFORM in self.platforms or platform in self.platforms

    def shares_platform(self, other: "Impl") -> bool:
        return any(self.runs_on(p) for p in other.platforms) or other.runs_on(ANY_PLATFORM)

    def load(self) -> Any:
        return load_object(self.loader)


def distribution_installed(name: str) -> bool:
    """Whether the distribution is installed, without importing it."""
    try:
        importlib.metadata.distribution(name)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def parse_requirement(text: str) -> Requirement:
    """A distribution name with an optional version specifier ("liger-kernel>=0.8.5")."""
    try:
        return Requirement(text)
    except InvalidRequirement as exc:
        raise RegistrationError(
            f"requires {text!r}, which is not a distribution name with an optional version "
            f"specifier (PEP 508, for example 'liger-kernel>=0.8.5'): {exc}") from None


def _installed_version_if_unmet(text: str) -> Optional[str]:
    """None when ``text`` is met; else the installed version, "" when none is installed."""
    requirement = parse_requirement(text)
    try:
        version = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return ""
    return None if requirement.specifier.contains(version, prereleases=True) else version


def unmet_requirements(requires: Iterable[str]) -> Optional[str]:
    """None when every requirement in ``requires`` (an Impl's or a Platform's: a
    distribution name, optionally with a version specifier) is met by an installed
    distribution, read from package metadata without importing anything; else the reason,
    which names what is missing or too old and how to install it."""
    unmet = {text: found for text in requires
             if (found := _installed_version_if_unmet(text)) is not None}
    if not unmet:
        return None
    what = ", ".join(f"{text} (found {found})" if found else text
                     for text, found in unmet.items())
    return f"needs {what} installed (pip install {' '.join(map(shlex.quote, unmet))})"


class Registry:
    """All implementations, keyed by (op, name, platforms). One name may be registered by
    several plugins for disjoint platforms (the shared Triton kernels: once per GPU vendor)."""

    def __init__(self) -> None:
        self.impls: dict[tuple[str, str, tuple[str, ...]], Impl] = {}

    def add(self, impl: Impl, plugin: str) -> None:
        if impl.op not in OPS:
            raise RegistrationError(
                f"plugin {plugin!r} registers {impl.name!r} for unknown op {impl.op!r}."
                f"{did_you_mean(impl.op, OPS)} Known ops: {', '.join(OPS)}.")
        if ":" not in impl.loader:
            raise RegistrationError(
                f"plugin {plugin!r}: loader {impl.loader!r} of {impl.op}={impl.name} must be "
                f"'package.module:attribute'.")
        for fused in impl.fuses:
            if FUSIONS.get(fused, None) is None or FUSIONS[fused].op != impl.op:
                offered = [f for f, spec in FUSIONS.items() if spec.op == impl.op]
                raise RegistrationError(
                    f"plugin {plugin!r}: {impl.op}={impl.name} declares fuses={fused!r}, which "
                    f"is not a fusion an {impl.op} implementation can offer (those are: "
                    f"{', '.join(offered) or 'none'}). Declare only fusions of ops.FUSIONS "
                    f"whose op is {impl.op!r}.")
        for text in impl.requires:
            try:
                parse_requirement(text)
            except RegistrationError as exc:
                raise RegistrationError(f"plugin {plugin!r}: {impl.op}={impl.name} {exc}") \
                    from None
        clash = next((other for other in self.for_op(impl.op)
                      if other.name == impl.name and other.shares_platform(impl)), None)
        if clash is not None:
            raise RegistrationError(
                f"implementation {impl.op}={impl.name} is registered by both plugin "
                f"{clash.plugin!r} and plugin {plugin!r} for platform(s) "
                f"{', '.join(impl.platforms)}; names must be unique per op and platform. "
                f"Rename one of them or disable one plugin with BASEBOARD_DISABLE_PLUGINS.")
        self.impls[(impl.op, impl.name, impl.platforms)] = Impl(**{**impl.__dict__,
                                                                    "plugin": plugin})

    def for_op(self, op: str) -> list[Impl]:
        return [impl for (o, _, _), impl in self.impls.items() if o == op]

    def reference(self, op: str) -> Impl:
        """The op's plain-torch reference, registered by the core plugin."""
        found = next((impl for impl in self.for_op(op) if impl.name == REFERENCE_NAME), None)
        if found is None:
            raise RegistrationError(f"op {op!r} has no {REFERENCE_NAME!r} reference "
                                    f"implementation; the core plugin registers one for every op.")
        return found
