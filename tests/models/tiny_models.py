"""Tiny random checkpoints: transformers models saved as safetensors, and the same models
written as GGUF files the way llama.cpp's converter writes them."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pytest
import torch

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=128)
# A byte-level BPE vocabulary as llama.cpp stores one (tokenizer.ggml.* keys): special tokens
# first (ids 0..2, CONTROL), the 256 byte characters, then the tokens a few merges make.
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġa n", "Ġan d", "o n"]
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
                 "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
                 "{% endif %}")
GGUF_NAMES = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
              "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
              "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
              "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}


def tiny_hf_model(architecture: str = "LlamaForCausalLM", seed: int = 0, **overrides):
    """A small random transformers model (eval mode, float32)."""
    import transformers

    config_class = getattr(transformers, architecture.replace("ForCausalLM", "Config"))
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(config_class(**{**TINY, **overrides}))
    return model.eval()


def save_tiny(model, path: Path, **save_args) -> Path:
    model.save_pretrained(path, safe_serialization=True, **save_args)
    return path


def gguf_name(hf_name: str) -> str:
    if hf_name == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf_name == "model.norm.weight":
        return "output_norm.weight"
    if hf_name == "lm_head.weight":
        return "output.weight"
    _, _, layer, rest = hf_name.split(".", 3)
    module, suffix = rest.rsplit(".", 1)
    return f"blk.{layer}.{GGUF_NAMES[module]}.{suffix}"


def tiny_vocabulary() -> list[str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return SPECIAL + list(bytes_to_unicode().values()) + [m.replace(" ", "") for m in MERGES]


def add_tiny_tokenizer(writer) -> None:
    """Write the tiny byte-level vocabulary, its merges and a chat template."""
    tokens = tiny_vocabulary()
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("qwen2")
    writer.add_token_list(tokens)
    writer.add_token_types([3] * len(SPECIAL) + [1] * (len(tokens) - len(SPECIAL)))
    writer.add_token_merges(MERGES)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_chat_template(CHAT_TEMPLATE)


def llama_cpp_permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter's reordering of q/k rows (convert_hf_to_gguf.py, LlamaModel)."""
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2) \
        .reshape(w.shape)


def write_gguf(model, path: Path, tensor_type: Callable[[str], str],
               raw_tensors: Optional[dict] = None, metadata: Optional[dict] = None,
               tokenizer: bool = False) -> Path:
    """Write ``model`` (Llama or Qwen2) as a GGUF file; ``tensor_type(hf_name)`` picks each
    tensor's GGML type (F32, F16, Q8_0, Q4_0, Q4_1, ...). ``raw_tensors`` {GGUF name:
    (stored array, type name)} replace the model's tensors of that name or add to them;
    ``metadata`` {key: int, str or None} replaces metadata values (None removes the key);
    ``tokenizer`` adds the tiny vocabulary (the model's vocab_size must then be
    len(tiny_vocabulary()))."""
    gguf = pytest.importorskip("gguf")

    config = model.config
    arch = {"llama": "llama", "qwen2": "qwen2"}[config.model_type]
    writer = gguf.GGUFWriter(path, arch)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_freq_base(config.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_vocab_size(config.vocab_size)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    if tokenizer:
        add_tiny_tokenizer(writer)
    for key, value in (metadata or {}).items():
        writer.kv_data[0].pop(key, None)  # None: the key is left out
        if isinstance(value, int):
            writer.add_int32(key, value)
        elif value is not None:
            writer.add_string(key, value)
    tied = config.tie_word_embeddings
    raw_tensors = raw_tensors or {}
    for name, tensor in model.state_dict().items():
        if (tied and name == "lm_head.weight") or gguf_name(name) in raw_tensors:
            continue
        data = tensor.float().numpy()
        if arch == "llama" and ".q_proj." in name:
            data = llama_cpp_permute(data, config.num_attention_heads)
        elif arch == "llama" and ".k_proj." in name:
            data = llama_cpp_permute(data, config.num_key_value_heads)
        qtype = gguf.GGMLQuantizationType[tensor_type(name) if data.ndim == 2 else "F32"]
        writer.add_tensor(gguf_name(name), gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    for name, (data, qtype) in raw_tensors.items():
        writer.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def transformers_from_gguf(path: Path):
    """The transformers model of a GGUF file, its tensors dequantized to float32 by
    transformers (which also undoes llama.cpp's q/k reordering)."""
    pytest.importorskip("gguf")  # transformers reads GGUF files with it
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_init_weights
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    with no_init_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    parsed = load_gguf_checkpoint(str(path), return_tensors=True, model_to_load=model)
    result = model.load_state_dict(parsed["tensors"], strict=False)
    assert set(result.missing_keys) <= {"lm_head.weight"} and not result.unexpected_keys, result
    model.tie_weights()
    return model.eval()
