"""The engine on CUDA: Triton kernels, CUDA-graph replay and async scheduling give the
tokens of the torch references (tiny random Llama, head size 64, bf16). Run with `make test-gpu`."""

import pytest
import torch

from baseboard import LLM, SamplingParams
from baseboard.core.ops import OPS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

PROMPTS = ["Paris is the capital", "Grüße aus Köln!", "The quick brown fox " * 5,
           "Continuous batching mixes prefills and decodes in one step.", "Berlin",
           "Paged attention stores keys and values in fixed-size blocks. " * 4,
           "emoji 🙂 too", "The lazy dog"]


def tokens(llm, prompts=PROMPTS):
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params)]


def test_triton_and_graphs_match_the_references(llama_head64, monkeypatch):
    graphs = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16)
    assert graphs.plan.platform == "cuda"
    assert graphs.plan.decisions["attention"].selected == "triton"
    assert graphs.engine.runner.graphs is not None and graphs.engine.async_scheduling
    with_graphs = tokens(graphs)
    # one request at a time: its prefill replays a prefill graph (the second time over a
    # cached prefix), padded past its tokens
    replayed = []
    run = graphs.engine.runner.graphs.run
    monkeypatch.setattr(graphs.engine.runner.graphs, "run",
                        lambda key, batch: replayed.append(key) or run(key, batch))
    for _ in range(2):
        assert [tokens(graphs, [p])[0] for p in PROMPTS] == with_graphs
    assert sum(prefill for prefill, _ in replayed) == 2 * len(PROMPTS)
    assert graphs.engine.block_manager.num_cache_hit_tokens > 0
    del graphs
    monkeypatch.setenv("BASEBOARD_CUDA_GRAPHS", "0")
    eager = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16, async_scheduling=False,
                backends={"attention": "triton"})  # else FlashInfer, where installed
    assert eager.engine.runner.graphs is None
    assert tokens(eager) == with_graphs
    del eager
    reference = LLM(str(llama_head64), dtype="float32", max_num_seqs=16,
                    backends={op: "torch" for op in OPS})
    # against the float32 references: bf16 rounding may flip a near-tie (the torch
    # references in bf16 flip the third prompt's first token); broken kernels diverge
    # everywhere
    same = sum(a == b for a, b in zip(tokens(reference), with_graphs))
    assert same >= len(PROMPTS) - 1, f"only {same} of {len(PROMPTS)} sequences match"


def test_flashinfer_attention_matches_triton(llama_head64, monkeypatch):
    """FlashInfer's three paths (ragged prefill, paged prefill over a cached prefix,
    decode) inside the engine, on the strided q/k/v views a model produces."""
    pytest.importorskip("flashinfer")
    monkeypatch.setenv("BASEBOARD_CUDA_GRAPHS", "0")
    flashinfer = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16)
    decision = flashinfer.plan.decisions["attention"]
    assert decision.selected == "flashinfer", decision
    batched = tokens(flashinfer)
    one_at_a_time = [tokens(flashinfer, [p])[0] for p in PROMPTS]  # prefix-cache hits
    assert flashinfer.engine.block_manager.num_cache_hit_tokens > 0
    del flashinfer
    triton = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16,
                 backends={"attention": "triton"})
    want = tokens(triton)
    # two bf16 kernels may round a near-tie apart; a broken one diverges everywhere
    for got in (batched, one_at_a_time):
        same = sum(a == b for a, b in zip(got, want))
        assert same >= len(PROMPTS) - 1, f"only {same} of {len(PROMPTS)} sequences match"


def test_kv_cache_that_cannot_fit_is_an_error_at_load(llama_head64):
    from baseboard.core.errors import ModelError

    with pytest.raises(ModelError, match="KV cache budget"):
        LLM(str(llama_head64), dtype="bfloat16", max_model_len=256, kv_cache_memory=1024)


def test_steps_that_mix_decodes_and_prefills_replay_graphs(llama_head64, monkeypatch):
    # a budget of 128 tokens a step admits the prompts (6 to 105 tokens) over two steps,
    # the second's prefills joining the decodes of the first's: a step run in parts
    llm = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16, max_model_len=128,
              max_num_batched_tokens=128)
    graphs = llm.engine.runner.graphs
    split_steps = []
    split = graphs.split
    monkeypatch.setattr(graphs, "split", lambda batch: split_steps.append(split(batch))
                        or split_steps[-1])
    with_parts = tokens(llm)
    mixed = [parts for parts in split_steps
             if parts and not parts[0][0][0] and any(key[0] for key, _, _ in parts[1:])]
    assert mixed, f"no step replayed a decode graph and a prefill graph: {split_steps}"
    del llm
    monkeypatch.setenv("BASEBOARD_CUDA_GRAPHS", "0")
    eager = LLM(str(llama_head64), dtype="bfloat16", max_num_seqs=16, async_scheduling=False,
                max_model_len=128, max_num_batched_tokens=128, backends={"attention": "triton"})
    assert tokens(eager) == with_parts
