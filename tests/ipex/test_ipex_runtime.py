"""A missing, mismatched or broken Intel Extension for PyTorch is a rejection line with the
fix, never a crash. These run where IPEX is not installed (the default environment): the
IPEX distributions below are real installed distributions (a dist-info directory on
sys.path) whose module fails at import, as IPEX's does beside another torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from baseboard.core.registry import ENVIRONMENT
from baseboard.platforms.cpu import ipex_runtime

IPEX_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul",
            "gemm_w4a16", "gemm_w8a16", "attention")
# what IPEX's __init__ does when torch's version is not its own: print, then raise
RAISING_IPEX = """
    print("ERROR! Intel Extension for PyTorch needs to work with PyTorch 2.8.*")
    raise RuntimeError("Intel Extension for PyTorch needs PyTorch 2.8.*")
"""
TORCH_MAJOR_MINOR = ipex_runtime.major_minor(torch.__version__)

pytestmark = pytest.mark.skipif(
    ipex_runtime.installed_version() is not None,
    reason="IPEX is installed here: these tests install stand-ins for it (make test-ipex "
           "runs the real one)")


@pytest.fixture(autouse=True)
def fresh_runtime():
    """Each test asks afresh; the answer is cached per process otherwise."""
    ipex_runtime._load.cache_clear()
    yield
    ipex_runtime._load.cache_clear()
    sys.modules.pop(ipex_runtime.MODULE, None)


def test_missing_ipex_is_an_environment_rejection_with_the_fix():
    problem = ipex_runtime.problem()
    assert problem.kind == ENVIRONMENT
    assert "intel-extension-for-pytorch is not installed" in problem.reason
    assert torch.__version__ in problem.reason and "pip install torch==2.8" in problem.reason


def test_a_mismatched_ipex_is_rejected_without_importing_it(site):
    site.install("intel-extension-for-pytorch", {}, {ipex_runtime.MODULE: RAISING_IPEX},
                 version="2.8.0")
    problem = ipex_runtime.problem()
    assert problem.kind == ENVIRONMENT
    assert "intel-extension-for-pytorch 2.8.0 needs torch 2.8.*" in problem.reason
    assert f"torch {torch.__version__} is installed" in problem.reason
    assert ipex_runtime.MODULE not in sys.modules  # its import would have printed and raised


def test_an_ipex_that_fails_to_import_is_rejected_with_the_error(site):
    site.install("intel-extension-for-pytorch", {}, {ipex_runtime.MODULE: RAISING_IPEX},
                 version=f"{TORCH_MAJOR_MINOR}.0")
    problem = ipex_runtime.problem()
    assert problem.kind == ENVIRONMENT
    assert "failed to import: RuntimeError('Intel Extension for PyTorch needs" in problem.reason
    with pytest.raises(Exception, match="failed to import"):
        ipex_runtime.ipex()


def test_versions_compare_by_major_and_minor():
    assert ipex_runtime.version_problem("2.8.0", "2.8.1+cu128") is None
    assert ipex_runtime.version_problem("2.8.0+cpu", "2.8.0") is None
    assert "needs torch 2.8.*" in ipex_runtime.version_problem("2.8.0", "2.13.0+cpu")
    assert "needs torch 2.7.*" in ipex_runtime.version_problem("2.7.10", "2.8.0")


def test_baseboard_info_shows_a_mismatched_ipex_as_a_rejection_line(site, tmp_path):
    site.install("intel-extension-for-pytorch", {}, {ipex_runtime.MODULE: RAISING_IPEX},
                 version="2.8.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site.root), env.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, "-m", "baseboard.cli", "info", "--json",
                           "--platform", "cpu", "--dtype", "bfloat16"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Intel Extension for PyTorch needs" not in proc.stdout + proc.stderr  # never imported
    ops = json.loads(proc.stdout)["plan"]["ops"]
    for op in IPEX_OPS:
        ipex = next(c for c in ops[op]["candidates"] if c["name"] == "ipex")
        assert not ipex["accepted"] and ipex["kind"] == ENVIRONMENT, (op, ipex)
        assert "intel-extension-for-pytorch 2.8.0 needs torch 2.8.*" in ipex["reason"]
        assert ops[op]["selected"] != "ipex"
