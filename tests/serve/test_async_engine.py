"""The server's engine loop on the tiny random Llama (float32, CPU): requests submitted while
others run join their steps, a request that goes away or fails frees its blocks without
disturbing the others, and the queue of waiting sequences is bounded."""

from __future__ import annotations

import asyncio
import contextlib
import threading

import pytest

from baseboard import LLM, SamplingParams
from baseboard.core.errors import RequestError
from baseboard.serve.async_engine import AsyncEngine, EngineClosedError, QueueFullError
from baseboard.serve.engine_loop import StepError
from baseboard.serve.request_stream import CompletionDelta, merge_deltas
from faults import DecodeFailure, poison

PROMPTS = ["The quick brown fox", "Paris is the capital of", "Grüße aus Köln"]
POISONED = "Continuous batching mixes prefills"
TIMEOUT_S = 120  # a loop that stopped answering fails the test instead of hanging it


def greedy(max_tokens: int, **fields) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **fields)


@pytest.fixture(scope="module")
def llm(tiny_model):
    return LLM(str(tiny_model), dtype="float32", platform="cpu", max_num_seqs=4, seed=0)


def run(main):
    """asyncio.run(main), failing after TIMEOUT_S."""
    return asyncio.run(asyncio.wait_for(main, TIMEOUT_S))


@contextlib.contextmanager
def running(llm, **options):
    """An AsyncEngine over ``llm``'s engine, started, and stopped (drained) at the end."""
    engine = AsyncEngine.over(llm, **options)
    engine.start()
    try:
        yield engine
    finally:
        engine.shutdown(timeout=60)
    assert llm.engine.is_idle()


async def collect(stream) -> tuple[dict[int, str], dict[int, list[int]], set[int]]:
    """(text per completion, token ids per completion, the steps that produced them)."""
    texts: dict[int, str] = {}
    ids: dict[int, list[int]] = {}
    steps: set[int] = set()
    async with stream:
        await stream.started()
        async for deltas in stream:
            for d in deltas:
                texts[d.index] = texts.get(d.index, "") + d.text
                ids.setdefault(d.index, []).extend(d.token_ids)
                steps.add(d.step)
    return texts, ids, steps


def test_greedy_outputs_equal_llm_generate(llm):
    params = greedy(16)
    expected = [o.outputs[0] for o in llm.generate(PROMPTS, params)]

    async def main(engine):
        return await asyncio.gather(*(collect(engine.submit([p], params)) for p in PROMPTS))

    with running(llm) as engine:
        results = run(main(engine))
    for (texts, ids, _), want in zip(results, expected):
        assert (texts[0], ids[0]) == (want.text, want.token_ids)


def test_a_request_arriving_mid_generation_joins_the_running_batch(llm):
    late = greedy(8)
    expected = llm.generate(PROMPTS[1], late)[0].outputs[0]

    async def main(engine):
        long = engine.submit([PROMPTS[0]], greedy(400, ignore_eos=True))
        async with long:
            await long.started()
            long_steps = {d.step for d in await long.__anext__()}
            texts, ids, late_steps = await collect(engine.submit([PROMPTS[1]], late))
            async for deltas in long:  # a few more steps of it, then leave: aborted
                long_steps |= {d.step for d in deltas}
                if max(long_steps) > max(late_steps):
                    break
        return texts, ids, late_steps, long_steps

    with running(llm) as engine:
        texts, ids, late_steps, long_steps = run(main(engine))
    assert (texts[0], ids[0]) == (expected.text, expected.token_ids)
    # every step of the late request also advanced the long one: one batch
    assert late_steps <= long_steps and len(late_steps) == len(ids[0])


def test_leaving_a_stream_aborts_it_and_frees_its_blocks(llm):
    blocks = llm.engine.block_manager

    async def main(engine):
        stream = engine.submit([PROMPTS[2]], greedy(400, ignore_eos=True))
        generated = 0
        async with stream:
            await stream.started()
            async for deltas in stream:
                generated += len(deltas[0].token_ids)
                if generated == 3:
                    assert blocks.num_free_blocks < blocks.num_blocks
                    break
        # commands run in order: once a later request is done, the abort has been handled
        await collect(engine.submit([PROMPTS[0]], greedy(2)))
        return generated

    with running(llm) as engine:
        generated = run(main(engine))
        assert llm.engine.is_idle()  # every block free, no request left
    assert generated == 3


