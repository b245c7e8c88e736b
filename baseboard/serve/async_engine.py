"""The server's side of the engine loop (engine_loop.py): requests submitted on an event
loop, their outputs handed back to it (text decoded here where the loop sent none), the
bound on waiting sequences, and the metrics.

The loop runs on a thread of this process (``AsyncEngine.over(llm)``, for a program that
already holds an ``LLM``) or in a process of its own (``AsyncEngine(EngineProcess(...))``,
what `baseboard serve` runs): there the engine's steps never wait for the GIL while this
process parses requests and writes streams, which for 32 streams of a fast model is more
host work than the engine's own.

Either way the loop's events arrive through ``receive`` (on the loop's thread, or on the
event loop reading the engine process's pipe), which hands each request's items to the
event loop that submitted it, in one wake-up per batch.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..core.errors import BaseboardError, RequestError
from ..engine.detokenizer import IncrementalDetokenizer
from ..engine.sampling_params import SamplingParams
from .engine_loop import EngineLoop, Event, PromptSource, StartCommand, ThreadInlet
from .metrics import TokenBatch
from .request_stream import CompletionDelta, Inbox, RequestStream


class QueueFullError(BaseboardError):
    """More sequences would wait than the server allows (--max-waiting); retry later."""


class EngineClosedError(BaseboardError):
    """The engine loop is shutting down or has stopped; it takes no new request."""


@dataclass(eq=False)
class _Request:
    loop: asyncio.AbstractEventLoop
    inbox: Inbox
    arrival: float  # time.monotonic() at submit
    params: SamplingParams
    prompt_ids: list[list[int]] = field(default_factory=list)  # per prompt, once started
    last_token: dict[tuple[int, int], float] = field(default_factory=dict)  # per completion
    # per completion whose text this side decodes
    detokenizers: dict[tuple[int, int], IncrementalDetokenizer] = field(default_factory=dict)


class LoopThread:
    """An engine loop over ``llm`` (an ``LLM``) on a thread of this process: what
    AsyncEngine runs on (``post``, ``start``, ``join``, ``running``, ``max_model_len``);
    engine_process.EngineProcess is the other."""

    def __init__(self, llm: Any):
        self.llm = llm
        self.max_model_len = llm.engine.max_model_len
        self.tokenizer = llm.engine.tokenizer
        self.inlet = ThreadInlet()
        self.loop: Optional[EngineLoop] = None
        self.thread: Optional[threading.Thread] = None

    def connect(self, receive: Callable[[list[Event]], None]) -> None:
        self.loop = EngineLoop(self.llm, receive, self.inlet)

    def post(self, command: str, payload: Any) -> None:
        self.inlet.post(command, payload)

    def start(self) -> None:
        self.thread = threading.Thread(target=self.loop.run, name="baseboard-engine",
                                       daemon=True)
        self.thread.start()

    def join(self, timeout: Optional[float]) -> bool:
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.running()

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()


class AsyncEngine:
    """Requests for an engine loop run by ``backend`` (LoopThread or EngineProcess), from
    asyncio code.

    max_waiting  the most sequences (prompts x n) queued and not yet scheduled; a request
                 that would make more wait is refused with QueueFullError
    metrics      a ServerMetrics (or None) updated from the loop's events
    """

    def __init__(self, backend: Any, *, max_waiting: int = 256,
                 metrics: Optional[Any] = None):
        self.backend = backend
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.max_model_len = backend.max_model_len
        self.tokenizer = backend.tokenizer  # decodes the deltas that come without text
        self.failure: Optional[BaseException] = None  # why the loop stopped serving
        self._lock = threading.Lock()  # guards the fields below
        self._num_waiting = 0
        self._closed = False
        self._started = False
        self._requests: dict[int, _Request] = {}  # submitted and not ended
        self._numbers = itertools.count()
        backend.connect(self.receive)

    @classmethod
    def over(cls, llm: Any, **options: Any) -> AsyncEngine:
        """The loop on a thread of this process, over ``llm`` (an ``LLM``)."""
        return cls(LoopThread(llm), **options)

    # --- the event loop's side ------------------------------------------------------------

    def start(self) -> None:
        """Start serving (what was submitted before waits until then)."""
        if not self._started:
            self._started = True
            self.backend.start()

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Take no new request, let the queued ones finish, then stop the loop."""
        with self._lock:
            self._closed = True
        if self.backend.running():
            self.backend.post("shutdown", None)
        self.backend.join(timeout)

    @property
    def alive(self) -> bool:
        return self.backend.running() and self.failure is None

    def submit(self, prompts: list[PromptSource], params: SamplingParams, *,
               check_context: bool = True) -> RequestStream:
        """Queue a request of ``prompts`` (each gets ``params.n`` completions). Called on
        an event loop. ``check_context``: prompt + max_tokens must fit max_model_len (the
        OpenAI rule when a client gives max_tokens), else generation stops at the context's
        end. Raises QueueFullError, EngineClosedError, or RequestError when the request
        alone has more sequences than may ever wait."""
        num = len(prompts) * params.n
        if num > self.max_waiting:
            raise RequestError(f"the request has {len(prompts)} prompt(s) x n={params.n} = "
                               f"{num} sequences, more than the server's queue of "
                               f"{self.max_waiting} (--max-waiting); send fewer at once.")
        request = _Request(asyncio.get_running_loop(), Inbox(), time.monotonic(),
                           params)
        with self._lock:
            if self._closed or self.failure is not None:
                raise EngineClosedError("the server is shutting down and takes no new "
                                        "request; retry against a running server.")
            if self._num_waiting + num > self.max_waiting:
                raise QueueFullError(f"{self._num_waiting} sequences are waiting, and this "
                                     f"request's {num} would pass the server's limit of "
                                     f"{self.max_waiting} (--max-waiting); retry later.")
            self._num_waiting += num
            number = next(self._numbers)
            self._requests[number] = request
            # posted under the lock: a failure seen after it reaches this request
            self.backend.post("start", StartCommand(number, list(prompts), params,
                                                    check_context, num))
        return RequestStream(request.loop, request.inbox, lambda: self._abort(number))

    def _abort(self, number: int) -> None:
        """The reader left: stop the request unless it has ended."""
        with self._lock:
            if number not in self._requests:
                return
        self._drop(number)

    def _drop(self, number: int) -> None:
        """Forget the request and stop it in the engine (which ignores one it has ended)."""
        with self._lock:
            self._requests.pop(number, None)
        if self.backend.running():
            self.backend.post("abort", number)

    # --- the loop's events ----------------------------------------------------------------

    def receive(self, events: list[Event]) -> None:
        """Apply one batch of the loop's events (any thread)."""
        deliveries: dict[asyncio.AbstractEventLoop, list[tuple[int, Inbox, Any]]] = {}
        failed: list[int] = []  # requests whose text failed to decode here
        ended = False
        error: Optional[BaseException] = None
        now = time.monotonic()
        batch = TokenBatch() if self.metrics is not None else None
        state, preemptions = None, 0
        with self._lock:
            for event in events:
                kind = event[0]
                if kind == "deliver":
                    _, number, item = event
                    request = self._requests.get(number)
                    if request is None:  # aborted meanwhile
                        continue
                    if type(item) is tuple:  # (deltas' fields, finished): the usual one
                        item = self._decode(request, item)
                        if type(item) is tuple:
                            if item[1]:
                                del self._requests[number]  # its last item
                            if batch is not None:
                                _measure(request, item[0], now, batch)
                        else:  # its text failed to decode; the engine still runs it
                            failed.append(number)
                            del self._requests[number]
                    elif isinstance(item, BaseException):
                        del self._requests[number]
                    else:  # started: each prompt's token ids
                        request.prompt_ids = item
                    deliveries.setdefault(request.loop, []).append(
                        (number, request.inbox, item))
                elif kind == "release":
                    self._num_waiting -= event[1]
                elif kind == "state":  # the gauges keep the last step's
                    state = event
                    preemptions += event[4]
                elif kind == "closed":
                    ended, error = True, event[1]
            waiting = self._num_waiting
        if batch is not None:
            self.metrics.tokens(batch)
            if state is not None:
                _, running, preempted, usage, _ = state
                self.metrics.engine_state(running=running, waiting=waiting + preempted,
                                          kv_cache_usage=usage, new_preemptions=preemptions)
        for loop, batch_items in deliveries.items():
            if not _put_all(loop, [(inbox, item) for _, inbox, item in batch_items]):
                failed += [number for number, _, _ in batch_items]  # nobody reads them
        for number in failed:
            self._drop(number)
        if ended:
            self.closed(error)

    def _decode(self, request: _Request, item: tuple) -> Any:
        """A delivery of deltas as its reader takes it: CompletionDeltas, with the text of
        those that came without; or the exception that decoding raised, for this request
        alone."""
        fields, finished = item
        try:
            return [self._decoded(request, CompletionDelta(*f)) for f in fields], finished
        except Exception as exc:
            return exc

    def _decoded(self, request: _Request, delta: CompletionDelta) -> CompletionDelta:
        if delta.text is not None:
            return delta
        key = (delta.prompt_index, delta.index)
        detokenizer = request.detokenizers.get(key)
        if detokenizer is None:
            detokenizer = request.detokenizers[key] = IncrementalDetokenizer(
                self.tokenizer, request.prompt_ids[delta.prompt_index],
                request.params.skip_special_tokens)
        text = "".join(map(detokenizer.add, delta.token_ids))
        if delta.finish_reason is not None:
            text += detokenizer.flush()
        delta.text = text
        return delta

    def closed(self, error: Optional[BaseException]) -> None:
        """The loop has ended (drained when ``error`` is None); requests still open get
        EngineClosedError."""
        with self._lock:
            self._closed = True
            if error is not None and self.failure is None:
                self.failure = error
            orphans, self._requests = self._requests, {}
        reason = f"the engine loop stopped ({error!r})" if error is not None else \
            "the engine loop stopped"
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Inbox, Any]]] = {}
        for request in orphans.values():
            by_loop.setdefault(request.loop, []).append(
                (request.inbox, EngineClosedError(f"{reason}; restart the server.")))
        for loop, batch in by_loop.items():
            _put_all(loop, batch)


