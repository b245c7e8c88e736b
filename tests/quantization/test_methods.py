"""The method registry: a Hugging Face directory's quantization_config picks its method."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from baseboard.core.errors import ModelError
from baseboard.core.registry import distribution_installed
from baseboard.frontend.plan import resolve_plan
from baseboard.models.loader import load_checkpoint
from baseboard.quantization.quantize import is_quantized_layer
from paged_runner import PagedRunner
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


# --- a method from a third-party package ---------------------------------------------------
# examples/baseboard-example-plugin (installed with pip, as make test does) registers
# "example-int8-rows" through the same hook as baseboard's own methods.

def write_int8_rows(model, path):
    """``model`` saved as an example-int8-rows checkpoint (the plugin's own quantizer)."""
    from baseboard_example.int8_rows import quantize  # the plugin's package

    save_tiny(model, path)
    tensors = {}
    for name, weight in model.state_dict().items():
        if is_quantized_layer(name, tuple(weight.shape)):
            module = name.removesuffix(".weight")
            tensors.update({f"{module}.{p}": t for p, t in quantize(weight).items()})
        else:
            tensors[name] = weight.contiguous()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    set_quantization_config(path, {"quant_method": "example-int8-rows"})
    return path


@pytest.fixture
def example_installed():
    if not distribution_installed("baseboard-example-plugin"):
        pytest.fail("the example plugin is not installed: pip install --no-deps -e "
                    "examples/baseboard-example-plugin (make test does this)")


def test_a_plugin_method_loads_its_checkpoint_and_matches_transformers(
        example_installed, tmp_path, reference_resolution):
    assert reference_resolution.catalog.quant_methods["example-int8-rows"][1] == "example"
    model = tiny_hf_model()
    path = write_int8_rows(model, tmp_path / "int8")
    checkpoint = load_checkpoint(path, reference_resolution.catalog)
    assert checkpoint.quant_method == "example-int8-rows"
    assert checkpoint.linear_ops == ("gemm", "gemm_w8a16")
    assert [s.describe() for s in checkpoint.quant_schemes] == [
        "int8 per-channel sym, 16-bit activations"]
    # the reference: transformers on the weights the plugin's layout describes
    tensors = load_file(path / "model.safetensors")
    state = dict(model.state_dict())
    for name in [n for n in tensors if n.endswith(".weight_int8")]:
        module = name.removesuffix(".weight_int8")
        scale = tensors[f"{module}.weight_scale"][:, None]
        state[f"{module}.weight"] = tensors[name].float() * scale
    model.load_state_dict(state)
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, reference_resolution.plan,
                         checkpoint.weights())
    tokens = [3, 17, 200, 45, 9]
    with torch.no_grad():
        want = model(torch.tensor([tokens])).logits[0, -1]
    torch.testing.assert_close(runner.step({0: tokens})[0], want, atol=1e-4, rtol=1e-4)


def test_a_plugin_method_validates_its_own_config(example_installed, tmp_path,
                                                  reference_resolution):
    path = write_int8_rows(tiny_hf_model(), tmp_path / "int8")
    set_quantization_config(path, {"quant_method": "example-int8-rows", "bits": 4})
    with pytest.raises(ModelError, match="takes no settings, but quantization_config has bits"):
        load_checkpoint(path, reference_resolution.catalog)


def test_a_disabled_plugin_s_method_is_unknown_and_the_error_says_how_to_add_one(
        example_installed, tmp_path):
    path = write_int8_rows(tiny_hf_model(), tmp_path / "int8")
    catalog = resolve_plan(environ={"BASEBOARD_DISABLE_PLUGINS": "example"}).catalog
    with pytest.raises(ModelError, match="'example-int8-rows', which no loaded plugin provides"
                                         ".*baseboard_quantization_methods"):
        load_checkpoint(path, catalog)
