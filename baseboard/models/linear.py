"""A linear layer as a prepared weight bound to the GEMM op that owns its layout."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from ..core.selection import Plan
from ..quantization.records import QuantizedWeight

Weight = Union[torch.Tensor, QuantizedWeight]


class Linear:
    """``y = linear(x)``: x [T, K] -> [T, N], through ``apply(state, x)`` of the op chosen by
    the plan. ``prepare`` ran once at load; a call costs the op's ``apply`` and nothing else,
    except for a weight stored in act-order (GPTQ ``desc_act``), whose input columns are
    gathered once per call (``input_perm``, int64 [K]) so that no kernel has to."""

    __slots__ = ("apply", "state", "input_perm")

    def __init__(self, apply: Callable[..., torch.Tensor], state: Any,
                 input_perm: Optional[torch.Tensor] = None):
        self.apply = apply
        self.state = state
        self.input_perm = input_perm

    def __call__(self, x: torch.Tensor, out_dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if self.input_perm is not None:
            x = x.index_select(-1, self.input_perm)
        return self.apply(self.state, x, out_dtype)


class NormedLinear:
    """``(y, x + residual) = layer(x, residual, norm_weight, eps)``: a dense linear layer
    whose input is fused_add_rms_norm's output, computed inside the GEMM (the gemm op's
    ``apply_add_rms_norm``, on the state of the layer's prepared ``Linear``)."""

    __slots__ = ("apply", "state")

    def __init__(self, plan: Plan, linear: Linear):
        self.apply = plan.gemm.apply_add_rms_norm
        self.state = linear.state

    def __call__(self, x: torch.Tensor, residual: torch.Tensor, norm_weight: torch.Tensor,
                 eps: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x, residual [T, K], norm_weight [K] -> ([T, N], x + residual [T, K])."""
        return self.apply(self.state, x, residual, norm_weight, eps)


def fuses(plan: Plan, replaced: str, weight: Weight) -> bool:
    """Whether a layer of ``weight`` whose input is ``replaced``'s output runs the two as
    one: where the plan fuses them (core.ops.FUSIONS), for a dense weight (the quantized
    GEMM ops offer no fused form)."""
    return plan.fused(replaced) and not isinstance(weight, QuantizedWeight)


def make_linear(plan: Plan, weight: Weight, bias: Optional[torch.Tensor],
                gated: bool = False) -> Linear:
    """Prepare a dense [N, K] weight with ``plan.gemm``, or a quantized record with the op
    it names. ``gated``: the layer is handed silu_and_mul's input [T, 2K] and applies the
    activation itself (``fuses(plan, "silu_and_mul", weight)`` must hold)."""
    if isinstance(weight, QuantizedWeight):
        impl = plan.impl(weight.op)
        return Linear(impl.apply, weight.prepare(impl, bias), weight.input_perm)
    apply = plan.gemm.apply_silu_and_mul if gated else plan.gemm.apply
    return Linear(apply, plan.gemm.prepare(weight, bias))
