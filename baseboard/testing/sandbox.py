"""Tools for testing plugin discovery and the kit itself: throwaway installed
distributions, and pytest run in a fresh interpreter.

``importlib.metadata`` finds any ``NAME-VERSION.dist-info`` directory on ``sys.path``,
so a directory holding one (METADATA + entry_points.txt) and the plugin module is a
real installed plugin as far as baseboard is concerned, once the directory is on
``sys.path`` (or ``PYTHONPATH`` of a child process).
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..plugins.hookspecs import ENTRY_POINT_GROUP


def write_distribution(root: Path, name: str, plugins: dict[str, str],
                       modules: dict[str, str], version: str = "1.0") -> Path:
    """Write distribution ``name`` into ``root``.

    plugins: entry point name -> module name (group ``baseboard.plugins``)
    modules: top-level module name -> its source (dedented)
    Returns the dist-info directory. Put ``root`` on ``sys.path`` to install it.
    """
    root.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (root / f"{module}.py").write_text(textwrap.dedent(source))
    dist_info = root / f"{re.sub(r'[-_.]+', '_', name)}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    entries = "".join(f"{plugin} = {module}\n" for plugin, module in plugins.items())
    (dist_info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entries}")
    importlib.invalidate_caches()  # the import system caches directory listings
    return dist_info


class PluginSite:
    """A directory of throwaway distributions; ``install`` adds one. The caller puts
    ``root`` on sys.path and calls ``forget_modules`` when done, so a later test that
    reuses a module name imports its own source."""

    def __init__(self, root: Path):
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.modules: list[str] = []

    def install(self, name: str, plugins: dict[str, str], modules: dict[str, str],
                version: str = "1.0") -> Path:
        self.modules += list(modules)
        return write_distribution(self.root, name, plugins, modules, version)

    def forget_modules(self) -> None:
        for module in self.modules:
            sys.modules.pop(module, None)


@dataclass
class PytestRun:
    returncode: int
    stdout: str
    stderr: str

    def count(self, outcome: str) -> int:
        """How many tests ended in ``outcome`` ("passed", "failed", ...) by the summary line."""
        lines = self.stdout.strip().splitlines()
        found = re.search(rf"(\d+) {outcome}", lines[-1]) if lines else None
        return int(found.group(1)) if found else 0


def run_pytest(*args: str, cwd: Path, path: Path | None = None,
               environ: Mapping[str, str] | None = None) -> PytestRun:
    """``python -m pytest -q -rfEs ARGS`` in a fresh interpreter of this environment.

    BASEBOARD_* variables of this process are not passed on, so the run does not
    depend on the caller's settings; ``environ`` adds variables, ``path`` is put
    first on PYTHONPATH (a PluginSite root: its distributions are then installed).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env.update(environ or {})
    if path is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(path), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    return PytestRun(proc.returncode, proc.stdout, proc.stderr)
