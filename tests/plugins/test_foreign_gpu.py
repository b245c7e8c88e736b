"""The FlagGems and Liger plugins pass the conformance kit on a CUDA GPU, where their
libraries are installed (benchmarks/foreign_ops.sh installs them from wheels and runs the
kit itself; `make test-gpu` runs this where they are installed otherwise)."""

import pytest
import torch

from baseboard.core.registry import distribution_installed
from baseboard.testing.sandbox import run_pytest

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("plugin, library", [("flaggems", "flag-gems"),
                                             ("liger", "liger-kernel")])
def test_the_plugin_passes_the_kit_on_the_gpu(tmp_path, plugin, library):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    if not distribution_installed(library):
        pytest.skip(f"{library} is not installed")
    run = run_pytest("--baseboard-plugin", plugin, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    # every case ran: a library that does not load would turn them all into skips
    assert run.count("passed") > 100 and run.count("skipped") == 0, run.stdout[-3000:]
