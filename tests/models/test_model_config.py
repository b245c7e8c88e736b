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
    config = ModelConfig.from_hf({**BASE, "architectures": ["Qwen2ForCausalLM"]})
    assert config.qkv_bias and not config.o_proj_bias
    llama = ModelConfig.from_hf({**BASE, "attention_bias": True})
    assert llama.qkv_bias and llama.o_proj_bias


def test_mistral_context_is_limited_to_its_sliding_window():
    config = ModelConfig.from_hf({**BASE, "architectures": ["MistralForCausalLM"],
                                  "sliding_window": 16})
    assert config.max_position_embeddings == 16


@pytest.mark.parametrize("change, words", [
    ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, ["'longrope'", "llama3"]),
    ({"hidden_act": "gelu"}, ["'gelu'", "silu"]),
    ({"use_sliding_window": True}, ["use_sliding_window"]),
    ({"architectures": []}, ["architectures"]),
    ({"num_key_value_heads": 3}, ["num_key_value_heads (3)"]),
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
