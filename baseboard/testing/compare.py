"""Comparing an implementation's output with the reference's, with tolerances per dtype."""

from __future__ import annotations

from typing import Any

import torch

from .cases import Case, dtype_name

# (atol, rtol) for outputs of order 1. Loose enough for a different summation order,
# TF32 or a fused kernel that rounds once less; a wrong kernel is off by far more.
TOLERANCES = {
    torch.float32: (2e-3, 2e-3),
    torch.bfloat16: (2e-2, 2e-2),
    torch.float16: (5e-3, 5e-3),
}
# Quantizing activations to fp8 may round one element to the neighbouring code
# (a 1/8 step) when an implementation scales by 1/scale instead of dividing.
OP_TOLERANCE_FLOOR = {"gemm_w8a8_fp8": (3e-2, 3e-2), "gemm_w8a8_fp8_block": (3e-2, 3e-2)}


class Mismatch(AssertionError):
    """An implementation's output differs from the reference's beyond the tolerance."""


def describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {list(value.shape)} {dtype_name(value.dtype)} tensor"
    return f"a {type(value).__name__}"


def tolerance(case: Case) -> tuple[float, float]:
    atol, rtol = TOLERANCES[case.dtype]
    floor_atol, floor_rtol = OP_TOLERANCE_FLOOR.get(case.op, (0.0, 0.0))
    return max(atol, floor_atol), max(rtol, floor_rtol)


def assert_close(what: str, got: Any, expected: torch.Tensor, case: Case) -> None:
    """Same shape, same dtype, values within the case's tolerance."""
    if not isinstance(got, torch.Tensor):
        raise Mismatch(f"{what} returned {describe(got)}; the reference returns "
                       f"{describe(expected)}")
    if got.shape != expected.shape or got.dtype != expected.dtype:
        raise Mismatch(f"{what} returned {describe(got)}; the reference returns "
                       f"{describe(expected)}")
    atol, rtol = tolerance(case)
    actual, wanted = got.detach().float().cpu(), expected.detach().float().cpu()
    if not torch.isfinite(actual).all() and torch.isfinite(wanted).all():
        raise Mismatch(f"{what} [{dtype_name(case.dtype)}]: output has "
                       f"{int((~torch.isfinite(actual)).sum())} non-finite values; the "
                       f"reference has none")
    error = (actual - wanted).abs()
    allowed = atol + rtol * wanted.abs()
    bad = error > allowed
    if bad.any():
        worst = int(torch.argmax(error - allowed))
        index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), actual.shape))
        raise Mismatch(
            f"{what} [{dtype_name(case.dtype)}]: {int(bad.sum())} of {bad.numel()} values "
            f"differ from the reference by more than atol={atol} + rtol={rtol} * |reference|; "
            f"max abs error {float(error.max()):.3g}; worst at index {index}: "
            f"got {float(actual[index]):.6g}, reference {float(wanted[index]):.6g}")


def compare(what: str, got: Any, expected: Any, case: Case) -> None:
    """Compare a tensor or a tuple of tensors (ops such as fused_add_rms_norm return two)."""
    if isinstance(expected, tuple):
        if not isinstance(got, (tuple, list)) or len(got) != len(expected):
            raise Mismatch(f"{what} returned {describe(got)}; the reference returns a tuple "
                           f"of {len(expected)} tensors")
        for i, (one, want) in enumerate(zip(got, expected)):
            assert_close(f"{what} output {i}", one, want, case)
    else:
        assert_close(what, got, expected, case)


def assert_not_rounded(what: str, got: torch.Tensor, dtype: torch.dtype) -> None:
    """A float32 result asked of an op whose inputs are ``dtype`` must be the float32
    computation, not a ``dtype`` result upcast. An upcast value is exactly representable
    in ``dtype``; a float32 sum of products is so by chance only (about 1 in 2^16 for
    bfloat16, 2^13 for float16), so a result mostly made of such values was rounded."""
    if dtype == torch.float32:
        return
    values = got.detach().float().cpu()
    exact = int((values.to(dtype).float() == values).sum())
    if exact * 2 > values.numel():
        raise Mismatch(
            f"{what} [{dtype_name(dtype)}]: {exact} of {values.numel()} float32 values are "
            f"exactly representable in {dtype_name(dtype)}, so the result was computed in "
            f"{dtype_name(dtype)} and upcast. out_dtype=torch.float32 asks for the float32 "
            f"accumulation itself (docs/plugins.md), so that close logits do not tie.")
