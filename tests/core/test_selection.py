"""Selection rules, on the null platform and a registry built by hand."""

import json
import pytest
import torch

from baseboard.core.errors import ConfigError, RegistrationError, SelectionError
from baseboard.core.registry import ENVIRONMENT, Impl, Registry, Rejection
from baseboard.core.selection import (Choice, SelectionContext, parse_backend_spec, plan_warnings,
                                      select_plan)
from baseboard.kernels.torch import norm
from baseboard.builtin.plugin import reference_impls
from baseboard.plugins.manager import PluginRecord
from baseboard.testing.null import NullPlatform
from baseboard.frontend.plan import resolve_plan


def halves_only(ctx):
    return None if ctx.dtype == torch.float16 else f"needs float16, got {ctx.dtype}"


def reference_registry(*extra: Impl) -> Registry:
    registry = Registry()
    for impl in reference_impls():
        registry.add(impl, "baseboard")
    for impl in extra:
        registry.add(impl, "testplugin")
    return registry


RMS = "baseboard.kernels.torch.norm:rms_norm"
# the reference attention is not graph-safe: a plan with CUDA graphs on needs one that is
GRAPH_ATTENTION = Impl("attention", "in_graphs",
                       "baseboard.kernels.triton.attention:TritonAttention")


def test_priority_breaks_ties_and_the_trace_says_why():
    registry = reference_registry(Impl("rms_norm", "fast", RMS, priority=5))
    plan = select_plan(registry, SelectionContext(NullPlatform()), {})
    decision = plan.decisions["rms_norm"]
    assert decision.selected == "fast"
    assert "priority" in decision.why
    assert [c.name for c in decision.candidates] == ["fast", "torch"]


def test_platform_preference_beats_priority():
    platform = NullPlatform(preferences={"rms_norm": ("preferred",)})
    registry = reference_registry(Impl("rms_norm", "fast", RMS, priority=5),
                                  Impl("rms_norm", "preferred", RMS, priority=1))
    plan = select_plan(registry, SelectionContext(platform), {})
    assert plan.decisions["rms_norm"].selected == "preferred"
    assert "preferred by platform" in plan.decisions["rms_norm"].why


def test_explicit_choice_beats_preference_and_priority():
    registry = reference_registry(Impl("rms_norm", "fast", RMS, priority=5))
    plan = select_plan(registry, SelectionContext(NullPlatform()),
                       {"rms_norm": Choice("torch", "test")})
    assert plan.decisions["rms_norm"].selected == "torch"
    assert plan.decisions["rms_norm"].why == "explicit choice (test)"


def test_hard_filters_reject_with_reasons():
    registry = reference_registry(
        Impl("rms_norm", "elsewhere", RMS, platforms=("cuda",), priority=9),
        Impl("rms_norm", "needs_dist", RMS, requires=("no-such-distribution-xyz",), priority=8),
        Impl("rms_norm", "halves", RMS, supports=halves_only, priority=7),
        Impl("rms_norm", "no_graphs", RMS, cuda_graph_safe=False, priority=6), GRAPH_ATTENTION)
    ctx = SelectionContext(NullPlatform(), dtype=torch.float32, cuda_graphs=True)
    plan = select_plan(registry, ctx, {})
    reasons = {c.name: c.reason for c in plan.decisions["rms_norm"].candidates}
    assert plan.decisions["rms_norm"].selected == "torch"
    assert "not on null" in reasons["elsewhere"]
    assert "no-such-distribution-xyz" in reasons["needs_dist"]
    assert "needs float16" in reasons["halves"]
    assert "cuda_graph_safe" in reasons["no_graphs"]


def test_explicit_choice_that_cannot_run_lists_every_candidate():
    registry = reference_registry(Impl("rms_norm", "halves", RMS, supports=halves_only))
    with pytest.raises(SelectionError) as err:
        select_plan(registry, SelectionContext(NullPlatform(), dtype=torch.float32),
                    {"rms_norm": Choice("halves", "BASEBOARD_BACKEND")})
    message = str(err.value)
    assert "BASEBOARD_BACKEND" in message and "needs float16" in message
    assert "torch (baseboard): ok" in message


