"""`baseboard serve` end to end with the official openai client, over the loopback, on the
tiny random Llama in float32: what the server returns is what `LLM.generate` and
`LLM.chat` return in this process for the same checkpoint, prompts and sampling fields."""

from __future__ import annotations

import json
import os
import math
import signal
import socket
import urllib.parse
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
from serve_process import (CONTEXT, cpu_seconds_over, http, metrics, openai_client,
                           running_server, start_server, wait_for_metrics)

from baseboard import SamplingParams

PROMPTS = ["The quick brown fox", "Paris is the capital of", "Grüße aus Köln"]
MESSAGES = [{"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "What is the capital of France?"}]
API_KEY = "test-key-1234"
RUNNING = "baseboard:num_requests_running"
WAITING = "baseboard:num_requests_waiting"
KV_USAGE = "baseboard:kv_cache_usage_perc"
GENERATED = "baseboard:generation_tokens_total"
LOGPROB_TOLERANCE = 1e-4  # float32, the server's batch against this process's
LONG = CONTEXT - 100  # tokens of a request that must still run when the test acts on it
# An aborted request is gone from /metrics within this, far less than the seconds its LONG
# tokens would run by themselves.
ABORT_TIMEOUT_S = 3.0


def greedy(max_tokens: int = 24, **fields) -> SamplingParams:
    return SamplingParams(temperature=0, max_tokens=max_tokens, **fields)


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def chunks_text(chunks, index: int = 0) -> str:
    return "".join(c.choices[0].text for c in chunks if c.choices and c.choices[0].index == index)


# --- models and health ---------------------------------------------------------------------


def test_health_answers_and_models_lists_the_model_argument(server, client, model_name):
    assert http(server, "GET", "/health").status == 200
    models = client.models.list().data
    assert [m.id for m in models] == [model_name]
    assert models[0].object == "model"


def test_listening_line_names_the_compiled_loop_and_parser(server):
    """The serve extra's uvloop and httptools (installed with the dev extra) are what uvicorn
    runs on, and the listening line says so."""
    line = next(line for line in server.log if "listening on" in line)
    assert line.endswith(f"{server.url} (uvloop, httptools)"), line


# --- greedy output equals LLM.generate / LLM.chat -----------------------------------------


@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_completion_equals_llm_generate(client, model_name, reference_llm, prompt):
    reply = client.completions.create(model=model_name, prompt=prompt, max_tokens=24,
                                      temperature=0)
    expected = reference_llm.generate(prompt, greedy(24))[0]
    choice = reply.choices[0]
    assert choice.text == expected.outputs[0].text
    assert choice.finish_reason == expected.outputs[0].finish_reason
    assert (reply.object, reply.model, len(reply.choices)) == ("text_completion", model_name, 1)
    assert reply.usage.prompt_tokens == len(expected.prompt_token_ids)
    assert reply.usage.completion_tokens == len(expected.outputs[0].token_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_greedy_chat_equals_llm_chat(client, model_name, reference_llm):
    expected = reference_llm.chat(MESSAGES, greedy(20))[0]
    for limit in ({"max_tokens": 20}, {"max_completion_tokens": 20}):
        reply = client.chat.completions.create(model=model_name, messages=MESSAGES,
                                               temperature=0, **limit)
        choice = reply.choices[0]
        assert choice.message.role == "assistant"
        assert choice.message.content == expected.outputs[0].text, limit
        assert choice.finish_reason == expected.outputs[0].finish_reason
        assert reply.object == "chat.completion"
        assert reply.usage.prompt_tokens == len(expected.prompt_token_ids)
        assert reply.usage.completion_tokens == len(expected.outputs[0].token_ids)


# --- streaming -----------------------------------------------------------------------------


def test_streamed_completion_joins_to_the_whole_with_usage_last(client, model_name):
    # 40 tokens of the random model split multi-byte characters across tokens: a stream
    # that sent a partial character early would not join to the whole text.
    fields = dict(model=model_name, prompt=PROMPTS[2], max_tokens=40, temperature=0)
    whole = client.completions.create(**fields)
    chunks = list(client.completions.create(**fields, stream=True,
                                            stream_options={"include_usage": True}))
    assert chunks_text(chunks) == whole.choices[0].text
    *body, last = chunks
    assert last.choices == [] and last.usage == whole.usage
    assert all(c.usage is None for c in body)
    finishes = [c.choices[0].finish_reason for c in body]
    assert finishes[-1] == whole.choices[0].finish_reason
    assert all(f is None for f in finishes[:-1])
    assert {c.id for c in chunks} == {chunks[0].id}

    plain = list(client.completions.create(**fields, stream=True))
    assert chunks_text(plain) == whole.choices[0].text
    assert all(c.usage is None for c in plain)


def test_streamed_chat_joins_to_the_whole(client, model_name):
    fields = dict(model=model_name, messages=MESSAGES, max_tokens=30, temperature=0)
    whole = client.chat.completions.create(**fields)
    chunks = list(client.chat.completions.create(**fields, stream=True,
                                                 stream_options={"include_usage": True}))
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert deltas[0].role == "assistant"
    assert "".join(d.content or "" for d in deltas) == whole.choices[0].message.content
    assert chunks[-1].usage == whole.usage
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == \
        whole.choices[0].finish_reason
    assert all(c.object == "chat.completion.chunk" for c in chunks)


# --- n, seeds and the sampling fields -----------------------------------------------------


def test_n_greedy_completions_are_equal_and_indexed(client, model_name, reference_llm):
    reply = client.completions.create(model=model_name, prompt=PROMPTS[0], max_tokens=12,
                                      temperature=0, n=3)
    expected = reference_llm.generate(PROMPTS[0], greedy(12))[0].outputs[0]
    assert sorted(c.index for c in reply.choices) == [0, 1, 2]
    assert [c.text for c in reply.choices] == [expected.text] * 3
    assert reply.usage.completion_tokens == 3 * len(expected.token_ids)


def test_n_seeded_samples_equal_llm_generate_streamed_or_not(client, model_name,
                                                            reference_llm):
    params = SamplingParams(n=3, temperature=1.0, top_p=0.9, seed=7, max_tokens=16)
    expected = [c.text for c in reference_llm.generate(PROMPTS[1], params)[0].outputs]
    assert len(set(expected)) == 3  # the seeds of the three completions differ
    fields = dict(model=model_name, prompt=PROMPTS[1], max_tokens=16, temperature=1.0,
                  top_p=0.9, seed=7, n=3)
    reply = client.completions.create(**fields)
    assert [c.text for c in sorted(reply.choices, key=lambda c: c.index)] == expected
    chunks = list(client.completions.create(**fields, stream=True))
    assert [chunks_text(chunks, i) for i in range(3)] == expected


def test_a_list_of_prompts_gives_their_choices_in_order(client, model_name, reference_llm):
    reply = client.completions.create(model=model_name, prompt=PROMPTS[:2], max_tokens=10,
                                      temperature=0, n=2)
    expected = reference_llm.generate(PROMPTS[:2], greedy(10))
    choices = sorted(reply.choices, key=lambda c: c.index)
    assert [c.index for c in choices] == [0, 1, 2, 3]
    assert [c.text for c in choices] == [e.outputs[0].text for e in expected for _ in range(2)]
    assert reply.usage.prompt_tokens == sum(len(e.prompt_token_ids) for e in expected)


def test_a_prompt_of_token_ids_equals_llm_generate(client, model_name, reference_llm):
    ids = reference_llm.get_tokenizer()(PROMPTS[1]).input_ids
    reply = client.completions.create(model=model_name, prompt=ids, max_tokens=10,
                                      temperature=0)
    expected = reference_llm.generate({"prompt_token_ids": ids}, greedy(10))[0]
    assert reply.choices[0].text == expected.outputs[0].text
    assert reply.usage.prompt_tokens == len(ids)


# (openai keyword arguments, the same as SamplingParams fields); each changes the output of
# the seeded request below, so a field the server dropped fails its case.
SAMPLING_FIELDS = [
    ({"presence_penalty": 1.5}, {"presence_penalty": 1.5}),
    ({"frequency_penalty": 1.0}, {"frequency_penalty": 1.0}),
    ({"extra_body": {"repetition_penalty": 1.5}}, {"repetition_penalty": 1.5}),
    ({"top_p": 0.5}, {"top_p": 0.5}),
    ({"extra_body": {"top_k": 3}}, {"top_k": 3}),
    ({"extra_body": {"min_p": 0.2}}, {"min_p": 0.2}),
]


@pytest.mark.parametrize("request_fields, params_fields", SAMPLING_FIELDS,
                         ids=[next(iter(p)) for _, p in SAMPLING_FIELDS])
def test_sampling_field_reaches_the_engine(client, model_name, reference_llm, request_fields,
                                           params_fields):
    base = dict(temperature=1.0, seed=11, max_tokens=24)
    expected = reference_llm.generate(PROMPTS[2], SamplingParams(**base, **params_fields))
    without = reference_llm.generate(PROMPTS[2], SamplingParams(**base))
    assert expected[0].outputs[0].text != without[0].outputs[0].text
    reply = client.completions.create(model=model_name, prompt=PROMPTS[2], **base,
                                      **request_fields)
    assert reply.choices[0].text == expected[0].outputs[0].text
    chat = client.chat.completions.create(model=model_name, messages=MESSAGES, **base,
                                          **request_fields)
    params = SamplingParams(**base, **params_fields)
    assert chat.choices[0].message.content == reference_llm.chat(MESSAGES, params)[0] \
        .outputs[0].text


# --- stop strings --------------------------------------------------------------------------


def printable_stop(text: str) -> str:
    """Two printable characters from the middle of ``text``, where the stop must cut it."""
    for start in range(len(text) // 3, len(text) - 1):
        piece = text[start:start + 2]
        if piece.isprintable() and piece.strip() == piece and "\ufffd" not in piece:
            return piece
    raise AssertionError(f"no printable pair in {text!r}")


def test_stop_string_ends_the_completion_before_it(client, model_name, reference_llm):
    full = reference_llm.generate(PROMPTS[0], greedy(40))[0].outputs[0].text
    stop = printable_stop(full)
    expected = reference_llm.generate(PROMPTS[0], greedy(40, stop=[stop]))[0].outputs[0]
    assert expected.text == full[:full.index(stop)] and expected.finish_reason == "stop"
    fields = dict(model=model_name, prompt=PROMPTS[0], max_tokens=40, temperature=0,
                  stop=[stop, "never-generated"])
    reply = client.completions.create(**fields)
    assert reply.choices[0].text == expected.text
    assert reply.choices[0].finish_reason == "stop"
    chunks = list(client.completions.create(**fields, stream=True))
    assert chunks_text(chunks) == expected.text


def test_stop_string_in_chat(client, model_name, reference_llm):
    full = reference_llm.chat(MESSAGES, greedy(40))[0].outputs[0].text
    stop = printable_stop(full)
    reply = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=40,
                                           temperature=0, stop=stop)
    assert reply.choices[0].message.content == full[:full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"


# --- log-probabilities ---------------------------------------------------------------------


def test_completion_logprobs_equal_llm_generate(client, model_name, reference_llm):
    expected = reference_llm.generate(PROMPTS[0], greedy(8, logprobs=3))[0].outputs[0]
    reply = client.completions.create(model=model_name, prompt=PROMPTS[0], max_tokens=8,
                                      temperature=0, logprobs=3)
    logprobs = reply.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(expected.token_ids)
    for position, (token_id, token, value, top) in enumerate(zip(
            expected.token_ids, logprobs.tokens, logprobs.token_logprobs,
            logprobs.top_logprobs)):
        want = expected.logprobs[position][token_id]
        assert token == want.decoded_token
        assert math.isclose(value, want.logprob, abs_tol=LOGPROB_TOLERANCE)
        # greedy: the chosen token is the most likely one
        assert math.isclose(max(top.values()), value, abs_tol=LOGPROB_TOLERANCE)
        assert 1 <= len(top) <= 3
    assert logprobs.text_offset == sorted(logprobs.text_offset)


def test_chat_logprobs_equal_llm_chat(client, model_name, reference_llm):
    expected = reference_llm.chat(MESSAGES, greedy(8, logprobs=2))[0].outputs[0]
    reply = client.chat.completions.create(model=model_name, messages=MESSAGES, max_tokens=8,
                                           temperature=0, logprobs=True, top_logprobs=2)
    content = reply.choices[0].logprobs.content
    assert len(content) == len(expected.token_ids)
    for position, (token_id, entry) in enumerate(zip(expected.token_ids, content)):
        step = expected.logprobs[position]
        assert entry.token == step[token_id].decoded_token
        assert math.isclose(entry.logprob, step[token_id].logprob, abs_tol=LOGPROB_TOLERANCE)
        top = sorted((p for p in step.values() if p.rank <= 2), key=lambda p: p.rank)
        assert [round(t.logprob, 4) for t in entry.top_logprobs] == \
            [round(p.logprob, 4) for p in top]


# --- metrics -------------------------------------------------------------------------------


def test_metrics_count_a_request(server, client, model_name):
    before = metrics(server)
    reply = client.completions.create(model=model_name, prompt=PROMPTS[1], max_tokens=10,
                                      temperature=0)
    after = wait_for_metrics(server, lambda v: v.get(RUNNING) == 0)
    delta = {name: after[name] - before.get(name, 0.0) for name in after}
    assert delta["baseboard:prompt_tokens_total"] == reply.usage.prompt_tokens
    assert delta["baseboard:generation_tokens_total"] == reply.usage.completion_tokens
    assert delta["baseboard:time_to_first_token_seconds_count"] == 1
    assert delta["baseboard:time_per_output_token_seconds_count"] >= 1
    assert after["baseboard:time_to_first_token_seconds_sum"] > 0
    assert (after[RUNNING], after[WAITING], after[KV_USAGE]) == (0, 0, 0)
    assert after["baseboard:num_preemptions_total"] >= 0


# --- errors --------------------------------------------------------------------------------


def assert_error(status_error: openai.APIStatusError, status: int, field: str | None) -> None:
    """An OpenAI-style error body with the status and, where given, the field named."""
    body = status_error.response.json()
    assert status_error.status_code == status, body
    assert set(body["error"]) >= {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if field is not None:
        assert body["error"]["param"] == field, body


LONG_PROMPT = "Paged attention stores keys and values. " * CONTEXT  # > CONTEXT tokens
# (endpoint, fields sent beside model, the field the 400 must name)
BAD_REQUESTS = [
    ("completions", {"prompt": "Hi", "max_tokens": "ten"}, "max_tokens"),
    ("completions", {"prompt": "Hi", "temperature": "hot"}, "temperature"),
    ("completions", {"prompt": "Hi", "stop": 5}, "stop"),
    ("completions", {"prompt": "Hi", "temperature": -0.5}, "temperature"),
    ("completions", {"prompt": "Hi", "top_p": 1.5}, "top_p"),
    ("completions", {"prompt": "Hi", "n": 0}, "n"),
    ("completions", {"prompt": "Hi", "max_tokens": 0}, "max_tokens"),
    ("completions", {"prompt": "Hi", "presence_penalty": 3}, "presence_penalty"),
    ("completions", {"prompt": "Hi", "frequency_penalty": -2.5}, "frequency_penalty"),
    ("completions", {"prompt": "Hi", "repetition_penalty": 0}, "repetition_penalty"),
    ("completions", {"prompt": "Hi", "min_p": 1.5}, "min_p"),
    ("completions", {"prompt": "Hi", "top_k": -5}, "top_k"),
    ("completions", {"prompt": "Hi", "logprobs": -1}, "logprobs"),
    ("completions", {"max_tokens": 4}, "prompt"),
    ("completions", {"prompt": "Hi", "bogus": 1}, "bogus"),
    ("completions", {"prompt": LONG_PROMPT, "max_tokens": 4}, "prompt"),
    ("completions", {"prompt": "Hi", "max_tokens": CONTEXT}, "max_tokens"),
    ("chat/completions", {"messages": "Hi"}, "messages"),
    ("chat/completions", {"max_tokens": 4}, "messages"),
    ("chat/completions", {"messages": MESSAGES, "top_logprobs": -1, "logprobs": True},
     "top_logprobs"),
    ("chat/completions", {"messages": MESSAGES, "max_completion_tokens": -3},
     "max_completion_tokens"),
    ("chat/completions", {"messages": [{"role": "user", "content": LONG_PROMPT}],
                          "max_tokens": 4}, "messages"),
]


@pytest.mark.parametrize("endpoint, fields, field", BAD_REQUESTS,
                         ids=[f"{e}-{f}-{i}" for i, (e, _, f) in enumerate(BAD_REQUESTS)])
def test_bad_request_is_400_naming_the_field(client, model_name, endpoint, fields, field):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post(f"/{endpoint}", body={"model": model_name, **fields}, cast_to=object)
    assert_error(caught.value, 400, field)


@pytest.mark.parametrize("endpoint", ["/v1/completions", "/v1/chat/completions"])
def test_malformed_json_is_400(server, endpoint):
    reply = http(server, "POST", endpoint, body=b'{"model": "x", "prompt": ')
    assert reply.status == 400, reply.body
    assert set(reply.json()["error"]) >= {"message", "type", "param", "code"}


def test_unknown_model_is_404_naming_it(client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt="Hi", max_tokens=2)
    assert_error(caught.value, 404, None)
    assert "no-such-model" in caught.value.response.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES, max_tokens=2)


def test_errors_leave_the_server_serving(server, client, model_name, reference_llm):
    after = wait_for_metrics(server, lambda v: v[RUNNING] == 0 and v[WAITING] == 0)
    assert (after[RUNNING], after[WAITING], after[KV_USAGE]) == (0, 0, 0)
    reply = client.completions.create(model=model_name, prompt=PROMPTS[0], max_tokens=6,
                                      temperature=0)
    assert reply.choices[0].text == reference_llm.generate(PROMPTS[0], greedy(6))[0] \
        .outputs[0].text


# --- a client that goes away ---------------------------------------------------------------


def assert_aborted(server, before: dict[str, float]) -> None:
    """The request is gone from the batch and its blocks are free at once, and the server
    stops working: a request that ran on would keep the engine busy for seconds."""
    idle = wait_for_metrics(server, lambda v: v[RUNNING] == 0 and v[KV_USAGE] == 0,
                            timeout=ABORT_TIMEOUT_S)
    assert (idle[RUNNING], idle[WAITING], idle[KV_USAGE]) == (0, 0, 0)
    assert idle[GENERATED] - before[GENERATED] < LONG
    assert cpu_seconds_over(server.pid, 1.0) < 0.2


def test_disconnect_mid_stream_aborts_and_frees_the_blocks(server, client, model_name):
    before = metrics(server)
    # ignore_eos: the request runs all its LONG tokens (seconds) unless the server aborts it
    stream = client.completions.create(model=model_name, prompt="Hello", max_tokens=LONG,
                                       temperature=0, stream=True,
                                       extra_body={"ignore_eos": True})
    for _ in range(3):
        next(stream)
    during = metrics(server)
    assert during[RUNNING] == 1 and during[KV_USAGE] > 0
    stream.close()
    assert_aborted(server, before)


def test_disconnect_before_a_whole_response_aborts_it(server, model_name):
    """A client that leaves before a non-streamed response is ready: nothing is written
    to it until the end, so the server must watch the connection."""
    body = json.dumps({"model": model_name, "prompt": "Hello", "max_tokens": LONG,
                       "temperature": 0, "ignore_eos": True}).encode()
    address = urllib.parse.urlsplit(server.url)
    before = metrics(server)
    with socket.create_connection((address.hostname, address.port)) as connection:
        connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\n"
                           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
                           % (address.netloc.encode(), len(body)) + body)
        during = wait_for_metrics(server, lambda v: v[RUNNING] == 1)
        assert during[RUNNING] == 1 and during[KV_USAGE] > 0
    assert_aborted(server, before)


# --- a server with an API key and a queue of one --------------------------------------------


@pytest.fixture(scope="module")
def limited_server(tiny_model):
    with running_server(tiny_model, "--api-key", API_KEY, "--served-model-name", "tiny",
                        "--max-num-seqs", "1", "--max-waiting", "1") as process:
        yield process


AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
    ("POST", "/v1/completions", {"model": "tiny", "prompt": "Hi", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "max_tokens": 2}),
])
def test_api_key_is_required_but_for_health(limited_server, method, path, body):
    assert http(limited_server, "GET", "/health").status == 200
    for headers in ({}, {"Authorization": "Bearer wrong-key"}, {"Authorization": API_KEY}):
        reply = http(limited_server, method, path, body=body, headers=headers)
        assert reply.status == 401, (headers, reply.body)
        if path != "/metrics":
            assert set(reply.json()["error"]) >= {"message", "type", "param", "code"}
    assert http(limited_server, method, path, body=body, headers=AUTH).status == 200


def test_openai_client_with_the_key_and_the_served_name(limited_server, model_name):
    with pytest.raises(openai.AuthenticationError):
        openai_client(limited_server, api_key="wrong-key").models.list()
    client = openai_client(limited_server, api_key=API_KEY)
    assert [m.id for m in client.models.list().data] == ["tiny"]
    assert client.completions.create(model="tiny", prompt="Hi", max_tokens=3).choices[0].text
    with pytest.raises(openai.NotFoundError):  # the served name replaces the path
        client.completions.create(model=model_name, prompt="Hi", max_tokens=3)


def test_full_queue_is_503_with_retry_after(limited_server):
    """One request runs (--max-num-seqs 1), one waits (--max-waiting 1): a third is
    refused at once, and the two accepted ones still complete."""
    client = openai_client(limited_server, api_key=API_KEY)
    running = client.completions.create(model="tiny", prompt="Hello", max_tokens=LONG,
                                        temperature=0, stream=True,
                                        extra_body={"ignore_eos": True})
    next(running)
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(lambda: client.completions.create(
            model="tiny", prompt=PROMPTS[0], max_tokens=4, temperature=0))
        queued = wait_for_metrics(limited_server, lambda v: v[WAITING] == 1, headers=AUTH)
        assert (queued[RUNNING], queued[WAITING]) == (1, 1)
        with pytest.raises(openai.InternalServerError) as caught:
            client.completions.create(model="tiny", prompt="Hi", max_tokens=2)
        assert_error(caught.value, 503, None)
        assert int(caught.value.response.headers["retry-after"]) >= 1
        refused = http(limited_server, "POST", "/v1/chat/completions", headers=AUTH,
                       body={"model": "tiny", "messages": MESSAGES, "max_tokens": 2})
        assert refused.status == 503 and "retry-after" in refused.headers
        running.close()
        assert waiting.result(timeout=120).choices[0].finish_reason in ("length", "stop")
    idle = wait_for_metrics(limited_server, lambda v: v[RUNNING] == 0 and v[WAITING] == 0,
                            headers=AUTH)
    assert (idle[RUNNING], idle[WAITING], idle[KV_USAGE]) == (0, 0, 0)


# --- SIGTERM -------------------------------------------------------------------------------


@pytest.mark.slow  # a server of its own: seconds to start
def test_sigterm_lets_a_running_stream_finish_then_exits_0(tiny_model, reference_llm):
    expected = reference_llm.generate("Hello", greedy(400, ignore_eos=True))[0].outputs[0]
    process = start_server(tiny_model)
    try:
        client = openai_client(process)
        stream = client.completions.create(model=str(tiny_model), prompt="Hello",
                                           max_tokens=400, temperature=0, stream=True,
                                           stream_options={"include_usage": True},
                                           extra_body={"ignore_eos": True})
        chunks = [next(stream)]
        assert metrics(process)[RUNNING] == 1
        process.process.send_signal(signal.SIGTERM)
        chunks += list(stream)
        assert chunks_text(chunks) == expected.text
        assert chunks[-1].usage.completion_tokens == 400
        assert process.process.wait(timeout=60) == 0, process.log_tail()
    finally:
        process.stop()


# --- the engine process --------------------------------------------------------------------


@pytest.mark.slow  # a server of its own: seconds to start
def test_a_killed_engine_process_fails_its_streams_and_health(tiny_model):
    """The model runs in a child of the server; when it dies, a running stream ends with
    an error event, /health answers 503 and new requests are refused with 503."""
    process = start_server(tiny_model)
    try:
        client = openai_client(process)
        stream = client.completions.create(model=str(tiny_model), prompt="Hello",
                                           max_tokens=2000, temperature=0, stream=True,
                                           extra_body={"ignore_eos": True})
        next(stream)
        children = [int(pid) for pid in Path(
            f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()]
        engine = [pid for pid in children
                  if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(engine) == 1, children
        os.kill(engine[0], signal.SIGKILL)
        with pytest.raises(openai.APIError, match="engine process exited"):
            for _ in stream:
                pass
        assert http(process, "GET", "/health").status == 503
        with pytest.raises(openai.APIStatusError) as refused:
            client.completions.create(model=str(tiny_model), prompt="Hello", max_tokens=4)
        assert refused.value.status_code == 503
    finally:
        process.stop()
