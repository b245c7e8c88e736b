"""The engine with IPEX's ops selected gives the tokens of the reference: transformers for a
float32 model, our torch references for a bf16 GGUF of int8 and 4-bit matrices. Runs in the
IPEX environment (make test-ipex); skipped with the reason elsewhere."""

from __future__ import annotations

import pytest
import torch

from baseboard import LLM, SamplingParams
from baseboard.core.ops import OPS
from baseboard.platforms.cpu import ipex_runtime

_problem = ipex_runtime.problem()
if _problem is not None:
    pytest.skip(f"IPEX cannot run here ({_problem.reason})", allow_module_level=True)

from tiny_models import save_tiny, tiny_hf_model, write_gguf  # noqa: E402

FUNCTION_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul",
                "attention")
QUANTIZED_OPS = ("gemm_w8a16", "gemm_w4a16")
# head_dim 32 (IPEX's paged attention takes 32 and up), grouped-query, K a multiple of
# GGUF's 32-wide blocks; vocabulary 256, so token ids are bytes
SHAPE = dict(hidden_size=128, intermediate_size=256, num_attention_heads=4,
             num_key_value_heads=2, num_hidden_layers=2, max_position_embeddings=256)
# two prompts share 20 tokens, so the second prefill runs over a cached prefix
SHARED = list(range(30, 50))
PROMPTS = [[5, 6, 7], SHARED + [60, 61], list(range(100, 140)), SHARED + [70, 71, 72, 73],
           [9] * 17]
GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, detokenize=False)


def tiny_model(architecture: str = "LlamaForCausalLM"):
    model = tiny_hf_model(architecture, **SHAPE)
    with torch.no_grad():  # a wider logit spread keeps greedy choices far from ties
        model.lm_head.weight.mul_(8.0)
    return model


def generate(path, dtype: str, backends: dict[str, str]) -> tuple[LLM, list[list[int]]]:
    # max_num_seqs 2 of 5 prompts: later prefills run in steps beside decodes
    llm = LLM(str(path), dtype=dtype, platform="cpu", max_num_seqs=2,
              skip_tokenizer_init=True, backends=backends)
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], GREEDY)
    return llm, [o.outputs[0].token_ids for o in outputs]


def transformers_tokens(model) -> list[list[int]]:
    found = []
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, eos_token_id=None, pad_token_id=None)
        found.append(out[0, len(prompt):].tolist())
    return found


def test_ipex_norms_rotary_silu_and_attention_give_transformers_tokens(tmp_path):
    model = tiny_model()
    path = save_tiny(model, tmp_path)
    llm, tokens = generate(path, "float32", {op: "ipex" for op in FUNCTION_OPS})
    assert all(llm.plan.decisions[op].selected == "ipex" for op in FUNCTION_OPS)
    assert tokens == transformers_tokens(model)


def test_ipex_attention_in_bf16_gives_the_reference_tokens(tmp_path):
    path = save_tiny(tiny_model("Qwen2ForCausalLM"), tmp_path)
    _, ipex_tokens = generate(path, "bfloat16", {op: "ipex" for op in FUNCTION_OPS})
    _, reference_tokens = generate(path, "bfloat16", {op: "torch" for op in OPS})
    assert ipex_tokens == reference_tokens


@pytest.mark.parametrize("types", [{"self_attn": "Q8_0", "mlp": "Q4_1"},
                                   {"self_attn": "Q4_0", "mlp": "Q8_0"}],
                         ids=["attn-q8-mlp-q4_1", "attn-q4_0-mlp-q8"])
def test_ipex_weight_only_gemms_give_the_reference_tokens(types, tmp_path):
    def tensor_type(name: str) -> str:
        return next((t for part, t in types.items() if part in name), "Q8_0")

    path = write_gguf(tiny_model(), tmp_path / "tiny.gguf", tensor_type)
    llm, ipex_tokens = generate(path, "bfloat16",
                                {op: "ipex" for op in QUANTIZED_OPS + FUNCTION_OPS})
    assert all(llm.plan.decisions[op].selected == "ipex" for op in QUANTIZED_OPS)
    _, reference_tokens = generate(path, "bfloat16", {op: "torch" for op in OPS})
    assert ipex_tokens == reference_tokens
