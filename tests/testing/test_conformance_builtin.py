"""The built-in implementations through the conformance kit, as `make test` runs it."""

from pathlib import Path

from baseboard.testing.sandbox import run_pytest

REPO = Path(__file__).resolve().parents[2]


def test_builtin_plugins_pass_the_kit_from_the_repository_root():
    run = run_pytest("--baseboard-plugin", "cpu", "--baseboard-plugin", "baseboard", cwd=REPO)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") > 100
    assert run.count("failed") == 0
    # run from the root without paths, only the kit runs, not the project's own tests
    assert "tests/" not in run.stdout
