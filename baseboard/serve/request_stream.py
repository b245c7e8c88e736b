"""What the server's handlers read of a request submitted to the engine loop: its
CompletionDeltas, step by step, through an inbox the engine's events fill."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from ..engine.outputs import TokenLogprobs


@dataclass
class CompletionDelta:
    """What one engine step added to one completion of a request.

    prompt_index   which of the request's prompts (0..k-1); index: which of its n
                   completions (0..n-1)
    text           new text (a tail that may still become a stop string is held back);
                   None from the engine loop when the server is to decode token_ids
    token_ids      new token ids; logprobs: one {token id: Logprob} per new token, or None
                   when the request asked for none
    finish_reason  "stop" or "length" once the completion ended, else None
    step           the engine step that produced it (steps are numbered from 1)
    """

    prompt_index: int
    index: int
    text: Optional[str]
    token_ids: list[int]
    logprobs: Optional[list[TokenLogprobs]]
    finish_reason: Optional[str]
    stop_reason: Optional[Union[int, str]]
    step: int



def merge_deltas(deltas: list[CompletionDelta]) -> list[CompletionDelta]:
    """One delta per completion, in the order each first appears: the text, token ids and
    log-probabilities of several steps joined, the latest finish reason and step kept."""
    if len(deltas) < 2:
        return deltas
    merged: dict[tuple[int, int], CompletionDelta] = {}
    for delta in deltas:
        key = (delta.prompt_index, delta.index)
        earlier = merged.get(key)
        if earlier is None:
            merged[key] = delta
            continue
        logprobs = (None if earlier.logprobs is None
                    else earlier.logprobs + (delta.logprobs or []))
        merged[key] = CompletionDelta(key[0], key[1], earlier.text + delta.text,
                                      earlier.token_ids + delta.token_ids, logprobs,
                                      delta.finish_reason, delta.stop_reason, delta.step)
    return list(merged.values())


class Inbox:
    """Items for one reader on an event loop: ``put`` (on the loop) never waits, ``take``
    waits for one and takes every item there, so a reader behind the engine catches up in
    one go (an asyncio.Queue takes a get, and its checks, per item)."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.waiter: Optional[asyncio.Future] = None

    def put(self, item: Any) -> None:
        self.items.append(item)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_now(self) -> list[Any]:
        """Every item there, maybe none."""
        items, self.items = self.items, []
        return items

    async def take(self) -> list[Any]:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        return self.take_now()


class RequestStream:
    """One submitted request's outputs. ``await started()`` first: it raises the request's
    error (RequestError for a prompt the engine refuses) or returns each prompt's token ids.
    Then ``async for deltas in stream`` gives the CompletionDeltas of every engine step
    that advanced the request since the last iteration, in order (a reader that fell
    behind catches up at once; merge_deltas joins them), until every completion has
    finished; it raises the error of a request that fails on the way. ``abort()``, or
    leaving ``async with stream`` before the end, stops the request and frees its KV
    blocks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, inbox: Inbox,
                 on_abort: Callable[[], None]):
        self._loop = loop
        self._inbox = inbox
        self._on_abort = on_abort
        self._unread: list[Any] = []  # taken from the inbox by started(), not yet read
        self.prompt_token_ids: Optional[list[list[int]]] = None
        self.finished = False  # every completion ended, the request failed, or it was aborted
        self._error: Optional[BaseException] = None  # met after some deltas, raised next

    async def started(self) -> list[list[int]]:
        """Each prompt's token ids, once the engine has accepted (tokenized and queued) the
        request."""
        try:
            item, *self._unread = await self._inbox.take()
        except BaseException:
            self.abort()
            raise
        if isinstance(item, BaseException):
            self.finished = True
            raise item
        self.prompt_token_ids = item
        return item

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> list[CompletionDelta]:
        if self._error is not None:
            error, self._error = self._error, None
            raise error
        if self.finished:
            raise StopAsyncIteration
        items, self._unread = self._unread + self._inbox.take_now(), []
        if not items:
            items = await self._inbox.take()
        deltas: list[CompletionDelta] = []
        for item in items:
            if isinstance(item, BaseException):
                self.finished = True
                if not deltas:
                    raise item
                self._error = item
                break
            more, self.finished = item
            deltas.extend(more)
        return deltas

    def abort(self) -> None:
        """Stop the request (no-op once it has finished); its blocks are freed at once."""
        if not self.finished:
            self.finished = True
            self._on_abort()

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        self.abort()

    def __del__(self) -> None:
        # A response dropped before it began reading (its client left early) still ends
        # its request; abort() runs on the loop, never inside a collector's pass.
        if not self.finished:
            try:
                self._loop.call_soon_threadsafe(self.abort)
            except RuntimeError:  # the loop is closed: the engine thread sees it on delivery
                pass
