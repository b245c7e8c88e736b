"""Both ways of detokenizing (tokenizers' DecodeStream for fast tokenizers, the decode window
for others) give the text of one full decode, with or without special tokens."""

import pytest
from conftest import build_tokenizer
from test_detokenizer import TEXTS, sentencepiece_tokenizer

from baseboard.engine.detokenizer import IncrementalDetokenizer


class PythonTokenizer:
    """A tokenizer without a Rust backend (as a slow, Python-only one): decode only."""

    def __init__(self, fast):
        self.decode = fast.decode


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def fast(request):
    return build_tokenizer() if request.param == "byte_level" else sentencepiece_tokenizer()


@pytest.fixture(params=["stream", "window"])
def path(request):
    return request.param


def detokenizer(fast, path, prompt, skip):
    tokenizer = fast if path == "stream" else PythonTokenizer(fast)
    detok = IncrementalDetokenizer(tokenizer, prompt, skip_special_tokens=skip)
    assert (detok.stream is not None) is (path == "stream")
    return detok


@pytest.mark.parametrize("skip", [True, False])
@pytest.mark.parametrize("text", TEXTS[::2])
def test_deltas_add_up_to_the_full_decode(fast, path, skip, text):
    bos, eos = fast.bos_token_id, fast.eos_token_id
    words = fast(text, add_special_tokens=False).input_ids
    output = words[:2] + [eos, bos] + words[2:] + [eos]
    for prompt in (fast("the lazy dog").input_ids, [bos], [eos, bos]):
        detok = detokenizer(fast, path, prompt, skip)
        text_out = "".join(detok.add(t) for t in output) + detok.flush()
        decode = lambda ids: fast.decode(ids, skip_special_tokens=skip)  # noqa: E731
        assert text_out == decode(prompt + output)[len(decode(prompt)):]
        assert ("</s>" in text_out) is not skip


def test_held_tokens_give_the_same_text(fast, path):
    prompt = fast("the lazy dog").input_ids
    output = fast("emoji 🙂🙂 mixed é", add_special_tokens=False).input_ids
    stepped, held = (detokenizer(fast, path, prompt, True) for _ in range(2))
    expected = "".join(stepped.add(t) for t in output) + stepped.flush()
    for token in output:
        held.hold(token)
    assert held.flush() == expected


def test_an_incomplete_character_is_flushed_after_text(fast, path):
    ids = fast("a 🙂", add_special_tokens=False).input_ids
    detok = detokenizer(fast, path, [], True)
    text = "".join(detok.add(t) for t in ids[:-1])
    assert text.startswith("a") and "\ufffd" not in text
    assert (text + detok.flush()).endswith("\ufffd")
