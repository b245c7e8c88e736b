"""The conformance kit as a pytest plugin: ``pytest --baseboard-plugin NAME``.

For every op implementation plugin NAME registers, it runs the op's grid of cases
(``cases.py``) against the torch reference on the detected platform (or
``--baseboard-platform``). A case the implementation's ``supports(ctx)`` rejects,
or that it cannot run on this platform, is skipped with the reason.

Run without paths, pytest runs only the kit; given paths, it runs those tests too.
Without ``--baseboard-plugin`` this plugin adds its options and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest

from ..core.errors import BaseboardError
from ..core.platform import Platform
from ..core.registry import Impl
from .cases import Case, cases_for
from .checks import run_case
from .compare import Mismatch
from .kit import Kit, open_kit, platform_problems


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("baseboard", "baseboard conformance kit")
    group.addoption("--baseboard-plugin", action="append", default=[], metavar="NAME",
                    dest="baseboard_plugins",
                    help="check every op implementation the installed baseboard plugin NAME "
                         "registers against the torch reference (repeatable)")
    group.addoption("--baseboard-platform", metavar="NAME", dest="baseboard_platform",
                    help="platform to run the kit on (default: BASEBOARD_PLATFORM, "
                         "else the detected one)")


def pytest_configure(config: pytest.Config) -> None:
    names = config.getoption("baseboard_plugins")
    platform = config.getoption("baseboard_platform")
    if not names:
        if platform:
            raise pytest.UsageError("--baseboard-platform needs --baseboard-plugin NAME, the "
                                    "plugin whose implementations the kit should check.")
        return
    try:
        kit = open_kit(names, platform)
    except BaseboardError as exc:
        raise pytest.UsageError(f"baseboard conformance kit: {exc}") from None
    config.pluginmanager.register(ConformanceCollection(kit), "baseboard-conformance")


class ConformanceCollection:
    """Adds one collector per plugin under test to the session's collection."""

    def __init__(self, kit: Kit):
        self.kit = kit

    def pytest_report_header(self, config: pytest.Config) -> str:
        kit = self.kit
        return (f"baseboard conformance kit: plugins {', '.join(kit.plugins)} on platform "
                f"{kit.platform.name} ({kit.platform_why}), device {kit.device}")

    @pytest.hookimpl(wrapper=True)
    def pytest_make_collect_report(self, collector: pytest.Collector):
        report = yield
        if not isinstance(collector, pytest.Session) or not report.passed:
            return report
        nodes = [PluginNode.from_parent(collector, name=f"baseboard-plugin[{name}]",
                                        nodeid=f"baseboard-plugin[{name}]", kit=self.kit,
                                        plugin=name) for name in self.kit.plugins]
        # paths given on the command line run too; testpaths and the current
        # directory do not, so the kit can be run from inside any project
        explicit = collector.config.args_source == pytest.Config.ArgsSource.ARGS
        report.result = (list(report.result) if explicit else []) + nodes
        return report


class PluginNode(pytest.Collector):
    """One plugin: its load status, its platforms, its implementations."""

    def __init__(self, *, kit: Kit, plugin: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.kit, self.plugin = kit, plugin

    def collect(self):
        yield LoadItem.from_parent(self, name="load", kit=self.kit, plugin=self.plugin)
        for platform in self.kit.platforms(self.plugin):
            yield PlatformItem.from_parent(self, name=f"platform[{platform.name}]",
                                           kit=self.kit, platform=platform)
        for impl in self.kit.impls(self.plugin):
            yield ImplNode.from_parent(self, name=f"{impl.op}={impl.name}", kit=self.kit,
                                       impl=impl)


class ImplNode(pytest.Collector):
    """One implementation: its signature, then every case of its op's grid."""

    def __init__(self, *, kit: Kit, impl: Impl, **kwargs: Any):
        super().__init__(**kwargs)
        self.kit, self.impl = kit, impl

    def collect(self):
        impl, kit = self.impl, self.kit
        item = SignatureItem.from_parent(self, name="signature", kit=kit, impl=impl)
        unavailable = kit.unavailable(impl)
        if unavailable:
            item.add_marker(pytest.mark.skip(reason=unavailable))
        yield item
        for case in cases_for(impl.op):
            item = CaseItem.from_parent(self, name=case.id, kit=kit, impl=impl, case=case)
            # decided at collection, as selection would decide it for this context
            try:
                reason = kit.rejection(impl, case.context(kit.platform))
            except Exception as exc:  # reported by the case itself, not as a collection error
                item.supports_error = exc
                reason = None
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"rejects this case: {reason}"))
            yield item


class KitItem(pytest.Item):
    """Reports the kit's own findings as their message, and a crash with its traceback."""

    def __init__(self, *, kit: Kit, **kwargs: Any):
        super().__init__(**kwargs)
        self.kit = kit

    def repr_failure(self, excinfo, style=None):
        if isinstance(excinfo.value, (Mismatch, BaseboardError)):
            return str(excinfo.value)
        # start the traceback at runtest: the frames above it are pytest's
        excinfo.traceback = excinfo.traceback.cut(path=__file__)
        return super().repr_failure(excinfo, style)

    def reportinfo(self):
        # no source file to point at: skips are summarised under the parent's node id
        return self.parent.nodeid, 0, self.nodeid


class LoadItem(KitItem):
    def __init__(self, *, plugin: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.plugin = plugin

    def runtest(self) -> None:
        record = self.kit.catalog.plugins.record(self.plugin)
        if record.status != "loaded":
            raise Mismatch(f"plugin {self.plugin!r} ({record.module}, distribution "
                           f"{record.distribution} {record.version}) did not load "
                           f"({record.status}): {record.error}")


class PlatformItem(KitItem):
    def __init__(self, *, platform: Platform, **kwargs: Any):
        super().__init__(**kwargs)
        self.platform = platform

    def runtest(self) -> None:
        problems = platform_problems(self.platform,
                                     self.kit.catalog.detections.get(self.platform.name))
        if problems:
            raise Mismatch(f"platform {self.platform.name!r}: " + "; ".join(problems))


class SignatureItem(KitItem):
    def __init__(self, *, impl: Impl, **kwargs: Any):
        super().__init__(**kwargs)
        self.impl = impl

    def runtest(self) -> None:
        self.kit.bound(self.impl)


class CaseItem(KitItem):
    def __init__(self, *, impl: Impl, case: Case, **kwargs: Any):
        super().__init__(**kwargs)
        self.impl, self.case = impl, case
        self.supports_error: Exception | None = None

    def runtest(self) -> None:
        impl, kit = self.impl, self.kit
        if self.supports_error is not None:
            raise Mismatch(f"{impl.op}={impl.name}: supports(ctx) raised "
                           f"{self.supports_error!r} for this case; it must return None or "
                           f"a reason")
        try:
            bound = kit.bound(impl)
        except BaseboardError:
            raise Mismatch(f"{impl.op}={impl.name} does not load; its 'signature' test "
                           f"says why") from None
        run_case(self.case, bound, kit.reference(impl.op), kit.device)