def test_unknown_backend_suggests_the_nearest_name():
    registry = reference_registry(Impl("rms_norm", "triton", RMS))
    with pytest.raises(SelectionError, match="'tritn'.*Did you mean 'triton'.*torch, triton"):
        select_plan(registry, SelectionContext(NullPlatform()),
                    {"rms_norm": Choice("tritn", "--backend")})


def test_calling_through_the_plan_is_calling_the_implementation():
    plan = select_plan(reference_registry(), SelectionContext(NullPlatform()), {})
    assert plan.rms_norm is norm.rms_norm
    assert plan.impl("gemm").apply is not None


def test_wrong_signature_fails_at_resolution_naming_the_plugin():
    registry = reference_registry(
        Impl("rms_norm", "bad", "baseboard.kernels.torch.activation:silu_and_mul", priority=1))
    with pytest.raises(RegistrationError, match="rms_norm=bad.*testplugin.*parameters"):
        select_plan(registry, SelectionContext(NullPlatform()), {})


def test_duplicate_registration_names_both_plugins():
    registry = reference_registry()
    with pytest.raises(RegistrationError, match="'baseboard'.*'other'"):
        registry.add(Impl("rms_norm", "torch", RMS), "other")


def test_unknown_op_in_registration():
    with pytest.raises(RegistrationError, match="unknown op 'rmsnorm'.*rms_norm"):
        Registry().add(Impl("rmsnorm", "x", RMS), "p")


def broken_library(ctx):
    return Rejection("libfast.so failed to load: undefined symbol fast_init", ENVIRONMENT)


def test_rejections_have_a_kind_environment_or_unsupported():
    registry = reference_registry(
        Impl("rms_norm", "elsewhere", RMS, platforms=("cuda",), priority=9),
        Impl("rms_norm", "needs_dist", RMS, requires=("no-such-distribution-xyz",), priority=8),
        Impl("rms_norm", "halves", RMS, supports=halves_only, priority=7),
        Impl("rms_norm", "broken", RMS, supports=broken_library, priority=6),
        Impl("rms_norm", "raises", RMS, supports=lambda ctx: 1 / 0, priority=5))
    plan = select_plan(registry, SelectionContext(NullPlatform()), {})
    kinds = {c.name: c.kind for c in plan.decisions["rms_norm"].candidates}
    assert kinds == {"elsewhere": "unsupported", "needs_dist": "environment",
                     "halves": "unsupported", "broken": "environment",
                     "raises": "environment", "torch": ""}
    broken = plan.to_json()["ops"]["rms_norm"]["candidates"][3]
    assert (broken["name"], broken["kind"]) == ("broken", "environment")
    assert broken["reason"].startswith("libfast.so failed to load")


def test_a_mode_rejection_comes_before_a_missing_distribution():
    # with CUDA graphs on, a graph-unsafe implementation would never serve: nothing to fix
    registry = reference_registry(Impl("rms_norm", "eager_only", RMS, cuda_graph_safe=False,
                                       requires=("no-such-distribution-xyz",)),
                                  GRAPH_ATTENTION)
    plan = select_plan(registry, SelectionContext(NullPlatform(), cuda_graphs=True), {})
    candidate = plan.decisions["rms_norm"].candidates[0]
    assert (candidate.name, candidate.kind) == ("eager_only", "unsupported")


def test_warnings_name_failed_plugins_and_preferences_lost_to_the_environment():
    platform = NullPlatform(preferences={"rms_norm": ("broken", "halves", "fine"),
                                         "silu_and_mul": ("missing",)})
    registry = reference_registry(
        Impl("rms_norm", "broken", RMS, supports=broken_library),
        Impl("rms_norm", "halves", RMS, supports=halves_only),
        Impl("rms_norm", "fine", RMS),
        Impl("rms_norm", "after", RMS, supports=broken_library, priority=9),
        Impl("silu_and_mul", "missing", "baseboard.kernels.torch.activation:silu_and_mul",
             requires=("no-such-distribution-xyz",)))
    plan = select_plan(registry, SelectionContext(platform, dtype=torch.float32), {})
    report = [PluginRecord("baseboard", "m", "baseboard", "0.1", "loaded"),
              PluginRecord("vendor", "vendor.plugin", "vendor-kernels", "2.0", "failed",
                           "hook baseboard_ops() raised OSError: libvendor.so missing"),
              PluginRecord("off", "off.plugin", "off-dist", "1.0", "disabled", "named")]
    assert plan_warnings(report, plan) == [
        "plugin vendor (vendor-kernels 2.0) failed: hook baseboard_ops() raised OSError: "
        "libvendor.so missing",
        "rms_norm: broken (testplugin), preferred by platform null, cannot run: libfast.so "
        "failed to load: undefined symbol fast_init; fine (testplugin) runs instead",
        "silu_and_mul: missing (testplugin), preferred by platform null, cannot run: needs "
        "no-such-distribution-xyz installed (pip install no-such-distribution-xyz); torch "
        "(baseboard) runs instead",
    ]
    # halves (unsupported: a float32 model) and after (not a preference) are not reported


