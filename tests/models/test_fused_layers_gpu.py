"""The fused decoder layer on a CUDA GPU, in CUDA graphs: greedy tokens equal those of
the same kernels run apart (BASEBOARD_FUSE=0) and those of the torch references."""

from __future__ import annotations

import pytest
import torch

from baseboard.core.ops import OPS
from tiny_models import save_tiny, tiny_hf_model

pytestmark = pytest.mark.gpu
# head size 64, the GPU attention kernels' smallest
SHAPE = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)
PROMPTS = [[5, 17, 99, 3, 42, 7, 250, 61] * 8, [11, 12, 13]]
NEW_TOKENS = 24


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    model = tiny_hf_model("Qwen2ForCausalLM", seed=5, **SHAPE)
    with torch.no_grad():  # a wider logit spread keeps greedy choices far from ties
        model.lm_head.weight.mul_(8.0)
    return save_tiny(model, tmp_path_factory.mktemp("tiny-qwen-gpu"))


def greedy(path, monkeypatch, fuse: bool, backends=None, dtype="bfloat16"):
    from baseboard import LLM, SamplingParams

    monkeypatch.setenv("BASEBOARD_FUSE", "1" if fuse else "0")
    llm = LLM(str(path), dtype=dtype, max_num_seqs=2, skip_tokenizer_init=True,
              backends=backends)
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True,
                            detokenize=False)
    # one sequence at a time: every decode step is one row, the fused GEMVs' case
    tokens = [list(llm.generate([{"prompt_token_ids": p}], params)[0].outputs[0].token_ids)
              for p in PROMPTS]
    layers = llm.engine.model.layers
    llm.engine.close()
    return tokens, layers


def test_fused_layers_decode_the_unfused_and_the_reference_tokens(tiny_qwen, monkeypatch):
    fused, layers = greedy(tiny_qwen, monkeypatch, fuse=True)
    assert layers[1].attend_rotary is not None and layers[1].down_fuses_silu
    unfused, layers = greedy(tiny_qwen, monkeypatch, fuse=False)
    assert layers[1].attend_rotary is None and not layers[1].down_fuses_silu
    monkeypatch.setenv("BASEBOARD_CUDA_GRAPHS", "0")  # the torch attention is not graph-safe
    reference, _ = greedy(tiny_qwen, monkeypatch, fuse=True,
                          backends={op: "torch" for op in OPS}, dtype="float32")
    assert fused == unfused
    # bfloat16 kernels against the float32 references: rounding may flip a near-tie, after
    # which a sequence goes its own way; broken kernels diverge everywhere
    assert any(f[:8] == r[:8] for f, r in zip(fused, reference))
