"""`baseboard quantize` as a user runs it: a tiny random Llama quantized by the command
loads in baseboard and generates what transformers generates from the same weights.

transformers itself reads GPTQ checkpoints only through optimum and GPTQModel, which are
not installed here (and need a GPU build), so the reference is transformers on a dense
checkpoint written from the quantized one by the independent GPTQ reader of
reference_formats.py: the test compares logits and greedy tokens through that
dequantization.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from baseboard.cli import main
from baseboard.models.loader import load_checkpoint
from paged_runner import PagedRunner
from reference_formats import transformers_dense
from tiny_models import save_tiny, tiny_hf_model

TOKENS = [3, 17, 200, 45, 9, 31, 77, 5]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = save_tiny(tiny_hf_model(), tmp_path_factory.mktemp("tiny") / "src")
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 128}))
    return path


def quantize(*args: str) -> int:
    return main(["quantize", *map(str, args)])


def greedy(path, resolution, new_tokens: int = 8) -> tuple[list[int], torch.Tensor]:
    checkpoint = load_checkpoint(path, resolution.catalog)
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights())
    logits = runner.step({0: TOKENS})[0]
    out = [int(logits.argmax())]
    for _ in range(new_tokens - 1):
        out.append(int(runner.step({0: [out[-1]]})[0].argmax()))
    return out, logits


@pytest.mark.parametrize("args", [
    ("--method", "gptq", "--bits", "4", "--group-size", "32", "--sym"),
    ("--method", "gptq", "--bits", "8", "--group-size", "-1"),
    ("--method", "awq", "--group-size", "64"),
])
def test_a_quantized_tiny_llama_generates_what_transformers_does_on_its_weights(
        source, tmp_path, reference_resolution, args, capsys):
    dst = tmp_path / "quantized"
    assert quantize(source, dst, *args) == 0
    assert "quantizing to" in capsys.readouterr().err  # the progress bar, per layer
    reference = transformers_dense(dst)
    got, logits = greedy(dst, reference_resolution)
    with torch.no_grad():
        want = reference.generate(torch.tensor([TOKENS]), max_new_tokens=8,
                                  do_sample=False)[0, len(TOKENS):].tolist()
        want_logits = reference(torch.tensor([TOKENS])).logits[0, -1]
    assert got == want
    torch.testing.assert_close(logits, want_logits, atol=1e-4, rtol=1e-4)


def test_the_checkpoint_has_the_standard_layout_config_and_files(source, tmp_path):
    dst = tmp_path / "gptq"
    assert quantize(source, dst, "--method", "gptq", "--group-size", "32") == 0
    config = json.loads((dst / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "gptq", "bits": 4, "group_size": 32, "desc_act": False, "sym": True,
        "checkpoint_format": "gptq"}
    assert (dst / "tokenizer_config.json").read_text() == \
        (source / "tokenizer_config.json").read_text()
    assert (dst / "generation_config.json").is_file()
    with safe_open(dst / "model.safetensors", framework="pt") as f:
        names = set(f.keys())
        layer = "model.layers.0.mlp.down_proj"  # [64, 128]
        shapes = {p: tuple(f.get_slice(f"{layer}.{p}").get_shape())
                  for p in ("qweight", "qzeros", "scales", "g_idx")}
        dtypes = {p: f.get_slice(f"{layer}.{p}").get_dtype()
                  for p in ("qweight", "qzeros", "scales", "g_idx")}
    assert shapes == {"qweight": (16, 64), "qzeros": (4, 8), "scales": (4, 64),
                      "g_idx": (128,)}
    assert dtypes == {"qweight": "I32", "qzeros": "I32", "scales": "F16", "g_idx": "I32"}
    assert f"{layer}.weight" not in names and "model.embed_tokens.weight" in names


def test_a_sharded_checkpoint_is_written_shard_by_shard(tmp_path, reference_resolution):
    source = save_tiny(tiny_hf_model(), tmp_path / "src", max_shard_size="100KB")
    shards = sorted(p.name for p in source.glob("*.safetensors"))
    assert len(shards) > 1
    dst = tmp_path / "gptq"
    assert quantize(source, dst, "--method", "gptq", "--group-size", "32") == 0
    assert sorted(p.name for p in dst.glob("*.safetensors")) == shards
    index = json.loads((dst / "model.safetensors.index.json").read_text())
    assert "model.layers.1.self_attn.q_proj.qweight" in index["weight_map"]
    got, _ = greedy(dst, reference_resolution)
    want, _ = greedy(_single_file(dst, tmp_path / "single"), reference_resolution)
    assert got == want


def _single_file(path, dst):
    """The sharded checkpoint ``path`` rewritten as one model.safetensors."""
    import shutil

    from safetensors.torch import load_file, save_file

    tensors = {}
    for shard in path.glob("*.safetensors"):
        tensors.update(load_file(shard))
    dst.mkdir()
    shutil.copy(path / "config.json", dst / "config.json")
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})
    return dst


@pytest.mark.parametrize("args, message", [
    (("--method", "gptq", "--bits", "3"), "--bits 3 is not supported by --method gptq; "
                                          "supported: 4, 8"),
    (("--method", "awq", "--sym"), "--sym is not supported by --method awq"),
    (("--method", "gptq", "--group-size", "48"), "--group-size 48 does not divide the "),
    (("--method", "awq"), "--group-size 128 does not divide the 64 inputs of 'model.layers"),
])
def test_unsupported_options_are_errors_that_say_what_is_supported(source, tmp_path, capsys,
                                                                   args, message):
    assert quantize(source, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_an_existing_destination_is_not_overwritten(source, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert quantize(source, tmp_path / "out", "--method", "gptq", "--group-size", "32") == 2
    assert "exists and is not an empty directory" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


def test_a_quantized_source_is_refused(source, tmp_path, capsys):
    assert quantize(source, tmp_path / "q1", "--method", "gptq", "--group-size", "32") == 0
    assert quantize(tmp_path / "q1", tmp_path / "q2", "--method", "awq") == 2
    assert "is already quantized (gptq)" in capsys.readouterr().err


# --- compressed-tensors layouts, written by that method's packer -----------------------------

@pytest.mark.parametrize("method, args, ops", [
    ("w4a16", ("--group-size", "32", "--no-sym"), ("gemm", "gemm_w4a16")),
    ("w8a8-int8", (), ("gemm", "gemm_w8a8_int8")),
    ("fp8", (), ("gemm", "gemm_w8a8_fp8")),
])
def test_compressed_tensors_layouts_load_as_what_the_independent_reader_reads(
        source, tmp_path, reference_resolution, method, args, ops):
    from ct_reference import dense_state_dict

    dst = tmp_path / method
    assert quantize(source, dst, "--method", method, *args) == 0
    config = json.loads((dst / "config.json").read_text())["quantization_config"]
    assert config["quant_method"] == "compressed-tensors"
    checkpoint = load_checkpoint(dst, reference_resolution.catalog)
    assert (checkpoint.quant_method, checkpoint.linear_ops) == ("compressed-tensors", ops)
    weights = dict(checkpoint.weights())
    want = dense_state_dict(dst)
    layer = "model.layers.1.self_attn.o_proj.weight"
    torch.testing.assert_close(weights[layer].dequantize(), want[layer], rtol=0, atol=0)


def test_w4a16_generates_what_transformers_does_on_its_weights(source, tmp_path,
                                                               reference_resolution):
    from ct_reference import transformers_dense as ct_transformers_dense

    dst = tmp_path / "w4a16"
    assert quantize(source, dst, "--method", "w4a16", "--group-size", "32") == 0
    got, _ = greedy(dst, reference_resolution)
    with torch.no_grad():
        want = ct_transformers_dense(dst).generate(
            torch.tensor([TOKENS]), max_new_tokens=8, do_sample=False)[0, len(TOKENS):]
    assert got == want.tolist()


@pytest.mark.parametrize("args, message", [
    (("--method", "fp8", "--group-size", "32"), "--group-size is not supported by --method fp8"),
    (("--method", "w8a8-int8", "--no-sym"), "--no-sym is not supported by --method w8a8-int8"),
    (("--method", "w4a16", "--bits", "8"), "--bits 8 is not supported by --method w4a16"),
])
def test_compressed_tensors_options_say_what_is_supported(source, tmp_path, capsys, args,
                                                          message):
    assert quantize(source, tmp_path / "out", *args) == 2
    assert message in capsys.readouterr().err


def test_info_shows_the_quantized_layouts(source, tmp_path, capsys):
    dst = tmp_path / "gptq"
    assert quantize(source, dst, "--method", "gptq", "--group-size", "32", "--no-sym") == 0
    capsys.readouterr()
    assert main(["info", "--model", str(dst), "--platform", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "(LlamaForCausalLM, gptq); its linear layers call gemm, gemm_w4a16" in out
    assert "quantized layouts: uint4 g32 asym, 16-bit activations" in out
