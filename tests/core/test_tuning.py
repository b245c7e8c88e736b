"""Selection by measurement (BASEBOARD_TUNE), on the CPU with tuning forced: a plugin
installed as a real distribution registers a fast and a slow implementation of rms_norm
and of gemm (the gemm ones each fast for one weight shape and slow for the other) on a
platform of its own, and counts the calls each receives."""

import json
import re
import os
import subprocess
import time
import sys

import pytest
import torch

from baseboard.core.errors import ConfigError
from baseboard.core.settings import read_settings
from baseboard.core.registry import Impl
from baseboard.core.tuning import TimingCache, Tuner, Workload, environment, tuning_on
from baseboard.frontend.plan import resolve_plan

PLUGIN = """
    import time

    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl
    from baseboard.testing.null import NullPlatform

    BASEBOARD_CONTRACT = 1
    CALLS = {"fastnorm": 0, "slownorm": 0, "narrowgemm": 0, "widegemm": 0}
    SLOW = 0.002  # seconds: far above the cost of a call, far below a test's budget


    def fastnorm(x, weight, eps):
        CALLS["fastnorm"] += 1
        return x


    def slownorm(x, weight, eps):
        CALLS["slownorm"] += 1
        time.sleep(SLOW)
        return x


    def gemm(name, fast_rows):
        class Gemm:
            @staticmethod
            def prepare(weight, bias):
                return weight

            @staticmethod
            def apply(state, x, out_dtype=None):
                CALLS[name] += 1
                if not fast_rows(state.shape[0]):
                    time.sleep(SLOW)
                return x
        return Gemm


    NarrowGemm = gemm("narrowgemm", lambda rows: rows <= 64)
    WideGemm = gemm("widegemm", lambda rows: rows > 64)


    @hookimpl
    def baseboard_platforms():
        return [NullPlatform(name="bench")]


    @hookimpl
    def baseboard_ops():
        return [Impl("rms_norm", name, f"benchplug:{name}", platforms=("bench",),
                     version="VERSION")
                for name in ("fastnorm", "slownorm")] + [
                Impl("gemm", name, f"benchplug:{cls}", platforms=("bench",), version="VERSION")
                for name, cls in (("narrowgemm", "NarrowGemm"), ("widegemm", "WideGemm"))]
"""
WORKLOAD = Workload(hidden_size=64, intermediate_size=128, weight_shapes=((32, 64), (256, 64)))
FORCE = {"BASEBOARD_PLATFORM": "bench", "BASEBOARD_TUNE": "force"}


def plugin_source(version: str = "1") -> str:
    return PLUGIN.replace("VERSION", version)


@pytest.fixture
def bench(site, tmp_path, monkeypatch):
    """The plugin installed, an empty timing cache; returns its module once imported."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    site.install("bench-dist", {"benchplug": "benchplug"}, {"benchplug": plugin_source()})
    return lambda: sys.modules["benchplug"]


def resolve(environ=FORCE, **arguments):
    return resolve_plan(environ=environ, workload=WORKLOAD, **arguments)


def test_the_fast_candidate_is_selected_and_the_times_are_cached(bench):
    res = resolve()
    decision = res.plan.decisions["rms_norm"]
    assert decision.selected == "fastnorm"
    assert decision.why.startswith("measured fastest (fastnorm ")
    assert set(decision.measured) == {"fastnorm", "slownorm", "torch"}
    assert decision.measured["slownorm"]["1x64+16x64"] > decision.measured["fastnorm"]["1x64+16x64"]
    assert res.plan.rms_norm is bench().fastnorm
    calls = dict(bench().CALLS)
    assert calls["fastnorm"] > 1 and calls["slownorm"] > 1

    again = resolve()
    assert again.plan.decisions["rms_norm"].selected == "fastnorm"
    assert bench().CALLS == calls  # nothing timed again


def test_without_tuning_selection_is_by_priority(bench):
    for mode in ("off", "auto"):  # auto is off on a platform whose device is the CPU
        res = resolve({**FORCE, "BASEBOARD_TUNE": mode})
        assert res.plan.decisions["rms_norm"].why.startswith("highest priority")
        assert res.plan.decisions["rms_norm"].measured == {}
    assert sum(bench().CALLS.values()) == 0


def test_an_explicit_choice_is_not_timed(bench):
    res = resolve({**FORCE, "BASEBOARD_BACKEND": "rms_norm=slownorm,gemm=widegemm"})
    assert res.plan.decisions["rms_norm"].selected == "slownorm"
    assert res.plan.decisions["rms_norm"].why == "explicit choice (BASEBOARD_BACKEND)"
    assert res.plan.decisions["gemm"].measured == {}
    assert sum(bench().CALLS.values()) == 0


def test_a_replayed_plan_is_not_timed(bench, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(resolve().plan.to_json()))
    timed = dict(bench().CALLS)
    replayed = resolve({**FORCE, "BASEBOARD_PLAN": str(plan)})
    assert replayed.plan.decisions["rms_norm"].selected == "fastnorm"
    assert replayed.plan.decisions["rms_norm"].why.startswith("explicit choice (plan file")
    assert bench().CALLS == timed


def test_each_weight_shape_gets_the_implementation_fastest_for_it(bench):
    res = resolve()
    decision = res.plan.decisions["gemm"]
    assert "32x64: narrowgemm" in decision.why and "256x64: widegemm" in decision.why
    narrow = res.plan.gemm.prepare(torch.zeros(32, 64), None)
    wide = res.plan.gemm.prepare(torch.zeros(256, 64), None)
    assert (narrow.name, wide.name) == ("narrowgemm", "widegemm")
    before = dict(bench().CALLS)
    x = torch.ones(4, 64)
    res.plan.gemm.apply(narrow, x)
    res.plan.gemm.apply(wide, x)
    after = bench().CALLS
    assert after["narrowgemm"] - before["narrowgemm"] == 1
    assert after["widegemm"] - before["widegemm"] == 1


def test_a_weight_shape_outside_the_workload_is_timed_when_prepared(bench):
    res = resolve()
    before = dict(bench().CALLS)
    state = res.plan.gemm.prepare(torch.zeros(512, 64), None)
    assert state.name == "widegemm"
    assert bench().CALLS["narrowgemm"] > before["narrowgemm"]


def test_a_new_implementation_version_is_timed_again(bench, site):
    resolve()
    (site.root / "benchplug.py").write_text(
        __import__("textwrap").dedent(plugin_source(version="2.0")))
    site.forget_modules()
    res = resolve()
    assert res.plan.decisions["rms_norm"].selected == "fastnorm"
    assert bench().CALLS["slownorm"] > 0  # a fresh module: these calls are the new timing


def test_the_cache_key_holds_the_library_versions(tmp_path):
    env = environment(torch.device("cpu"), "")
    assert env["torch"] == torch.__version__ and "triton" in env and "driver" in env
    cache = TimingCache(tmp_path, env)
    cache.times["op|x"] = 1.0
    cache.save()
    assert TimingCache(tmp_path, env).times == {"op|x": 1.0}
    assert TimingCache(tmp_path, {**env, "triton": "0.0.1"}).times == {}
    assert TimingCache(tmp_path, {**env, "driver": "another"}).times == {}


RESOLVE_IN_A_NEW_PROCESS = """
import sys
from baseboard.core.tuning import Workload
from baseboard.frontend.plan import resolve_plan
workload = Workload(64, 128, ((32, 64), (256, 64)))
res = resolve_plan(environ={"BASEBOARD_PLATFORM": "bench", "BASEBOARD_TUNE": "force"},
                   workload=workload)
