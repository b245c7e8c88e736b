"""vLLM's offline sampling API end to end on a tiny random Llama (fp32, CPU): n completions,
penalties, min_p, min_tokens and log-probabilities, with transformers as the reference."""

import pytest
import torch
from conftest import build_checkpoint

from baseboard import LLM, SamplingParams
from baseboard.core.errors import RequestError

PROMPT = "The quick brown fox jumps over the lazy dog."
LONG = "Continuous batching mixes prefills and decodes in one step. " * 2
# Prompts whose greedy completions repeat the token just generated, so that penalties change
# them and, with async scheduling, must count the token still on the device.
REPEATING = ["lazy dog", "jumps"]
BLOCK = 16


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async"])
def llm(tiny_llama, request):
    """Async scheduling reads a step's tokens after the next step is launched: penalties
    and min_tokens must count the token still on the device."""
    return LLM(str(tiny_llama[0]), dtype="float32", platform="cpu", max_num_seqs=8,
               block_size=BLOCK, seed=0, async_scheduling=request.param)


def greedy(max_tokens=10, **extra):
    return SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True, **extra)


def token_ids(llm, prompt, params):
    return llm.generate(prompt, params)[0].outputs[0].token_ids


def hf_logits(model, ids):
    """transformers' raw logits [len(ids), V] float32."""
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float()


# --- n ---------------------------------------------------------------------------------


def test_n_greedy_completions_are_copies_in_one_output(llm):
    out = llm.generate([PROMPT, "Paris"], greedy(n=3))
    assert len(out) == 2
    for prompt, request in zip([PROMPT, "Paris"], out):
        assert [c.index for c in request.outputs] == [0, 1, 2]
        alone = token_ids(llm, prompt, greedy())
        assert [c.token_ids for c in request.outputs] == [alone] * 3
        assert request.finished
    assert llm.engine.is_idle()


def test_n_seeded_completions_differ_and_repeat(llm):
    params = SamplingParams(n=4, temperature=1.0, seed=5, max_tokens=12, ignore_eos=True)
    first = [c.token_ids for c in llm.generate(PROMPT, params)[0].outputs]
    again = [c.token_ids for c in llm.generate(PROMPT, params)[0].outputs]
    assert first == again
    assert len({tuple(t) for t in first}) == 4
    # completion i draws as a single request seeded with seed + i (vLLM's rule)
    for i, tokens in enumerate(first):
        single = SamplingParams(temperature=1.0, seed=5 + i, max_tokens=12, ignore_eos=True)
        assert token_ids(llm, PROMPT, single) == tokens


def test_n_completions_take_the_prompt_blocks_from_the_prefix_cache(llm):
    prompt = LONG + "Shared by every completion."
    num_prompt = len(llm.get_tokenizer()(prompt).input_ids)
    assert num_prompt > 2 * BLOCK
    manager = llm.engine.block_manager
    hits = manager.num_cache_hit_tokens
    out = llm.generate(prompt, greedy(n=3, max_tokens=4))[0]
    assert manager.num_cache_hit_tokens - hits == 2 * ((num_prompt - 1) // BLOCK) * BLOCK
    assert len({tuple(c.token_ids) for c in out.outputs}) == 1
    assert llm.engine.is_idle()


def test_aborting_a_request_stops_its_held_completions(llm):
    engine = llm.engine
    first = engine.make_sequence(LONG, greedy(n=3))
    siblings = engine.make_siblings(first)
    engine.enqueue([first, *siblings])
    assert all(s.held for s in siblings)
    engine.step()
    engine.abort(first.request_id)
    while engine.has_unfinished():
        engine.step()
    assert all(s.finished for s in [first, *siblings])
    assert engine.is_idle()


def test_a_stream_takes_one_completion(llm):
    params = SamplingParams(n=2)
    with pytest.raises(RequestError, match="n=2.*generate"):
        llm.stream(PROMPT, params)


# --- penalties, min_p -----------------------------------------------------------------


@pytest.mark.parametrize("prompt", REPEATING)
def test_repetition_penalty_matches_transformers(llm, tiny_llama, prompt):
    _, model, tokenizer = tiny_llama
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                             do_sample=False, repetition_penalty=1.8, eos_token_id=None,
                             pad_token_id=None)
    penalised = token_ids(llm, prompt, greedy(12, repetition_penalty=1.8))
    assert penalised == ref[0, ids.shape[1]:].tolist()
    assert penalised != token_ids(llm, prompt, greedy(12))


