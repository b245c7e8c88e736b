"""A bounded load on `baseboard serve`: rounds of concurrent streams from
openai.AsyncOpenAI. Every request is answered, each stream's text is its prompt's greedy
text (no token lost or repeated under load), and the server's memory stays flat."""

from __future__ import annotations

import asyncio

import pytest
from serve_process import openai_client, resident_bytes, wait_for_metrics

CONCURRENCY = 64
ROUNDS = 5
MAX_TOKENS = 16
# Resident memory may grow by this much from the end of the first streamed round to the end
# of the last. A steady server still moves by a few MiB: glibc's malloc arenas and Python's
# object pools keep what they freed, a new thread's arena appears at once (8 MiB seen), and
# the kernel maps KV-cache pages as they are first written. A leak of 64 KiB per request
# (a response kept, a request's queue never dropped) would pass it over the 256 requests
# of the four measured rounds.
RSS_MARGIN_BYTES = 16 * 2**20

WORDS = ("The quick brown fox jumps over the lazy dog. Paris is the capital of France; "
         "Berlin is the capital of Germany. Paged attention stores keys and values.").split()


def prompts() -> list[str]:
    """CONCURRENCY distinct prompts of 2 to 9 words."""
    return [" ".join(WORDS[i % len(WORDS):][:2 + i % 8] + [str(i)]) for i in range(CONCURRENCY)]


async def complete(client, model: str, prompt: str) -> tuple[str, str, int]:
    """(the text, the finish reason, the completion tokens)."""
    reply = await client.completions.create(model=model, prompt=prompt, max_tokens=MAX_TOKENS,
                                            temperature=0)
    choice = reply.choices[0]
    return choice.text, choice.finish_reason, reply.usage.completion_tokens


async def stream(client, model: str, prompt: str) -> tuple[str, str, int]:
    """(the joined text, the finish reason, the completion tokens of the usage chunk)."""
    text, finish, tokens = [], None, None
    async for chunk in await client.completions.create(
            model=model, prompt=prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True,
            stream_options={"include_usage": True}):
        for choice in chunk.choices:
            text.append(choice.text)
            finish = choice.finish_reason or finish
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return "".join(text), finish, tokens


async def load(server, model: str):
    """The non-streamed answers, each round's streamed answers, and the server's resident
    bytes after each streamed round."""
    client = openai_client(server, asynchronous=True)
    whole = await asyncio.gather(*(complete(client, model, p) for p in prompts()))
    rounds, memory = [], []
    for _ in range(ROUNDS):
        rounds.append(await asyncio.gather(*(stream(client, model, p) for p in prompts())))
        memory.append(resident_bytes(server.pid))
    await client.close()
    return list(whole), rounds, memory


def test_concurrent_streams_lose_nothing_and_memory_stays_flat(server, model_name):
    assert len(set(prompts())) == CONCURRENCY
    whole, rounds, memory = asyncio.run(load(server, model_name))
    assert all(finish in ("length", "stop") and tokens >= 1 for _, finish, tokens in whole)
    for number, streamed in enumerate(rounds):
        assert streamed == whole, f"round {number}"
    after = wait_for_metrics(server, lambda v: v["baseboard:num_requests_running"] == 0)
    assert after["baseboard:num_requests_running"] == 0
    assert after["baseboard:num_requests_waiting"] == 0
    assert after["baseboard:kv_cache_usage_perc"] == 0
    growth = memory[-1] - memory[0]
    assert growth <= RSS_MARGIN_BYTES, [f"{m / 2**20:.1f} MiB" for m in memory]
