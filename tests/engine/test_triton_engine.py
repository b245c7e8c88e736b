"""The whole engine with every op that has a Triton kernel forced to it, in Triton's
interpreter on the CPU: greedy tokens equal the torch references' (tiny Llama, fp32)."""

import os

import pytest
import torch

if torch.cuda.is_available():  # a GPU runs the kernels for real: tests/*/test_*_gpu.py
    pytest.skip("interpreter tests are for machines without a GPU", allow_module_level=True)
os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (tests/conftest.py)

pytest.importorskip("triton.language")  # imported now, while TRITON_INTERPRET=1 (optional)

from baseboard import LLM, SamplingParams  # noqa: E402
from baseboard.core.ops import OPS  # noqa: E402

pytestmark = [pytest.mark.interpreter, pytest.mark.usefixtures("triton_interpreter")]

TRITON_OPS = ("rms_norm", "fused_add_rms_norm", "rotary_embedding", "silu_and_mul",
              "attention", "sample")
PROMPTS = ["Paris is the capital", "Grüße aus Köln!",
           "Continuous batching mixes prefills and decodes in one step."]


def generate(path, backends):
    llm = LLM(str(path), dtype="float32", platform="cpu", max_num_seqs=4, backends=backends)
    params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    return llm, [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]


def test_every_op_forced_to_triton_gives_the_reference_tokens(tiny_llama):
    path = tiny_llama[0]
    llm, triton_tokens = generate(path, {op: "triton" for op in TRITON_OPS})
    assert all(llm.plan.decisions[op].selected == "triton" for op in TRITON_OPS)
    _, reference_tokens = generate(path, {op: "torch" for op in OPS})
    assert triton_tokens == reference_tokens
    assert all(len(t) == 6 for t in triton_tokens)
