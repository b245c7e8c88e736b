"""The model configuration the models and the engine read, parsed from a Hugging Face
config.json (or from the dict a GGUF file's metadata gives).

transformers' config class for the model type parses it: the defaults, the types and the
rope scaling variants (``rope_scaling`` with ``type`` or ``rope_type``, ``rope_parameters``)
are its own. The values the model's shapes come from are checked here first, because
transformers divides by some of them and types others only loosely: each error names the
key, the value given and what is valid.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional

from ..core.errors import ModelError
from . import cache

# Scalings rope.py computes; "default" is stored as None. freq_factors (per-frequency
# divisors) comes only from a GGUF file's rope_freqs tensor.
ROPE_TYPES = ("linear", "llama3", "yarn", "freq_factors")
CONFIG_ROPE_TYPES = ("default", "linear", "llama3", "yarn")
# Counts every Llama-family config states; transformers' defaults for them are some other
# model's, so a config without one is refused rather than given that model's shape.
REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads")
OPTIONAL_COUNTS = ("num_key_value_heads", "head_dim", "max_position_embeddings",
                   "sliding_window")
ROPE_NUMBERS = ("rope_theta", "factor", "low_freq_factor", "high_freq_factor",
                "original_max_position_embeddings", "attention_factor", "beta_fast",
                "beta_slow", "mscale", "mscale_all_dim")


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
    def from_hf(cls, config: dict, generation_config: Optional[dict] = None, *,
                source: str = "config.json",
                key_names: Optional[Mapping[str, str]] = None) -> ModelConfig:
        """Parse a config.json dict. End-of-sequence ids of generation_config.json (which
        chat models often extend) are added to the config's own. ``source`` and
        ``key_names`` (config key -> the key the user wrote, e.g. a GGUF metadata key) are
        what error messages name. A config parsed before comes from the cache (cache.py)."""
        stored = cache.entry("config", __file__, [config, generation_config])
        values = cache.read_json(stored)
        if isinstance(values, dict) and values.keys() == cls.__dataclass_fields__.keys():
            return cls(**{**values, "eos_token_ids": tuple(values["eos_token_ids"])})
        parsed = cls._parse(config, generation_config, _Keys(source, key_names or {}))
        cache.write_json(stored, asdict(parsed))
        return parsed

    @classmethod
    def _parse(cls, config: dict, generation_config: Optional[dict], keys: _Keys) -> ModelConfig:
        arch = architecture_of(config, keys.source)
        _check_counts(config, keys)
        _check_rope_type(config, keys)
        hf = _transformers_config(config, arch, keys)
        heads = hf.num_attention_heads
        kv_heads = hf.num_key_value_heads or heads
        theta, scaling = _rope(hf.rope_parameters or {}, keys)
        parsed = cls(
            architecture=arch,
            vocab_size=hf.vocab_size,
            hidden_size=hf.hidden_size,
            intermediate_size=hf.intermediate_size,
            num_layers=hf.num_hidden_layers,
            num_heads=heads,
            num_kv_heads=kv_heads,
            head_dim=getattr(hf, "head_dim", None) or hf.hidden_size // heads,
            rms_norm_eps=float(hf.rms_norm_eps),
            rope_theta=theta,
            rope_scaling=scaling,
            max_position_embeddings=_max_positions(hf, arch),
            tie_word_embeddings=bool(hf.tie_word_embeddings),
            # Qwen2 always has q/k/v biases; Llama only with attention_bias.
            qkv_bias=arch == "Qwen2ForCausalLM" or bool(getattr(hf, "attention_bias", False)),
            # transformers' default token ids are Llama 2's; a config without any has none
            bos_token_id=config.get("bos_token_id"),
            eos_token_ids=_token_ids(config.get("eos_token_id"),
                                     (generation_config or {}).get("eos_token_id")),
            o_proj_bias=arch != "Qwen2ForCausalLM" and bool(getattr(hf, "attention_bias", False)),
        )
        _check_supported(config, hf, parsed, keys)
        return parsed


class _Keys:
    """Names config keys in messages as the user wrote them."""

    def __init__(self, source: str, names: Mapping[str, str]):
        self.source = source
        self.names = names

    def __call__(self, key: str) -> str:
        return repr(self.names.get(key, key))


def architecture_of(config: dict, source: str = "config.json") -> str:
    """The model class a config names (``architectures[0]``)."""
    architectures = config.get("architectures")
    if not isinstance(architectures, list) or not architectures \
            or not isinstance(architectures[0], str):
        raise ModelError(f"{source} has no 'architectures' entry naming the model class "
                         f"(for example [\"LlamaForCausalLM\"]); it has "
                         f"{config.get('architectures')!r}.")
    return architectures[0]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_counts(config: dict, keys: _Keys) -> None:
    for key in REQUIRED:
        if key not in config:
            raise ModelError(f"{keys.source} lacks {keys(key)}; a Llama-family config needs "
                             f"it.")
    for key in REQUIRED + OPTIONAL_COUNTS:
        value = config.get(key)
        if value is None and key in OPTIONAL_COUNTS:
            continue  # transformers derives it (kv heads = heads, head_dim = hidden / heads)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ModelError(f"{keys.source}: {keys(key)} is {value!r}, which is not valid; "
                             f"it must be a positive integer.")
    eps = config.get("rms_norm_eps")
    if eps is not None and not (_is_number(eps) and eps > 0):
        raise ModelError(f"{keys.source}: {keys('rms_norm_eps')} is {eps!r}, which is not "
                         f"valid; it must be a positive number (typically 1e-5 or 1e-6).")


def _check_rope_type(config: dict, keys: _Keys) -> None:
    """An unsupported scaling is named before transformers asks for its parameters."""
    params = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if not isinstance(params, dict):
        raise ModelError(f"{keys.source}: {keys('rope_scaling')} is {params!r}, which is not "
                         f"valid; it must be an object such as {{\"rope_type\": \"linear\", "
                         f"\"factor\": 2.0}}.")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type not in CONFIG_ROPE_TYPES:
        raise ModelError(f"{keys.source}: rope scaling {rope_type!r} is not supported; "
                         f"supported: {', '.join(CONFIG_ROPE_TYPES)}.")


def _model_type(config: dict, arch: str, keys: _Keys) -> str:
    from transformers import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = config.get("model_type")
    if model_type is None:  # older configs name only the class
        config_class = arch.replace("ForCausalLM", "Config")
        candidates = [t for t, name in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.items() if name == arch]
        model_type = next((t for t in candidates if t in CONFIG_MAPPING
                           and CONFIG_MAPPING[t].__name__ == config_class),
                          candidates[0] if candidates else None)
    if model_type not in CONFIG_MAPPING:
        raise ModelError(f"{keys.source}: {keys('model_type')} is {model_type!r}, which "
                         f"transformers has no configuration class for; a Llama-family "
                         f"model has model_type 'llama', 'mistral' or 'qwen2'.")
    return model_type


def _transformers_config(config: dict, arch: str, keys: _Keys) -> Any:
    from huggingface_hub.errors import StrictDataclassError
    from transformers import AutoConfig

    model_type = _model_type(config, arch, keys)
    # transformers standardizes rope_scaling in place; the caller's dict stays as given. A
    # count given as null means its default, which transformers gives only to absent keys
    # (a null sliding_window means none, which transformers takes as given).
    defaulted = set(OPTIONAL_COUNTS) - {"sliding_window"}
    values = {k: v for k, v in copy.deepcopy(config).items()
              if k != "model_type" and not (v is None and k in defaulted)}
    try:
        return AutoConfig.for_model(model_type, **values)
    except (StrictDataclassError, ValueError, TypeError, KeyError) as exc:
        reason = str(exc).strip().splitlines()[-1].strip().strip('"')
        raise ModelError(f"{keys.source} is not a valid {model_type!r} configuration: "
                         f"{reason}. Fix that value.") from None


def _rope(params: dict, keys: _Keys) -> tuple[float, Optional[dict]]:
    """(rope_theta, scaling) from transformers' standardized rope_parameters."""
    params = {k: v for k, v in params.items() if k != "type"}  # "type": older rope_type
    rope_type = params.pop("rope_type", "default")
    for key, value in params.items():
        if key in ROPE_NUMBERS and value is not None and not (_is_number(value) and value > 0):
            raise ModelError(f"{keys.source}: rope scaling {key!r} is {value!r}, which is not "
                             f"valid; it must be a positive number.")
    theta = float(params.pop("rope_theta", 10000.0))
    if rope_type == "default":
        return theta, None
    return theta, {"rope_type": rope_type, **params}


def _max_positions(hf: Any, arch: str) -> int:
    limit = hf.max_position_embeddings
    window = getattr(hf, "sliding_window", None)
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


def _check_supported(config: dict, hf: Any, parsed: ModelConfig, keys: _Keys) -> None:
    if hf.hidden_act != "silu":
        raise ModelError(f"{keys.source}: {keys('hidden_act')} {hf.hidden_act!r} is not "
                         f"supported; Llama-family models use 'silu'.")
    if getattr(hf, "mlp_bias", False):
        raise ModelError(f"{keys.source}: mlp_bias = true is not supported; Llama-family MLPs "
                         f"have no bias.")
    if getattr(hf, "use_sliding_window", False):
        raise ModelError(f"{keys.source}: use_sliding_window = true is not supported: "
                         f"baseboard's attention has no sliding window. Set it to false to "
                         f"attend to the whole context.")
    if parsed.num_heads % parsed.num_kv_heads:
        given = "" if config.get("num_key_value_heads") else ", the default of its model type"
        raise ModelError(f"{keys.source}: {keys('num_attention_heads')} ({parsed.num_heads}) "
                         f"is not a multiple of {keys('num_key_value_heads')} "
                         f"({parsed.num_kv_heads}{given}).")
