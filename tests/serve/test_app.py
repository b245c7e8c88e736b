"""The FastAPI app under uvicorn, in this process, on the tiny random Llama (float32, CPU):
answers equal LLM.generate, clients that go away free their blocks, errors are OpenAI's
bodies with the right status, a full queue is 503, and the API key guards every endpoint
but /health."""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional

import pytest
import uvicorn

from baseboard import LLM, SamplingParams
from baseboard.cli import main
from baseboard.serve.app import ServeConfig, create_app
from baseboard.serve.async_engine import AsyncEngine
from baseboard.serve.server import bind, url_of
from faults import poison

NAME = "tiny"
CONTEXT = 4096  # room for a stream that runs until the test ends it
PROMPTS = ["The quick brown fox", "Paris is the capital of", "Grüße aus Köln"]
MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def long_model(tiny_model, tmp_path_factory):
    """tiny_model with a context of CONTEXT tokens (RoPE without scaling never reads it)."""
    path = tmp_path_factory.mktemp("serve-app-model") / "model"
    shutil.copytree(tiny_model, path)
    config = json.loads((path / "config.json").read_text())
    config["max_position_embeddings"] = CONTEXT
    (path / "config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def llm(long_model):
    return LLM(str(long_model), dtype="float32", platform="cpu", max_num_seqs=4, seed=0,
               kv_cache_memory=64 * 2**20)


@contextlib.contextmanager
def serving(llm: LLM, **config) -> Iterator[tuple[str, object]]:
    """(host:port, the app) of the app on ``llm`` under uvicorn on a thread."""
    engine = AsyncEngine.over(llm, max_waiting=config.pop("max_waiting", 256))
    app = create_app(engine, ServeConfig(served_model_name=NAME, **config))
    listener = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        yield url_of(listener).removeprefix("http://"), app
    finally:
        server.should_exit = True
        thread.join(60)
    assert llm.engine.is_idle()


@pytest.fixture(scope="module")
def server(llm):
    with serving(llm) as (address, _):
        yield address


def request(address: str, method: str, path: str, body: object = None,
            headers: Optional[dict] = None) -> tuple[int, dict, bytes]:
    """(status, headers in lower case, body) of one request; a dict body is sent as JSON."""
    connection = http.client.HTTPConnection(address, timeout=120)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    connection.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                         **(headers or {})})
    response = connection.getresponse()
    result = response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    connection.close()
    return result


def post(address: str, path: str, body: dict, headers: Optional[dict] = None
         ) -> tuple[int, dict]:
    status, _, raw = request(address, "POST", path, body, headers)
    return status, json.loads(raw)


def events(response: http.client.HTTPResponse) -> Iterator[object]:
    """The data of each server-sent event ("[DONE]" as the string)."""
    for line in response:
        line = line.decode().strip()
        if line.startswith("data: "):
            data = line[len("data: "):]
            yield data if data == "[DONE]" else json.loads(data)


