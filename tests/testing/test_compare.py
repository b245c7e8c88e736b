"""The comparison the kit applies to every output."""

import pytest
import torch

from baseboard.testing.cases import Case
from baseboard.testing.compare import Mismatch, compare

CASE = Case("gemm", "bfloat16-K64-N128", torch.bfloat16)


def test_outputs_within_the_dtype_tolerance_pass():
    expected = torch.linspace(-3, 3, 64).to(torch.bfloat16)
    compare("gemm", expected + 0.01, expected, CASE)


def test_one_wrong_value_fails_naming_where_and_by_how_much():
    expected = torch.zeros(4, 8, dtype=torch.bfloat16)
    got = expected.clone()
    got[2, 5] = 0.5
    with pytest.raises(Mismatch, match=r"1 of 32 values differ .* worst at index \(2, 5\): "
                                       r"got 0.5, reference 0"):
        compare("gemm", got, expected, CASE)


@pytest.mark.parametrize("got, message", [
    (torch.zeros(4, 8, dtype=torch.float32), "returned a \\[4, 8\\] float32 tensor; the "
                                             "reference returns a \\[4, 8\\] bfloat16 tensor"),
    (torch.zeros(8, 4, dtype=torch.bfloat16), "returned a \\[8, 4\\] bfloat16 tensor"),
    (torch.full((4, 8), float("nan"), dtype=torch.bfloat16), "32 non-finite values"),
    ([1, 2], "returned a list"),
])
def test_wrong_kinds_of_output_fail(got, message):
    with pytest.raises(Mismatch, match=message):
        compare("gemm", got, torch.zeros(4, 8, dtype=torch.bfloat16), CASE)


def test_tuples_are_compared_element_by_element():
    pair = (torch.zeros(2, 3), torch.ones(2, 3))
    compare("fused_add_rms_norm", pair, pair, CASE)
    with pytest.raises(Mismatch, match="output 1"):
        compare("fused_add_rms_norm", (pair[0], pair[0]), pair, Case("x", "float32", torch.float32))
    with pytest.raises(Mismatch, match="a tuple of 2 tensors"):
        compare("fused_add_rms_norm", pair[0], pair, CASE)
