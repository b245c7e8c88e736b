"""The Triton gemm_w8a8_fp8_block against the torch reference on the conformance kit's
cases, in Triton's interpreter on the CPU, and what its supports() rejects.

TRITON_INTERPRET is set while this module is collected and while its tests run (see
tests/kernels/test_triton_interpret.py and tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

pytest.importorskip("triton.language")  # optional: the cuda extra installs it

from baseboard.core.errors import ConfigError  # noqa: E402
from baseboard.core.ops import OPS  # noqa: E402
from baseboard.frontend.plan import resolve_plan  # noqa: E402
from baseboard.models.loader import load_checkpoint  # noqa: E402
from baseboard.core.quant import QuantScheme  # noqa: E402
from baseboard.core.selection import SelectionContext  # noqa: E402
from baseboard.kernels.torch.quant_gemm import quantize_per_token_group  # noqa: E402
from baseboard.kernels.triton import quant_fp8_block  # noqa: E402
from baseboard.kernels.triton.records import triton_impls  # noqa: E402
from baseboard.platforms.cpu.platform import CpuPlatform  # noqa: E402
from baseboard.platforms.rocm.platform import RocmPlatform  # noqa: E402
from baseboard.testing.cases import cases_for  # noqa: E402
from baseboard.testing.checks import run_case  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]
OP = "gemm_w8a8_fp8_block"


# bfloat16 in the default run (a few seconds a case in the interpreter), the rest slow
CASES = [pytest.param(c, id=c.id, marks=() if c.dtype == torch.bfloat16 else pytest.mark.slow)
         for c in cases_for(OP)]


@pytest.mark.parametrize("case", CASES)
def test_the_kernel_passes_the_conformance_cases(case):
    from baseboard.kernels.torch.quant_gemm import GemmW8A8Fp8Block as reference

    run_case(case, quant_fp8_block.GemmW8A8Fp8Block, reference, torch.device("cpu"))


@pytest.mark.parametrize("k, group", [(256, 128), (200, 64), (96, 32)])
def test_activation_codes_and_scales_are_the_references(k, group):
    x = torch.randn(5, k, generator=torch.Generator().manual_seed(k)) * 3
    codes, scales = quant_fp8_block.quantize_groups(x, group)
    assert codes.dtype == torch.float8_e4m3fn and scales.shape == (5, -(-k // group))
    dequantized = codes.float() * scales.repeat_interleave(group, dim=1)[:, :k]
    torch.testing.assert_close(dequantized, quantize_per_token_group(x, group), rtol=0, atol=0)


def test_prepare_refuses_blocks_no_kernel_step_fits():
    qweight = torch.zeros(64, 96, dtype=torch.float8_e4m3fn)
    with pytest.raises(ConfigError, match="blocks 64x48 are 48 inputs wide; the kernel takes "
                                          "widths that are multiples of 32"):
        quant_fp8_block.GemmW8A8Fp8Block.prepare(qweight, torch.ones(1, 2), (64, 48), None)


def block_scheme(width: int) -> QuantScheme:
    return QuantScheme(OP, "float8_e4m3fn", activation="float8_e4m3fn", block=(128, width))


def record(plugin: str):
    return next(i for i in triton_impls((plugin,), priority=0) if i.op == OP)


def test_supports_takes_block_widths_of_whole_kernel_steps():
    def verdict(width):
        ctx = SelectionContext(CpuPlatform(), dtype=torch.bfloat16,
                               quant_schemes=(block_scheme(width),))
        return record("cpu").supports(ctx)

    assert verdict(128) is None and verdict(64) is None
    assert "float8_e4m3fn block 128x48 sym" in verdict(48)
    assert "multiple of 32 inputs wide" in verdict(48)


def test_supports_refuses_gpus_without_fp8_dots():
    ctx = SelectionContext(RocmPlatform(), dtype=torch.bfloat16,
                           quant_schemes=(block_scheme(128),))
    assert "NVIDIA GPU" in record("rocm").supports(ctx)


def test_a_block_scaled_checkpoint_runs_on_the_kernel(tmp_path, monkeypatch):
    """A tiny fp8-method model with 32x32 blocks: its logits with the kernel selected for
    gemm_w8a8_fp8_block are the reference plan's (q, k and v fused into one record)."""
    tests = Path(__file__).resolve().parents[1]
    monkeypatch.syspath_prepend(str(tests / "models"))
    monkeypatch.syspath_prepend(str(tests / "quantization"))
    from ct_reference import write_fp8
    from paged_runner import PagedRunner
    from tiny_models import tiny_hf_model

    path = write_fp8(tiny_hf_model(), tmp_path, (32, 32))
    torch_ops = {op: "torch" for op in OPS}
    logits = {}
    for name, backends in (("torch", torch_ops), ("triton", {**torch_ops, OP: "triton"})):
        resolution = resolve_plan(platform="cpu", dtype=torch.float32, backends=backends)
        assert resolution.plan.selected()[OP] == name
        checkpoint = load_checkpoint(path, resolution.catalog)
        runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                             checkpoint.weights())
        logits[name] = torch.stack([runner.step({0: [3, 17, 200, 45]})[0]]
                                   + [runner.step({0: [t]})[0] for t in (9, 31)])
    torch.testing.assert_close(logits["triton"], logits["torch"], atol=1e-5, rtol=1e-5)
