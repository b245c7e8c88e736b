"""End to end through LLM on a tiny random Llama (fp32, CPU)."""

import pytest
import torch

from baseboard import LLM, SamplingParams
from baseboard.engine.kv_budget import block_bytes

GREEDY = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
PROMPTS = ["Paris", "The quick brown fox jumps over the lazy dog.",
           "Continuous batching mixes prefills and decodes in one step. " * 3,
           "Grüße aus Köln!", "Paged attention stores keys and values in fixed-size blocks."]


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async"])
def llm(tiny_llama, request):
    """Every result holds whether or not steps are launched ahead of reading."""
    return LLM(str(tiny_llama[0]), dtype="float32", platform="cpu", max_num_seqs=8, seed=0,
               async_scheduling=request.param)


def tokens(outputs):
    return [o.outputs[0].token_ids for o in outputs]


def test_greedy_matches_transformers(llm, tiny_llama):
    _, model, tokenizer = tiny_llama
    for prompt in PROMPTS[:2]:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            ref = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                 do_sample=False, eos_token_id=None, pad_token_id=None)
        out = llm.generate(prompt, GREEDY)[0]
        assert out.prompt == prompt and out.prompt_token_ids == ids[0].tolist()
        assert out.outputs[0].token_ids == ref[0, ids.shape[1]:].tolist()
        assert out.outputs[0].finish_reason == "length" and out.finished


def test_a_batch_of_mixed_lengths_gives_each_prompt_its_own_tokens(llm):
    alone = [tokens(llm.generate(p, GREEDY))[0] for p in PROMPTS]
    together = llm.generate(PROMPTS, GREEDY, use_tqdm=True)
    assert [o.prompt for o in together] == PROMPTS
    assert tokens(together) == alone
    assert llm.engine.is_idle()


def test_preemption_when_the_cache_is_too_small_keeps_the_tokens(llm, tiny_llama):
    params = SamplingParams(temperature=0, max_tokens=40, ignore_eos=True)
    prompts = [PROMPTS[i] for i in (0, 1, 3, 4)]
    expected = tokens(llm.generate(prompts, params))
    per_block = block_bytes(llm.engine.runner.attention, llm.engine.config.model_config.num_layers,
                            torch.float32)
    small = LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=4, max_model_len=80,
                kv_cache_memory=7 * per_block, block_size=16,
                async_scheduling=llm.engine.async_scheduling)
    assert small.engine.block_manager.num_blocks == 7
    assert tokens(small.generate(prompts, params)) == expected
    assert small.engine.num_preemptions > 0
    assert small.engine.is_idle()


def test_a_shared_prefix_is_reused_and_gives_the_same_tokens(llm):
    prefix = PROMPTS[2]
    prompts = [prefix + " First", prefix + " Second"]
    alone = [tokens(llm.generate(p, GREEDY))[0] for p in prompts]
    hits = llm.engine.block_manager.num_cache_hit_tokens
    assert tokens(llm.generate(prompts, GREEDY)) == alone
    assert llm.engine.block_manager.num_cache_hit_tokens > hits


def test_seeded_sampling_is_reproducible_whatever_runs_beside_it(llm):
    seeded = [SamplingParams(temperature=1.0, top_p=0.95, seed=s, max_tokens=24,
                             ignore_eos=True) for s in (1, 2)]
    one = tokens(llm.generate([PROMPTS[0]], [seeded[0]]))[0]
    batch = tokens(llm.generate([PROMPTS[1], PROMPTS[0], PROMPTS[0]],
                                [SamplingParams(temperature=0.7, max_tokens=30),
                                 seeded[0], seeded[1]]))
    assert batch[1] == one
    assert batch[2] != one


def test_the_engine_seed_fixes_unseeded_sampling(tiny_llama):
    params = SamplingParams(temperature=1.0, top_k=20, max_tokens=20, ignore_eos=True)
    runs = [tokens(LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=2, seed=seed)
                   .generate(PROMPTS[:2], params)) for seed in (5, 5, 6)]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_top_k_one_is_greedy(llm):
    sampled = SamplingParams(temperature=0.8, top_k=1, max_tokens=16, ignore_eos=True)
    assert tokens(llm.generate(PROMPTS[1], sampled)) == tokens(llm.generate(PROMPTS[1], GREEDY))


def test_cpu_threads_come_from_baseboard_num_threads(tiny_llama, monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.setenv("BASEBOARD_NUM_THREADS", "1")
    try:
        LLM(str(tiny_llama[0]), dtype="float32", platform="cpu", max_num_seqs=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_detokenize_false_gives_the_same_tokens_and_no_text(llm):
    with_text = llm.generate(PROMPTS[1], GREEDY)[0].outputs[0]
    ids_only = llm.generate(PROMPTS[1], SamplingParams(temperature=0, max_tokens=16,
                                                       ignore_eos=True, detokenize=False))
    assert ids_only[0].outputs[0].token_ids == with_text.token_ids
    assert ids_only[0].outputs[0].text == "" and with_text.text != ""


def test_skip_tokenizer_init_takes_token_ids_only(tiny_llama):
    from baseboard.core.errors import RequestError

    llm = LLM(str(tiny_llama[0]), dtype="float32", platform="cpu", skip_tokenizer_init=True)
    ids_only = SamplingParams(temperature=0, max_tokens=4, detokenize=False)
    out = llm.generate({"prompt_token_ids": [5, 6, 7]}, ids_only)[0].outputs[0]
    assert len(out.token_ids) == 4 and out.text == ""
    with pytest.raises(RequestError, match="skip_tokenizer_init"):
        llm.generate("Paris", ids_only)
    with pytest.raises(RequestError, match="detokenize=False"):
        llm.generate({"prompt_token_ids": [5, 6, 7]}, SamplingParams(max_tokens=4))


def test_the_kv_cache_blocks_are_the_platforms_unless_given(tiny_llama):
    """The example plugin's sim platform asks for blocks of 32 tokens; cpu's are 16."""
    for platform, block_size, want in (("sim", None, 32), ("sim", 64, 64), ("cpu", None, 16)):
        llm = LLM(str(tiny_llama[0]), platform=platform, max_num_seqs=2, block_size=block_size)
        assert llm.engine.block_manager.block_size == want
        assert llm.engine.runner.attention.spec.block_size == want