def open_stream(address: str, path: str, body: dict) -> tuple[http.client.HTTPConnection,
                                                            Iterator[object]]:
    connection = http.client.HTTPConnection(address, timeout=120)
    connection.request("POST", path, body=json.dumps({**body, "stream": True}),
                       headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200, response.read()
    return connection, events(response)


def metrics(address: str, headers: Optional[dict] = None) -> dict[str, float]:
    status, _, raw = request(address, "GET", "/metrics", headers=headers)
    assert status == 200
    values: dict[str, float] = {}
    for line in raw.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{")[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values


def wait_until(address: str, done, timeout: float = 30, headers: Optional[dict] = None
               ) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        values = metrics(address, headers)
        if done(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.02)


def idle(values: dict[str, float]) -> bool:
    return (values["baseboard:num_requests_running"], values["baseboard:num_requests_waiting"],
            values["baseboard:kv_cache_usage_perc"]) == (0, 0, 0)


GENERATED = "baseboard:generation_tokens_total"


# --- answers -------------------------------------------------------------------------------


def test_concurrent_completions_equal_llm_generate(llm, server):
    params = SamplingParams(temperature=0, max_tokens=12)
    expected = [o.outputs[0] for o in llm.generate(PROMPTS, params)]
    body = {"model": NAME, "max_tokens": 12, "temperature": 0}
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        replies = list(pool.map(lambda p: post(server, "/v1/completions", {**body, "prompt": p}),
                                PROMPTS))
    for (status, reply), want, prompt in zip(replies, expected, PROMPTS):
        assert status == 200, reply
        assert reply["choices"][0]["text"] == want.text
        assert reply["usage"] == {"prompt_tokens": len(llm.get_tokenizer()(prompt).input_ids),
                                  "completion_tokens": len(want.token_ids),
                                  "total_tokens": reply["usage"]["prompt_tokens"]
                                  + len(want.token_ids)}
    # several prompts in one request: choice i * n + j
    status, reply = post(server, "/v1/completions", {**body, "prompt": PROMPTS[:2], "n": 2})
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in reply["choices"]] == [e.text for e in expected[:2] for _ in "ab"]


def test_streamed_chat_joins_to_llm_chat(llm, server):
    expected = llm.chat(MESSAGES, SamplingParams(temperature=0, max_tokens=20))[0].outputs[0]
    connection, stream = open_stream(server, "/v1/chat/completions",
                                     {"model": NAME, "messages": MESSAGES, "max_tokens": 20,
                                      "temperature": 0, "stream_options": {"include_usage": True}})
    received = list(stream)
    connection.close()
    assert received[-1] == "[DONE]"
    chunks = received[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == expected.text
    assert [c for c in chunks if c["choices"]][-1]["choices"][0]["finish_reason"] == \
        expected.finish_reason
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(expected.token_ids)


# --- clients that go away ------------------------------------------------------------------


def test_a_stream_whose_client_leaves_is_aborted_and_frees_its_blocks(server):
    before = metrics(server)
    connection, stream = open_stream(server, "/v1/completions",
                                     {"model": NAME, "prompt": PROMPTS[0], "temperature": 0,
                                      "max_tokens": 4000, "ignore_eos": True})
    for _ in range(3):
        next(stream)
    during = metrics(server)
    assert during["baseboard:num_requests_running"] == 1
    assert during["baseboard:kv_cache_usage_perc"] > 0
    connection.sock.shutdown(2)
    connection.close()
    after = wait_until(server, idle)
    assert idle(after)
    assert after[GENERATED] - before[GENERATED] < 4000


def test_a_whole_response_whose_client_leaves_is_aborted(server):
    before = metrics(server)
    connection = http.client.HTTPConnection(server, timeout=120)
    connection.request("POST", "/v1/completions", body=json.dumps(
        {"model": NAME, "prompt": PROMPTS[1], "max_tokens": 4000, "ignore_eos": True}),
        headers={"Content-Type": "application/json"})
    running = wait_until(server, lambda v: v[GENERATED] - before[GENERATED] >= 3)
    assert running["baseboard:num_requests_running"] == 1
    connection.sock.shutdown(2)
    connection.close()
    after = wait_until(server, idle)
    assert idle(after)
    assert after[GENERATED] - before[GENERATED] < 4000


# --- a request that fails inside the engine ---------------------------------------------------


@pytest.fixture
def poisoned(monkeypatch, llm):
    """A prompt whose requests fail inside the engine step (see faults.poison)."""
    return poison(monkeypatch, llm.get_tokenizer(), "Continuous batching mixes prefills")


def test_a_request_failing_in_the_engine_fails_alone(llm, server, poisoned):
    expected = llm.generate(PROMPTS[0], SamplingParams(temperature=0, max_tokens=30))
    body = {"model": NAME, "max_tokens": 30, "temperature": 0}
    good_connection, good = open_stream(server, "/v1/completions",
                                        {**body, "prompt": PROMPTS[0]})
    received = [next(good)]  # running when the failing request joins its steps
    bad_connection, bad = open_stream(server, "/v1/completions", {**body, "prompt": poisoned})
    failure, done = list(bad)
    assert "DecodeFailure" in failure["error"]["message"] and done == "[DONE]"
    status, reply = post(server, "/v1/completions", {**body, "prompt": poisoned})
    assert status == 500 and reply["error"]["type"] == "server_error"
    received += [e for e in good if e != "[DONE]"]
    bad_connection.close()
    good_connection.close()
    assert "".join(e["choices"][0]["text"] for e in received) == expected[0].outputs[0].text
    assert received[-1]["choices"][0]["finish_reason"] == expected[0].outputs[0].finish_reason
    assert idle(wait_until(server, idle))


# --- errors --------------------------------------------------------------------------------

LONG = "Paged attention stores keys and values in fixed-size blocks. " * 500
ERRORS = [  # (path, body, status, the field named)
    ("/v1/completions", b'{"model": "tiny", "prompt": ', 400, None),
    ("/v1/completions", b'["a list"]', 400, None),
    ("/v1/completions", {"prompt": "Hi"}, 400, "model"),
    ("/v1/completions", {"model": NAME}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": 7}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "n": "2"}, 400, "n"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "stream": "yes"}, 400, "stream"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "top_p": 0}, 400, "top_p"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "seed": 2**70}, 400, "seed"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "logprobs": 21}, 400, "logprobs"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "stop": [""]}, 400, "stop"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "colour": "red"}, 400, "colour"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "echo": True}, 400, "echo"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "logit_bias": {"5": 1}}, 400,
     "logit_bias"),
    ("/v1/completions", {"model": NAME, "prompt": [10**6]}, 400, "prompt"),
    # mixed lists: the prompt's kind is read from its first element once validated
    ("/v1/completions", {"model": NAME, "prompt": [5, "a"]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": ["a", 5]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": [5, True]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": [[5], 6]}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": LONG}, 400, "prompt"),
    ("/v1/completions", {"model": NAME, "prompt": "Hi", "max_tokens": CONTEXT}, 400,
     "max_tokens"),
    ("/v1/chat/completions", {"model": NAME, "messages": []}, 400, "messages"),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user"}]}, 400, "messages"),
    ("/v1/chat/completions", {"model": NAME, "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "x"}}]}]}, 400, "messages"),
    ("/v1/chat/completions", {"model": NAME, "messages": MESSAGES, "top_logprobs": 2}, 400,
     "top_logprobs"),
    ("/v1/chat/completions", {"model": NAME, "messages": MESSAGES, "tools": [{}]}, 400,
     "tools"),
    ("/v1/chat/completions", {"model": NAME, "messages": MESSAGES,
                              "max_completion_tokens": CONTEXT}, 400, "max_completion_tokens"),
    ("/v1/completions", {"model": "other", "prompt": "Hi"}, 404, "model"),
    ("/v1/chat/completions", {"model": "other", "messages": MESSAGES}, 404, "model"),
    ("/v1/nowhere", {}, 404, None),
]


@pytest.mark.parametrize("path, body, status, field", ERRORS,
                         ids=[f"{i}-{f or s}" for i, (_, _, s, f) in enumerate(ERRORS)])
def test_errors_are_openai_bodies_naming_the_field(server, path, body, status, field):
    got, _, raw = request(server, "POST", path, body)
    error = json.loads(raw)["error"]
    assert got == status, error
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["param"] == field


def test_a_range_error_is_the_sampling_params_message(server):
    status, reply = post(server, "/v1/completions", {"model": NAME, "prompt": "Hi",
                                                     "temperature": -1})
    assert status == 400
    assert reply["error"]["message"] == "SamplingParams temperature=-1.0 is invalid; " \
        "temperature must be a finite number >= 0 (0 is greedy)."


# --- models, health, metrics ------------------------------------------------------------------


def test_models_health_and_metrics(server):
    status, _, raw = request(server, "GET", "/v1/models")
    assert status == 200 and [m["id"] for m in json.loads(raw)["data"]] == [NAME]
    assert request(server, "GET", f"/v1/models/{NAME}")[0] == 200
    assert request(server, "GET", "/v1/models/other")[0] == 404
    assert request(server, "GET", "/health")[0] == 200
    names = set(metrics(server))
    assert names >= {"baseboard:num_requests_running", "baseboard:num_requests_waiting",
                     "baseboard:kv_cache_usage_perc", "baseboard:prompt_tokens_total",
                     "baseboard:generation_tokens_total", "baseboard:num_preemptions_total",
                     "baseboard:time_to_first_token_seconds_count",
                     "baseboard:time_per_output_token_seconds_count"}


# --- a bounded queue and an API key -----------------------------------------------------------

KEY = "secret-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def one_at_a_time(long_model):
    return LLM(str(long_model), dtype="float32", platform="cpu", max_num_seqs=1, seed=0,
               kv_cache_memory=64 * 2**20)


def test_a_full_queue_is_503_and_the_key_guards_all_but_health(one_at_a_time):
    body = {"model": NAME, "prompt": PROMPTS[0], "max_tokens": 4}
    with serving(one_at_a_time, api_key=KEY, max_waiting=1) as (address, _):
        assert request(address, "GET", "/health")[0] == 200
        for path in ("/v1/models", "/metrics"):
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
                assert request(address, "GET", path, headers=headers)[0] == 401
            assert request(address, "GET", path, headers=AUTH)[0] == 200
        status, reply = post(address, "/v1/completions", body)
        assert status == 401 and reply["error"]["code"] == "invalid_api_key"

        # one runs (max_num_seqs=1), one waits (max_waiting=1): the next is refused
        connection = http.client.HTTPConnection(address, timeout=120)
        connection.request("POST", "/v1/completions", headers={
            **AUTH, "Content-Type": "application/json"}, body=json.dumps(
            {**body, "max_tokens": 4000, "ignore_eos": True, "stream": True}))
        running = connection.getresponse()
        assert next(events(running))["choices"][0]["text"] is not None
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(post, address, "/v1/completions", body, AUTH)
            values = wait_until(address, lambda v: v["baseboard:num_requests_waiting"] == 1,
                                headers=AUTH)
            assert values["baseboard:num_requests_running"] == 1
            status, headers, raw = request(address, "POST", "/v1/completions", body, AUTH)
            assert status == 503 and int(headers["retry-after"]) >= 1
            assert json.loads(raw)["error"]["code"] == "queue_full"
            connection.close()  # the running stream's client leaves: the waiting one runs
            status, reply = waiting.result(timeout=120)
        assert status == 200 and reply["choices"][0]["finish_reason"] == "length"
        assert idle(wait_until(address, idle, headers=AUTH))


# --- the command --------------------------------------------------------------------------


def test_serve_refuses_a_taken_port_and_a_bad_queue_before_loading(tiny_model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(tiny_model), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
    assert main(["serve", str(tiny_model), "--max-waiting", "0"]) == 2
    assert "--max-waiting 0 is invalid" in capsys.readouterr().err


def test_the_listener_is_tcp_so_connections_get_nodelay():
    listener = bind("127.0.0.1", 0)
    try:
        assert listener.proto == socket.IPPROTO_TCP
    finally:
        listener.close()
