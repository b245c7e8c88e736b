"""A tiny random Llama checkpoint with a small byte-level BPE tokenizer, built once per
test session in a temporary directory (nothing is downloaded)."""

from __future__ import annotations

import pytest

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "Paged attention stores keys and values in fixed-size blocks.",
    "Continuous batching mixes prefills and decodes in one step.",
    "Grüße aus Köln! Café, naïve, déjà vu. 日本語のテキスト。 emoji 🙂 too.",
] * 4
CHAT_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}</s>{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                       special_tokens=[("<s>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_checkpoint(path, num_kv_heads: int = 2, hidden_size: int = 64):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size,
                         num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=num_kv_heads, max_position_embeddings=256,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False, torch_dtype="float32")
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # a wider logit spread keeps greedy choices far from ties
        model.lm_head.weight.mul_(8.0)
    model.save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """(checkpoint directory, the transformers model, its tokenizer)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = build_checkpoint(path)
    return path, model, tokenizer


@pytest.fixture(scope="session")
def llama_head64(tmp_path_factory):
    """A checkpoint like tiny_llama's with head size 64 (the GPU kernels' smallest)."""
    path = tmp_path_factory.mktemp("llama-head64")
    build_checkpoint(path, hidden_size=256)
    return path
