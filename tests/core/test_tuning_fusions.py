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


def choose(tmp_path, silu_name: str):
    tuner = Tuner(TimingCache(tmp_path, environment(torch.device("cpu"), "")),
                  Workload(64, 64, (DOWN,), gated_shapes=(DOWN,)), torch.device("cpu"),
                  torch.float32, False)
    # "mine" is slow alone but fuses the activation; "plain" is faster alone
    candidates = {"mine": (Impl("gemm", "mine", "m:a", fuses=("silu_and_mul",)),
                           gemm(0.002, 0.0)),
                  "plain": (Impl("gemm", "plain", "m:b"), gemm(0.0005, 0.0005))}
    outcome = tuner.choose("gemm", candidates, {"silu_and_mul": (silu_name, slow_silu_and_mul)})
    return outcome, {key.split("|")[1]: key.split("|")[-2] for key in tuner.cache.times}


def test_the_fused_down_projection_is_timed_against_silu_and_mul_then_the_gemm(tmp_path):
    outcome, shapes = choose(tmp_path, "mine")
    assert outcome.selected.name == "mine"
    assert shapes["mine"].endswith("+silu_and_mul=fused")
    assert shapes["plain"].endswith("+silu_and_mul=mine")


def test_where_the_activation_runs_elsewhere_the_fusing_gemm_composes_too(tmp_path):
    """silu_and_mul served by another implementation: no fusion, so both candidates pay
    for it and the one faster alone wins."""
    outcome, shapes = choose(tmp_path, "other")
    assert outcome.selected.name == "plain"
    assert shapes["mine"].endswith("+silu_and_mul=other")


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