@pytest.fixture
def poisoned(monkeypatch, llm):
    """A prompt whose requests fail inside the engine step (see faults.poison)."""
    return poison(monkeypatch, llm.get_tokenizer(), POISONED)


def test_a_request_failing_in_a_step_fails_alone(llm, poisoned):
    params = greedy(12)
    expected = [o.outputs[0].text for o in llm.generate(PROMPTS, params)]

    async def main(engine):
        good = [engine.submit([p], params) for p in PROMPTS]
        bad = engine.submit([poisoned, PROMPTS[0]], params)  # fails as a whole
        outcomes = await asyncio.gather(*(collect(s) for s in good + [bad]),
                                        return_exceptions=True)
        after = await collect(engine.submit([PROMPTS[0]], params))
        return outcomes, after

    with running(llm) as engine:
        outcomes, after = run(main(engine))
    assert isinstance(outcomes[-1], DecodeFailure)
    assert [texts[0] for texts, _, _ in outcomes[:-1]] == expected
    assert after[0][0] == expected[0]


def test_a_failed_step_fails_its_requests_and_the_loop_goes_on(llm, monkeypatch):
    """A step that fails as a whole (here the model runner, once) is no one request's
    fault: the requests in the engine get the error, and later ones are served."""
    params = greedy(8)
    expected = llm.generate(PROMPTS[0], params)[0].outputs[0].text
    launch = llm.engine.runner.launch
    calls = []

    def launch_failing_once(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("device lost")
        return launch(*args)

    async def main(engine):
        streams = [engine.submit([p], params) for p in PROMPTS[:2]]
        outcomes = await asyncio.gather(*(collect(s) for s in streams), return_exceptions=True)
        return outcomes, await collect(engine.submit([PROMPTS[0]], params))

    monkeypatch.setattr(llm.engine.runner, "launch", launch_failing_once)
    with running(llm) as engine:
        outcomes, after = run(main(engine))
        assert engine.alive
    assert all(isinstance(o, StepError) and "device lost" in str(o) for o in outcomes)
    assert after[0][0] == expected


def test_a_bad_prompt_fails_before_the_engine(llm):
    async def main(engine):
        stream = engine.submit([PROMPTS[0], {"prompt_token_ids": [10**6]}], greedy(4))
        with pytest.raises(RequestError, match="outside the vocabulary"):
            await stream.started()
        return await collect(engine.submit([PROMPTS[0]], greedy(4)))

    with running(llm) as engine:
        texts, _, _ = run(main(engine))
    assert texts[0] == llm.generate(PROMPTS[0], greedy(4))[0].outputs[0].text


def test_the_queue_of_waiting_sequences_is_bounded(llm):
    engine = AsyncEngine.over(llm, max_waiting=4)

    async def main():
        # not started yet: every submitted sequence waits
        first = engine.submit([PROMPTS[0]], greedy(4, n=3))
        with pytest.raises(QueueFullError, match="max-waiting"):
            engine.submit([PROMPTS[1], PROMPTS[2]], greedy(4))
        with pytest.raises(RequestError, match="5 sequences"):
            engine.submit([PROMPTS[1]], greedy(4, n=5))
        second = engine.submit([PROMPTS[1]], greedy(4))
        engine.start()
        done = await asyncio.gather(collect(first), collect(second))
        third = await collect(engine.submit([PROMPTS[1], PROMPTS[2]], greedy(4, n=2)))
        return done, third

    try:
        (first, second), third = run(main())
    finally:
        engine.shutdown(timeout=60)
    assert sorted(first[0]) == [0, 1, 2] and list(second[0]) == [0]
    assert sorted(third[0]) == [0, 1]
    assert llm.engine.is_idle()


def test_shutdown_drains_what_runs_then_refuses(llm):
    expected = llm.generate(PROMPTS[0], greedy(40, ignore_eos=True))[0].outputs[0].text
    engine = AsyncEngine.over(llm)
    engine.start()

    async def main():
        stream = engine.submit([PROMPTS[0]], greedy(40, ignore_eos=True))
        await stream.started()
        stopping = threading.Thread(target=engine.shutdown)
        stopping.start()
        texts, _, _ = await collect_started(stream)
        with pytest.raises(EngineClosedError):
            engine.submit([PROMPTS[1]], greedy(4))
        await asyncio.to_thread(stopping.join, 60)
        return texts

    assert run(main())[0] == expected
    assert not engine.alive and llm.engine.is_idle()


async def collect_started(stream) -> tuple[dict[int, str], None, None]:
    texts: dict[int, str] = {}
    async for deltas in stream:
        for d in deltas:
            texts[d.index] = texts.get(d.index, "") + d.text
    return texts, None, None


def test_a_reader_behind_the_engine_catches_up_in_one_delta_per_completion(llm):
    """A stream not read while the engine ran gets every missed step at once: one delta
    per completion carrying all its text, ids and log-probabilities in order."""
    params = greedy(12, n=2, logprobs=2)
    expected = [o.outputs for o in llm.generate([PROMPTS[0]], params)][0]

    async def main(engine):
        stream = engine.submit([PROMPTS[0]], params)
        async with stream:
            await stream.started()
            while not llm.engine.is_idle():  # the engine runs ahead of this reader
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)  # its last delivery reaches the queue
            behind = await stream.__anext__()
            return merge_deltas(behind), len(behind), stream.finished

    with running(llm) as engine:
        merged, num_behind, finished = run(main(engine))
    assert finished and num_behind > len(merged) == 2
    for delta in merged:
        want = expected[delta.index]
        assert (delta.text, delta.token_ids) == (want.text, want.token_ids)
        assert [max(p.items(), key=lambda i: i[1].logprob)[0] for p in delta.logprobs] == \
            want.token_ids
        assert delta.finish_reason == want.finish_reason


