"""The method registry: a Hugging Face directory's quantization_config picks its method."""

from __future__ import annotations

import json
import shutil

import pytest

from baseboard.core.errors import ModelError
from baseboard.models.loader import load_checkpoint
from tiny_models import save_tiny, tiny_hf_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tiny_hf_model(), tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def tiny_copy(tiny_dir, tmp_path):
    return shutil.copytree(tiny_dir, tmp_path / "model")


def set_quantization_config(path, quantization_config) -> None:
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = quantization_config
    (path / "config.json").write_text(json.dumps(config))


def test_an_unknown_method_lists_the_known_ones_and_names_the_hook(tiny_copy,
                                                                   reference_resolution):
    set_quantization_config(tiny_copy, {"quant_method": "codebook9"})
    with pytest.raises(ModelError) as error:
        load_checkpoint(tiny_copy, reference_resolution.catalog)
    message = str(error.value)
    assert "'codebook9', which no loaded plugin provides" in message
    known = sorted(reference_resolution.catalog.quant_methods)
    assert f"Registered methods: {', '.join(known)}." in message
    assert "baseboard_quantization_methods()" in message


def test_a_close_name_is_suggested(tiny_copy, reference_resolution):
    set_quantization_config(tiny_copy, {"quant_method": "ggfu"})
    with pytest.raises(ModelError, match="Did you mean 'gguf'"):
        load_checkpoint(tiny_copy, reference_resolution.catalog)


@pytest.mark.parametrize("value", [{"bits": 4}, "gptq", [], {"quant_method": None}])
def test_a_quantization_config_without_a_method_name_is_named(tiny_copy, reference_resolution,
                                                              value):
    set_quantization_config(tiny_copy, value)
    with pytest.raises(ModelError, match="quantization_config"):
        load_checkpoint(tiny_copy, reference_resolution.catalog)


def test_an_unquantized_directory_has_no_method_and_no_schemes(tiny_dir, reference_resolution):
    checkpoint = load_checkpoint(tiny_dir, reference_resolution.catalog)
    assert (checkpoint.quant_method, checkpoint.quant_schemes, checkpoint.linear_ops) == (
        None, (), ("gemm",))
