"""Stream chunks as the OpenAI clients parse them, built the fast way and the plain way."""

from __future__ import annotations

import json

import pytest

from baseboard.serve.responses import ResponseBuilder, sse


@pytest.mark.parametrize("kind", ["completion", "chat"])
@pytest.mark.parametrize("include_usage", [False, True])
def test_a_chunk_event_is_the_chunk_serialised_whole(kind, include_usage):
    """chunk_event serialises the envelope once; every event must still be exactly the
    chunk's own server-sent event, whatever the model's name and the part's text hold."""
    builder = ResponseBuilder(kind, 'a "model" \\ \u00e9\u0000', 2, None, include_usage)
    builder.started([[1, 2, 3]])
    parts = [{"index": 1, "text": 'caf\u00e9 "\u0000" \\', "logprobs": None,
              "finish_reason": None, "stop_reason": None},
             {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop",
              "stop_reason": None}]
    for part in parts:
        event = builder.chunk_event(part)
        assert event == sse(builder.chunk([part]))
        body = json.loads(event.removeprefix("data: "))
        assert body["choices"] == [part] and body["model"] == builder.model
        assert ("usage" in body) == include_usage
