"""The real SmolLM2-135M-Instruct Q4_1 GGUF: config and tokenizer from the metadata, and
greedy generation equal to transformers' on the same (dequantized) weights, in float32."""

from __future__ import annotations

import pytest
import torch

from baseboard.models.loader import load_checkpoint
from baseboard.quantization import GroupQuantized
from paged_runner import PagedRunner
from tiny_models import transformers_from_gguf

pytest.importorskip("gguf")  # optional: the gguf extra installs it

NEW_TOKENS = 32
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def checkpoint(smollm2_path, resolution):
    return load_checkpoint(smollm2_path, resolution.catalog)


@pytest.fixture(scope="module")
def prompt(checkpoint) -> list[int]:
    return list(checkpoint.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True,
                                                         tokenize=True)["input_ids"])


@pytest.fixture(scope="module")
def transformers_tokens(smollm2_path, prompt) -> list[int]:
    from transformers import GenerationConfig

    model = transformers_from_gguf(smollm2_path)
    # no end-of-sequence stop: compare all NEW_TOKENS tokens
    model.generation_config = GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=False,
                                               eos_token_id=None, pad_token_id=0)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids))
    return out[0, len(prompt):].tolist()


def test_config_and_tokenizer_come_from_the_gguf(checkpoint, prompt):
    config = checkpoint.config
    assert config.architecture == "LlamaForCausalLM"
    assert (config.num_layers, config.hidden_size, config.num_heads, config.num_kv_heads,
            config.head_dim, config.intermediate_size, config.vocab_size) == \
        (30, 576, 9, 3, 64, 1536, 49152)
    assert config.tie_word_embeddings and config.rope_theta == 100000.0
    assert config.eos_token_ids == (2,) and config.bos_token_id == 1
    tokenizer = checkpoint.tokenizer
    assert tokenizer.chat_template is not None
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_ids_to_tokens(2) == "<|im_end|>"
    text = "The capital of France is Paris."
    assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def dequantized(weights):
    for name, weight in weights:
        yield name, weight.dequantize() if isinstance(weight, GroupQuantized) else weight


@pytest.mark.slow  # about 35 s on two cores, most of it transformers reading the GGUF
def test_greedy_generation_equals_transformers(checkpoint, prompt, transformers_tokens,
                                               resolution):
    # The weights go in dequantized (dense float32 GEMMs): the reference quantized GEMMs
    # dequantize on every call, which is exact but slow. test_gguf.py covers the records.
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         dequantized(checkpoint.weights()), max_len=len(prompt) + NEW_TOKENS)
    assert runner.greedy(prompt, NEW_TOKENS) == transformers_tokens
    assert checkpoint.tokenizer.decode(transformers_tokens[:7]) == \
        "The capital of France is Paris."


@pytest.mark.slow
def test_greedy_generation_through_the_quantized_gemm_ops(checkpoint, prompt,
                                                          transformers_tokens, resolution):
    runner = PagedRunner(checkpoint.model_class, checkpoint.config, resolution.plan,
                         checkpoint.weights(), max_len=len(prompt) + NEW_TOKENS)
    assert runner.greedy(prompt, NEW_TOKENS) == transformers_tokens
