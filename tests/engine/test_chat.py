"""LLM.chat: OpenAI-style content parts and the template arguments vLLM takes."""

import pytest

from baseboard import LLM, SamplingParams
from baseboard.core.errors import RequestError

GREEDY = SamplingParams(temperature=0, max_tokens=6)


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=2)


def test_text_parts_are_joined_as_a_string_content(llm):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Paris is"},
                                          {"type": "text", "text": "the capital"}]}]
    plain = [{"role": "user", "content": "Paris is\nthe capital"}]
    assert llm.apply_chat_template(parts) == llm.apply_chat_template(plain)
    assert llm.chat(parts, GREEDY)[0].outputs[0].text == llm.chat(plain, GREEDY)[0].outputs[0].text


def test_a_non_text_part_is_refused_by_name(llm):
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    with pytest.raises(RequestError, match="text parts.*image_url"):
        llm.chat(image, GREEDY)


def test_chat_template_arguments(llm):
    messages = [{"role": "user", "content": "hi"}]
    with_prompt = llm.apply_chat_template(messages)["prompt"]
    without = llm.apply_chat_template(messages, add_generation_prompt=False)["prompt"]
    assert with_prompt == without + "<|assistant|>"
    template = "{% for m in messages %}[{{ m['content'] }}|{{ flavour }}]{% endfor %}"
    own = llm.apply_chat_template(messages, chat_template=template,
                                  chat_template_kwargs={"flavour": "x"})
    assert own["prompt"] == "[hi|x]"
    out = llm.chat(messages, GREEDY, chat_template=template,
                   chat_template_kwargs={"flavour": "x"})[0]
    assert out.prompt_token_ids == own["prompt_token_ids"]
