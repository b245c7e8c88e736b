"""Stops, streaming, chat, and bad requests (which must never disturb good ones)."""

import shutil

import pytest

from baseboard import LLM, SamplingParams
from baseboard.core.errors import ConfigError, ModelError, RequestError

GREEDY = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
PROMPT = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async"])
def llm(tiny_llama, request):
    """Every request behaviour holds whether or not steps are launched ahead of reading."""
    return LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=4, max_model_len=128,
               async_scheduling=request.param)


def completion(llm, prompt=PROMPT, **kwargs):
    params = SamplingParams(**{"temperature": 0, "max_tokens": 24, "ignore_eos": True,
                               **kwargs})
    return llm.generate(prompt, params)[0].outputs[0]


def test_max_tokens_ends_with_length(llm):
    out = completion(llm, max_tokens=5)
    assert len(out.token_ids) == 5 and out.finish_reason == "length"


def test_max_model_len_ends_with_length(llm):
    ids = list(range(5, 125))
    out = llm.generate({"prompt_token_ids": ids}, GREEDY)[0]
    assert out.prompt is None and out.prompt_token_ids == ids
    assert len(out.outputs[0].token_ids) == 128 - 120
    assert out.outputs[0].finish_reason == "length"


def test_stop_token_ids_end_at_the_first_one_and_keep_it(llm):
    full = completion(llm)
    stop = full.token_ids[3]
    out = completion(llm, stop_token_ids=[stop])
    first = full.token_ids.index(stop)
    assert out.token_ids == full.token_ids[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == stop


def test_eos_ends_unless_ignored(llm):
    full = completion(llm)
    eos_before = llm.engine.eos_token_ids
    llm.engine.eos_token_ids = frozenset({full.token_ids[2]})
    try:
        out = completion(llm, ignore_eos=False)
        ignored = completion(llm, ignore_eos=True)
    finally:
        llm.engine.eos_token_ids = eos_before
    assert out.token_ids == full.token_ids[:full.token_ids.index(full.token_ids[2]) + 1]
    assert out.finish_reason == "stop" and out.stop_reason is None
    assert ignored.token_ids == full.token_ids


def test_stop_strings_truncate_the_text_before_the_string(llm):
    full = completion(llm, "Grüße aus Köln!")
    text = full.text
    stop = next(text[i:i + 2] for i in range(3, len(text) - 2)
                if "\ufffd" not in text[i:i + 2] and text[i:i + 2].strip())
    out = completion(llm, "Grüße aus Köln!", stop=[stop, "never appears"])
    assert out.text == text[:text.index(stop)]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert len(out.token_ids) < len(full.token_ids)


def test_stream_yields_the_generated_text(llm):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    stream = llm.stream(PROMPT, params)
    deltas = list(stream)
    assert len(deltas) > 1
    assert "".join(deltas) == stream.output.outputs[0].text == completion(llm).text


def test_stream_never_shows_a_stop_string(llm):
    text = completion(llm).text
    stop = next(text[i:i + 3] for i in range(4, len(text) - 3) if "\ufffd" not in text[i:i + 3])
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, stop=stop)
    assert "".join(llm.stream(PROMPT, params)) == text[:text.index(stop)]


def test_closing_a_stream_early_aborts_its_request(llm):
    stream = llm.stream(PROMPT, GREEDY)
    next(stream)
    stream.close()
    assert llm.engine.is_idle()


def test_chat_applies_the_template_with_the_generation_prompt(llm, tiny_llama):
    tokenizer = tiny_llama[2]
    messages = [{"role": "user", "content": "Paris is the capital of"}]
    out = llm.chat(messages, GREEDY)[0]
    assert out.prompt == "<|user|>Paris is the capital of</s><|assistant|>"
    assert out.prompt_token_ids == tokenizer(out.prompt, add_special_tokens=False).input_ids
    assert out.prompt_token_ids[0] == tokenizer.convert_tokens_to_ids("<|user|>")
    both = llm.chat([messages, messages + [{"role": "assistant", "content": "x"}]], GREEDY)
    assert both[0].outputs[0].token_ids == out.outputs[0].token_ids
    assert both[1].prompt.endswith("x</s><|assistant|>")


def test_chat_without_a_template_is_a_model_error(tiny_llama, tmp_path):
    path = tmp_path / "no-template"
    shutil.copytree(tiny_llama[0], path)
    (path / "chat_template.jinja").unlink()
    plain = LLM(str(path), dtype="float32", max_num_seqs=1)
    with pytest.raises(ModelError, match="no chat template"):
        plain.chat([{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("prompt, match", [
    ("", "empty string"),
    ({"prompt_token_ids": []}, "no tokens"),
    ({"prompt_token_ids": [1, 2, 100000]}, "token id 100000 is outside the vocabulary"),
    ({"prompt_token_ids": "1 2 3"}, "must be a list of integers"),
    (42, "a prompt must be a str"),
    ({"prompt_token_ids": list(range(129))}, "129 tokens, more than max_model_len=128"),
])
def test_bad_prompts_are_request_errors(llm, prompt, match):
    with pytest.raises(RequestError, match=match):
        llm.generate(prompt, GREEDY)
    assert llm.engine.is_idle()


def test_bad_sampling_params_arguments(llm):
    with pytest.raises(RequestError, match="2 entries for 3 prompts"):
        llm.generate([PROMPT] * 3, [GREEDY, GREEDY])
    with pytest.raises(RequestError, match=r"sampling_params\[1\] is a dict"):
        llm.generate([PROMPT] * 2, [GREEDY, {"temperature": 0}])
    changed = SamplingParams()
    changed.top_p = 0
    with pytest.raises(RequestError, match="top_p=0 is invalid"):
        llm.generate(PROMPT, changed)


def test_a_bad_request_in_a_batch_runs_nothing_and_loses_nothing(llm):
    good = [PROMPT, "Paris"]
    with pytest.raises(RequestError, match=r"prompt 1 of 3: .*empty string.*Nothing was run"):
        llm.generate([good[0], "", good[1]], GREEDY)
    assert llm.engine.is_idle()
    expected = [completion(llm, p).token_ids for p in good]
    assert [o.outputs[0].token_ids for o in llm.generate(good, GREEDY)] == expected


def test_a_bad_request_added_to_a_running_engine_does_not_disturb_it(llm):
    engine = llm.engine
    expected = [completion(llm, p).token_ids for p in (PROMPT, "Paris")]
    seqs = [engine.add_request(PROMPT, GREEDY), engine.add_request("Paris", GREEDY)]
    engine.step()
    engine.step()
    with pytest.raises(RequestError, match="more than max_model_len"):
        engine.add_request({"prompt_token_ids": [3] * 500}, GREEDY)
    with pytest.raises(RequestError, match="temperature"):
        engine.add_request(PROMPT, SamplingParams(temperature=-1))
    while engine.has_unfinished():
        engine.step()
    assert [s.output_token_ids for s in seqs] == expected
    assert engine.is_idle()


def test_bad_engine_arguments(tiny_llama):
    path = str(tiny_llama[0])
    with pytest.raises(ConfigError, match="dtype='int8'"):
        LLM(path, dtype="int8")
    with pytest.raises(ModelError, match="max_model_len=1000 is more than the model's 256"):
        LLM(path, max_model_len=1000)
    with pytest.raises(ModelError, match="fewer than one sequence of max_model_len=256"):
        LLM(path, dtype="float32", kv_cache_memory=4096)
    with pytest.raises(ConfigError, match="max_num_seqs=0"):
        LLM(path, max_num_seqs=0)