def test_no_warning_when_the_preferred_implementation_runs():
    platform = NullPlatform(preferences={"rms_norm": ("fine", "broken")})
    registry = reference_registry(Impl("rms_norm", "fine", RMS),
                                  Impl("rms_norm", "broken", RMS, supports=broken_library))
    plan = select_plan(registry, SelectionContext(platform), {})
    assert plan_warnings([], plan) == []


@pytest.mark.parametrize("text,match", [
    ("gemm", "not of the form op=name"),
    ("gemm=", "not of the form op=name"),
    ("gem=torch", "unknown op 'gem'.*Did you mean 'gemm'"),
    ("gemm=a,gemm=b", "given twice"),
])
def test_malformed_backend_spec(text, match):
    with pytest.raises(ConfigError, match=match):
        parse_backend_spec(text, "BASEBOARD_BACKEND")


def test_backend_spec_parses_several_ops():
    assert parse_backend_spec(" gemm=torch , attention=triton,", "x") == {
        "gemm": "torch", "attention": "triton"}


# --- through resolve_plan(): environment, CLI and argument precedence, plans ---

def test_env_shortcut_and_spec_select():
    res = resolve_plan(environ={"BASEBOARD_BACKEND": "gemm=torch",
                           "BASEBOARD_ATTENTION_BACKEND": "torch"})
    assert res.plan.decisions["attention"].why == "explicit choice (BASEBOARD_ATTENTION_BACKEND)"
    assert res.plan.decisions["gemm"].why == "explicit choice (BASEBOARD_BACKEND)"


def test_contradicting_env_vars_are_an_error():
    with pytest.raises(ConfigError, match="contradicts"):
        resolve_plan(environ={"BASEBOARD_BACKEND": "gemm=torch", "BASEBOARD_GEMM_BACKEND": "other"})


def test_argument_beats_cli_beats_env():
    env = {"BASEBOARD_ATTENTION_BACKEND": "nonexistent-env"}
    res = resolve_plan(environ=env, cli_backends={"attention": "nonexistent-cli"},
                  backends={"attention": "torch"})
    assert res.plan.decisions["attention"].why == "explicit choice (argument backends=)"
    with pytest.raises(SelectionError, match="--backend asks for attention='nonexistent-cli'"):
        resolve_plan(environ=env, cli_backends={"attention": "nonexistent-cli"})


def test_unknown_backend_name_through_env():
    with pytest.raises(SelectionError, match="BASEBOARD_GEMM_BACKEND asks for gemm='nope'"):
        resolve_plan(environ={"BASEBOARD_GEMM_BACKEND": "nope"})


def test_plan_round_trips_through_json(tmp_path):
    first = resolve_plan(environ={})
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(first.plan.to_json()))
    replayed = resolve_plan(environ={"BASEBOARD_PLAN": str(path)})
    assert replayed.plan.selected() == first.plan.selected()
    assert all(d.why.startswith("explicit choice (plan file") for d in
               replayed.plan.decisions.values())


def test_plan_that_cannot_be_met_is_an_error(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"platform": "cpu", "selected": {"attention": "gone"}}))
    with pytest.raises(SelectionError, match="plan file .*attention='gone'"):
        resolve_plan(plan_path=str(path), environ={})


def test_corrupt_plan_file(tmp_path):
    path = tmp_path / "plan.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match="not a readable plan file.*--save-plan"):
        resolve_plan(environ={"BASEBOARD_PLAN": str(path)})
