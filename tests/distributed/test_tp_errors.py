"""What cannot run is an error naming the problem, before anything is spawned where it can
be; a worker that dies or fails ends the engine with its rank's error instead of a hang."""

from __future__ import annotations

import dataclasses
import os
import signal
import time

import pytest

from baseboard import LLM
from baseboard.core.errors import ConfigError, ModelError
from baseboard.distributed.launch import check_tensor_parallel
from baseboard.distributed.sharding import check_divisible
from baseboard.distributed.workers import WorkerError
from baseboard.engine.sampling_params import SamplingParams
from baseboard.platforms.cuda.platform import CudaPlatform
from tp_models import MAX_TOKENS, PROMPTS, gguf_checkpoint, greedy

GREEDY = SamplingParams(max_tokens=MAX_TOKENS, temperature=0, detokenize=False)
PROMPT = [{"prompt_token_ids": PROMPTS[0]}]


def test_a_size_that_does_not_divide_the_heads_fails_before_any_worker(tiny_llama_dir):
    import multiprocessing

    import torch.distributed as dist

    with pytest.raises(ConfigError, match="tensor_parallel_size=3 does not divide the model's "
                                          "4 attention heads"):
        LLM(str(tiny_llama_dir), platform="cpu", tensor_parallel_size=3)
    # nothing was spawned, no group joined
    assert not multiprocessing.active_children() and not dist.is_initialized()


def test_kv_heads_must_divide_the_ranks_or_be_divided_by_them(tiny_llama_dir):
    from baseboard.frontend.resolve import resolve

    config = resolve(str(tiny_llama_dir), platform="cpu").model_config
    check_divisible(dataclasses.replace(config, num_kv_heads=1), 4)  # replicated
    with pytest.raises(ConfigError, match="the model's 3 KV heads: one must divide the other"):
        check_divisible(dataclasses.replace(config, num_heads=12, num_kv_heads=3), 2)


def test_more_ranks_than_the_machine_has_devices(tiny_llama_dir):
    from baseboard.frontend.resolve import resolve

    config = resolve(str(tiny_llama_dir), platform="cpu").model_config
    # this torch sees no CUDA device: a real count of zero
    with pytest.raises(ConfigError, match="tensor_parallel_size=2 needs 2 cuda devices on "
                                          "this machine, but 0 are visible"):
        check_tensor_parallel(config, CudaPlatform(), 2)


@pytest.mark.slow
def test_a_group_cut_by_the_split_names_the_layer(tmp_path):
    path = gguf_checkpoint(tmp_path / "q8.gguf", "Q8_0")
    # o_proj's K = 64 over 4 ranks is 16 inputs each, less than one group of 32
    with pytest.raises(ModelError, match=r"layer model.layers.0.self_attn.o_proj: tensor "
                                         r"parallelism over 4 ranks cuts its K=64 inputs into "
                                         r"slices of 16, which does not keep groups of 32 whole"):
        greedy(path, 4)


@pytest.mark.slow
def test_a_killed_worker_is_an_error_naming_its_rank(tiny_llama_dir):
    llm = LLM(str(tiny_llama_dir), platform="cpu", kv_cache_memory=1 << 22,
              skip_tokenizer_init=True, tensor_parallel_size=2)
    try:
        worker = llm.engine.channel.launch.workers.processes[0]
        os.kill(worker.pid, signal.SIGKILL)
        started = time.monotonic()
        with pytest.raises(WorkerError, match=r"tensor-parallel worker rank 1 \(pid \d+\) was "
                                              r"killed by signal 9 \(SIGKILL\)"):
            llm.generate(PROMPT, GREEDY)
        assert time.monotonic() - started < 30
    finally:
        llm.engine.close()


FAILING_PLUGIN = """
    import torch.distributed as dist

    from baseboard.core.registry import Impl
    from baseboard.plugins import hookimpl

    BASEBOARD_CONTRACT = 1


    def all_reduce(x, group):
        if dist.get_rank(group) == 1:
            raise RuntimeError("the link of rank 1 is down")
        dist.all_reduce(x, group=group)
        return x


    @hookimpl
    def baseboard_ops():
        return [Impl("all_reduce", "flaky", "flaky_comm:all_reduce", priority=10)]
"""


@pytest.fixture
def flaky_all_reduce(site):
    site.install("flaky-comm", {"flaky": "flaky_comm"}, {"flaky_comm": FAILING_PLUGIN})
    return site


def test_one_rank_calls_no_collective(flaky_all_reduce, tiny_llama_dir):
    # a plugin's all_reduce that fails on rank 1 is selected, and one rank never calls it
    llm = LLM(str(tiny_llama_dir), platform="cpu", kv_cache_memory=1 << 22,
              skip_tokenizer_init=True)
    assert llm.plan.selected()["all_reduce"] == "flaky"
    assert llm.engine.channel is None and llm.engine.model.parallel is None
    assert len(llm.generate(PROMPT, GREEDY)[0].outputs[0].token_ids) == MAX_TOKENS


@pytest.mark.slow
def test_a_worker_exception_reaches_the_driver_with_its_text(flaky_all_reduce, tiny_llama_dir):
    # rank 0's plan, sent to rank 1, makes it run the plugin's all_reduce too
    llm = LLM(str(tiny_llama_dir), platform="cpu", kv_cache_memory=1 << 22,
              skip_tokenizer_init=True, tensor_parallel_size=2)
    try:
        with pytest.raises(WorkerError, match="tensor-parallel worker rank 1 .* exited with "
                                              "code 1: RuntimeError: the link of rank 1 is down"):
            llm.generate(PROMPT, GREEDY)
    finally:
        llm.engine.close()


@pytest.mark.slow
def test_an_act_order_permutation_across_ranks_names_the_layer(tmp_path):
    from quantized_models import write_quantized
    from tiny_models import tiny_hf_model

    # per-layer permutations of all K inputs: o_proj's stored columns of rank 0 read
    # inputs that rank 1 holds
    path = write_quantized(tiny_hf_model(), tmp_path / "gptq", "gptq", group_size=32,
                           act_order="per-layer")
    with pytest.raises(ModelError, match=r"layer model.layers.0.(self_attn.o_proj|mlp."
                                         r"down_proj): its act-order input permutation "
                                         r"\(GPTQ desc_act\) mixes inputs"):
        greedy(path, 2)
