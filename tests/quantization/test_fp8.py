"""The fp8 method (quant_method "fp8"), its records and the block-scaled FP8 GEMM
reference."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.kernels.torch.quant_gemm import FP8_MAX, GemmW8A8Fp8Block
from baseboard.models.loader import load_checkpoint
from baseboard.quantization.records import BlockQuantized, ChannelQuantized
from baseboard.testing.quantize import quantize_fp8_blocks
from ct_reference import dense_state_dict, transformers_dense, write_fp8
from paged_runner import PagedRunner
from tiny_models import tiny_hf_model

LAYER = "model.layers.1.mlp.down_proj"


def blockwise_product(x: torch.Tensor, qweight: torch.Tensor, scales: torch.Tensor,
                      block: tuple[int, int]) -> torch.Tensor:
    """x @ w.T the way DeepSeek-V3's kernel computes it: per K block, quantize each token's
    slice of x to fp8, multiply the codes, scale by the two scales, accumulate."""
    bn, bk = block
    n, k = qweight.shape
    out = torch.zeros(x.shape[0], n, dtype=torch.float64)
    for kb in range(0, k, bk):
        xs = x[:, kb:kb + bk].double()
        x_scale = xs.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / FP8_MAX
        xq = (xs / x_scale).clamp(-FP8_MAX, FP8_MAX).float().to(torch.float8_e4m3fn).double()
        for nb in range(0, n, bn):
            wq = qweight[nb:nb + bn, kb:kb + bk].double()
            out[:, nb:nb + bn] += (xq @ wq.T) * x_scale * float(scales[nb // bn, kb // bk])
    return out


@pytest.mark.parametrize("k, n, block", [(256, 384, (128, 128)), (200, 70, (64, 32))])
def test_block_reference_matches_a_blockwise_accumulation(k, n, block):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(n, k, generator=gen) / k ** 0.5
    x = torch.randn(5, k, generator=gen)
    qweight, scales = quantize_fp8_blocks(weight, block)
    state = GemmW8A8Fp8Block.prepare(qweight, scales, block, None)
    got = GemmW8A8Fp8Block.apply(state, x)
    want = blockwise_product(x, qweight, scales, block)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    # and the blocks did matter: one scale for the whole weight gives another answer
    assert not torch.allclose(got, x @ (qweight.float() * scales.mean()).T, atol=1e-3)


def test_block_reference_refuses_scales_of_the_wrong_shape():
    qweight = torch.zeros(256, 256, dtype=torch.float8_e4m3fn)
    with pytest.raises(ValueError, match=r"expected \(2, 2\)"):
        GemmW8A8Fp8Block.prepare(qweight, torch.ones(2, 3), (128, 128), None)


def test_block_records_concatenate_only_on_whole_blocks_of_rows():
    from baseboard.quantization.records import BlockQuantized, can_concat, concat_rows

    gen = torch.Generator().manual_seed(1)

    def record(n):
        qweight, scales = quantize_fp8_blocks(torch.randn(n, 96, generator=gen), (32, 32))
        return BlockQuantized("gemm_w8a8_fp8_block", qweight, scales, (32, 32))

    whole = [record(64), record(32), record(40)]  # only the last ends inside a block
    assert can_concat(whole)
    joined = concat_rows(whole)
    torch.testing.assert_close(joined.dequantize(),
                               torch.cat([r.dequantize() for r in whole]), rtol=0, atol=0)
    assert not can_concat([record(40), record(32)])


def test_channel_records_concatenate_and_dequantize_per_row():
    from baseboard.quantization.records import ChannelQuantized, can_concat, concat_rows

    codes = torch.tensor([[1, -2], [3, 4]], dtype=torch.int8)
    a = ChannelQuantized("gemm_w8a8_int8", codes, torch.tensor([0.5, 2.0]))
    b = ChannelQuantized("gemm_w8a8_int8", codes[:1], torch.tensor([0.25]))
    assert can_concat([a, b])
    assert not can_concat([a, ChannelQuantized("gemm_w8a8_fp8", codes.float().to(
        torch.float8_e4m3fn), torch.ones(2))])
    assert concat_rows([a, b]).dequantize().tolist() == [[0.5, -1.0], [6.0, 8.0], [0.25, -0.5]]


# --- the fp8 method ----------------------------------------------------------------------

@pytest.mark.parametrize("block, record, scale_shape", [
    ((32, 32), BlockQuantized, (2, 4)), ((128, 128), BlockQuantized, (1, 1)),
    (None, ChannelQuantized, (64,))])
def test_layers_load_as_the_records_of_their_scales(tmp_path, reference_resolution, block,
                                                    record, scale_shape):
    path = write_fp8(tiny_hf_model(), tmp_path, block)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert checkpoint.quant_method == "fp8"
    weight = dict(checkpoint.weights())[f"{LAYER}.weight"]  # [64, 128]
    assert isinstance(weight, record) and tuple(weight.scales.shape) == scale_shape
    torch.testing.assert_close(weight.dequantize(), dense_state_dict(path)[f"{LAYER}.weight"],
                               rtol=0, atol=0)


def test_a_per_tensor_scale_is_repeated_per_row(tmp_path, reference_resolution):
    path = write_fp8(tiny_hf_model(), tmp_path, None)
    tensors = load_file(path / "model.safetensors")
    tensors[f"{LAYER}.weight_scale"] = torch.tensor(0.003)  # a scalar, as vLLM writes it
    save_file(tensors, path / "model.safetensors")
    weight = dict(load_checkpoint(path, reference_resolution.catalog).weights())[
        f"{LAYER}.weight"]
    assert weight.scales.tolist() == [pytest.approx(0.003)] * 64
    assert weight.scales.dtype == torch.float32


@pytest.mark.parametrize("block, activations", [
    pytest.param((32, 32), "fp8/32", id="blocks-32x32"),
    pytest.param(None, "fp8", id="per-channel")])
def test_tiny_model_matches_transformers_on_the_dequantized_weights(
        tmp_path, reference_resolution, block, activations):
    """The reference quantizes its linear inputs as the fp8 layers do: per token, in
    groups of the block's width for block scales."""
    path = write_fp8(tiny_hf_model(), tmp_path, block)
    reference = transformers_dense(path, activations)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    op = "gemm_w8a8_fp8_block" if block else "gemm_w8a8_fp8"
    assert set(checkpoint.linear_ops) == {"gemm", op}
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                         checkpoint.weights())
    tokens = [3, 17, 200, 45, 9, 31, 77, 5]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
        greedy = reference.generate(torch.tensor([tokens[:4]]), max_new_tokens=8,
                                    do_sample=False)[0, 4:].tolist()
    got = [runner.step({0: tokens[:5]})[0]] + [runner.step({0: [t]})[0] for t in tokens[5:]]
    torch.testing.assert_close(torch.stack(got), want[4:], atol=1e-4, rtol=1e-4)
    fresh = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                        checkpoint.weights())
    assert fresh.greedy(tokens[:4], 8) == greedy


