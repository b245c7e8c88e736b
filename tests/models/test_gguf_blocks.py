"""Our GGML block decoding against gguf.quants.dequantize, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from baseboard.quantization import GroupQuantized
from baseboard.quantization.gguf.blocks import decode, decode_quantized

gguf = pytest.importorskip("gguf")  # optional: the gguf extra installs it

BYTES_PER_BLOCK = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


def random_blocks(type_name: str, rows: int, blocks: int, rng) -> np.ndarray:
    """Raw blocks with random codes and random finite float16 scales: [rows, blocks * bytes]."""
    raw = rng.integers(0, 256, size=(rows, blocks, BYTES_PER_BLOCK[type_name]), dtype=np.uint8)
    num_scales = 2 if type_name == "Q4_1" else 1
    scales = rng.normal(0, 0.05, size=(rows, blocks, num_scales)).astype(np.float16)
    raw[..., :2 * num_scales] = scales.view(np.uint8).reshape(rows, blocks, 2 * num_scales)
    return raw.reshape(rows, -1)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0"])
def test_random_blocks_decode_exactly_as_gguf_dequantizes(type_name):
    rng = np.random.default_rng(0)
    data = random_blocks(type_name, rows=24, blocks=5, rng=rng)
    record = decode_quantized(data, type_name)
    want = gguf.quants.dequantize(data, gguf.GGMLQuantizationType[type_name])
    assert record.shape == (24, 5 * 32)
    assert record.group_size == 32 and record.scales.shape == (24, 5)
    assert record.op == ("gemm_w8a16" if type_name == "Q8_0" else "gemm_w4a16")
    if record.op == "gemm_w4a16":
        assert record.qweight.dtype == torch.uint8 and int(record.qweight.max()) <= 15
    else:
        assert record.qweight.dtype == torch.int8 and record.offsets is None
    torch.testing.assert_close(record.dequantize(), torch.from_numpy(want), atol=0, rtol=0)


@pytest.mark.parametrize("type_name", ["Q4_0", "Q4_1", "Q8_0"])
def test_quantized_weights_round_trip_through_gguf_quantize(type_name):
    weights = np.random.default_rng(1).normal(size=(8, 96)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[type_name]
    data = gguf.quants.quantize(weights, qtype)
    record = decode_quantized(data, type_name)
    want = torch.from_numpy(gguf.quants.dequantize(data, qtype))
    torch.testing.assert_close(record.dequantize(), want, atol=0, rtol=0)
    # and the codes are a close approximation of the original weights
    assert (record.dequantize() - torch.from_numpy(weights)).abs().max() < 0.4


def test_records_run_through_the_reference_gemm_ops(resolution):
    rng = np.random.default_rng(2)
    x = torch.randn(3, 64)
    for type_name in ["Q4_0", "Q4_1", "Q8_0"]:
        record = decode_quantized(random_blocks(type_name, rows=16, blocks=2, rng=rng), type_name)
        impl = resolution.plan.impl(record.op)
        y = impl.apply(record.prepare(impl, None), x)
        torch.testing.assert_close(y, x @ record.dequantize().T)


def test_the_reference_gemms_keep_the_record_they_are_given(resolution):
    # one group-quantized record: the loader's and the reference GEMM's prepared state
    blocks = random_blocks("Q4_1", rows=8, blocks=2, rng=np.random.default_rng(4))
    record = decode_quantized(blocks, "Q4_1")
    state = record.prepare(resolution.plan.impl(record.op), None)
    assert isinstance(state.weight, GroupQuantized) and state.weight.qweight is record.qweight
    torch.testing.assert_close(record.dequantize(torch.bfloat16),
                               record.dequantize().to(torch.bfloat16), atol=0, rtol=0)


def test_bf16_and_f16_decode_to_their_dtypes():
    values = torch.randn(4, 8)
    as_bf16_bytes = values.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint8)
    bf16 = decode(as_bf16_bytes.reshape(-1), "BF16", (4, 8))
    assert bf16.dtype == torch.bfloat16 and bf16.shape == (4, 8)
    torch.testing.assert_close(bf16, values.to(torch.bfloat16), atol=0, rtol=0)
    f16 = decode(values.half().numpy().view(np.uint8).reshape(-1), "F16", (4, 8))
    assert f16.dtype == torch.float16
    torch.testing.assert_close(f16, values.half(), atol=0, rtol=0)


@pytest.mark.parametrize("type_name", ["Q5_0", "Q5_1"])
def test_types_without_a_gemm_op_decode_dense_as_gguf_dequantizes(type_name):
    weights = np.random.default_rng(3).normal(size=(4, 256)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[type_name]
    data = gguf.quants.quantize(weights, qtype)
    dense = decode(data.reshape(-1), type_name, (4, 256))
    assert dense.dtype == torch.float32 and dense.shape == (4, 256)
    torch.testing.assert_close(dense, torch.from_numpy(gguf.quants.dequantize(data, qtype)),
                               atol=0, rtol=0)


@pytest.mark.parametrize("type_name", ["Q8_0", "Q4_1", "Q5_0"])
def test_a_quantized_vector_decodes_dense_as_gguf_dequantizes(type_name):
    # a vector is one row of blocks; its bytes alone say how long that row is
    weights = np.random.default_rng(5).normal(size=96).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[type_name]
    data = gguf.quants.quantize(weights, qtype)
    dense = decode(data.reshape(-1), type_name, (96,))
    assert dense.dtype == torch.float32 and dense.shape == (96,)
    torch.testing.assert_close(dense, torch.from_numpy(gguf.quants.dequantize(data, qtype)),
                               atol=0, rtol=0)
