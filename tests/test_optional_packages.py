"""The test suite collects on a machine without the optional packages: a module that needs
one skips (pytest.importorskip) instead of failing the whole run at collection."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

OPTIONAL = ("gguf", "triton", "flashinfer")  # the extras of pyproject.toml
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # collects the whole suite in a fresh interpreter
@pytest.mark.parametrize("marks", ["not gpu and not slow", "gpu"])
def test_suite_collects_without_the_optional_packages(tmp_path, marks):
    # A None entry in sys.modules makes every import of that name raise ImportError, as if
    # the package were not installed; a pytest plugin sets them before any test module loads.
    (tmp_path / "without_optional.py").write_text(
        "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in OPTIONAL))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(tmp_path), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "without_optional",
                          "--collect-only", "-q", "-m", marks, "tests"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode in (0, 5), run.stdout[-3000:] + run.stderr[-3000:]  # 5: none selected
    assert not re.search(r"^ERROR |\b\d+ errors?\b", run.stdout, re.M), run.stdout[-3000:]
