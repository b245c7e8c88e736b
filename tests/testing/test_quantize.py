"""The kit's quantizers make codes that dequantize back to the weight they came from."""

import pytest
import torch

from baseboard.testing import quantize


@pytest.fixture
def weight():
    return torch.randn(48, 96, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("group_size", [32, 96])
def test_4bit_groups_round_trip_within_half_a_step(weight, group_size):
    qweight, scales, offsets = quantize.quantize_4bit_groups(weight, group_size)
    assert qweight.dtype == torch.uint8 and int(qweight.max()) <= 15
    assert scales.shape == offsets.shape == (48, 96 // group_size)
    step = scales.repeat_interleave(group_size, dim=1)
    dense = qweight.float() * step + offsets.repeat_interleave(group_size, dim=1)
    assert ((dense - weight).abs() <= step / 2 + 1e-6).all()
    assert len(qweight.unique()) == 16  # the whole 4-bit range is used


@pytest.mark.parametrize("group_size", [32, 96])
def test_int8_groups_round_trip_within_half_a_step(weight, group_size):
    qweight, scales = quantize.quantize_int8_groups(weight, group_size)
    assert qweight.dtype == torch.int8 and scales.shape == (48, 96 // group_size)
    step = scales.repeat_interleave(group_size, dim=1)
    assert ((qweight.float() * step - weight).abs() <= step / 2 + 1e-6).all()
    assert int(qweight.abs().max()) == 127


def test_per_channel_scales_are_one_per_output_row(weight):
    qweight, scales = quantize.quantize_int8_per_channel(weight)
    assert scales.shape == (48,)
    torch.testing.assert_close(qweight.float() * scales[:, None], weight, atol=0.02, rtol=0)
    fp8, fp8_scales = quantize.quantize_fp8_per_channel(weight)
    assert fp8.dtype == torch.float8_e4m3fn and fp8_scales.shape == (48,)
    torch.testing.assert_close(fp8.float() * fp8_scales[:, None], weight, atol=0.1, rtol=0.07)


def test_a_group_size_that_does_not_divide_k_is_refused(weight):
    with pytest.raises(ValueError, match="group_size 40 does not divide K = 96"):
        quantize.quantize_int8_groups(weight, 40)
