"""The Liger plugin with Liger itself, on the CPU: Liger's rotary kernel through the plugin's
adapter against the torch reference, in Triton's interpreter, on the conformance kit's
rotary grid.

Liger is not installed in the test environment (the plugin's own tests are about a machine
without it); make puts it aside in .venv/foreign/liger and this module puts that on
sys.path while its tests run. Only the rotary kernel runs in the interpreter: Liger's norms
and SwiGLU call ``.to()`` on float arguments, which the interpreter passes as Python floats.
TRITON_INTERPRET is set while this module is collected, before triton is imported
(tests/conftest.py).
"""

import os
import sys
from pathlib import Path

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs Liger for real: benchmarks/foreign_ops.sh
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

from baseboard.core.selection import SelectionContext, bind, decide  # noqa: E402
from baseboard.frontend.plan import resolve_plan  # noqa: E402
from baseboard.testing.cases import cases_for  # noqa: E402
from baseboard.testing.checks import run_case  # noqa: E402

LIGER_SITE = Path(sys.prefix, "foreign", "liger")

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]


@pytest.fixture(scope="module")
def liger_on_path():
    if not (LIGER_SITE / "liger_kernel").is_dir():
        pytest.fail(f"liger-kernel is not in {LIGER_SITE}: pip install --no-deps --target "
                    f"{LIGER_SITE} liger-kernel==0.8.5 (make test does this)", pytrace=False)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(LIGER_SITE))
        from baseboard_liger import plugin
        plugin.import_problem.cache_clear()
        yield
        plugin.import_problem.cache_clear()


@pytest.fixture(scope="module")
def catalog(liger_on_path):
    return resolve_plan(environ={}).catalog


@pytest.fixture(scope="module")
def rotary(catalog):
    """(Liger's rotary through the plugin, signature-checked as a plan binds it; the reference)"""
    registry = catalog.registry
    impl = next(i for i in registry.for_op("rotary_embedding") if i.name == "liger")
    bound = bind(impl, registry.reference("rotary_embedding"))
    from liger_kernel.ops import rope
    if type(rope._triton_rope).__name__ != "InterpretedFunction":
        pytest.fail("liger_kernel was imported (by a test run earlier) before TRITON_INTERPRET=1 "
                    "was set, so its kernels cannot run in the interpreter", pytrace=False)
    return bound, registry.reference("rotary_embedding").load()


def test_with_liger_importable_selection_accepts_it_below_the_triton_kernels(catalog):
    ctx = SelectionContext(catalog.platforms["cuda"], dtype=torch.bfloat16, head_dim=128)
    _, decision = decide(catalog.registry, ctx, "rms_norm", None)
    candidate = next(c for c in decision.candidates if c.name == "liger")
    assert (candidate.accepted, candidate.reason) == (True, "")
    assert decision.selected == "triton"  # the cuda platform prefers it; Liger ranks below


@pytest.mark.parametrize("case", cases_for("rotary_embedding"), ids=lambda case: case.id)
def test_liger_rotary_matches_the_reference_on_the_kits_grid(rotary, case):
    impl, reference = rotary
    run_case(case, impl, reference, torch.device("cpu"))