@pytest.fixture(scope="module")
def block_dir(tmp_path_factory):
    return write_fp8(tiny_hf_model(), tmp_path_factory.mktemp("fp8"), (32, 32))


@pytest.fixture
def block_copy(block_dir, tmp_path):
    return shutil.copytree(block_dir, tmp_path / "model")


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"].update(changes)
    (path / "config.json").write_text(json.dumps(config))


def edit_tensors(path, change):
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


@pytest.mark.parametrize("changes, message", [
    ({"activation_scheme": "static"}, "activation_scheme 'static' is not supported; supported: "
                                      "float8 e4m3 weights"),
    ({"fmt": "e5m2"}, "fmt 'e5m2' is not supported"),
    ({"weight_block_size": [128]}, r"weight_block_size \[128\] is not two positive integers"),
    ({"weight_block_size": [64, 64]},
     r"tensor 'model\.layers\.\d\.[a-z_.]+\.weight_scale_inv' has shape \(\d+, \d+\), but "
     r"the fp8 method with 64x64 blocks needs shape"),
    ({"weight_block_size": None}, r"has tensor '.*\.weight_scale_inv', which the fp8 method "
                                  r"with a per-tensor or per-channel scale does not store"),
    ({"modules_to_not_convert": ["lm_head", "mlp"]},
     r"module 'model\.layers\.0\.mlp\.[a-z_]+' holds FP8 scales, but quantization_config "
     r"lists it as not converted"),
])
def test_configs_that_do_not_fit_say_why(block_copy, reference_resolution, changes, message):
    edit_config(block_copy, **changes)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(block_copy, reference_resolution.catalog)


def test_a_static_input_scale_names_the_tensor(block_copy, reference_resolution):
    edit_tensors(block_copy, lambda t: t.update({f"{LAYER}.input_scale": torch.tensor(0.1)}))
    with pytest.raises(ModelError, match=f"has tensor '{LAYER}.input_scale', which .* does not "
                                         f"store \\(activations are quantized dynamically"):
        load_checkpoint(block_copy, reference_resolution.catalog)


def test_codes_of_another_dtype_name_the_tensor(block_copy, reference_resolution):
    edit_tensors(block_copy, lambda t: t.update({f"{LAYER}.weight": t[f"{LAYER}.weight"].to(
        torch.float8_e5m2)}))
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight' has dtype F8_E5M2, but .* "
                                         f"needs F8_E4M3"):
        load_checkpoint(block_copy, reference_resolution.catalog)