def greedy_with_penalties(model, prompt_ids, steps, presence, frequency):
    """Greedy decoding where each logit loses frequency * (times generated) + presence *
    (generated at all): OpenAI's formula, recomputed from transformers' logits."""
    out = []
    for _ in range(steps):
        logits = hf_logits(model, prompt_ids + out)[-1]
        counts = torch.bincount(torch.tensor(out, dtype=torch.long), minlength=logits.numel())
        logits = logits - frequency * counts - presence * (counts > 0)
        out.append(int(logits.argmax()))
    return out


@pytest.mark.parametrize("presence, frequency", [(1.5, 0.0), (0.0, 0.7), (-1.0, 0.5)])
def test_presence_and_frequency_penalties_follow_the_formula(llm, tiny_llama, presence,
                                                             frequency):
    _, model, tokenizer = tiny_llama
    prompt = REPEATING[0]
    expected = greedy_with_penalties(model, tokenizer(prompt).input_ids, 12, presence,
                                     frequency)
    got = token_ids(llm, prompt, greedy(12, presence_penalty=presence,
                                        frequency_penalty=frequency))
    assert got == expected
    assert got != token_ids(llm, prompt, greedy(12))


def test_penalised_and_plain_requests_share_a_step(llm):
    plain = token_ids(llm, PROMPT, greedy())
    penalised = token_ids(llm, "Paris", greedy(frequency_penalty=1.0))
    together = llm.generate([PROMPT, "Paris"], [greedy(), greedy(frequency_penalty=1.0)])
    assert [o.outputs[0].token_ids for o in together] == [plain, penalised]


def test_min_p_of_one_keeps_only_the_most_likely_token(llm):
    sampled = SamplingParams(temperature=1.0, seed=3, min_p=1.0, max_tokens=10,
                             ignore_eos=True)
    assert token_ids(llm, PROMPT, sampled) == token_ids(llm, PROMPT, greedy())
    free = SamplingParams(temperature=1.0, seed=3, max_tokens=10, ignore_eos=True)
    assert token_ids(llm, PROMPT, free) != token_ids(llm, PROMPT, greedy())


# --- min_tokens -----------------------------------------------------------------------


def test_min_tokens_holds_back_a_stop_token(llm, tiny_llama):
    _, model, tokenizer = tiny_llama
    first = token_ids(llm, PROMPT, greedy())[0]
    stopped = llm.generate(PROMPT, greedy(stop_token_ids=[first]))[0].outputs[0]
    assert stopped.token_ids == [first] and stopped.stop_reason == first
    held = token_ids(llm, PROMPT, greedy(stop_token_ids=[first], min_tokens=4))
    assert first not in held[:4] and len(held) >= 4
    logits = hf_logits(model, tokenizer(PROMPT).input_ids)[-1]
    logits[first] = float("-inf")
    assert held[0] == int(logits.argmax())


def test_min_tokens_holds_back_eos(llm, monkeypatch):
    first = token_ids(llm, PROMPT, greedy())[0]
    monkeypatch.setattr(llm.engine, "eos_token_ids", frozenset({first}))
    params = SamplingParams(temperature=0, max_tokens=10)
    ended = llm.generate(PROMPT, params)[0].outputs[0]
    assert ended.token_ids == [first] and ended.finish_reason == "stop"
    params.min_tokens = 5
    held = llm.generate(PROMPT, params)[0].outputs[0]
    assert first not in held.token_ids[:5] and len(held.token_ids) >= 5


# --- log-probabilities ----------------------------------------------------------------


def check_entry(entry, chosen, row, k, tokenizer):
    """One {token id: Logprob} against transformers' log_softmax row [V]."""
    assert next(iter(entry)) == chosen
    top = row.topk(k).indices.tolist() if k else []
    assert set(entry) == {chosen, *top}
    for token, logprob in entry.items():
        assert logprob.logprob == pytest.approx(row[token].item(), abs=1e-4)
        assert logprob.decoded_token == tokenizer.decode([token])
    for rank, token in enumerate(top, start=1):
        if token != chosen:
            assert entry[token].rank == rank
    value = row[chosen]
    assert (row > value + 1e-4).sum() < entry[chosen].rank <= (row >= value - 1e-4).sum()


