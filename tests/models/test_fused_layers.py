"""The decoder layer with the plan's fused forms (rotary in the KV write, SiLU-and-mul in
the down projection, the residual add + RMSNorm in the q/k/v and gate/up projections)
against the same kernels run apart (BASEBOARD_FUSE=0) and against
transformers, through the engine, in Triton's interpreter on the CPU.

One sequence, so every decode step is one row: the projections run the fused GEMVs.
"""

from __future__ import annotations

import os

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real: tests/*/test_*_gpu.py
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

pytest.importorskip("triton.language")  # imported now, while TRITON_INTERPRET=1 (optional)

from baseboard import LLM, SamplingParams  # noqa: E402

from tiny_models import save_tiny, tiny_hf_model  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.slow,
              pytest.mark.usefixtures("triton_interpreter")]

TRITON_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul", "gemm",
              "attention")
PROMPT = [5, 17, 99, 3, 42, 7, 250, 61]
NEW_TOKENS = 5


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """A Qwen2 checkpoint (q/k/v biases) with head size 16, and its transformers model."""
    model = tiny_hf_model("Qwen2ForCausalLM", seed=3)
    with torch.no_grad():  # a wider logit spread keeps greedy choices far from ties
        model.lm_head.weight.mul_(8.0)
    return save_tiny(model, tmp_path_factory.mktemp("tiny-qwen")), model


def greedy(path, monkeypatch, fuse: bool):
    monkeypatch.setenv("BASEBOARD_FUSE", "1" if fuse else "0")
    llm = LLM(str(path), dtype="float32", platform="cpu", max_num_seqs=2,
              backends={op: "triton" for op in TRITON_OPS})
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    [output] = llm.generate([{"prompt_token_ids": PROMPT}], params)
    return llm, list(output.outputs[0].token_ids)


def test_fused_layers_give_the_unfused_and_the_transformers_tokens(tiny_qwen, monkeypatch):
    path, model = tiny_qwen
    fused_llm, fused = greedy(path, monkeypatch, fuse=True)
    layers = fused_llm.engine.model.layers
    assert all(layer.attend_rotary is not None and layer.down_fuses_silu
               and layer.normed_qkv_proj is not None and layer.normed_gate_up_proj is not None
               for layer in layers)
    unfused_llm, unfused = greedy(path, monkeypatch, fuse=False)
    layers = unfused_llm.engine.model.layers
    assert not any(layer.attend_rotary is not None or layer.down_fuses_silu
                   or layer.normed_qkv_proj is not None for layer in layers)
    with torch.no_grad():
        want = model.generate(torch.tensor([PROMPT]), max_new_tokens=NEW_TOKENS,
                              do_sample=False)[0, len(PROMPT):].tolist()
    assert fused == unfused == want
