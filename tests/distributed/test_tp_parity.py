"""Tensor parallelism on the CPU (gloo, one process per rank) gives exactly the greedy
tokens of one rank: the split of heads, of the MLP and of the vocabulary changes only the
order of float additions, never a chosen token."""

from __future__ import annotations

import pytest

from baseboard.engine.sampling_params import SamplingParams
from tp_models import build, gguf_checkpoint, greedy, run


def test_two_ranks_give_the_tokens_and_logprobs_of_one(tiny_llama_dir):
    params = SamplingParams(max_tokens=8, temperature=0, ignore_eos=True, detokenize=False,
                            logprobs=3, prompt_logprobs=2)
    one = run(tiny_llama_dir, 1, params=params)
    two = run(tiny_llama_dir, 2, params=params)
    for a, b in zip(one, two):
        assert b.outputs[0].token_ids == a.outputs[0].token_ids
        # the logits every rank gathers are the whole vocabulary's
        for want, got in zip(a.outputs[0].logprobs, b.outputs[0].logprobs):
            assert list(got) == list(want)
            assert [g.logprob for g in got.values()] == pytest.approx(
                [w.logprob for w in want.values()], abs=1e-4)
        for want, got in zip(a.prompt_logprobs[1:], b.prompt_logprobs[1:]):
            assert list(got) == list(want)


MODELS = {
    "llama": ("LlamaForCausalLM", {}),
    "qwen2-qkv-bias": ("Qwen2ForCausalLM", {}),
    # one KV head: every rank holds a copy of it
    "mistral-one-kv-head": ("MistralForCausalLM", {"num_key_value_heads": 1}),
}


@pytest.mark.slow
@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("model", MODELS)
def test_greedy_tokens_match_one_rank(model, dtype, size, tmp_path):
    architecture, overrides = MODELS[model]
    path = build(tmp_path / model, architecture, **overrides)
    assert greedy(path, size, dtype) == greedy(path, 1, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("tensor_type", ["Q8_0", "Q4_0"])
def test_quantized_gguf_model_matches_one_rank(tensor_type, tmp_path):
    # K = 64 and 128 cut in two keep GGUF's groups of 32 whole
    path = gguf_checkpoint(tmp_path / "tiny.gguf", tensor_type)
    assert greedy(path, 2) == greedy(path, 1)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_gptq_and_awq_models_match_one_rank(method, tmp_path):
    from quantized_models import write_quantized
    from tiny_models import tiny_hf_model

    from tp_models import widened

    path = write_quantized(widened(tiny_hf_model()), tmp_path / method, method, group_size=32)
    assert greedy(path, 2) == greedy(path, 1)
