"""The FlagGems and Liger plugin packages (examples/baseboard-flaggems, examples/baseboard-liger),
installed into the test environment without their libraries: discovered, registered, and
rejected by selection with what is missing, as on any machine that lacks the library."""

import pytest
from packaging.requirements import Requirement

from baseboard.core.errors import SelectionError
from baseboard.core.registry import ENVIRONMENT, distribution_installed
from baseboard.core.selection import Choice, SelectionContext, decide
from baseboard.frontend.plan import resolve_plan

# plugin name -> (its distribution, its library's requirement, its ops, its platforms)
FOREIGN = {
    "flaggems": ("baseboard-flaggems", "flag-gems>=5.0.2",
                 {"rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "gemm"},
                 ("cuda", "rocm")),
    "liger": ("baseboard-liger", "liger-kernel>=0.8.5",
              {"rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul"},
              ("cuda", "rocm", "xpu")),
}


@pytest.fixture(autouse=True)
def packages_installed():
    for distribution, _, _, _ in FOREIGN.values():
        if not distribution_installed(distribution):
            pytest.fail(f"{distribution} is not installed: pip install --no-deps -e "
                        f"examples/{distribution} (make test does this)")


@pytest.fixture
def libraries_absent():
    for _, library, _, _ in FOREIGN.values():
        if distribution_installed(Requirement(library).name):
            pytest.skip(f"{library} is installed here; this test is about a machine without it")


@pytest.fixture(scope="module")
def catalog():
    return resolve_plan(environ={}).catalog


def cuda_context(catalog) -> SelectionContext:
    """A selection context on the cuda platform (absent here: decide() does not ask)."""
    import torch
    return SelectionContext(catalog.platforms["cuda"], dtype=torch.bfloat16, head_dim=128,
                            num_heads=32, num_kv_heads=8, block_size=64)


@pytest.mark.parametrize("plugin", FOREIGN)
def test_each_package_is_discovered_from_its_installed_distribution(catalog, plugin):
    distribution = FOREIGN[plugin][0]
    record = catalog.plugins.record(plugin)
    assert (record.distribution, record.version, record.status) == (distribution, "0.1.0",
                                                                    "loaded")
    assert record.module == f"{distribution.replace('-', '_')}.plugin"


@pytest.mark.parametrize("plugin", FOREIGN)
def test_each_registers_its_ops_for_its_platforms_below_the_triton_kernels(catalog, plugin):
    _, library, ops, platforms = FOREIGN[plugin]
    impls = [i for i in catalog.registry.impls.values() if i.plugin == plugin]
    assert {i.op for i in impls} == ops
    triton = {i.op: i for i in catalog.registry.impls.values()
              if i.name == "triton" and i.runs_on("cuda")}
    for impl in impls:
        assert (impl.name, impl.platforms, impl.requires) == (plugin, platforms, (library,))
        assert impl.priority < triton[impl.op].priority
        assert impl.version and impl.doc


@pytest.mark.usefixtures("libraries_absent")
@pytest.mark.parametrize("plugin", FOREIGN)
@pytest.mark.parametrize("op", ["rms_norm", "rotary_embedding", "silu_and_mul"])
def test_without_its_library_selection_rejects_it_as_the_environments_fault(catalog, plugin,
                                                                             op):
    library = FOREIGN[plugin][1]
    _, decision = decide(catalog.registry, cuda_context(catalog), op, None)
    candidate = next(c for c in decision.candidates if c.name == plugin)
    assert not candidate.accepted
    assert candidate.kind == ENVIRONMENT
    assert candidate.reason == f"needs {library} installed (pip install '{library}')"
    assert decision.selected == "triton"


@pytest.mark.usefixtures("libraries_absent")
def test_asking_for_it_without_its_library_is_an_error_saying_what_to_install(catalog):
    with pytest.raises(SelectionError, match=r"gemm='flaggems', which cannot run here: needs "
                                             r"flag-gems>=5.0.2 installed \(pip install "
                                             r"'flag-gems>=5.0.2'\)"):
        decide(catalog.registry, cuda_context(catalog), "gemm",
               Choice("flaggems", "BASEBOARD_GEMM_BACKEND"))


@pytest.mark.parametrize("plugin", FOREIGN)
def test_on_the_cpu_it_is_rejected_by_platform_not_as_a_broken_environment(plugin):
    res = resolve_plan(platform="cpu", environ={})
    candidate = next(c for c in res.plan.decisions["rms_norm"].candidates if c.name == plugin)
    assert (candidate.accepted, candidate.kind) == (False, "unsupported")
    assert "not on cpu" in candidate.reason


# FlagGems looks for its device while it is imported and raises where it finds none
FLAG_GEMS_WITHOUT_A_DEVICE = """
    raise RuntimeError("No device were detected on your machine !\\n Please check that your "
                       "driver is complete.")
"""


def test_flag_gems_installed_but_failing_to_import_is_rejected_with_its_error(catalog, site):
    from baseboard_flaggems import plugin

    site.install("flag_gems", {}, {"flag_gems": FLAG_GEMS_WITHOUT_A_DEVICE}, version="5.0.2")
    plugin.import_problem.cache_clear()
    try:
        _, decision = decide(catalog.registry, cuda_context(catalog), "silu_and_mul", None)
    finally:
        plugin.import_problem.cache_clear()
    candidate = next(c for c in decision.candidates if c.name == "flaggems")
    assert (candidate.accepted, candidate.kind) == (False, ENVIRONMENT)
    assert candidate.reason.startswith(
        "flag-gems is installed but does not import here (RuntimeError: No device were "
        "detected on your machine ! Please check that your driver is complete.)")
    assert decision.selected == "triton"
