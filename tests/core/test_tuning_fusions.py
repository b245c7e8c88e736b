"""Measured selection compares a fused form with the composition it replaces: the down
projection's candidates are timed from silu_and_mul's input on, q/k/v's and gate/up's from
fused_add_rms_norm's."""

from __future__ import annotations

import time

import torch

from baseboard.core.registry import Impl
from baseboard.core.tuning import TimingCache, Tuner, Workload, environment

DOWN = (32, 64)  # [N, K]: its input is silu_and_mul's output, [T, 2K] before it


def gemm(apply_s: float, fused_s: float):
    """A fake GEMM that sleeps ``apply_s`` per apply and ``fused_s`` per fused apply."""
    class Fake:
        fused_calls: list = []

        @staticmethod
        def prepare(weight, bias):
            return weight

        @staticmethod
        def apply(state, x, out_dtype=None):
            assert x.shape[1] == DOWN[1]
            time.sleep(apply_s)
            return x[:, :DOWN[0]]

        @staticmethod
        def apply_silu_and_mul(state, x, out_dtype=None):
            assert x.shape[1] == 2 * DOWN[1]
            Fake.fused_calls.append(x.shape)
            time.sleep(fused_s)
            return x[:, :DOWN[0]]

        @staticmethod
        def apply_add_rms_norm(state, x, residual, weight, eps, out_dtype=None):
            assert x.shape == residual.shape and x.shape[1] == DOWN[1]
            time.sleep(fused_s)
            return x[:, :DOWN[0]], x + residual
    return Fake


def slow_silu_and_mul(x):
    time.sleep(0.003)
    return x[:, :x.shape[1] // 2]


def choose(tmp_path, silu_name: str, mine_fused_s: float = 0.0):
    tuner = Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")),
                  Workload(64, 64, (DOWN,), gated_shapes=(DOWN,)), torch.device("cpu"),
                  torch.float32, False)
    # "mine" is slow alone but fuses the activation; "plain" is faster alone
    candidates = {"mine": (Impl("gemm", "mine", "m:a", fuses=("silu_and_mul",)),
                           gemm(0.002, mine_fused_s)),
                  "plain": (Impl("gemm", "plain", "m:b"), gemm(0.0005, 0.0005))}
    outcome = tuner.choose("gemm", candidates, {"silu_and_mul": (silu_name, slow_silu_and_mul)})
    shapes: dict[str, set] = {}
    for key in tuner.cache.times:
        shapes.setdefault(key.split("|")[1], set()).add(key.split("|")[-2].split("+")[1])
    return outcome, shapes


def test_the_fused_down_projection_is_timed_against_silu_and_mul_then_the_gemm(tmp_path):
    outcome, shapes = choose(tmp_path, "mine")
    assert outcome.selected.name == "mine"
    # the fusing candidate is also timed apart: a fused form is not faster everywhere
    assert shapes == {"mine": {"silu_and_mul=fused", "silu_and_mul=mine"},
                      "plain": {"silu_and_mul=mine"}}
    assert "slower than apart" not in outcome.why


def test_a_fused_form_measured_slower_than_apart_is_not_run(tmp_path):
    """"mine" wins with silu_and_mul and its GEMM apart (3.2 ms against its fused 20 ms
    and plain's 3.5 ms): its weights of that shape then run the two apart."""
    tuner = Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")),
                  Workload(64, 64, (DOWN,), gated_shapes=(DOWN,)), torch.device("cpu"),
                  torch.float32, False)
    mine = gemm(0.0002, 0.02)
    candidates = {"mine": (Impl("gemm", "mine", "m:a", fuses=("silu_and_mul",)), mine),
                  "plain": (Impl("gemm", "plain", "m:b"), gemm(0.0005, 0.0005))}
    outcome = tuner.choose("gemm", candidates, {"silu_and_mul": ("mine", slow_silu_and_mul)})
    assert outcome.selected.name == "mine"
    assert outcome.why.endswith("fused form slower than apart on 32x64")
    state = outcome.bound.prepare(torch.zeros(DOWN), None)
    assert state.name == "mine"
    calls = len(mine.fused_calls)
    assert outcome.bound.apply_silu_and_mul(state, torch.zeros(1, 2 * DOWN[1])).shape == (1, 32)
    assert len(mine.fused_calls) == calls  # composed, not fused


