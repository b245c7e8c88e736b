"""The example third-party package (examples/baseboard-example-plugin), installed with pip
into the test environment: discovered, selected, refused and blocked like any plugin."""

import pytest
import torch
import torch.nn.functional as F

from baseboard.core.errors import PlatformError, PluginError, SelectionError
from baseboard.core.registry import distribution_installed
from baseboard.core.selection import SelectionContext, decide
from baseboard.frontend.plan import resolve_plan
from baseboard.testing.sandbox import run_pytest

GEMM = "transposed"


@pytest.fixture(autouse=True)
def example_installed():
    if not distribution_installed("baseboard-example-plugin"):
        pytest.fail("the example plugin is not installed: pip install --no-deps -e "
                    "examples/baseboard-example-plugin (make test does this)")


def test_the_example_is_discovered_from_its_installed_distribution():
    record = resolve_plan(environ={}).catalog.plugins.record("example")
    assert (record.distribution, record.version, record.status) == (
        "baseboard-example-plugin", "0.1.0", "loaded")
    assert record.module == "baseboard_example.plugin"


def test_its_platform_prefers_its_gemm_and_the_trace_says_why():
    res = resolve_plan(platform="sim", environ={})
    decision = res.plan.decisions["gemm"]
    assert (decision.selected, decision.plugin) == (GEMM, "example")
    assert decision.why == "preferred by platform sim"
    accepted = [c.name for c in decision.candidates if c.accepted]
    assert accepted[0] == GEMM and "torch" in accepted
    assert res.plan.decisions["rms_norm"].selected == "torch"


def test_its_platform_sets_the_default_block_size_and_the_user_overrides_it():
    assert resolve_plan(platform="sim", environ={}).context.block_size == 32
    assert resolve_plan(platform="sim", block_size=16, environ={}).context.block_size == 16
    assert resolve_plan(platform="cpu", environ={}).context.block_size == 16


def test_it_wins_by_priority_over_the_reference():
    catalog = resolve_plan(environ={}).catalog
    plain_sim = type(catalog.platforms["sim"])(preferences={})
    _, decision = decide(catalog.registry, SelectionContext(plain_sim), "gemm", None)
    assert decision.selected == GEMM
    assert decision.why == "highest priority (5) among accepted candidates"


def test_the_simulated_platform_is_present_but_never_detected_over_cpu():
    res = resolve_plan(environ={})
    assert res.platform.detections["sim"].present
    assert res.platform.platform.name != "sim"


@pytest.mark.parametrize("environ, source", [
    ({"BASEBOARD_GEMM_BACKEND": GEMM}, "BASEBOARD_GEMM_BACKEND"),
    ({"BASEBOARD_BACKEND": f"gemm={GEMM}"}, "BASEBOARD_BACKEND"),
])
def test_users_select_it_on_cpu_by_environment(environ, source):
    res = resolve_plan(platform="cpu", dtype=torch.float32, environ=environ)
    decision = res.plan.decisions["gemm"]
    assert (decision.selected, decision.why) == (GEMM, f"explicit choice ({source})")
    weight, bias, x = torch.randn(24, 40), torch.randn(24), torch.randn(3, 40)
    gemm = res.plan.gemm
    torch.testing.assert_close(gemm.apply(gemm.prepare(weight, bias), x), F.linear(x, weight, bias))


def test_asked_for_where_supports_rejects_it_is_an_error_listing_candidates():
    with pytest.raises(SelectionError, match=r"gemm='transposed', which cannot run here: dtype "
                                             r"torch.float16 is not supported.*Candidates: "
                                             r".*torch \(baseboard\): ok"):
        resolve_plan(platform="cpu", dtype=torch.float16, environ={"BASEBOARD_GEMM_BACKEND": GEMM})
    decision = resolve_plan(platform="cpu", dtype=torch.float16, environ={}).plan.decisions["gemm"]
    assert decision.selected == "torch"


NULL_PLATFORM = """
    from baseboard.plugins import hookimpl
    from baseboard.testing.null import NullPlatform

    BASEBOARD_CONTRACT = 1


    @hookimpl
    def baseboard_platforms():
        return [NullPlatform()]
"""


def test_asked_for_on_a_platform_it_does_not_support_is_an_error_listing_candidates(site):
    site.install("null-dist", {"null": "null_plugin"}, {"null_plugin": NULL_PLATFORM})
    with pytest.raises(SelectionError, match=r"gemm='transposed', which cannot run here: runs on "
                                             r"cpu, sim, not on null\. Candidates: "):
        resolve_plan(platform="null", environ={"BASEBOARD_GEMM_BACKEND": GEMM})
    assert resolve_plan(platform="null", environ={}).plan.decisions["gemm"].selected == "torch"


def test_disabled_it_registers_nothing_and_asking_for_it_says_so():
    disabled = {"BASEBOARD_DISABLE_PLUGINS": "example"}
    res = resolve_plan(environ=disabled)
    assert res.catalog.plugins.record("example").status == "disabled"
    assert "sim" not in res.catalog.platforms
    assert res.plan.decisions["gemm"].selected != GEMM
    with pytest.raises(SelectionError, match="gemm='transposed', which no loaded plugin "
                                             "registers.*disabled registers nothing"):
        resolve_plan(environ={**disabled, "BASEBOARD_GEMM_BACKEND": GEMM})
    with pytest.raises(PlatformError, match="platform 'sim', which no loaded plugin provides"):
        resolve_plan(platform="sim", environ=disabled)


def test_the_allow_list_loads_only_the_named_plugins():
    res = resolve_plan(environ={"BASEBOARD_PLUGINS": "cpu"})
    assert res.catalog.plugins.record("example").status == "not-allowed"
    assert res.plan.decisions["gemm"].selected != GEMM
    res = resolve_plan(environ={"BASEBOARD_PLUGINS": "cpu,example"})
    assert res.catalog.plugins.record("example").status == "loaded"
    assert res.catalog.plugins.record("cuda").status == "not-allowed"


@pytest.mark.parametrize("variable", ["BASEBOARD_PLUGINS", "BASEBOARD_DISABLE_PLUGINS"])
def test_a_misspelt_plugin_name_suggests_the_example(variable):
    with pytest.raises(PluginError, match="'exampel', which is not installed. "
                                          "Did you mean 'example'?"):
        resolve_plan(environ={variable: "exampel"})


@pytest.mark.parametrize("platform", ["cpu", "sim"])
def test_the_example_passes_the_conformance_kit(tmp_path, platform):
    run = run_pytest("--baseboard-plugin", "example", "--baseboard-platform", platform,
                     cwd=tmp_path)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.count("passed") > 10
    # float16 cases are skipped with the reason supports(ctx) gives
    assert run.count("skipped") > 0
    assert "gemm=transposed: rejects this case: dtype torch.float16 is not supported" in run.stdout
