"""Our Llama-family model, run step by step over a paged KV cache with the reference ops,
against transformers on tiny random checkpoints (float32)."""

from __future__ import annotations

import pytest
import torch

from baseboard.models.loader import load_checkpoint
from paged_runner import PagedRunner
from tiny_models import save_tiny, tiny_hf_model

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32,
               "rope_theta": 500000.0}
CASES = {
    "llama": ("LlamaForCausalLM", {}, {}),
    "qwen2": ("Qwen2ForCausalLM", {}, {}),
    "mistral": ("MistralForCausalLM", {"sliding_window": None}, {}),
    "llama3-rope": ("LlamaForCausalLM", {"rope_parameters": LLAMA3_ROPE}, {}),
    "linear-rope": ("LlamaForCausalLM", {"rope_parameters": {"rope_type": "linear",
                                                             "factor": 4.0}}, {}),
    "tied": ("Qwen2ForCausalLM", {"tie_word_embeddings": True}, {}),
    "head-dim-32": ("LlamaForCausalLM", {"head_dim": 32, "attention_bias": True}, {}),
    "sharded": ("LlamaForCausalLM", {}, {"max_shard_size": "40KB"}),
}
PREFILL, DECODES = 7, 5


def reference_logits(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([tokens])).logits[0]  # [len, vocab]


@pytest.mark.parametrize("case", CASES)
def test_prefill_and_decode_match_transformers(case, tmp_path, resolution):
    architecture, overrides, save_args = CASES[case]
    hf = tiny_hf_model(architecture, **overrides)
    save_tiny(hf, tmp_path, **save_args)
    if case == "sharded":
        assert (tmp_path / "model.safetensors.index.json").is_file()
    checkpoint = load_checkpoint(tmp_path, resolution.catalog)
    assert checkpoint.config.architecture == architecture
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights())

    tokens = torch.randint(3, 256, (PREFILL + DECODES,), generator=torch.Generator().manual_seed(1))
    tokens = tokens.tolist()
    want = reference_logits(hf, tokens)
    got = [runner.step({0: tokens[:PREFILL]})[0]]
    for position in range(PREFILL, PREFILL + DECODES):
        got.append(runner.step({0: [tokens[position]]})[0])
    torch.testing.assert_close(torch.stack(got), want[PREFILL - 1:], atol=1e-4, rtol=1e-4)


def test_mixed_batch_of_decodes_and_prefills_matches_single_sequences(tmp_path, resolution):
    hf = tiny_hf_model("Qwen2ForCausalLM")
    checkpoint = load_checkpoint(save_tiny(hf, tmp_path), resolution.catalog)
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights(), num_seqs=3)
    a, b, c = [3, 4, 5, 6, 7], [8, 9, 10], [11, 12, 13, 14, 15, 16]
    runner.step({0: a, 1: b})
    # one step: two decodes and a new prefill
    logits = runner.step({0: [20], 2: c, 1: [21]})
    torch.testing.assert_close(logits[0], reference_logits(hf, a + [20])[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1], reference_logits(hf, b + [21])[-1], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[2], reference_logits(hf, c)[-1], atol=1e-4, rtol=1e-4)


def test_bfloat16_checkpoint_reports_its_dtype_and_loads_into_float32(tmp_path, resolution):
    hf = tiny_hf_model("LlamaForCausalLM").to(torch.bfloat16)
    checkpoint = load_checkpoint(save_tiny(hf, tmp_path), resolution.catalog)
    assert checkpoint.dtype == torch.bfloat16
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights())
    tokens = [5, 6, 7, 8]
    torch.testing.assert_close(runner.step({0: tokens})[0],
                               reference_logits(hf.float(), tokens)[-1], atol=1e-4, rtol=1e-4)


def test_qkv_and_gate_up_are_one_gemm_each(tmp_path, resolution):
    config_overrides = {"attention_bias": True}
    hf = tiny_hf_model("LlamaForCausalLM", **config_overrides)
    checkpoint = load_checkpoint(save_tiny(hf, tmp_path), resolution.catalog)
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights())
    layer = runner.model.layers[0]
    assert layer.qkv_proj.state.weight.shape == (4 * 16 + 2 * 2 * 16, 64)
    assert layer.qkv_proj.state.bias.shape == (4 * 16 + 2 * 2 * 16,)
    assert layer.gate_up_proj.state.weight.shape == (2 * 128, 64)
