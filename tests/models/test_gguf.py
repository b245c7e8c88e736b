"""GGUF checkpoints: tiny random models written as llama.cpp writes them, loaded by us and
by transformers, must give the same logits; quantized matrices stay quantized."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from baseboard.models.llama import fuse
from baseboard.models.loader import load_checkpoint
from baseboard.quantization import GroupQuantized
from baseboard.quantization.builtin import GGUF
from paged_runner import PagedRunner
from tiny_models import (SPECIAL, tiny_hf_model, tiny_vocabulary, transformers_from_gguf,
                         write_gguf)

pytest.importorskip("gguf")  # optional: the gguf extra installs it


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


def ops_the_model_calls(weights: dict, config) -> set[str]:
    """The GEMM op of every linear layer as LlamaForCausalLM builds them (fuse)."""
    def op(weight) -> str:
        return weight.op if isinstance(weight, GroupQuantized) else "gemm"

    ops = {op(weights.get("lm_head.weight", weights["model.embed_tokens.weight"]))}
    for i in range(config.num_layers):
        w = {n[len(f"model.layers.{i}."):]: t for n, t in weights.items()
             if n.startswith(f"model.layers.{i}.")}
        ops |= {op(fuse([w[f"self_attn.{m}_proj.weight"] for m in "qkv"], torch.float32)),
                op(fuse([w["mlp.gate_proj.weight"], w["mlp.up_proj.weight"]], torch.float32)),
                op(w["self_attn.o_proj.weight"]), op(w["mlp.down_proj.weight"])}
    return ops


@pytest.mark.parametrize("case, want", [
    ("llama-q4-tied", ("gemm_w4a16", "gemm_w8a16")), ("llama-q8", ("gemm_w8a16",)),
    ("llama-f16", ("gemm",)), ("llama-mixed-qkv", ("gemm", "gemm_w4a16")),
    ("llama-q5", ("gemm",)),
])
def test_linear_ops_come_from_the_metadata_and_match_the_weights(case, want, tmp_path,
                                                                 resolution):
    architecture, overrides, types = CASES[case]
    path = write_gguf(tiny_hf_model(architecture, **overrides), tmp_path / "t.gguf", types)
    checkpoint = load_checkpoint(path, resolution.catalog)
    assert checkpoint.linear_ops == want
    weights = dict(checkpoint.weights())
    assert set(checkpoint.linear_ops) == ops_the_model_calls(weights, checkpoint.config)


def test_the_number_of_weights_is_known_before_reading_them(tmp_path, resolution):
    # tied with a quantized embedding: one tensor more than the file holds (lm_head)
    path = write_gguf(tiny_hf_model(tie_word_embeddings=True), tmp_path / "t.gguf",
                      mixed_types)
    checkpoint = load_checkpoint(path, resolution.catalog)
    stream = checkpoint.weights()
    assert len(stream) == checkpoint.num_weights == len(list(stream)) == 2 + 2 * 9 + 1


def test_the_gguf_method_loads_from_its_own_package():
    module, _, function = GGUF.loader.partition(":")
    assert module.startswith("baseboard.quantization.gguf.")
    assert callable(GGUF.load())


OPENED: list[str] = []


def _count_opens(event: str, args: tuple) -> None:
    if event == "open" and OPENED and isinstance(args[0], (str, os.PathLike)) \
            and os.fspath(args[0]) == OPENED[0]:
        OPENED.append(event)


sys.addaudithook(_count_opens)  # audit hooks stay for the process; this one only counts


@pytest.fixture(scope="module")
def tokenizer_gguf(tmp_path_factory):
    model = tiny_hf_model("Qwen2ForCausalLM", vocab_size=len(tiny_vocabulary()))
    return write_gguf(model, tmp_path_factory.mktemp("tok") / "tok.gguf", mixed_types,
                      tokenizer=True)


def test_the_file_is_opened_once_for_config_tokenizer_and_weights(tokenizer_gguf, resolution):
    OPENED[:] = [os.fspath(tokenizer_gguf)]
    checkpoint = load_checkpoint(tokenizer_gguf, resolution.catalog)
    checkpoint.tokenizer  # noqa: B018
    list(checkpoint.weights())
    opens = len(OPENED) - 1
    OPENED.clear()
    assert opens == 1


TEXTS = ["the cat and the hat", " leading space, and\ttabs\n", "Grüße — 東京 🙂",
         f"{SPECIAL[1]}user\nhi{SPECIAL[2]}", ""]


def test_tokenizer_equals_transformers_own_gguf_tokenizer(tokenizer_gguf, resolution):
    from transformers import AutoTokenizer

    ours = load_checkpoint(tokenizer_gguf, resolution.catalog).tokenizer
    theirs = AutoTokenizer.from_pretrained(tokenizer_gguf.parent, gguf_file=tokenizer_gguf.name)
    for text in TEXTS:
        ids = theirs(text)["input_ids"]
        assert ours(text)["input_ids"] == ids, text
        assert ours.decode(ids) == theirs.decode(ids)
        assert ours.decode(ids, skip_special_tokens=True) == \
            theirs.decode(ids, skip_special_tokens=True)
    assert ours.special_tokens_map == theirs.special_tokens_map
    assert ours.all_special_ids == theirs.all_special_ids
    assert len(ours) == len(theirs) == len(tiny_vocabulary())
    chat = [{"role": "user", "content": "the hat"}]
    assert ours.apply_chat_template(chat, add_generation_prompt=True, tokenize=False) == \
        theirs.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    # the merges were read: " the" is one token (Ġ+t, h+e, Ġt+he), not four bytes
    assert ours.convert_ids_to_tokens(ours(" the")["input_ids"]) == ["Ġthe"]


LOAD = """
import sys
from pathlib import Path
from baseboard.core.settings import read_settings
from baseboard.frontend.plan import load_catalog
from baseboard.models.loader import load_checkpoint
catalog = load_catalog(read_settings())
checkpoint = load_checkpoint(Path(sys.argv[1]), catalog)
print(checkpoint.config, checkpoint.tokenizer("the cat and the hat")["input_ids"])
print("transformers.models.llama.configuration_llama" in sys.modules,
      "transformers.integrations.gguf.gguf_tokenizer_mapping" in sys.modules)
"""


def test_a_second_load_reads_config_and_tokenizer_from_the_cache(tmp_path):
    model = tiny_hf_model("LlamaForCausalLM", vocab_size=len(tiny_vocabulary()))
    path = write_gguf(model, tmp_path / "cached.gguf", mixed_types, tokenizer=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}

    def load() -> list[str]:
        run = subprocess.run([sys.executable, "-c", LOAD, str(path)], env=env,
                             capture_output=True, text=True, check=True)
        return run.stdout.splitlines()

    first, second = load(), load()
    assert first[0] == second[0]  # the same config and the same token ids
    assert first[1] == "True True"  # converted: transformers' config class and converter
    assert second[1] == "False False"  # read back: neither is imported
    entries = (tmp_path / "cache" / "baseboard").glob("*/*")
    assert sorted(p.parent.name for p in entries) == ["config", "tokenizer"]
