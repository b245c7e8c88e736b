"""The kit checks the fused forms a GEMM offers (core.ops.FUSIONS) against the reference's
composition, so a plugin's wrong fused kernel fails the kit, not a user's generation."""

from __future__ import annotations

import pytest
import torch

from baseboard.kernels.torch.activation import silu_and_mul
from baseboard.kernels.torch.gemm import Gemm
from baseboard.testing.cases import cases_for
from baseboard.testing.checks import run_case
from baseboard.testing.compare import Mismatch


class GemmForgettingTheGate(Gemm):
    """Its fused down projection multiplies silu(gate) alone, dropping the up half."""

    @staticmethod
    def apply_silu_and_mul(state, x, out_dtype=None):
        gate = x[:, :x.shape[1] // 2]
        return Gemm.apply(state, torch.nn.functional.silu(gate), out_dtype)


class GemmWithoutTheResidual(Gemm):
    """Its fused norm forgets to add the residual before normalizing."""

    @staticmethod
    def apply_add_rms_norm(state, x, residual, weight, eps, out_dtype=None):
        from baseboard.kernels.torch.norm import rms_norm
        return Gemm.apply(state, rms_norm(x, weight, eps), out_dtype), x + residual


def float32_gemm_case():
    return next(c for c in cases_for("gemm") if c.dtype == torch.float32)


def test_a_correct_fused_form_passes():
    class Composed(Gemm):
        @staticmethod
        def apply_silu_and_mul(state, x, out_dtype=None):
            return Gemm.apply(state, silu_and_mul(x), out_dtype)
    run_case(float32_gemm_case(), Composed, Gemm, torch.device("cpu"))


@pytest.mark.parametrize("wrong,method", [(GemmForgettingTheGate, "apply_silu_and_mul"),
                                          (GemmWithoutTheResidual, "apply_add_rms_norm")])
def test_a_wrong_fused_form_fails_the_kit(wrong, method):
    with pytest.raises(Mismatch, match=f"gemm.{method}"):
        run_case(float32_gemm_case(), wrong, Gemm, torch.device("cpu"))


def test_attention_whose_forward_rotary_skips_the_rotation_fails_the_kit():
    from baseboard.kernels.torch.attention import TorchAttention

    class Unrotated(TorchAttention):
        def forward_rotary(self, positions, q, k, v, cos_sin_cache, kv_cache, metadata):
            return self.forward(q, k, v, kv_cache, metadata)

    case = next(c for c in cases_for("attention") if c.dtype == torch.float32)
    run_case(case, TorchAttention, TorchAttention, torch.device("cpu"))
    with pytest.raises(Mismatch, match="through forward_rotary"):
        run_case(case, Unrotated, TorchAttention, torch.device("cpu"))
