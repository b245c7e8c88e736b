"""A linear layer as a prepared weight bound to the GEMM op that owns its layout."""

from __future__ import annotations

from typing import Any, Callable, Optional, Union

import torch

from ..core.selection import Plan
from ..quantization.records import GroupQuantized

Weight = Union[torch.Tensor, GroupQuantized]


class Linear:
    """``y = linear(x)``: x [T, K] -> [T, N], through ``apply(state, x)`` of the op chosen by
    the plan. ``prepare`` ran once at load; a call costs the op's ``apply`` and nothing else."""

    __slots__ = ("apply", "state")

    def __init__(self, apply: Callable[[Any, torch.Tensor], torch.Tensor], state: Any):
        self.apply = apply
        self.state = state

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply(self.state, x)


def make_linear(plan: Plan, weight: Weight, bias: Optional[torch.Tensor]) -> Linear:
    """Prepare a dense [N, K] weight with ``plan.gemm``, or a quantized record with the op
    it names."""
    if isinstance(weight, GroupQuantized):
        impl = plan.impl(weight.op)
        return Linear(impl.apply, weight.prepare(impl, bias))
    return Linear(plan.gemm.apply, plan.gemm.prepare(weight, bias))
