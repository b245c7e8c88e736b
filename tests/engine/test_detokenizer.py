import json

import pytest
from conftest import build_tokenizer

from baseboard.engine.detokenizer import IncrementalDetokenizer

TEXTS = ["Grüße aus Köln!", " leading space and  double  spaces", "日本語のテキスト。",
         "emoji 🙂🙂 mixed é", "plain ascii words here"]


def sentencepiece_tokenizer():
    """A Llama-2 style tokenizer: '▁' for spaces, byte fallback for characters outside the
    (ASCII) vocabulary, and a decoder that strips the leading space."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    trainer_tok = Tokenizer(models.BPE(unk_token="<unk>"))
    trainer_tok.normalizer = normalizer
    trainer = trainers.BpeTrainer(vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"])
    trainer_tok.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 5, trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(model["vocab"])
    for byte in range(256):
        vocab.setdefault(f"<0x{byte:02X}>", len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                     decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def tokenizer(request):
    return build_tokenizer() if request.param == "byte_level" else sentencepiece_tokenizer()


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_add_up_to_the_full_decode(tokenizer, text):
    prompt = tokenizer("the lazy dog", add_special_tokens=False).input_ids
    output = tokenizer(text, add_special_tokens=False).input_ids
    assert len(output) > 1
    detok = IncrementalDetokenizer(tokenizer, prompt)
    deltas = [detok.add(token) for token in output]
    deltas.append(detok.flush())
    decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)  # noqa: E731
    expected = decode(prompt + output)[len(decode(prompt)):]
    assert "".join(deltas) == expected
    assert not any("\ufffd" in d for d in deltas)


def test_multi_byte_characters_are_held_until_complete(tokenizer):
    ids = tokenizer("🙂", add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tokenizer, tokenizer("a", add_special_tokens=False).input_ids)
    deltas = [detok.add(token) for token in ids]
    assert deltas[-1].endswith("🙂")
    assert not any("\ufffd" in d or "🙂" in d for d in deltas[:-1])


def test_an_incomplete_character_is_flushed_at_the_end(tokenizer):
    ids = tokenizer("🙂", add_special_tokens=False).input_ids
    assert len(ids) >= 2  # the tiny vocabularies split it into bytes
    detok = IncrementalDetokenizer(tokenizer, [])
    for token in ids[:-1]:
        detok.add(token)
    assert detok.flush().endswith("\ufffd")


def test_special_tokens_are_skipped(tokenizer):
    ids = tokenizer("the fox", add_special_tokens=False).input_ids
    detok = IncrementalDetokenizer(tokenizer, [])
    text = "".join(detok.add(t) for t in ids + [tokenizer.eos_token_id]) + detok.flush()
    assert text == "the fox"
