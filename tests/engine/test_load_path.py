"""The one load path: arguments checked before loading, resolve(model) -> EngineConfig, and
the configuration the engine actually runs with."""

import dataclasses
import json

import pytest
import torch

import baseboard
from baseboard import LLM
from baseboard.core.errors import ConfigError, ModelError
from baseboard.engine.config import EngineConfig
from baseboard.frontend.resolve import resolve

MISSING = "/no/such/model"


def test_from_baseboard_import_resolve_is_the_function_even_after_its_module_loads():
    import baseboard.frontend.resolve  # noqa: F401

    assert baseboard.resolve is resolve
    from baseboard import resolve as imported

    assert imported is resolve


def test_resolve_returns_one_frozen_configuration_that_the_engine_runs_with(tiny_llama):
    path = str(tiny_llama[0])
    config = resolve(path, dtype="float32", max_num_seqs=3, block_size=8, environ={})
    assert isinstance(config, EngineConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.block_size = 16
    assert (config.dtype, config.block_size, config.max_num_seqs) == (torch.float32, 8, 3)
    assert config.max_model_len == 256 and config.max_num_batched_tokens == 4096
    assert config.platform.name == "cpu" and not config.cuda_graphs
    assert not config.async_scheduling and config.graph_prefill_sizes == ()
    llm = LLM(path, dtype="float32", max_num_seqs=3, block_size=8)
    engine = llm.engine
    assert engine.scheduler.max_num_seqs == 3 and engine.block_manager.block_size == 8
    assert engine.runner.block_size == 8 and llm.config.plan is llm.plan
    assert llm.plan.selected() == config.plan.selected()


def test_settings_are_read_once_into_the_configuration(tiny_llama):
    config = resolve(str(tiny_llama[0]), environ={"BASEBOARD_PDL": "0",
                                                  "BASEBOARD_NUM_THREADS": "1",
                                                  "BASEBOARD_ASYNC_SCHEDULING": "1",
                                                  "BASEBOARD_GPU_MEMORY_UTILIZATION": "0.5"})
    assert (config.pdl, config.num_threads, config.async_scheduling) == (False, 1, True)
    assert config.gpu_memory_utilization == 0.5
    # graph parts need graphs, which the CPU has not: off whatever the setting says
    assert not config.graph_parts
    assert resolve(str(tiny_llama[0]), gpu_memory_utilization=0.7,
                   environ={}).gpu_memory_utilization == 0.7


@pytest.mark.parametrize("arguments, named", [
    ({"seed": "7"}, "seed='7'"),
    ({"seed": 2**64}, "seed=18446744073709551616"),
    ({"enforce_eager": "yes"}, "enforce_eager='yes'"),
    ({"max_num_seqs": True}, "max_num_seqs=True"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization=1.5"),
    ({"backends": {"attention": 3}}, "backends\\['attention'\\]=3"),
    ({"backends": {"atention": "torch"}}, "unknown op 'atention'.*attention"),
    ({"tensor_parallel_size": 0}, "tensor_parallel_size=0"),
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"max_num_sequences": 4}, "unknown argument 'max_num_sequences'.*max_num_seqs"),
])
def test_bad_arguments_are_named_before_anything_loads(arguments, named):
    # the model path does not exist: the argument's error comes first, so nothing was read
    with pytest.raises(ConfigError, match=named):
        LLM(MISSING, **arguments)


def test_quantization_is_checked_against_the_checkpoint(tiny_llama):
    with pytest.raises(ConfigError, match="quantization='gptq'.*not quantized"):
        LLM(str(tiny_llama[0]), quantization="gptq")


def test_a_checkpoint_that_needs_its_own_code_is_refused_by_name(tiny_llama, tmp_path):
    config = json.loads((tiny_llama[0] / "config.json").read_text())
    config.update(architectures=["MyOwnForCausalLM"],
                  auto_map={"AutoModelForCausalLM": "modeling_mine.MyOwnForCausalLM"})
    (tmp_path / "config.json").write_text(json.dumps(config))
    for trust in (False, True):
        with pytest.raises(ModelError, match="auto_map.*executes no code.*LlamaForCausalLM"):
            resolve(str(tmp_path), trust_remote_code=trust, environ={})


def test_enforce_eager_turns_graphs_off(tiny_llama):
    assert not resolve(str(tiny_llama[0]), enforce_eager=True, environ={}).cuda_graphs


def test_a_tokenizer_directory_replaces_the_checkpoints(tiny_llama, tmp_path):
    tiny_llama[2].save_pretrained(tmp_path)
    llm = LLM(str(tiny_llama[0]), dtype="float32", tokenizer=str(tmp_path))
    assert llm.get_tokenizer().name_or_path == str(tmp_path)
    with pytest.raises(ModelError, match="tokenizer='/no/such/tokenizer'"):
        LLM(str(tiny_llama[0]), dtype="float32", tokenizer="/no/such/tokenizer")


@pytest.mark.parametrize("plan, named", [
    ({"selected": {"nope_op": "torch"}}, "selected.nope_op names an unknown op"),
    ({"selected": {"gemm": 3}}, "selected.gemm is 3"),
    ({"selected": {"gemm": "torch"}, "platform": ["cpu"]}, "platform is \\['cpu'\\]"),
    ({"selected": {"gemm": "torch"}, "platform": "cuda"}, "platform 'cuda'"),
    (["not", "a", "plan"], "has no 'selected' object"),
])
def test_plan_files_are_checked_like_environment_variables(tiny_llama, tmp_path, plan, named):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan))
    with pytest.raises(baseboard.core.errors.BaseboardError, match=named) as caught:
        resolve(str(tiny_llama[0]), environ={"BASEBOARD_PLAN": str(path)})
    assert str(path) in str(caught.value)


def test_a_plan_written_for_another_platform_is_refused_when_this_one_is_asked(tiny_llama,
                                                                               tmp_path):
    path = tmp_path / "plan.json"
    path.write_text(json.dumps({"platform": "sim", "selected": {"gemm": "torch"}}))
    with pytest.raises(ConfigError, match="written for platform 'sim'.*key 'platform'"):
        resolve(str(tiny_llama[0]), platform="cpu", plan_path=str(path), environ={})


def test_a_directory_that_is_not_a_model_is_a_model_error():
    with pytest.raises(ModelError, match="does not exist"):
        resolve(MISSING, environ={})


def test_one_progress_bar_covers_the_whole_load(tiny_llama, monkeypatch):
    from baseboard.engine import load_progress

    closed = []
    close = load_progress.LoadProgress.close

    def record(self):
        closed.append((self.bar.n, self.bar.total, self.bar.postfix))
        close(self)

    monkeypatch.setattr(load_progress.LoadProgress, "close", record)
    LLM(str(tiny_llama[0]), dtype="float32")
    [(done, total, last)] = closed
    assert done == total > load_progress.FIXED_STEPS  # every weight and every stage counted
    assert "KV cache" in last
