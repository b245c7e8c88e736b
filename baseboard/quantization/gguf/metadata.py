"""What a GGUF file's metadata says about its model: the ModelConfig (through the same
parser as a config.json) and the Hugging Face name of each of its tensors."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Optional

from ...core.errors import ModelError
from ...models.config import ModelConfig
from .blocks import decode_dense
from .reader import GgufFile

# GGUF architecture -> (Hugging Face architecture, whether q/k rows are stored permuted).
# llama.cpp's converter reorders Llama's q/k rows for its interleaved rope; Qwen2 is
# stored as is.
ARCHITECTURES = {"llama": ("LlamaForCausalLM", True), "qwen2": ("Qwen2ForCausalLM", False)}
GLOBAL_NAMES = {"token_embd.weight": "model.embed_tokens.weight",
                "output_norm.weight": "model.norm.weight", "output.weight": "lm_head.weight"}
BLOCK_NAMES = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
               "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
               "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
               "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
ROPE_FREQS = "rope_freqs.weight"  # Llama 3.1 scaling as per-frequency divisors
# config.json key -> the metadata key it comes from ({arch} replaced), for error messages
METADATA_KEYS = {"vocab_size": "{arch}.vocab_size", "hidden_size": "{arch}.embedding_length",
                 "intermediate_size": "{arch}.feed_forward_length",
                 "num_hidden_layers": "{arch}.block_count",
                 "num_attention_heads": "{arch}.attention.head_count",
                 "num_key_value_heads": "{arch}.attention.head_count_kv",
                 "head_dim": "{arch}.attention.key_length",
                 "rms_norm_eps": "{arch}.attention.layer_norm_rms_epsilon",
                 "max_position_embeddings": "{arch}.context_length",
                 "rope_theta": "{arch}.rope.freq_base"}


def hf_name(name: str) -> Optional[str]:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None if unknown."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{parts[3]}"
    return None


def gguf_architecture(file: GgufFile) -> str:
    """general.architecture, checked against the supported ones."""
    arch = file.metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"GGUF architecture {arch!r} is not supported; supported: "
                         f"{', '.join(ARCHITECTURES)}.")
    return arch


def gguf_config(file: GgufFile) -> ModelConfig:
    """The ModelConfig the metadata ({arch}.* and tokenizer.ggml.* keys) describes."""
    meta = file.metadata
    arch = gguf_architecture(file)
    names = {t.name for t in file.tensors}
    tokens = meta.get("tokenizer.ggml.tokens")
    eos = [meta.get(f"tokenizer.ggml.{key}")
           for key in ("eos_token_id", "eot_token_id", "eom_token_id")]
    config = {
        "model_type": arch,
        "architectures": [ARCHITECTURES[arch][0]],
        "vocab_size": meta.get(f"{arch}.vocab_size", len(tokens) if tokens else None),
        "hidden_size": meta.get(f"{arch}.embedding_length"),
        "intermediate_size": meta.get(f"{arch}.feed_forward_length"),
        "num_hidden_layers": meta.get(f"{arch}.block_count"),
        "num_attention_heads": meta.get(f"{arch}.attention.head_count"),
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv"),
        "head_dim": meta.get(f"{arch}.attention.key_length"),
        "rms_norm_eps": meta.get(f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_parameters": _rope_parameters(meta, arch),
        "max_position_embeddings": meta.get(f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "bos_token_id": meta.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": [e for e in eos if e is not None],
    }
    source = f"the GGUF metadata of {file.path.name}"
    # from_hf requires the counts, but gives these two transformers' defaults, which are
    # another model's; llama.cpp always writes them
    for key in ("rms_norm_eps", "max_position_embeddings"):
        if config[key] is None:
            raise ModelError(f"{source} lacks {METADATA_KEYS[key].format(arch=arch)!r}, which "
                             f"the model's configuration needs.")
    key_names = {key: name.format(arch=arch) for key, name in METADATA_KEYS.items()}
    parsed = ModelConfig.from_hf({k: v for k, v in config.items() if v is not None},
                                 source=source, key_names=key_names)
    rotated = meta.get(f"{arch}.rope.dimension_count", parsed.head_dim)
    if rotated != parsed.head_dim:
        raise ModelError(f"{source}: {arch}.rope.dimension_count {rotated!r} differs from the "
                         f"head size {parsed.head_dim}; partial rotary embeddings are not "
                         f"supported.")
    factors = next((t for t in file.tensors if t.name == ROPE_FREQS), None)
    if factors is not None:
        divisors = tuple(decode_dense(file.data(factors), factors.type_name).float().tolist())
        parsed = replace(parsed, rope_scaling={"rope_type": "freq_factors", "factors": divisors})
    return parsed


def _rope_parameters(meta: dict[str, Any], arch: str) -> dict:
    params: dict[str, Any] = {"rope_type": "default",
                              "rope_theta": meta.get(f"{arch}.rope.freq_base", 10000.0)}
    kind = meta.get(f"{arch}.rope.scaling.type", "none")
    if kind in ("linear", "yarn"):
        params.update(rope_type=kind, factor=meta.get(f"{arch}.rope.scaling.factor"))
        original = meta.get(f"{arch}.rope.scaling.original_context_length")
        if original:
            params["original_max_position_embeddings"] = original
    elif kind != "none":
        raise ModelError(f"GGUF rope scaling {kind!r} ({arch}.rope.scaling.type) is not "
                         f"supported; supported: none, linear, yarn.")
    return params
