"""rope_cache against transformers' rotary embedding, for every scaling it implements."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

from baseboard.models.config import ModelConfig
from baseboard.models.rope import rope_cache

SCALINGS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 4.0},
    "llama3": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 512},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 1024},
    "yarn-mscale": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 512,
                    "mscale": 0.707, "mscale_all_dim": 1.0, "beta_fast": 16, "beta_slow": 2},
}


@pytest.mark.parametrize("scaling", SCALINGS)
def test_rope_cache_equals_transformers(scaling):
    rope = {"rope_theta": 500000.0, **(SCALINGS[scaling] or {"rope_type": "default"})}
    hf_config = LlamaConfig(hidden_size=256, num_attention_heads=2, head_dim=128,
                            max_position_embeddings=4096, rope_parameters=rope)
    config = ModelConfig.from_hf({**hf_config.to_dict(), "architectures": ["LlamaForCausalLM"]})
    want_type = (SCALINGS[scaling] or {}).get("rope_type")
    assert (config.rope_scaling or {}).get("rope_type") == want_type
    cache = rope_cache(config, "cpu")
    positions = torch.arange(4096)[None]
    cos, sin = LlamaRotaryEmbedding(hf_config)(torch.zeros(1, dtype=torch.float32), positions)
    assert cache.shape == (4096, 128)
    torch.testing.assert_close(cache[:, :64], cos[0, :, :64], atol=0, rtol=0)
    torch.testing.assert_close(cache[:, 64:], sin[0, :, :64], atol=0, rtol=0)
    # the halves transformers repeats are equal, so [cos | sin] loses nothing
    torch.testing.assert_close(cos[0, :, :64], cos[0, :, 64:], atol=0, rtol=0)


def test_freq_factors_divide_the_frequencies():
    base = ModelConfig.from_hf({"architectures": ["LlamaForCausalLM"], "vocab_size": 8,
                                "hidden_size": 8, "intermediate_size": 8,
                                "num_hidden_layers": 1, "num_attention_heads": 1,
                                "max_position_embeddings": 16})
    factors = (1.0, 2.0, 4.0, 8.0)
    # only a GGUF file's rope_freqs tensor gives them, after its config is parsed
    scaled = replace(base, rope_scaling={"rope_type": "freq_factors", "factors": factors})
    def angles(cache: torch.Tensor) -> torch.Tensor:  # at position 1: the inverse frequencies
        return torch.atan2(cache[1, 4:], cache[1, :4])

    torch.testing.assert_close(angles(rope_cache(scaled, "cpu")),
                               angles(rope_cache(base, "cpu")) / torch.tensor(factors))
