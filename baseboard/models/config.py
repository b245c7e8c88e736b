"""The model configuration the models and the engine read, parsed from a Hugging Face
config.json (or built from GGUF metadata)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from ..core.errors import ModelError

# Scalings rope.py computes; "default" is stored as None.
ROPE_TYPES = ("linear", "llama3", "yarn", "freq_factors")


@dataclass(frozen=True)
class ModelConfig:
    architecture: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict]  # {"rope_type": one of ROPE_TYPES, its parameters} or None
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    bos_token_id: Optional[int]
    eos_token_ids: tuple[int, ...]
    o_proj_bias: bool = False  # Llama's attention_bias also gives o_proj a bias; Qwen2's doesn't

    @classmethod
    def from_hf(cls, config: dict, generation_config: Optional[dict] = None) -> ModelConfig:
        """Parse a config.json dict. End-of-sequence ids of generation_config.json (which
        chat models often extend) are added to the config's own."""
        arch = _architecture(config)
        try:
            heads = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            theta, scaling = _rope(config)
            parsed = cls(
                architecture=arch,
                vocab_size=int(config["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(config["intermediate_size"]),
                num_layers=int(config["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=int(config.get("head_dim") or hidden // heads),
                rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=theta,
                rope_scaling=scaling,
                max_position_embeddings=_max_positions(config, arch),
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                # Qwen2 always has q/k/v biases; Llama only with attention_bias.
                qkv_bias=arch == "Qwen2ForCausalLM" or bool(config.get("attention_bias", False)),
                bos_token_id=config.get("bos_token_id"),
                eos_token_ids=_token_ids(config.get("eos_token_id"),
                                         (generation_config or {}).get("eos_token_id")),
                o_proj_bias=arch != "Qwen2ForCausalLM" and bool(config.get("attention_bias")),
            )
        except KeyError as exc:
            raise ModelError(f"config.json of {arch} lacks {exc.args[0]!r}; a Llama-family "
                             f"config needs it.") from None
        _check_supported(config, parsed)
        return parsed


def _architecture(config: dict) -> str:
    architectures = config.get("architectures") or []
    if not architectures:
        raise ModelError("config.json has no 'architectures' entry; it names the model class "
                         "(for example [\"LlamaForCausalLM\"]).")
    return architectures[0]


def _rope(config: dict) -> tuple[float, Optional[dict]]:
    """(rope_theta, scaling) from either rope_parameters (transformers 5) or rope_theta +
    rope_scaling (older configs)."""
    params = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", config.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", params.pop("type", "default"))
    if rope_type == "default":
        return theta, None
    if rope_type not in ROPE_TYPES:
        raise ModelError(f"rope scaling {rope_type!r} is not supported; supported: default, "
                         f"{', '.join(ROPE_TYPES)}.")
    if rope_type in ("llama3", "yarn"):
        params.setdefault("original_max_position_embeddings",
                          config.get("original_max_position_embeddings",
                                     config["max_position_embeddings"]))
    return theta, {"rope_type": rope_type, **params}


def _max_positions(config: dict, arch: str) -> int:
    limit = int(config.get("max_position_embeddings", 2048))
    window = config.get("sliding_window")
    # Mistral's attention only sees the last sliding_window tokens; without a sliding-window
    # attention the model is exact up to that length, so that is its limit.
    if arch == "MistralForCausalLM" and window:
        limit = min(limit, int(window))
    return limit


def _token_ids(*values: Any) -> tuple[int, ...]:
    ids: list[int] = []
    for value in values:
        for token in value if isinstance(value, list) else [value]:
            if token is not None and token not in ids:
                ids.append(int(token))
    return tuple(ids)


def _check_supported(config: dict, parsed: ModelConfig) -> None:
    if config.get("hidden_act", "silu") != "silu":
        raise ModelError(f"hidden_act {config['hidden_act']!r} is not supported; Llama-family "
                         f"models use 'silu'.")
    if config.get("mlp_bias"):
        raise ModelError("mlp_bias = true is not supported; Llama-family MLPs have no bias.")
    if config.get("use_sliding_window"):
        raise ModelError("use_sliding_window = true is not supported: baseboard's attention "
                         "has no sliding window. Set it to false to attend to the whole context.")
    if parsed.num_heads % parsed.num_kv_heads:
        raise ModelError(f"num_attention_heads ({parsed.num_heads}) is not a multiple of "
                         f"num_key_value_heads ({parsed.num_kv_heads}).")
