"""GPTQ checkpoints: packing round trips, the layout read against an independent reader,
tiny models whose logits match transformers on the dequantized weights, and the errors a
damaged or unsupported checkpoint gives."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.models.llama import fuse
from baseboard.models.loader import load_checkpoint
from baseboard.quantization import GroupQuantized, gptq
from baseboard.quantization.records import can_concat
from baseboard.quantization.rtn import quantize_rtn
from paged_runner import PagedRunner
from quantized_models import write_quantized
from reference_formats import gptq_dense, transformers_dense
from tiny_models import tiny_hf_model

LAYER = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128, -1])
@pytest.mark.parametrize("sym", [True, False])
def test_pack_then_unpack_gives_the_codes_back(bits, group_size, sym):
    torch.manual_seed(bits + group_size)
    weight = torch.randn(48, 256)
    size = 256 if group_size == -1 else group_size
    q = quantize_rtn(weight, bits, size, sym)
    packed = gptq.pack(q.codes, q.scales, q.zeros, q.g_idx, bits)
    assert packed["qweight"].shape == (256 * bits // 32, 48)
    assert packed["qzeros"].shape == (256 // size, 48 * bits // 32)
    codes, scales, zeros = gptq.unpack(packed, bits)
    assert torch.equal(codes, q.codes) and torch.equal(zeros, q.zeros)
    assert torch.equal(scales, q.scales)
    # and the independent reader sees the weight RTN made
    tensors = {f"m.{p}": t for p, t in packed.items()}
    torch.testing.assert_close(gptq_dense(tensors, "m", bits), q.dequantize(), rtol=0, atol=0)


def test_the_first_code_sits_in_the_lowest_bits_and_zeros_are_stored_minus_one():
    codes = torch.arange(8, dtype=torch.uint8).repeat(8, 1)  # [N 8, K 8]: k in every row
    packed = gptq.pack(codes, torch.ones(8, 1), torch.full((8, 1), 8), torch.zeros(8), 4)
    assert packed["qweight"].flatten().tolist() == [0x76543210] * 8
    assert packed["qzeros"].tolist() == [[0x77777777]]  # zero point 8 stored as 7


@pytest.mark.parametrize("bits, group_size, sym, act_order", [
    (4, 32, True, None), (4, 64, False, None), (4, -1, False, None),
    (8, 32, True, None), (4, 32, False, "per-layer")])
def test_records_dequantize_to_what_the_independent_reader_reads(tmp_path, reference_resolution,
                                                                 bits, group_size, sym,
                                                                 act_order):
    path = write_quantized(tiny_hf_model(), tmp_path, "gptq", bits, group_size, sym, act_order)
    tensors = load_file(path / "model.safetensors")
    weights = dict(load_checkpoint(path, reference_resolution.catalog).weights())
    record = weights[f"{LAYER}.weight"]
    assert isinstance(record, GroupQuantized)
    assert record.op == ("gemm_w4a16" if bits == 4 else "gemm_w8a16")
    assert (record.input_perm is not None) == (act_order is not None)
    torch.testing.assert_close(record.dequantize(), gptq_dense(tensors, LAYER, bits),
                               rtol=0, atol=0)


def test_gptq_v2_zero_points_are_read_as_stored(tmp_path, reference_resolution):
    v1 = write_quantized(tiny_hf_model(), tmp_path / "v1", "gptq", 4, 32, sym=False)
    v2 = write_quantized(tiny_hf_model(), tmp_path / "v2", "gptq", 4, 32, sym=False,
                         checkpoint_format="gptq_v2")
    assert not torch.equal(load_file(v1 / "model.safetensors")[f"{LAYER}.qzeros"],
                           load_file(v2 / "model.safetensors")[f"{LAYER}.qzeros"])
    read = [dict(load_checkpoint(p, reference_resolution.catalog).weights())[f"{LAYER}.weight"]
            for p in (v1, v2)]
    assert torch.equal(read[0].dequantize(), read[1].dequantize())


SLOW = pytest.mark.slow
CASES = [
    pytest.param("4bit-g32-sym", dict(bits=4, group_size=32, sym=True)),
    pytest.param("4bit-g64-asym", dict(bits=4, group_size=64, sym=False), marks=SLOW),
    pytest.param("4bit-per-channel", dict(bits=4, group_size=-1, sym=False), marks=SLOW),
    pytest.param("8bit-g32-sym", dict(bits=8, group_size=32, sym=True)),
    pytest.param("8bit-asym-dense", dict(bits=8, group_size=32, sym=False)),
    # GPTQ's desc_act: q/k/v (and gate/up) share one permutation, so they still fuse
    pytest.param("4bit-act-order", dict(bits=4, group_size=32, sym=False, act_order="shared")),
    # permutations that differ within q/k/v: the fused layer is dequantized
    pytest.param("4bit-act-order-per-layer",
                 dict(bits=4, group_size=16, sym=True, act_order="per-layer"), marks=SLOW),
]
OPS = {"4bit-g32-sym": {"gemm", "gemm_w4a16"}, "8bit-g32-sym": {"gemm", "gemm_w8a16"},
       "8bit-asym-dense": {"gemm"}}


@pytest.mark.parametrize("case, settings", CASES)
def test_gptq_logits_match_transformers_on_the_dequantized_weights(case, settings, tmp_path,
                                                                   reference_resolution):
    path = write_quantized(tiny_hf_model(), tmp_path, "gptq", **settings)
    reference = transformers_dense(path)
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert checkpoint.quant_method == "gptq"
    if case in OPS:
        assert set(checkpoint.linear_ops) == OPS[case]
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                         checkpoint.weights())
    tokens = [3, 17, 200, 45, 9, 31, 77, 5]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
    got = [runner.step({0: tokens[:5]})[0]] + [runner.step({0: [t]})[0] for t in tokens[5:]]
    torch.testing.assert_close(torch.stack(got), want[4:], atol=1e-4, rtol=1e-4)
    fresh = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                        checkpoint.weights())
    with torch.no_grad():
        greedy = reference.generate(torch.tensor([tokens[:4]]), max_new_tokens=8,
                                    do_sample=False)[0, 4:].tolist()
    assert fresh.greedy(tokens[:4], 8) == greedy


def test_act_order_parts_with_one_permutation_fuse_and_others_do_not(tmp_path,
                                                                     reference_resolution):
    def qkv(act_order):
        path = write_quantized(tiny_hf_model(), tmp_path / act_order, "gptq", 4, 32, False,
                               act_order)
        weights = dict(load_checkpoint(path, reference_resolution.catalog).weights())
        return [weights[f"model.layers.0.self_attn.{m}_proj.weight"] for m in "qkv"]

    shared = qkv("shared")
    assert can_concat(shared)
    fused = fuse(shared, torch.float32)
    assert isinstance(fused, GroupQuantized) and torch.equal(fused.input_perm,
                                                             shared[0].input_perm)
    separate = qkv("per-layer")
    assert not can_concat(separate)
    dense = fuse(separate, torch.float32)  # the honest fallback: the exact dense weight
    assert isinstance(dense, torch.Tensor)
    torch.testing.assert_close(dense, torch.cat([p.dequantize() for p in separate]),
                               rtol=0, atol=0)


def test_act_order_schemes_reach_the_selection_context(tmp_path, reference_resolution):
    from baseboard.frontend.resolve import resolve

    path = write_quantized(tiny_hf_model(), tmp_path, "gptq", 4, 32, False, "shared")
    schemes = resolve(str(path), platform="cpu", environ={}).resolution.context.quant_schemes
    assert [s.describe() for s in schemes] == ["uint4 g32 asym act-order, 16-bit activations"]


# --- errors ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gptq_dir(tmp_path_factory):
    return write_quantized(tiny_hf_model(), tmp_path_factory.mktemp("gptq"), "gptq", 4, 32,
                           False)


@pytest.fixture
def gptq_copy(gptq_dir, tmp_path):
    import shutil

    return shutil.copytree(gptq_dir, tmp_path / "model")


def edit_config(path, **changes):
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"].update(changes)
    (path / "config.json").write_text(json.dumps(config))


def edit_tensors(path, change):
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def load_all(path, resolution):
    return list(load_checkpoint(path, resolution.catalog).weights())


@pytest.mark.parametrize("changes, message", [
    ({"bits": 3}, "bits 3 is not supported by the gptq method; supported: 4, 8"),
    ({"checkpoint_format": "marlin"}, "checkpoint_format 'marlin' is not supported.*gptq, "
                                      "gptq_v2"),
    ({"group_size": 0}, "group_size 0 is not supported"),
    ({"desc_act": "yes"}, "desc_act is 'yes'; it must be true or false"),
    ({"dynamic": {r"+:.*\.down_proj": {"bits": 8}}}, "'dynamic' .* is not supported"),
])
def test_unsupported_settings_say_what_is_supported(gptq_copy, reference_resolution, changes,
                                                    message):
    edit_config(gptq_copy, **changes)
    with pytest.raises(ModelError, match=message):
        load_checkpoint(gptq_copy, reference_resolution.catalog)


def test_scales_that_do_not_match_the_config_name_the_tensor(gptq_copy, reference_resolution):
    edit_config(gptq_copy, group_size=64)  # the tensors were written with groups of 32
    with pytest.raises(ModelError, match=r"tensor 'model\.layers\.0\.[a-z_.]+\.scales' has "
                                         r"shape \(\d+, \d+\), but .*group_size 64.* needs"):
        load_checkpoint(gptq_copy, reference_resolution.catalog)


def test_a_truncated_qweight_names_the_tensor(gptq_copy, reference_resolution):
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.qweight": t[f"{LAYER}.qweight"][:4]}))
    with pytest.raises(ModelError, match=rf"tensor '{LAYER}.(qweight|scales|qzeros|g_idx)'"):
        load_checkpoint(gptq_copy, reference_resolution.catalog)


def test_a_qweight_of_the_wrong_dtype_is_named(gptq_copy, reference_resolution):
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.qweight": t[f"{LAYER}.qweight"].float()}))
    with pytest.raises(ModelError, match=rf"tensor '{LAYER}.qweight' has dtype torch.float32"):
        load_all(gptq_copy, reference_resolution)


def test_a_shuffled_g_idx_without_desc_act_is_named(gptq_copy, reference_resolution):
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.g_idx": t[f"{LAYER}.g_idx"].flip(0)}))
    with pytest.raises(ModelError, match=rf"'{LAYER}.g_idx' is not k // group_size.*desc_act"):
        load_all(gptq_copy, reference_resolution)


def test_act_order_groups_of_unequal_size_are_named(gptq_copy, reference_resolution):
    edit_config(gptq_copy, desc_act=True)
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.g_idx": torch.zeros_like(
        t[f"{LAYER}.g_idx"])}))
    with pytest.raises(ModelError, match=rf"'{LAYER}.g_idx' does not put exactly group_size 32"):
        load_all(gptq_copy, reference_resolution)


def test_desc_act_without_g_idx_is_named(gptq_copy, reference_resolution):
    edit_config(gptq_copy, desc_act=True)
    edit_tensors(gptq_copy, lambda t: t.pop(f"{LAYER}.g_idx"))
    with pytest.raises(ModelError, match=rf"no '{LAYER}.g_idx'"):
        load_all(gptq_copy, reference_resolution)


def test_symmetric_8bit_with_other_zero_points_is_named(tmp_path, reference_resolution):
    path = write_quantized(tiny_hf_model(), tmp_path, "gptq", 8, 32, sym=False)
    edit_config(path, sym=True)
    with pytest.raises(ModelError, match=r"qzeros' holds zero points other than 128"):
        load_all(path, reference_resolution)


def test_a_tied_lm_head_counts_as_a_gemm(tmp_path, reference_resolution):
    model = tiny_hf_model(tie_word_embeddings=True)
    path = write_quantized(model, tmp_path, "gptq", 4, 32, True)
    assert "lm_head.weight" not in load_file(path / "model.safetensors")
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert checkpoint.linear_ops == ("gemm", "gemm_w4a16")


def test_an_int64_g_idx_reads_like_an_int32_one(gptq_copy, reference_resolution):
    before = dict(load_all(gptq_copy, reference_resolution))[f"{LAYER}.weight"]
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.g_idx": t[f"{LAYER}.g_idx"].long()}))
    after = dict(load_all(gptq_copy, reference_resolution))[f"{LAYER}.weight"]
    assert torch.equal(before.dequantize(), after.dequantize())


def test_a_float_g_idx_is_named(gptq_copy, reference_resolution):
    edit_tensors(gptq_copy, lambda t: t.update({f"{LAYER}.g_idx": t[f"{LAYER}.g_idx"].float()}))
    with pytest.raises(ModelError, match=rf"tensor '{LAYER}.g_idx' has dtype torch.float32"):
        load_all(gptq_copy, reference_resolution)


def test_act_order_with_groups_already_in_order_gathers_nothing(gptq_copy,
                                                                reference_resolution):
    """desc_act with a g_idx of k // group_size (static groups): the weight is the same, and
    the layer multiplies without a gather of its inputs."""
    before = dict(load_all(gptq_copy, reference_resolution))[f"{LAYER}.weight"]
    edit_config(gptq_copy, desc_act=True)
    after = dict(load_all(gptq_copy, reference_resolution))[f"{LAYER}.weight"]
    assert after.scheme.act_order and after.input_perm is None
    assert torch.equal(before.dequantize(), after.dequantize())
