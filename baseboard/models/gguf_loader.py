"""llama.cpp GGUF files: config from the metadata, tokenizer built by transformers, and
weights as dense tensors or ``GroupQuantized`` records under Hugging Face names."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Optional

import torch
from tqdm import tqdm

from ..core.errors import ModelError
from ..quantization.ggml_blocks import (BLOCK, DEQUANTIZED_TYPES, QUANTIZED_TYPES,
                                        SUPPORTED_TYPES, decode_dense, decode_quantized,
                                        dequantize_blocks)
from ..quantization.records import GroupQuantized
from .checkpoint import Checkpoint
from .config import ModelConfig
from .registry import model_class

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


def hf_name(name: str) -> Optional[str]:
    """'blk.3.attn_q.weight' -> 'model.layers.3.self_attn.q_proj.weight'; None if unknown."""
    if name in GLOBAL_NAMES:
        return GLOBAL_NAMES[name]
    parts = name.split(".")
    if len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in BLOCK_NAMES:
        return f"model.layers.{parts[1]}.{BLOCK_NAMES[parts[2]]}.{parts[3]}"
    return None


def open_gguf(path: Path):
    import gguf

    try:
        return gguf.GGUFReader(path)
    except Exception as exc:  # the reader raises assorted types on malformed files
        raise ModelError(f"{path} is not a readable GGUF file ({type(exc).__name__}: {exc}); "
                         f"it may be truncated or corrupt. Download it again.") from None


def _field(reader, key: str, default: Any = ...) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is ...:
            raise ModelError(f"GGUF metadata lacks {key!r}, which the config needs.")
        return default
    return field.contents()


def _rope_parameters(reader, arch: str, theta: float) -> dict:
    params: dict[str, Any] = {"rope_theta": theta}
    kind = _field(reader, f"{arch}.rope.scaling.type", "none")
    if kind in ("linear", "yarn"):
        params.update(rope_type=kind, factor=float(_field(reader, f"{arch}.rope.scaling.factor")))
        original = _field(reader, f"{arch}.rope.scaling.original_context_length", None)
        if original:
            params["original_max_position_embeddings"] = int(original)
    elif kind != "none":
        raise ModelError(f"GGUF rope scaling {kind!r} is not supported; supported: none, "
                         f"linear, yarn.")
    factors = next((t for t in reader.tensors if t.name == ROPE_FREQS), None)
    if factors is not None:
        params.update(rope_type="freq_factors", factors=tuple(float(x) for x in factors.data))
    return params


def gguf_config(reader) -> ModelConfig:
    """The ModelConfig the metadata ({arch}.* and tokenizer.ggml.* keys) describes."""
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ModelError(f"GGUF architecture {arch!r} is not supported; supported: "
                         f"{', '.join(ARCHITECTURES)}.")
    hf_arch, _ = ARCHITECTURES[arch]
    names = {t.name for t in reader.tensors}
    hidden = int(_field(reader, f"{arch}.embedding_length"))
    heads = int(_field(reader, f"{arch}.attention.head_count"))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", hidden // heads))
    rotated = int(_field(reader, f"{arch}.rope.dimension_count", head_dim))
    if rotated != head_dim:
        raise ModelError(f"GGUF rope.dimension_count {rotated} differs from the head size "
                         f"{head_dim}; partial rotary embeddings are not supported.")
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    eos = [_field(reader, f"tokenizer.ggml.{key}", None)
           for key in ("eos_token_id", "eot_token_id", "eom_token_id")]
    config = {
        "architectures": [hf_arch],
        "vocab_size": _field(reader, f"{arch}.vocab_size",
                             len(tokens.data) if tokens is not None else None),
        "hidden_size": hidden,
        "intermediate_size": _field(reader, f"{arch}.feed_forward_length"),
        "num_hidden_layers": _field(reader, f"{arch}.block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": _field(reader, f"{arch}.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "rms_norm_eps": _field(reader, f"{arch}.attention.layer_norm_rms_epsilon"),
        "rope_parameters": _rope_parameters(
            reader, arch, float(_field(reader, f"{arch}.rope.freq_base", 10000.0))),
        "max_position_embeddings": _field(reader, f"{arch}.context_length"),
        "tie_word_embeddings": "output.weight" not in names,
        "attention_bias": "blk.0.attn_q.bias" in names,
        "bos_token_id": _field(reader, "tokenizer.ggml.bos_token_id", None),
        "eos_token_id": [e for e in eos if e is not None],
    }
    if config["vocab_size"] is None:
        raise ModelError("GGUF metadata has neither a vocab_size nor tokenizer.ggml.tokens.")
    return ModelConfig.from_hf(config)


def _check_tensors(reader, path: Path) -> None:
    for t in reader.tensors:
        if t.name != ROPE_FREQS and hf_name(t.name) is None:
            raise ModelError(f"{path.name} has tensor {t.name!r}, which a Llama-family model "
                             f"does not have.")
        if t.tensor_type.name not in SUPPORTED_TYPES:
            raise ModelError(f"tensor {t.name!r} of {path.name} has GGUF type "
                             f"{t.tensor_type.name}, which is not supported. Supported types: "
                             f"{', '.join(SUPPORTED_TYPES)}. Convert the file with llama.cpp's "
                             f"llama-quantize to one of them.")


def _dtype(reader) -> torch.dtype:
    """The dtype of the dense matrices, or float16 (the type of the block scales) when every
    matrix is quantized."""
    dense = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
    for t in reader.tensors:
        if len(t.shape) == 2 and t.tensor_type.name in dense:
            return dense[t.tensor_type.name]
    return torch.float16


def _decode(tensor) -> torch.Tensor | GroupQuantized:
    """A dense tensor, or a record for quantized matrices of a type with a GEMM op (a
    quantized vector is dequantized)."""
    type_name = tensor.tensor_type.name
    if type_name in DEQUANTIZED_TYPES:
        return dequantize_blocks(tensor.data, type_name)
    if type_name not in QUANTIZED_TYPES:
        return decode_dense(tensor.data, type_name)
    k = int(tensor.shape[0])  # GGUF lists dimensions innermost first
    row_bytes = k // BLOCK * QUANTIZED_TYPES[type_name]
    record = decode_quantized(tensor.data.reshape(-1, row_bytes), type_name)
    return record if len(tensor.shape) == 2 else record.dequantize().reshape(k)


def unpermute_rows(rows: int, num_heads: int) -> torch.Tensor:
    """Row index that undoes llama.cpp's q/k permutation: per head, llama.cpp stores row
    pairs (i, i + D/2) next to each other; Hugging Face stores the two halves apart."""
    half = rows // num_heads // 2
    return torch.arange(rows).view(num_heads, half, 2).transpose(1, 2).reshape(-1)


def load_gguf(path: Path, catalog) -> Checkpoint:
    """A Checkpoint over a GGUF file. Q4_0/Q4_1 matrices become gemm_w4a16 records, Q8_0
    gemm_w8a16 records; a quantized token embedding is dequantized (and, when the output
    layer is tied to it, also handed over quantized as lm_head.weight)."""
    reader = open_gguf(path)
    config = gguf_config(reader)
    _check_tensors(reader, path)
    cls = model_class(config.architecture, catalog)
    _, permuted = ARCHITECTURES[_field(reader, "general.architecture")]
    # q_proj / k_proj weight and bias -> the row order that undoes llama.cpp's permutation
    unpermute = {".q_proj.": unpermute_rows(config.num_heads * config.head_dim, config.num_heads),
                 ".k_proj.": unpermute_rows(config.num_kv_heads * config.head_dim,
                                            config.num_kv_heads)} if permuted else {}

    def weights() -> Iterator[tuple[str, Any]]:
        tensors = [t for t in reader.tensors if t.name != ROPE_FREQS]
        for tensor in tqdm(tensors, desc=f"loading {path.name}", unit="tensor", delay=1):
            name = hf_name(tensor.name)
            weight = _decode(tensor)
            rows = next((r for key, r in unpermute.items() if key in name), None)
            if rows is not None:
                weight = weight.take_rows(rows) if isinstance(weight, GroupQuantized) \
                    else weight[rows]
            if name == "model.embed_tokens.weight" and isinstance(weight, GroupQuantized):
                if config.tie_word_embeddings:
                    yield "lm_head.weight", weight
                weight = weight.dequantize()
            yield name, weight

    def tokenizer() -> Any:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        except Exception as exc:  # transformers' GGUF conversion raises many types
            raise ModelError(f"no tokenizer could be built from the metadata of {path} "
                             f"({type(exc).__name__}: {exc}).") from None

    return Checkpoint(path, config, _dtype(reader), cls, weights, tokenizer, quant_method="gguf")