@pytest.mark.parametrize("k", [0, 3])
def test_logprobs_are_the_raw_logits_log_softmax(llm, tiny_llama, k):
    """Sampled with a temperature and a penalty, the log-probabilities stay transformers'
    log_softmax of the raw logits at each position."""
    _, model, tokenizer = tiny_llama
    params = SamplingParams(temperature=0.8, seed=4, repetition_penalty=1.3, max_tokens=6,
                            ignore_eos=True, logprobs=k)
    out = llm.generate(PROMPT, params)[0]
    completion = out.outputs[0]
    rows = hf_logits(model, out.prompt_token_ids + completion.token_ids).log_softmax(-1)
    start = len(out.prompt_token_ids) - 1
    assert len(completion.logprobs) == len(completion.token_ids)
    for i, (token, entry) in enumerate(zip(completion.token_ids, completion.logprobs)):
        check_entry(entry, token, rows[start + i], k, tokenizer)
    chosen = sum(e[t].logprob for t, e in zip(completion.token_ids, completion.logprobs))
    assert completion.cumulative_logprob == pytest.approx(chosen)
    assert out.prompt_logprobs is None


def test_only_the_rows_that_ask_get_logprobs(llm):
    plain, asking = llm.generate([PROMPT, "Paris"], [greedy(4), greedy(4, logprobs=1)])
    assert plain.outputs[0].logprobs is None and plain.outputs[0].cumulative_logprob is None
    assert len(asking.outputs[0].logprobs) == 4


def test_prompt_logprobs_compute_the_whole_prompt(llm, tiny_llama):
    _, model, tokenizer = tiny_llama
    prompt = LONG + "Every position counts."
    llm.generate(prompt, greedy(2))  # its blocks are now in the prefix cache
    hits = llm.engine.block_manager.num_cache_hit_tokens
    out = llm.generate(prompt, greedy(2, prompt_logprobs=2, n=2))[0]
    ids = out.prompt_token_ids
    assert len(ids) > 2 * BLOCK
    # completion 0 computes every position; completion 1 still reuses the cached blocks
    assert llm.engine.block_manager.num_cache_hit_tokens - hits == (len(ids) - 1) // BLOCK * BLOCK
    rows = hf_logits(model, ids).log_softmax(-1)
    assert out.prompt_logprobs[0] is None and len(out.prompt_logprobs) == len(ids)
    for i in range(1, len(ids)):
        check_entry(out.prompt_logprobs[i], ids[i], rows[i - 1], 2, tokenizer)
    assert all(c.logprobs is None for c in out.outputs)


def test_prompt_logprobs_of_a_one_token_prompt(llm):
    out = llm.generate({"prompt_token_ids": [7]}, greedy(2, prompt_logprobs=1))[0]
    assert out.prompt_logprobs == [None]


def test_too_many_logprobs_name_the_vocabulary(llm):
    vocab = llm.engine.config.model_config.vocab_size
    with pytest.raises(RequestError, match=f"logprobs={vocab + 1}.*{vocab}"):
        llm.generate(PROMPT, greedy(logprobs=vocab + 1))


# --- strict types ---------------------------------------------------------------------


def test_a_bad_field_is_named_before_anything_runs(llm):
    with pytest.raises(RequestError, match="ignore_eos='no'"):
        SamplingParams(ignore_eos="no")
    params = SamplingParams(temperature=1.0)
    params.seed = 2**64  # changed after it was checked: generate() checks again
    with pytest.raises(RequestError, match="prompt 1 of 2: SamplingParams seed=" + str(2**64)):
        llm.generate(["Paris", PROMPT], [greedy(), params])
    assert llm.engine.is_idle()


# --- skip_special_tokens --------------------------------------------------------------


@pytest.fixture(scope="module")
def special_llm(tmp_path_factory):
    """The tiny checkpoint with <|user|>'s output row made a copy of the token greedy
    decoding picks first, a little larger: greedy output then holds <|user|>."""
    path = tmp_path_factory.mktemp("special-llama")
    model, tokenizer = build_checkpoint(path)
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    special = tokenizer.convert_tokens_to_ids("<|user|>")
    with torch.no_grad():
        favourite = int(model(ids).logits[0, -1].argmax())
        model.lm_head.weight[special] = model.lm_head.weight[favourite] * 1.5
    model.save_pretrained(path, safe_serialization=True)
    return LLM(str(path), dtype="float32", platform="cpu", max_num_seqs=4), special


@pytest.mark.parametrize("skip", [True, False])
def test_skip_special_tokens(special_llm, skip):
    llm, special = special_llm
    tokenizer = llm.get_tokenizer()
    for params in (greedy(12, skip_special_tokens=skip),
                   greedy(12, skip_special_tokens=skip, stop=["never in the text"])):
        completion = llm.generate(PROMPT, params)[0].outputs[0]
        assert special in completion.token_ids
        assert completion.text == tokenizer.decode(completion.token_ids,
                                                   skip_special_tokens=skip)
        assert ("<|user|>" in completion.text) is not skip
