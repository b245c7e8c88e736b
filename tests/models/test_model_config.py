"""ModelConfig.from_hf on the config.json shapes found in the wild."""

from __future__ import annotations

import json

import pytest

from baseboard.core.errors import ModelError
from baseboard.models.config import ModelConfig
from baseboard.models.loader import load_checkpoint
from tiny_models import save_tiny, tiny_hf_model

BASE = {"architectures": ["LlamaForCausalLM"], "vocab_size": 32, "hidden_size": 16,
        "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
        "max_position_embeddings": 64}


def test_older_configs_with_rope_theta_and_rope_scaling_type():
    config = ModelConfig.from_hf({**BASE, "rope_theta": 1e6, "eos_token_id": [2, 5],
                                  "rope_scaling": {"type": "linear", "factor": 2.0}})
    assert config.rope_theta == 1e6
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert config.eos_token_ids == (2, 5)
    assert config.num_kv_heads == 4 and config.head_dim == 4


def test_llama3_scaling_defaults_its_original_length_to_max_positions():
    config = ModelConfig.from_hf({**BASE, "rope_scaling": {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}})
    assert config.rope_scaling["original_max_position_embeddings"] == 64


def test_qwen2_always_has_qkv_bias_and_no_o_proj_bias():
    config = ModelConfig.from_hf({**BASE, "architectures": ["Qwen2ForCausalLM"],
                                  "num_key_value_heads": 2})
    assert config.qkv_bias and not config.o_proj_bias
    llama = ModelConfig.from_hf({**BASE, "attention_bias": True})
    assert llama.qkv_bias and llama.o_proj_bias


def test_mistral_context_is_limited_to_its_sliding_window():
    config = ModelConfig.from_hf({**BASE, "architectures": ["MistralForCausalLM"],
                                  "num_key_value_heads": 2, "sliding_window": 16})
    assert config.max_position_embeddings == 16
    unlimited = ModelConfig.from_hf({**BASE, "architectures": ["MistralForCausalLM"],
                                     "num_key_value_heads": 2, "sliding_window": None})
    assert unlimited.max_position_embeddings == 64


@pytest.mark.parametrize("change, words", [
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, ["'longrope'", "llama3"]),
    ({"hidden_act": "gelu"}, ["'gelu'", "silu"]),
    ({"use_sliding_window": True}, ["use_sliding_window"]),
    ({"architectures": []}, ["architectures"]),
    ({"num_key_value_heads": 3}, ["'num_key_value_heads' (3)"]),
])
def test_unsupported_configs_are_named(change, words):
    with pytest.raises(ModelError) as err:
        ModelConfig.from_hf({**BASE, **change})
    for word in words:
        assert word in str(err.value)


def test_missing_field_is_named():
    config = dict(BASE)
    del config["intermediate_size"]
    with pytest.raises(ModelError, match="'intermediate_size'"):
        ModelConfig.from_hf(config)


def test_generation_config_adds_end_of_sequence_ids(tmp_path, resolution):
    save_tiny(tiny_hf_model(eos_token_id=2), tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 7]}))
    assert load_checkpoint(tmp_path, resolution.catalog).config.eos_token_ids == (2, 7)


@pytest.mark.parametrize("key, value", [
    ("hidden_size", "sixty-four"), ("num_attention_heads", 0), ("num_hidden_layers", -2),
    ("vocab_size", 32.5), ("num_key_value_heads", True), ("head_dim", 0),
])
def test_invalid_counts_name_the_key_the_value_and_what_is_valid(key, value):
    with pytest.raises(ModelError) as err:
        ModelConfig.from_hf({**BASE, key: value})
    message = str(err.value)
    assert f"'{key}' is {value!r}" in message and "positive integer" in message


@pytest.mark.parametrize("change, words", [
    ({"rms_norm_eps": "tiny"}, ["'rms_norm_eps'", "'tiny'", "positive number"]),
    ({"hidden_act": 3}, ["'hidden_act'", "expected str", "3"]),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}},
     ["'llama3'", "high_freq_factor", "low_freq_factor"]),
    ({"rope_scaling": {"rope_type": "linear", "factor": "two"}}, ["'factor'", "'two'"]),
    ({"rope_scaling": "linear"}, ["'rope_scaling'", "'linear'"]),
    ({"model_type": "no-such-model"}, ["'model_type'", "'no-such-model'"]),
])
def test_invalid_values_are_model_errors_naming_the_key(change, words):
    with pytest.raises(ModelError) as err:
        ModelConfig.from_hf({**BASE, **change})
    for word in words:
        assert word in str(err.value)


def test_transformers_supplies_the_defaults_of_the_model_type():
    llama = ModelConfig.from_hf(BASE)
    assert (llama.num_kv_heads, llama.rms_norm_eps, llama.rope_theta) == (4, 1e-6, 10000.0)
    # Qwen2's default context is its own, not Llama's
    qwen2 = ModelConfig.from_hf({**BASE, "architectures": ["Qwen2ForCausalLM"],
                                 "num_key_value_heads": 2, "max_position_embeddings": None})
    from transformers import Qwen2Config

    assert qwen2.max_position_embeddings == Qwen2Config().max_position_embeddings


def test_the_callers_dict_is_left_as_given():
    config = {**BASE, "rope_scaling": {"type": "linear", "factor": 2.0}}
    ModelConfig.from_hf(config)
    assert config["rope_scaling"] == {"type": "linear", "factor": 2.0}
