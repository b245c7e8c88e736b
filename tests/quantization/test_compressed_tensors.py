"""compressed-tensors checkpoints: packing round trips, the layouts read against an
independent reader, tiny models whose outputs match transformers on the dequantized
weights, and the errors an unsupported or damaged checkpoint gives."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.models.llama import fuse
from baseboard.models.loader import load_checkpoint
from baseboard.quantization import compressed_tensors
from baseboard.quantization.records import BlockQuantized, ChannelQuantized, GroupQuantized
from ct_reference import (dense_state_dict, packed_dense, transformers_dense, unpacked_dense,
                          write_checkpoint, write_compressed, write_compressed_act_order,
                          write_compressed_blocks)
from paged_runner import PagedRunner
from tiny_models import tiny_hf_model

LAYER = "model.layers.0.self_attn.k_proj"  # N = 32: zero points fill four int32 words


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("n, k, groups", [(32, 64, 2), (20, 50, 1), (8, 96, 3)])
@pytest.mark.parametrize("asymmetric", [False, True])
def test_pack_then_unpack_gives_the_codes_back(bits, n, k, groups, asymmetric):
    gen = torch.Generator().manual_seed(bits * n + k)
    codes = torch.randint(0, 2 ** bits, (n, k), generator=gen, dtype=torch.uint8)
    scales = torch.rand(n, groups, generator=gen).to(torch.bfloat16)
    zeros = torch.randint(0, 2 ** bits, (n, groups), generator=gen, dtype=torch.uint8) \
        if asymmetric else None
    packed = compressed_tensors.pack_quantized(codes, scales, bits, zeros)
    # K = 50 and N = 20 do not fill whole words: compressed-tensors pads the last one
    assert packed["weight_packed"].shape == (n, -(-k * bits // 32))
    assert packed["weight_shape"].tolist() == [n, k]
    assert ("weight_zero_point" in packed) == asymmetric
    if asymmetric:
        assert packed["weight_zero_point"].shape == (-(-n * bits // 32), groups)
    got_codes, got_scales, got_zeros = compressed_tensors.unpack_quantized(packed, bits)
    assert torch.equal(got_codes, codes) and torch.equal(got_scales, scales)
    assert (got_zeros is None) if not asymmetric else torch.equal(got_zeros, zeros)


def test_the_first_code_sits_in_the_lowest_bits_offset_by_half_the_range():
    signed = torch.tensor([[-8, -7, 0, 1, 2, 3, 6, 7]])  # q as llm-compressor quantizes it
    packed = compressed_tensors.pack_quantized(signed + 8, torch.ones(1, 1), 4)
    assert packed["weight_packed"].tolist() == [[0xFE_BA_98_10 - 2 ** 32]]


@pytest.mark.parametrize("scheme, group_size, symmetric", [
    ("w4a16", 32, True), ("w4a16", 32, False), ("w4a16", None, False), ("w8a16", 16, True),
    ("w8a16", None, False), ("w8a8-int8", None, True), ("fp8", None, True)])
def test_records_dequantize_to_what_the_independent_reader_reads(tmp_path, reference_resolution,
                                                                 scheme, group_size, symmetric):
    path = write_compressed(tiny_hf_model(), tmp_path, scheme, group_size, symmetric)
    want = dense_state_dict(path)[f"{LAYER}.weight"]
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    weight = dict(checkpoint.weights())[f"{LAYER}.weight"]
    if scheme == "w8a16" and not symmetric:  # gemm_w8a16 has no zero point: dense at load
        assert isinstance(weight, torch.Tensor) and checkpoint.quant_schemes == ()
        torch.testing.assert_close(weight, want, rtol=0, atol=0)
        return
    op = {"w4a16": "gemm_w4a16", "w8a16": "gemm_w8a16", "w8a8-int8": "gemm_w8a8_int8",
          "fp8": "gemm_w8a8_fp8"}[scheme]
    assert weight.op == op and weight.scheme.op == op
    assert weight.scheme.symmetric == symmetric
    assert isinstance(weight, ChannelQuantized if "w8a8" in op else GroupQuantized)
    torch.testing.assert_close(weight.dequantize(), want, rtol=0, atol=0)
    # and the weight RTN quantized is near the original one
    original = tiny_hf_model().state_dict()[f"{LAYER}.weight"]
    assert (weight.dequantize() - original).abs().max() < 0.2 * original.abs().max()


def test_an_asymmetric_zero_point_moves_the_weight():
    """A reader that ignored weight_zero_point would pass the test above for symmetric
    layers only: here the zero points are not the middle code."""
    weight = torch.linspace(0.0, 1.0, 64).repeat(8, 1)  # all positive: zero point at -8
    parts = compressed_tensors.quantize_weight(weight, "w4a16", 32, symmetric=False)
    dense = packed_dense(parts, 4, 32)
    torch.testing.assert_close(dense, weight, atol=0.04, rtol=0)


SLOW = pytest.mark.slow
MODEL_CASES = [
    pytest.param("w4a16", 32, True, None, id="w4a16-g32-sym"),
    pytest.param("w4a16", None, False, None, id="w4a16-channel-asym", marks=SLOW),
    pytest.param("w8a16", 32, True, None, id="w8a16-g32", marks=SLOW),
    pytest.param("w8a8-int8", None, True, "int8", id="w8a8-int8"),
    pytest.param("fp8", None, True, "fp8", id="fp8-dynamic"),
    pytest.param("fp8-block", None, True, "fp8/32", id="fp8-block-32x32"),
    pytest.param("w4a16-act-order", 32, False, None, id="w4a16-g32-act-order"),
]


@pytest.mark.parametrize("scheme, group_size, symmetric, activations", MODEL_CASES)
def test_tiny_model_matches_transformers_on_the_dequantized_weights(
        scheme, group_size, symmetric, activations, tmp_path, reference_resolution):
    """W8A8 layers quantize their inputs per token: the reference does the same to the
    inputs of its dense linear layers."""
    if scheme == "fp8-block":
        path = write_compressed_blocks(tiny_hf_model(), tmp_path, (32, 32))
    elif scheme == "w4a16-act-order":
        path = write_compressed_act_order(tiny_hf_model(), tmp_path, group_size, symmetric)
    else:
        path = write_compressed(tiny_hf_model(), tmp_path, scheme, group_size, symmetric)
    reference = transformers_dense(path, activations)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert checkpoint.quant_method == "compressed-tensors"
    plan = reference_resolution.plan
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, plan, checkpoint.weights())
    tokens = [3, 17, 200, 45, 9, 31, 77, 5]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
        greedy = reference.generate(torch.tensor([tokens[:4]]), max_new_tokens=8,
                                    do_sample=False)[0, 4:].tolist()
    got = [runner.step({0: tokens[:5]})[0]] + [runner.step({0: [t]})[0] for t in tokens[5:]]
    torch.testing.assert_close(torch.stack(got), want[4:], atol=1e-4, rtol=1e-4)
    fresh = PagedRunner(checkpoint.model_class, checkpoint.config, plan, checkpoint.weights())
    assert fresh.greedy(tokens[:4], 8) == greedy


@pytest.mark.parametrize("scheme, ops, described", [
    ("w4a16", {"gemm", "gemm_w4a16"}, "uint4 g32 sym, 16-bit activations"),
    ("w8a8-int8", {"gemm", "gemm_w8a8_int8"},
     "int8 per-channel sym, dynamic per-token int8 activations"),
    ("fp8", {"gemm", "gemm_w8a8_fp8"},
     "float8_e4m3fn per-channel sym, dynamic per-token float8_e4m3fn activations")])
def test_ops_and_schemes_are_known_from_the_header(tmp_path, reference_resolution, scheme, ops,
                                                   described):
    path = write_compressed(tiny_hf_model(), tmp_path, scheme, 32)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert set(checkpoint.linear_ops) == ops  # the lm_head is ignored: dense
    assert [s.describe() for s in checkpoint.quant_schemes] == [described]


def test_fp8_blocks_load_as_block_records(tmp_path, reference_resolution):
    path = write_compressed_blocks(tiny_hf_model(), tmp_path, (32, 32))
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert [s.describe() for s in checkpoint.quant_schemes] == [
        "float8_e4m3fn block 32x32 sym, dynamic per-token float8_e4m3fn activations"]
    weight = dict(checkpoint.weights())[f"{LAYER}.weight"]
    assert isinstance(weight, BlockQuantized) and weight.scales.shape == (1, 2)
    torch.testing.assert_close(weight.dequantize(), dense_state_dict(path)[f"{LAYER}.weight"],
                               rtol=0, atol=0)


@pytest.mark.parametrize("actorder", ["static", "weight", None])
def test_orders_that_store_no_g_idx_read_as_plain_groups(tmp_path, reference_resolution,
                                                         actorder):
    path = write_compressed(tiny_hf_model(), tmp_path, "w4a16", 32)
    edit_config(path, lambda c: group(c)["weights"].update(actorder=actorder))
    weight = dict(load_checkpoint(path, reference_resolution.catalog).weights())[
        f"{LAYER}.weight"]
    assert weight.input_perm is None and not weight.scheme.act_order


def test_group_act_order_sorts_the_inputs_by_group(tmp_path, reference_resolution):
    path = write_compressed_act_order(tiny_hf_model(), tmp_path, 32, symmetric=False)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert [s.describe() for s in checkpoint.quant_schemes] == [
        "uint4 g32 asym act-order, 16-bit activations"]
    weights = dict(checkpoint.weights())
    weight = weights[f"{LAYER}.weight"]
    g_idx = load_file(path / "model.safetensors")[f"{LAYER}.weight_g_idx"].long()
    assert torch.equal(g_idx[weight.input_perm], torch.arange(64) // 32)  # runs of a group
    torch.testing.assert_close(weight.dequantize(), dense_state_dict(path)[f"{LAYER}.weight"],
                               rtol=0, atol=0)
    fused = fuse([weights[f"model.layers.0.self_attn.{m}_proj.weight"] for m in "qkv"],
                 torch.float32)
    assert isinstance(fused, GroupQuantized)  # q, k, v share their input's permutation


def test_a_g_idx_with_unequal_groups_names_the_tensor(tmp_path, reference_resolution):
    path = write_compressed_act_order(tiny_hf_model(), tmp_path, 32, symmetric=True)
    edit_tensors(path, lambda t: t[f"{LAYER}.weight_g_idx"].__setitem__(0, 1))
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight_g_idx' does not put exactly "
                                         f"group_size 32 inputs in each of the 2 groups"):
        list(load_checkpoint(path, reference_resolution.catalog).weights())


def test_config_groups_give_each_module_its_scheme(tmp_path, reference_resolution):
    """Attention in W8A8 int8 and the MLP in W4A16, as two config groups."""
    def quantize(name, weight):
        scheme = "w8a8-int8" if ".self_attn." in name else "w4a16"
        return compressed_tensors.quantize_weight(weight, scheme, 32)

    attention = compressed_tensors.quantization_config("w8a8-int8")["config_groups"]["group_0"]
    config = compressed_tensors.quantization_config("w4a16", 32)
    config["config_groups"] = {
        "attention": {**attention, "targets": ["re:.*self_attn\\..*_proj$"]},
        "mlp": {**group(config), "targets": ["re:.*mlp\\..*_proj$"]}}
    config["format"] = "mixed-precision"
    path = write_checkpoint(tiny_hf_model(), tmp_path, quantize, config)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert set(checkpoint.linear_ops) == {"gemm", "gemm_w4a16", "gemm_w8a8_int8"}
    assert len(checkpoint.quant_schemes) == 2
    weights, dense = dict(checkpoint.weights()), dense_state_dict_by_layer(path)
    for name, op in (("model.layers.1.self_attn.o_proj.weight", "gemm_w8a8_int8"),
                     ("model.layers.1.mlp.up_proj.weight", "gemm_w4a16")):
        assert weights[name].op == op
        torch.testing.assert_close(weights[name].dequantize(), dense[name], rtol=0, atol=0)


def dense_state_dict_by_layer(path):
    """Each layer dequantized by the independent reader, whatever its layout."""
    tensors = load_file(path / "model.safetensors")
    dense = {}
    for name in [n for n in tensors if n.endswith(".weight_scale")]:
        module = name.removesuffix(".weight_scale")
        parts = {n.rpartition(".")[2]: t for n, t in tensors.items()
                 if n.rpartition(".")[0] == module}
        dense[f"{module}.weight"] = packed_dense(parts, 4, 32) if "weight_packed" in parts \
            else unpacked_dense(parts)
    return dense


def test_w8a8_parts_fuse_into_one_record(tmp_path, reference_resolution):
    path = write_compressed(tiny_hf_model(), tmp_path, "w8a8-int8")
    weights = dict(load_checkpoint(path, reference_resolution.catalog).weights())
    parts = [weights[f"model.layers.0.self_attn.{m}_proj.weight"] for m in "qkv"]
    fused = fuse(parts, torch.float32)
    assert isinstance(fused, ChannelQuantized) and fused.shape == (64 + 32 + 32, 64)
    torch.testing.assert_close(fused.dequantize(), torch.cat([p.dequantize() for p in parts]),
                               rtol=0, atol=0)


# --- errors ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def w4a16_dir(tmp_path_factory):
    return write_compressed(tiny_hf_model(), tmp_path_factory.mktemp("ct"), "w4a16", 32, False)


@pytest.fixture
def w4a16_copy(w4a16_dir, tmp_path):
    return shutil.copytree(w4a16_dir, tmp_path / "model")


def edit_config(path, change):
    config = json.loads((path / "config.json").read_text())
    change(config["quantization_config"])
    (path / "config.json").write_text(json.dumps(config))


def edit_tensors(path, change):
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def group(config):
    return config["config_groups"]["group_0"]


@pytest.mark.parametrize("change, message", [
    (lambda c: group(c)["weights"].update(num_bits=3),
     r"'group_0' \(pack-quantized, weights int3 group 32 asymmetric.*pack-quantized weights "
     r"must be int4 or int8\. Supported: pack-quantized: 4-bit"),
    (lambda c: group(c)["weights"].update(actorder="sorted"),
     "actorder 'sorted' is not one of weight, static, group, dynamic"),
    (lambda c: group(c)["weights"].update(actorder="group"),
     r"layer 'model\.layers\.0\.[a-z_.]+' lacks tensor '.*\.weight_g_idx'"),
    (lambda c: group(c).update(input_activations={"num_bits": 8, "type": "int",
                                                  "strategy": "tensor", "dynamic": False}),
     "static input scales are not read"),
    (lambda c: group(c).update(format="marlin-24"), "format 'marlin-24' is not read"),
    (lambda c: c.update(quantization_status="calibration"),
     "quantization_status is 'calibration'; baseboard reads checkpoints saved compressed"),
    (lambda c: c.update(kv_cache_scheme={"num_bits": 8}), "kv_cache_scheme is set"),
    (lambda c: c.update(config_groups={}), "config_groups is {}"),
    (lambda c: group(c).update(targets=["Linear", "Embedding"]),
     r"targets names module class\(es\) \['Embedding'\]; baseboard reads the class 'Linear'"),
])
def test_unsupported_configs_say_what_is_supported(w4a16_copy, reference_resolution, change,
                                                   message):
    edit_config(w4a16_copy, change)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(w4a16_copy, reference_resolution.catalog)


def test_frozen_checkpoints_of_2024_load_by_their_format_and_dtypes(tmp_path,
                                                                   reference_resolution):
    path = write_compressed(tiny_hf_model(), tmp_path, "w8a8-int8")

    def as_in_2024(config):
        config.update(quantization_status="frozen", format="naive-quantized")
        group(config).update(format="naive-quantized")

    edit_config(path, as_in_2024)
    weight = dict(load_checkpoint(path, reference_resolution.catalog).weights())[
        f"{LAYER}.weight"]
    assert isinstance(weight, ChannelQuantized) and weight.op == "gemm_w8a8_int8"
    # saved uncompressed (fake-quantized float weights), the same config is named
    edit_tensors(path, lambda t: t.update({f"{LAYER}.weight": t[f"{LAYER}.weight"].float()}))
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight' has dtype F32, but "
                                         f"compressed-tensors config group 'group_0' "
                                         f"\\(int-quantized.*needs I8"):
        load_checkpoint(path, reference_resolution.catalog)


def test_zero_points_that_older_versions_saved_for_symmetric_layers_are_checked(
        tmp_path, reference_resolution):
    path = write_compressed(tiny_hf_model(), tmp_path, "w4a16", 32)
    zeros = torch.zeros(32, 2, dtype=torch.int8)  # int8 [N, K/G], as compressed-tensors 0.7
    edit_tensors(path, lambda t: t.update({f"{LAYER}.weight_zero_point": zeros}))
    weight = dict(load_checkpoint(path, reference_resolution.catalog).weights())[
        f"{LAYER}.weight"]
    torch.testing.assert_close(weight.dequantize(), dense_state_dict(path)[f"{LAYER}.weight"],
                               rtol=0, atol=0)
    edit_tensors(path, lambda t: t[f"{LAYER}.weight_zero_point"].__setitem__((3, 1), 2))
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight_zero_point' holds non-zero "
                                         f"zero points, but .* is symmetric"):
        list(load_checkpoint(path, reference_resolution.catalog).weights())


def test_a_group_size_that_does_not_match_the_scales_names_the_tensor(w4a16_copy,
                                                                      reference_resolution):
    edit_config(w4a16_copy, lambda c: group(c)["weights"].update(group_size=64))
    with pytest.raises(ModelError, match=r"tensor 'model\.layers\.0\.[a-z_.]+\.weight_packed' "
                                         r"has shape \(\d+, \d+\), but compressed-tensors "
                                         r"config group 'group_0' \(pack-quantized, weights int4 "
                                         r"group 64.*needs \d+ words per row"):
        load_checkpoint(w4a16_copy, reference_resolution.catalog)


def test_a_missing_zero_point_names_the_tensor(w4a16_copy, reference_resolution):
    edit_tensors(w4a16_copy, lambda t: t.pop(f"{LAYER}.weight_zero_point"))
    with pytest.raises(ModelError, match=f"layer '{LAYER}' lacks tensor "
                                         f"'{LAYER}.weight_zero_point'"):
        load_checkpoint(w4a16_copy, reference_resolution.catalog)


def test_a_weight_shape_that_contradicts_the_packed_codes_names_it(w4a16_copy,
                                                                   reference_resolution):
    edit_tensors(w4a16_copy, lambda t: t.update({f"{LAYER}.weight_shape":
                                                 torch.tensor([32, 32])}))
    checkpoint = load_checkpoint(w4a16_copy, reference_resolution.catalog)  # header is fine
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight_scale' has shape "
                                         r"\(32, 2\) for K = 32"):
        list(checkpoint.weights())


def test_a_quantized_layer_the_config_ignores_is_an_error(w4a16_copy, reference_resolution):
    edit_config(w4a16_copy, lambda c: c.update(ignore=["lm_head", f"re:{LAYER}"]))
    with pytest.raises(ModelError, match=f"module '{LAYER}' holds quantized tensors, but .* "
                                         f"lists it in 'ignore'"):
        load_checkpoint(w4a16_copy, reference_resolution.catalog)


def test_a_layer_no_group_targets_is_an_error(w4a16_copy, reference_resolution):
    edit_config(w4a16_copy, lambda c: group(c).update(targets=["re:.*mlp.*"]))
    with pytest.raises(ModelError, match=r"module 'model\.layers\.0\.self_attn\.[a-z_]+' holds "
                                         r"quantized tensors, but no config group"):
        load_checkpoint(w4a16_copy, reference_resolution.catalog)


def test_w8a8_scales_of_the_wrong_shape_name_the_tensor(tmp_path, reference_resolution):
    path = write_compressed(tiny_hf_model(), tmp_path, "w8a8-int8")
    edit_tensors(path, lambda t: t.update({f"{LAYER}.weight_scale": torch.ones(32, 2)}))
    with pytest.raises(ModelError, match=f"tensor '{LAYER}.weight_scale' has shape "
                                         r"\(32, 2\), but .* needs one scale per tensor"):
        load_checkpoint(path, reference_resolution.catalog)
