"""Async scheduling: each step is launched before the previous step's tokens are read, and
the placeholders that stand for those tokens never leak into what callers see."""

from types import SimpleNamespace

import pytest

from baseboard import LLM, SamplingParams
from baseboard.engine.block_manager import BlockManager
from baseboard.engine.scheduler import Scheduler
from test_block_manager import make_seq

GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_llama):
    return LLM(str(tiny_llama[0]), dtype="float32", max_num_seqs=4, max_model_len=128,
               async_scheduling=True)


def test_async_scheduling_is_off_on_the_cpu_unless_asked(tiny_llama, monkeypatch):
    assert not LLM(str(tiny_llama[0]), dtype="float32").engine.async_scheduling
    monkeypatch.setenv("BASEBOARD_ASYNC_SCHEDULING", "1")
    assert LLM(str(tiny_llama[0]), dtype="float32").engine.async_scheduling


def test_a_step_reads_the_tokens_of_the_step_launched_before_it(llm):
    engine = llm.engine
    seq = engine.add_request("Paris", GREEDY)
    assert engine.step() == []  # the prefill is launched, nothing is read yet
    assert seq.num_pending == 1 and seq.output_token_ids == []
    assert engine.step() == [seq]  # the first decode is launched, the prefill's token read
    assert seq.num_pending == 1 and len(seq.output_token_ids) == 1
    while engine.has_unfinished():
        engine.step()
    assert len(seq.output_token_ids) == 6 and seq.num_pending == 0
    assert seq.token_ids == seq.prompt_token_ids + seq.output_token_ids
    assert engine.is_idle()


def test_no_step_is_launched_past_max_tokens(llm, monkeypatch):
    engine = llm.engine
    launches = []
    launch = engine.runner.launch
    monkeypatch.setattr(engine.runner, "launch",
                        lambda seqs, previous: launches.append(len(seqs)) or launch(seqs, previous))
    seq = engine.add_request("Paris", SamplingParams(temperature=0, max_tokens=2,
                                                     ignore_eos=True))
    while engine.has_unfinished():
        engine.step()
    assert len(seq.output_token_ids) == 2 and seq.finish_reason == "length"
    assert launches == [1, 1]  # the prefill and one decode: the second token is the last
    assert engine.is_idle()


def test_aborting_a_request_with_a_step_in_flight_drops_its_pending_token(llm):
    engine = llm.engine
    seq = engine.add_request("Paris", GREEDY)
    engine.step()
    engine.step()
    engine.abort(seq.request_id)
    assert seq.finished and seq.num_pending == 0
    assert all(t >= 0 for t in seq.token_ids) and len(seq.output_token_ids) == 1
    assert engine.is_idle()
    other = engine.add_request("Paris", GREEDY)  # the stale step is read and ignored
    while engine.has_unfinished():
        engine.step()
    assert len(other.output_token_ids) == 6 and len(seq.output_token_ids) == 1


def test_a_sequence_whose_pending_token_is_its_last_is_not_scheduled():
    limits = SimpleNamespace(max_num_seqs=8, max_num_batched_tokens=64, max_model_len=12)
    scheduler = Scheduler(limits, BlockManager(16, 4))
    short = make_seq(range(5), "short", max_tokens=1)
    long = make_seq(range(11), "long")
    for seq in (short, long):
        scheduler.add(seq)
    assert scheduler.schedule() == [short, long]
    for row, seq in enumerate((short, long)):
        seq.num_computed_tokens = len(seq)
        seq.add_pending(row)
    # short's pending token is its max_tokens-th, long's fills max_model_len: neither runs,
    # both stay running until their tokens are read
    assert scheduler.schedule() == []
    assert list(scheduler.running) == [short, long]