print(res.plan.decisions["rms_norm"].selected, sum(sys.modules["benchplug"].CALLS.values()))
"""


def test_the_cache_survives_a_restart(bench, site, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASEBOARD_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site.root), env.get("PYTHONPATH")]))
    runs = [subprocess.run([sys.executable, "-c", RESOLVE_IN_A_NEW_PROCESS], env=env,
                           capture_output=True, text=True) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    (first, first_calls), (second, second_calls) = (r.stdout.split() for r in runs)
    assert first == second == "fastnorm"
    assert int(first_calls) > 0 and int(second_calls) == 0


def test_info_reports_the_measured_times(bench):
    from baseboard.frontend.info import collect, render

    info = collect(platform="bench", environ={"BASEBOARD_TUNE": "force"})
    rms = info["ops"]["rms_norm"]
    assert rms["selected"] == "fastnorm" and set(rms["measured"]) >= {"fastnorm", "slownorm"}
    text = render(info)
    assert "measured fastest (fastnorm" in text
    assert re.search(r"slownorm +\(benchplug\) ok, measured 1x\d+\+16x\d+ \d+\.\d us", text)


def test_the_mode_is_checked_and_auto_means_accelerators_only():
    assert read_settings({})["BASEBOARD_TUNE"] == "auto"
    with pytest.raises(ConfigError, match="BASEBOARD_TUNE='always'.*auto, off, force"):
        read_settings({"BASEBOARD_TUNE": "always"})
    assert [tuning_on("auto", d) for d in ("cpu", "cuda")] == [False, True]
    assert tuning_on("force", "cpu") and not tuning_on("off", "cuda")


def cpu_tuner(tmp_path) -> Tuner:
    return Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")),
                 Workload(64, 128, ((32, 64),)), torch.device("cpu"), torch.float32, False)


def test_a_gemm_is_timed_on_one_row_as_well_as_on_a_step(tmp_path):
    """A GEMV-like candidate fast on the decode row and a little slower on a 16-token step
    beats one that is fast on the step and slow on the row: the row counts."""
    def gemm(slow_at_one_row: float, slow_at_step: float):
        class Fake:
            @staticmethod
            def prepare(weight, bias):
                return weight

            @staticmethod
            def apply(state, x, out_dtype=None):
                time.sleep(slow_at_one_row if x.shape[0] == 1 else slow_at_step)
                return x
        return Fake

    candidates = {"rowgemm": (Impl("gemm", "rowgemm", "m:a"), gemm(0.0, 0.001)),
                  "stepgemm": (Impl("gemm", "stepgemm", "m:b"), gemm(0.004, 0.0))}
    tuner = cpu_tuner(tmp_path)
    outcome = tuner.choose("gemm", candidates)
    assert outcome.selected.name == "rowgemm"
    assert {"1x64x32", "16x64x32"} <= {key.split("|")[-2] for key in tuner.cache.times}


def test_a_function_op_is_timed_on_one_row_as_well_as_on_a_step(tmp_path):
    """One kernel fast on a decode row beats a chain of kernels that is fast on a 16-token
    step and slow on one row (silu_and_mul on the GPU: Triton against the torch reference)."""
    def norm(slow_at_one_row: float, slow_at_step: float):
        def rms_norm(x, weight, eps):
            time.sleep(slow_at_one_row if x.shape[0] == 1 else slow_at_step)
            return x
        return rms_norm

    candidates = {"onekernel": (Impl("rms_norm", "onekernel", "m:a"), norm(0.0, 0.001)),
                  "chain": (Impl("rms_norm", "chain", "m:b"), norm(0.004, 0.0))}
    tuner = cpu_tuner(tmp_path)
    assert tuner.choose("rms_norm", candidates).selected.name == "onekernel"
