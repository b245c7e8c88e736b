"""The built-in implementations through the conformance kit, as `make test` runs it."""

from pathlib import Path

import pytest

from baseboard.testing.sandbox import run_pytest

REPO = Path(__file__).resolve().parents[2]


def test_builtin_plugins_pass_the_kit_from_the_repository_root():
    # Triton kernels are left to the slow test below: in the interpreter they take minutes
    run = run_pytest("--baseboard-plugin", "cpu", "--baseboard-plugin", "baseboard", cwd=REPO,
                     environ={"TRITON_INTERPRET": "0"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") > 100
    assert run.count("failed") == run.count("error") == 0
    # run from the root without paths, only the kit runs, not the project's own tests
    assert "tests/" not in run.stdout


@pytest.mark.slow
def test_triton_kernels_pass_the_kit_in_the_interpreter():
    run = run_pytest("--baseboard-plugin", "cpu", "-k", "triton", cwd=REPO,
                     environ={"TRITON_INTERPRET": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") > 100
    assert run.count("skipped") == 0


@pytest.mark.slow
def test_triton_attention_refuses_metadata_of_an_earlier_build():
    # its metadata are views into buffers the next build overwrites: the kit's stale step
    # would read another step's tables; forward refuses them instead
    run = run_pytest("--baseboard-plugin", "cpu", "-k",
                     "triton and attention and (float32-H4-KV4-D64-B16 or float32-H8-KV2-D128-B64)",
                     cwd=REPO, environ={"TRITON_INTERPRET": "1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") == 2
