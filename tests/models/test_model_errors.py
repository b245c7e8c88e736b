"""Every way a checkpoint can be unusable is a ModelError that names the problem."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.models.loader import load_checkpoint
from paged_runner import PagedRunner
from tiny_models import save_tiny, tiny_hf_model


def load_model(path, resolution):
    checkpoint = load_checkpoint(path, resolution.catalog)
    return PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                       checkpoint.weights())


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tiny_hf_model(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path):
    return shutil.copytree(tiny_dir, tmp_path / "model")


def rewrite_weights(path, change):
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_missing_path(tmp_path, resolution):
    with pytest.raises(ModelError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere", resolution.catalog)


def test_directory_without_config_json(tmp_path, resolution):
    with pytest.raises(ModelError, match="has no config.json"):
        load_checkpoint(tmp_path, resolution.catalog)


def test_directory_holding_only_gguf_files_names_them(tmp_path, resolution):
    for name in ("model.Q8_0.gguf", "model.Q4_1.gguf"):
        (tmp_path / name).write_bytes(b"GGUF")
    with pytest.raises(ModelError) as err:
        load_checkpoint(tmp_path, resolution.catalog)
    message = str(err.value)
    assert "model.Q4_1.gguf, model.Q8_0.gguf" in message
    assert f"pass the file's path, e.g. '{tmp_path / 'model.Q4_1.gguf'}'" in message


def test_non_finite_weight_is_named(tiny_copy, resolution):
    name = "model.layers.1.mlp.down_proj.weight"

    def poison(tensors):
        tensors[name][3, 5] = float("nan")
        tensors[name][0, 0] = float("inf")

    rewrite_weights(tiny_copy, poison)
    with pytest.raises(ModelError, match=f"'{name}' of .* holds 2 NaN or infinite value"):
        load_model(tiny_copy, resolution)


def test_directory_without_weights(tiny_copy, resolution):
    os.remove(tiny_copy / "model.safetensors")
    with pytest.raises(ModelError, match="neither model.safetensors nor"):
        load_checkpoint(tiny_copy, resolution.catalog)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_safetensors(tiny_copy, resolution, damage):
    weights = tiny_copy / "model.safetensors"
    if damage == "truncated":
        os.truncate(weights, os.path.getsize(weights) - 1000)
    else:
        weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not a json header")
    with pytest.raises(ModelError, match="model.safetensors is not a readable safetensors file"):
        load_checkpoint(tiny_copy, resolution.catalog)


def test_missing_shard(tmp_path, resolution):
    save_tiny(tiny_hf_model(), tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shard = sorted(set(index["weight_map"].values()))[-1]
    os.remove(tmp_path / shard)
    with pytest.raises(ModelError, match=f"names shard '{shard}', which is missing"):
        load_checkpoint(tmp_path, resolution.catalog)


def test_wrong_shape_names_the_tensor(tiny_copy, resolution):
    name = "model.layers.1.self_attn.k_proj.weight"
    rewrite_weights(tiny_copy, lambda t: t.__setitem__(name, torch.zeros(16, 64)))
    with pytest.raises(ModelError, match=rf"'{name}' has shape \(16, 64\).*implies \(32, 64\)"):
        load_model(tiny_copy, resolution)


def test_missing_tensor_is_named(tiny_copy, resolution):
    name = "model.layers.1.mlp.up_proj.weight"
    rewrite_weights(tiny_copy, lambda t: t.pop(name))
    with pytest.raises(ModelError, match=f"lacks tensor.*'{name}'"):
        load_model(tiny_copy, resolution)


def test_unexpected_tensor_is_named(tiny_copy, resolution):
    name = "model.layers.0.mlp.extra.weight"
    rewrite_weights(tiny_copy, lambda t: t.__setitem__(name, torch.zeros(2)))
    with pytest.raises(ModelError, match=f"has tensor '{name}'"):
        load_model(tiny_copy, resolution)


def test_config_that_does_not_match_the_weights(tiny_copy, resolution):
    config = json.loads((tiny_copy / "config.json").read_text())
    (tiny_copy / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(ModelError, match=r"'model\.layers\.0\.mlp\.\w+_proj\.weight' has shape"):
        load_model(tiny_copy, resolution)


def test_unsupported_architecture_lists_the_supported_ones(tiny_copy, resolution):
    config = json.loads((tiny_copy / "config.json").read_text())
    (tiny_copy / "config.json").write_text(
        json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(ModelError) as err:
        load_checkpoint(tiny_copy, resolution.catalog)
    assert "'GPT2LMHeadModel' is not supported" in str(err.value)
    assert "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM" in str(err.value)


def test_unknown_quantization_method(tiny_copy, resolution):
    config = json.loads((tiny_copy / "config.json").read_text())
    (tiny_copy / "config.json").write_text(
        json.dumps({**config, "quantization_config": {"quant_method": "hqq"}}))
    with pytest.raises(ModelError, match="method 'hqq', which no loaded plugin provides.*gguf"):
        load_checkpoint(tiny_copy, resolution.catalog)


def test_missing_tokenizer(tiny_dir, resolution):
    checkpoint = load_checkpoint(tiny_dir, resolution.catalog)
    with pytest.raises(ModelError, match="no tokenizer could be loaded"):
        checkpoint.tokenizer  # noqa: B018


def test_file_no_method_reads(tmp_path, resolution):
    (tmp_path / "model.bin").write_bytes(b"\0" * 64)
    with pytest.raises(ModelError, match=r"no quantization method reads.*gguf \(\.gguf\)"):
        load_checkpoint(tmp_path / "model.bin", resolution.catalog)