def test_where_the_activation_runs_elsewhere_the_fusing_gemm_composes_too(tmp_path):
    """silu_and_mul served by another implementation: no fusion, so both candidates pay
    for it and the one faster alone wins."""
    outcome, shapes = choose(tmp_path, "other")
    assert outcome.selected.name == "plain"
    assert shapes["mine"] == {"silu_and_mul=other"}


def slow_fused_add_rms_norm(x, residual, weight, eps):
    time.sleep(0.003)
    return x, x + residual


def test_a_projection_after_a_norm_is_timed_from_the_norms_input_on(tmp_path):
    tuner = Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")),
                  Workload(64, 64, (DOWN,), normed_shapes=(DOWN,)), torch.device("cpu"),
                  torch.float32, False)
    candidates = {"mine": (Impl("gemm", "mine", "m:a", fuses=("fused_add_rms_norm",)),
                           gemm(0.002, 0.0)),
                  "plain": (Impl("gemm", "plain", "m:b"), gemm(0.0005, 0.0005))}
    outcome = tuner.choose("gemm", candidates,
                           {"fused_add_rms_norm": ("mine", slow_fused_add_rms_norm)})
    assert outcome.selected.name == "mine"
    shapes = {key.split("|")[1]: key.split("|")[-2] for key in tuner.cache.times}
    assert shapes == {"mine": "16x64x32+fused_add_rms_norm=fused",
                      "plain": "16x64x32+fused_add_rms_norm=mine"}


class GemmFastOnDownFused:
    """Slow on every weight, but its fused down projection costs nothing."""

    @staticmethod
    def prepare(weight, bias):
        return weight

    @staticmethod
    def apply(state, x, out_dtype=None):
        time.sleep(0.002)
        return x @ state.t()

    @staticmethod
    def apply_silu_and_mul(state, x, out_dtype=None):
        return x[:, :state.shape[1]] @ state.t()


class GemmSlowOnDown:
    """Fast but on the down projection's input width (64)."""

    @staticmethod
    def prepare(weight, bias):
        return weight

    @staticmethod
    def apply(state, x, out_dtype=None):
        if x.shape[1] == 64:
            time.sleep(0.002)
        return x @ state.t()


def test_a_fusion_is_used_where_a_shape_winner_offers_it(tmp_path):
    """Per-shape winners (the fusing GEMM on the down projection only): the plan fuses, and
    the down projection's prepared state runs the fused form, whichever candidate is the
    fastest over all shapes."""
    from baseboard.builtin import plugin as core_plugin
    from baseboard.core.registry import Registry
    from baseboard.core.selection import Choice, SelectionContext, select_plan
    from baseboard.platforms.cpu.platform import CpuPlatform

    registry = Registry()
    for impl in core_plugin.baseboard_ops():
        registry.add(impl, "baseboard")
    registry.add(Impl("gemm", "fuser", f"{__name__}:GemmFastOnDownFused",
                      fuses=("silu_and_mul",)), "test")
    registry.add(Impl("gemm", "quick", f"{__name__}:GemmSlowOnDown"), "test")
    registry.add(Impl("silu_and_mul", "fuser", "baseboard.kernels.torch.activation:silu_and_mul"),
                 "test")
    down, other = (32, 64), (48, 32)
    workload = Workload(32, 64, (down, other), gated_shapes=(down,))
    tuner = Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")), workload,
                  torch.device("cpu"), torch.float32, False)
    plan = select_plan(registry, SelectionContext(CpuPlatform()),
                       {"silu_and_mul": Choice("fuser", "test")}, tuner)
    assert plan.decisions["gemm"].selected != "fuser"  # slow over all
    assert plan.fused("silu_and_mul")
    state = plan.gemm.prepare(torch.randn(down), None)
    assert state.name == "fuser"
    assert state.fused["silu_and_mul"] == GemmFastOnDownFused.apply_silu_and_mul
    assert plan.gemm.prepare(torch.randn(other), None).name != "fuser"
