"""GGUF checkpoints: tiny random models written as llama.cpp writes them, loaded by us and
by transformers, must give the same logits; quantized matrices stay quantized."""

from __future__ import annotations

import pytest
import torch

from baseboard.models.loader import load_checkpoint
from paged_runner import PagedRunner
from tiny_models import tiny_hf_model, transformers_from_gguf, write_gguf


def mixed_types(name: str) -> str:
    if "embed_tokens" in name or "lm_head" in name:
        return "Q8_0"
    return "Q4_0" if "self_attn" in name else "Q4_1"


CASES = {
    # llama: q/k rows permuted by the converter, tied output -> quantized lm_head
    "llama-q4-tied": ("LlamaForCausalLM", {"tie_word_embeddings": True}, mixed_types),
    "llama-q8": ("LlamaForCausalLM", {}, lambda name: "Q8_0"),
    "qwen2-q4": ("Qwen2ForCausalLM", {}, mixed_types),
    "llama-f16": ("LlamaForCausalLM", {}, lambda name: "F16"),
    # q and v in different formats: the fused q/k/v GEMM is dequantized to dense
    "llama-mixed-qkv": ("LlamaForCausalLM", {},
                        lambda name: "Q8_0" if "v_proj" in name else "Q4_1"),
    # types without a GEMM op, dequantized at load
    "llama-q5": ("LlamaForCausalLM", {}, lambda name: "Q5_1" if "self_attn" in name else "Q5_0"),
}


@pytest.mark.parametrize("case", CASES)
def test_gguf_logits_match_transformers(case, tmp_path, resolution):
    architecture, overrides, types = CASES[case]
    path = write_gguf(tiny_hf_model(architecture, **overrides), tmp_path / "tiny.gguf", types)
    reference = transformers_from_gguf(path)
    checkpoint = load_checkpoint(path, resolution.catalog)
    assert checkpoint.quant_method == "gguf"
    assert checkpoint.config.architecture == architecture
    assert checkpoint.config.tie_word_embeddings == overrides.get("tie_word_embeddings", False)
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights())

    tokens = [3, 17, 200, 45, 9, 31, 77, 5]
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
    got = [runner.step({0: tokens[:5]})[0]] + [runner.step({0: [t]})[0] for t in tokens[5:]]
    torch.testing.assert_close(torch.stack(got), want[4:], atol=1e-4, rtol=1e-4)


def test_quantized_matrices_reach_the_model_as_records(tmp_path, resolution):
    hf = tiny_hf_model("LlamaForCausalLM", tie_word_embeddings=True)
    path = write_gguf(hf, tmp_path / "tiny.gguf", mixed_types)
    checkpoint = load_checkpoint(path, resolution.catalog)
    weights = dict(checkpoint.weights())
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert q.op == "gemm_w4a16" and q.shape == (64, 64)
    assert weights["model.layers.0.mlp.up_proj.weight"].op == "gemm_w4a16"
    # the embedding is dense for the lookup; the tied output layer keeps the Q8_0 codes
    assert weights["model.embed_tokens.weight"].dtype == torch.float32
    assert weights["lm_head.weight"].op == "gemm_w8a16"
    assert checkpoint.dtype == torch.float16  # every matrix quantized: the scales' dtype
    assert sum(isinstance(w, torch.Tensor) and w.dim() == 2 for w in weights.values()) == 1
    # q rows are back in Hugging Face order: close to the original weights
    original = hf.model.layers[0].self_attn.q_proj.weight.detach()
    assert (q.dequantize() - original).abs().max() < 0.1 * original.abs().max()


def test_types_without_a_gemm_op_arrive_dense(tmp_path, resolution):
    path = write_gguf(tiny_hf_model(), tmp_path / "q5.gguf", lambda name: "Q5_0")
    weights = dict(load_checkpoint(path, resolution.catalog).weights())
    q = weights["model.layers.1.self_attn.q_proj.weight"]
    assert isinstance(q, torch.Tensor) and q.dtype == torch.float32 and q.shape == (64, 64)


def test_metadata_config(tmp_path, resolution):
    hf = tiny_hf_model("Qwen2ForCausalLM", rope_parameters={"rope_theta": 1e6,
                                                            "rope_type": "default"})
    config = load_checkpoint(write_gguf(hf, tmp_path / "q.gguf", mixed_types),
                             resolution.catalog).config
    assert (config.hidden_size, config.num_layers, config.num_heads, config.num_kv_heads,
            config.head_dim, config.intermediate_size) == (64, 2, 4, 2, 16, 128)
    assert config.rope_theta == 1e6 and config.qkv_bias and not config.tie_word_embeddings
    assert config.bos_token_id == 1 and config.eos_token_ids == (2,)
