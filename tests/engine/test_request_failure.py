"""A request whose host-side work fails inside a step (here its detokenizer) fails alone:
its caller gets the error, the other requests of the same steps finish as if it had never
been there, and its KV blocks are freed."""

import pytest

from baseboard import LLM, SamplingParams
from baseboard.engine.detokenizer import IncrementalDetokenizer

GOOD = "The quick brown fox"
POISONED = "Paris is the capital of France"


class DecodeFailure(RuntimeError):
    pass


@pytest.fixture
def poisoned_prompt(monkeypatch, tiny_llama):
    """Make the detokenizer of every request whose prompt ends like POISONED's raise on
    its first output token: a fault injected where a real tokenizer could fail."""
    marker = tiny_llama[2](POISONED).input_ids[-1]
    assert marker not in tiny_llama[2](GOOD).input_ids
    init = IncrementalDetokenizer.__init__

    def tagging_init(self, tokenizer, prompt_token_ids, skip_special_tokens=True):
        init(self, tokenizer, prompt_token_ids, skip_special_tokens)
        self.poisoned = list(prompt_token_ids[-1:]) == [marker]

    def failing(method):
        def wrapper(self, token_id):
            if self.poisoned:
                raise DecodeFailure(f"cannot decode token {token_id}")
            return method(self, token_id)
        return wrapper

    monkeypatch.setattr(IncrementalDetokenizer, "__init__", tagging_init)
    monkeypatch.setattr(IncrementalDetokenizer, "add", failing(IncrementalDetokenizer.add))
    monkeypatch.setattr(IncrementalDetokenizer, "hold", failing(IncrementalDetokenizer.hold))
    return POISONED


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama[0]), dtype="float32", platform="cpu", max_num_seqs=4, seed=0)


def test_a_failing_stream_fails_alone(llm, poisoned_prompt):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    expected = llm.generate(GOOD, params)[0].outputs[0].text
    good = llm.stream(GOOD, params)
    bad = llm.stream(poisoned_prompt, params)
    # the good stream steps the batch that holds the failing request
    assert "".join(good) == expected
    with pytest.raises(DecodeFailure):
        next(bad)
    assert llm.engine.is_idle()


def test_generate_raises_the_failure_of_its_own_request(llm, poisoned_prompt):
    params = SamplingParams(temperature=0, max_tokens=6, n=2)
    with pytest.raises(DecodeFailure):
        llm.generate([GOOD, poisoned_prompt], params)
    assert llm.engine.is_idle()
    assert llm.generate(GOOD, params)[0].finished