def _measure(request: _Request, deltas: list[CompletionDelta], now: float,
             batch: TokenBatch) -> None:
    """Add one delivery's tokens to ``batch``, timed as this side sees them."""
    for delta in deltas:
        key = (delta.prompt_index, delta.index)
        if delta.token_ids:
            last = request.last_token.get(key)
            if last is not None:
                batch.token_gaps_s.append(now - last)
            elif delta.index == 0:  # a prompt's first completion: its first token
                batch.first_token_s.append(now - request.arrival)
                batch.prompt_tokens += len(request.prompt_ids[delta.prompt_index])
            batch.generated += len(delta.token_ids)
            request.last_token[key] = now
        if delta.finish_reason is not None:
            batch.finish_reasons.append(delta.finish_reason)


def _put_all(loop: asyncio.AbstractEventLoop, batch: list[tuple[Inbox, Any]]) -> bool:
    """Hand each inbox its item with one wake-up of ``loop`` (one per request cost the
    engine's thread a write to the loop's self-pipe per request and step); False when the
    loop is closed."""
    def put_all() -> None:
        for inbox, item in batch:
            inbox.put(item)

    try:
        if _running_loop() is loop:  # events read on the loop itself
            put_all()
        else:
            loop.call_soon_threadsafe(put_all)
        return True
    except RuntimeError:
        return False


def _running_loop() -> Optional[asyncio.AbstractEventLoop]:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
