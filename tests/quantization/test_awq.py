"""AWQ checkpoints (AutoAWQ's GEMM layout): packing round trips in AWQ's interleaved order,
the layout read against an independent reader, a tiny model whose logits match
transformers on the dequantized weights, and the errors of a mismatched checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.models.loader import load_checkpoint
from baseboard.quantization import GroupQuantized, awq
from baseboard.quantization.rtn import quantize_rtn
from paged_runner import PagedRunner
from quantized_models import write_quantized
from reference_formats import awq_dense, transformers_dense
from tiny_models import tiny_hf_model

LAYER = "model.layers.1.mlp.up_proj"


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_pack_then_unpack_gives_the_codes_back(group_size):
    torch.manual_seed(group_size)
    q = quantize_rtn(torch.randn(40, 256), 4, group_size, sym=False)
    packed = awq.pack(q.codes, q.scales, q.zeros)
    assert packed["qweight"].shape == (256, 40 // 8)
    assert packed["qzeros"].shape == (256 // group_size, 40 // 8)
    assert packed["scales"].shape == (256 // group_size, 40)
    codes, scales, zeros = awq.unpack(packed)
    assert torch.equal(codes, q.codes) and torch.equal(zeros, q.zeros)
    assert torch.equal(scales, q.scales)
    tensors = {f"m.{p}": t for p, t in packed.items()}
    torch.testing.assert_close(awq_dense(tensors, "m"), q.dequantize(), rtol=0, atol=0)


def test_a_word_holds_its_columns_in_awq_order():
    codes = torch.arange(8, dtype=torch.uint8)[:, None]  # [N 8, K 1]: column n holds n
    packed = awq.pack(codes, torch.ones(8, 1), torch.zeros(8, 1, dtype=torch.int64))
    assert packed["qweight"].tolist() == [[0x75316420]]  # columns 0 2 4 6 1 3 5 7


def test_records_dequantize_to_what_the_independent_reader_reads(tmp_path,
                                                                 reference_resolution):
    path = write_quantized(tiny_hf_model(), tmp_path, "awq", group_size=32)
    record = dict(load_checkpoint(path, reference_resolution.catalog).weights())[
        f"{LAYER}.weight"]
    assert isinstance(record, GroupQuantized) and record.op == "gemm_w4a16"
    tensors = load_file(path / "model.safetensors")
    torch.testing.assert_close(record.dequantize(), awq_dense(tensors, LAYER), rtol=0, atol=0)


def test_awq_logits_match_transformers_on_the_dequantized_weights(tmp_path,
                                                                  reference_resolution):
    path = write_quantized(tiny_hf_model("Qwen2ForCausalLM"), tmp_path, "awq", group_size=32)
    reference = transformers_dense(path)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert (checkpoint.quant_method, checkpoint.linear_ops) == ("awq", ("gemm", "gemm_w4a16"))
    assert [s.describe() for s in checkpoint.quant_schemes] == [
        "uint4 g32 asym, 16-bit activations"]
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                         checkpoint.weights())
    tokens = [3, 17, 200, 45, 9, 31, 77, 5]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
    got = [runner.step({0: tokens[:5]})[0]] + [runner.step({0: [t]})[0] for t in tokens[5:]]
    torch.testing.assert_close(torch.stack(got), want[4:], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def awq_dir(tmp_path_factory):
    return write_quantized(tiny_hf_model(), tmp_path_factory.mktemp("awq"), "awq",
                           group_size=32)


@pytest.fixture
def awq_copy(awq_dir, tmp_path):
    return shutil.copytree(awq_dir, tmp_path / "model")


@pytest.mark.parametrize("changes, message", [
    ({"version": "gemv"}, "version 'gemv' is not supported by the awq method; supported: gemm"),
    ({"bits": 8}, "bits 8 is not supported by the awq method; supported: 4"),
    ({"zero_point": False}, "zero_point False is not supported"),
])
def test_unsupported_settings_say_what_is_supported(awq_copy, reference_resolution, changes,
                                                    message):
    config = json.loads((awq_copy / "config.json").read_text())
    config["quantization_config"].update(changes)
    (awq_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=message):
        load_checkpoint(awq_copy, reference_resolution.catalog)


def test_qzeros_that_do_not_match_qweight_name_the_tensor(awq_copy, reference_resolution):
    tensors = load_file(awq_copy / "model.safetensors")
    tensors[f"{LAYER}.qzeros"] = tensors[f"{LAYER}.qzeros"][:, :-1].contiguous()
    save_file(tensors, awq_copy / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelError, match=rf"tensor '{LAYER}.qzeros' has shape \(2, 15\), but "
                                         rf"qweight \(64, 16\) with group_size 32"):
        load_checkpoint(awq_copy, reference_resolution.catalog)