def test_text_is_decoded_on_the_server_side_unless_stop_strings_need_it(llm):
    """The loop sends deltas of a request without stop strings with no text (the server
    decodes them), and those with stop strings with their text; either way a stream's
    text equals LLM.generate's."""
    plain, stopping = greedy(12), greedy(12, stop=["zz-never"])
    loop_texts = []

    async def main(engine):
        original = engine.receive

        def spying(events):
            loop_texts.extend((e[1], CompletionDelta(*d).text) for e in events
                              if e[0] == "deliver" and isinstance(e[2], tuple)
                              for d in e[2][0])
            original(events)

        engine.backend.loop.outlet = spying
        return [await collect(engine.submit([PROMPTS[1]], p)) for p in (plain, stopping)]

    with running(llm) as engine:
        (plain_out, stopping_out) = run(main(engine))
    for (texts, ids, _), params in ((plain_out, plain), (stopping_out, stopping)):
        want = llm.generate(PROMPTS[1], params)[0].outputs[0]
        assert (texts[0], ids[0]) == (want.text, want.token_ids)
    first, second = ({text for job, text in loop_texts if job == j} for j in (0, 1))
    assert first == {None} and second and None not in second


def test_a_loop_reading_a_pipe_serves_its_commands_and_stops_when_it_closes(llm):
    """The engine process's loop reads its commands from the pipe between steps: requests
    sent before and while it runs are served, and a closed pipe drains it and ends it."""
    import multiprocessing

    from baseboard.serve.engine_loop import EngineLoop, PipeInlet, StartCommand

    params = greedy(8)
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params)]
    server_end, loop_end = multiprocessing.Pipe()
    tokens: dict[int, list[int]] = {}
    finished: set[int] = set()

    def outlet(events):
        for event in events:
            if event[0] == "deliver" and isinstance(event[2], tuple):
                deltas, done = event[2]
                for delta in deltas:
                    tokens.setdefault(event[1], []).extend(delta[3])
                if done:
                    finished.add(event[1])
                if event[1] == 0 and len(tokens[0]) == 2:  # the others join mid-run
                    for job in (1, 2):
                        server_end.send(("start", StartCommand(job, [PROMPTS[job]], params,
                                                               True, 1)))
                    server_end.close()

    server_end.send(("start", StartCommand(0, [PROMPTS[0]], params, True, 1)))
    loop = EngineLoop(llm, outlet, PipeInlet(loop_end))
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    assert not thread.is_alive(), "the loop did not stop when its pipe closed"
    assert finished == {0, 1, 2}
    assert [tokens[job] for job in (0, 1, 2)] == expected
