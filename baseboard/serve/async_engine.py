"""The server's engine loop: one thread owns the ``LLMEngine`` and steps it while anything is
queued. Requests submitted from the event loop join the running batch at its next step
(continuous batching across HTTP requests; the engine's scheduler decides who runs), and
each gets what every step added to it through an asyncio queue.

Only the engine thread touches the engine and its tokenizer (prompts, chat templates and
detokenization run there too), so nothing else needs a lock. The event loop talks to it
through a command deque (start, abort) and an Event that wakes it when idle; the thread
answers through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

from ..core.errors import BaseboardError, RequestError
from ..engine.llm_engine import LLMEngine
from ..engine.sampling_params import SamplingParams
from ..engine.sequence import Sequence, SequenceStatus
from .request_stream import CompletionDelta, RequestStream

logger = logging.getLogger(__name__)

# A prompt as LLMEngine.make_sequence takes it, or a function returning one, called on the
# engine thread (a chat template renders there, beside the tokenizer it uses).
PromptSource = Union[str, dict, Callable[[], Union[str, dict]]]


class QueueFullError(BaseboardError):
    """More sequences would wait than the server allows (--max-waiting); retry later."""


class EngineClosedError(BaseboardError):
    """The engine loop is shutting down or has stopped; it takes no new request."""


class StepError(BaseboardError):
    """An engine step failed as a whole: every request in it was stopped."""


@dataclass(eq=False)  # compared and hashed by identity
class _Work:
    """A submitted request as the engine thread sees it."""

    prompts: list[PromptSource]
    params: SamplingParams
    check_context: bool
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue
    arrival: float
    num_waiting: int  # its sequences counted as waiting (not scheduled yet)
    groups: list[list[Sequence]] = field(default_factory=list)  # per prompt, n completions
    sent_tokens: dict[tuple[int, int], int] = field(default_factory=dict)
    last_token_time: dict[tuple[int, int], float] = field(default_factory=dict)
    done: bool = False

    def deliver(self, item: Any) -> bool:
        """Hand ``item`` to the request's event loop; False when that loop is closed."""
        try:
            self.loop.call_soon_threadsafe(self.queue.put_nowait, item)
            return True
        except RuntimeError:
            return False

    @property
    def sequences(self) -> list[Sequence]:
        return [seq for group in self.groups for seq in group]

    @property
    def finished(self) -> bool:
        return all(seq.finished for seq in self.sequences)


def deliver_all(loop: asyncio.AbstractEventLoop, batch: list[tuple[_Work, Any]]) -> bool:
    """Hand each work its item with one wake-up of ``loop`` (one per work cost the engine
    thread a write to the loop's self-pipe per request and step); False when the loop is
    closed."""
    def put_all() -> None:
        for work, item in batch:
            work.queue.put_nowait(item)

    try:
        loop.call_soon_threadsafe(put_all)
        return True
    except RuntimeError:
        return False


class AsyncEngine:
    """Runs ``engine`` on a thread of its own for the asyncio server.

    max_waiting  the most sequences (prompts x n) queued and not yet scheduled; a request
                 that would make more wait is refused with QueueFullError
    metrics      a ServerMetrics (or None) updated from the engine thread
    """

    def __init__(self, engine: LLMEngine, *, max_waiting: int = 256,
                 metrics: Optional[Any] = None):
        self.engine = engine
        self.max_waiting = max_waiting
        self.metrics = metrics
        self.num_steps = 0
        self.failure: Optional[BaseException] = None  # why the loop stopped serving
        self._commands: deque[tuple[str, _Work]] = deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()  # guards _num_waiting and _closed
        self._num_waiting = 0
        self._closed = False
        self._thread: Optional[threading.Thread] = None
        self._live: dict[str, tuple[_Work, int]] = {}  # engine request id -> (work, prompt)
        self._waiting: list[_Work] = []  # started works with sequences not scheduled yet
        self._num_preemptions = engine.num_preemptions

    # --- the event loop's side ------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="baseboard-engine", daemon=True)
        self._thread.start()

    def shutdown(self, timeout: Optional[float] = None) -> None:
        """Take no new request, let the queued ones finish, then stop the thread."""
        with self._lock:
            self._closed = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and self.failure is None

    def submit(self, prompts: list[PromptSource], params: SamplingParams, *,
               check_context: bool = True) -> RequestStream:
        """Queue a request of ``prompts`` (each gets ``params.n`` completions). Called on
        the event loop. ``check_context``: prompt + max_tokens must fit max_model_len (the
        OpenAI rule when a client gives max_tokens), else generation stops at the context's
        end. Raises QueueFullError, EngineClosedError, or RequestError when the request
        alone has more sequences than may ever wait."""
        num = len(prompts) * params.n
        if num > self.max_waiting:
            raise RequestError(f"the request has {len(prompts)} prompt(s) x n={params.n} = "
                               f"{num} sequences, more than the server's queue of "
                               f"{self.max_waiting} (--max-waiting); send fewer at once.")
        with self._lock:
            if self._closed or self.failure is not None:
                raise EngineClosedError("the server is shutting down and takes no new "
                                        "request; retry against a running server.")
            if self._num_waiting + num > self.max_waiting:
                raise QueueFullError(f"{self._num_waiting} sequences are waiting, and this "
                                     f"request's {num} would pass the server's limit of "
                                     f"{self.max_waiting} (--max-waiting); retry later.")
            self._num_waiting += num
            work = _Work(list(prompts), params, check_context, asyncio.get_running_loop(),
                         asyncio.Queue(), time.monotonic(), num)
            # posted under the lock: the loop never stops (or dies) with it unread
            self._post("start", work)
        return RequestStream(work.loop, work.queue, lambda: self._post("abort", work))

    def _post(self, command: str, work: _Work) -> None:
        self._commands.append((command, work))
        self._wake.set()

    # --- the engine thread ----------------------------------------------------------------

    def _run(self) -> None:
        try:
            while True:
                self._wake.clear()  # before reading the commands: a later post wakes us
                while self._commands:
                    command, work = self._commands.popleft()
                    if command == "start":
                        self._start(work)
                    else:
                        self._stop(work)
                if self.engine.has_unfinished():
                    self._step()
                    continue
                self._observe()
                if self._closed and not self._commands:
                    break
                self._wake.wait()
        except BaseException as exc:  # the loop itself broke: nothing more can be served
            logger.exception("the engine loop stopped")
            with self._lock:
                self.failure = exc
            error = EngineClosedError(f"the engine loop stopped ({exc!r}); restart the "
                                      f"server.")
            waiting = [work for command, work in self._commands if command == "start"]
            for work in {work for work, _ in self._live.values()} | set(waiting):
                work.deliver(error)

    def _start(self, work: _Work) -> None:
        """Tokenize and check every prompt; queue them all, or none if one is refused."""
        try:
            for prompt in work.prompts:
                first = self.engine.make_sequence(prompt() if callable(prompt) else prompt,
                                                  work.params)
                if work.check_context:
                    check_fits_context(first, self.engine.max_model_len)
                work.groups.append([first] + self.engine.make_siblings(first))
        except Exception as exc:  # a bad request fails alone, before it touches the engine
            self._release_waiting(work.num_waiting)
            work.done = True
            work.deliver(exc)
            return
        for prompt_index, group in enumerate(work.groups):
            self._live[group[0].request_id] = (work, prompt_index)
            for seq in group:
                seq.streamed = True  # text after every token, as a stream sends it
        self.engine.enqueue(work.sequences)
        self._waiting.append(work)
        if not work.deliver([group[0].prompt_token_ids for group in work.groups]):
            self._stop(work)

    def _stop(self, work: _Work) -> None:
        """Abort a request (its client went away): its blocks are freed now."""
        if work.done:
            return
        work.done = True
        for group in work.groups:
            self.engine.abort(group[0].request_id)
            self._live.pop(group[0].request_id, None)
        self._count_scheduled(work, everything=True)

    def _fail(self, work: _Work, exc: BaseException) -> None:
        self._stop(work)
        work.deliver(exc)

    def _step(self) -> None:
        try:
            advanced = self.engine.step()
        except Exception as exc:  # not one request's fault: the step as a whole failed
            logger.exception("an engine step failed")
            error = StepError(f"an engine step failed ({type(exc).__name__}: {exc}); the "
                              f"requests in the engine were stopped.")
            for work in {work for work, _ in self._live.values()}:
                self._fail(work, error)
            return
        self.num_steps += 1
        now = time.monotonic()
        outputs: dict[_Work, list[CompletionDelta]] = {}
        for seq in advanced:
            work, prompt_index = self._live.get(seq.request_id, (None, 0))
            if work is None or work.done:
                continue
            if seq.error is not None:
                self._fail(work, seq.error)
                continue
            delta = self._delta(work, seq, prompt_index, now)
            outputs.setdefault(work, []).append(delta)
        deliveries: dict[asyncio.AbstractEventLoop, list[tuple[_Work, Any]]] = {}
        for work, deltas in outputs.items():
            if work.done:  # failed by a later sequence of the same step
                continue
            # only a step that ended one of its completions can have ended the request
            finished = (any(delta.finish_reason is not None for delta in deltas)
                        and work.finished)
            if finished:
                self._finish(work)
            deliveries.setdefault(work.loop, []).append((work, (deltas, finished)))
        for loop, batch in deliveries.items():
            if not deliver_all(loop, batch):
                for work, _ in batch:
                    self._stop(work)
        self._observe()

    def _delta(self, work: _Work, seq: Sequence, prompt_index: int,
               now: float) -> CompletionDelta:
        key = (prompt_index, seq.index)
        sent = work.sent_tokens.get(key, 0)
        ids = seq.output_token_ids
        logprobs = seq.logprobs[sent:len(ids)] if seq.logprobs is not None else None
        work.sent_tokens[key] = len(ids)
        if self.metrics is not None and len(ids) > sent:
            last = work.last_token_time.get(key)
            if last is None and seq.index == 0:
                self.metrics.first_token(now - work.arrival, seq.num_prompt_tokens)
            self.metrics.tokens(len(ids) - sent, None if last is None else now - last)
        work.last_token_time[key] = now
        return CompletionDelta(prompt_index, seq.index, seq.take_stream_delta(), ids[sent:],
                               logprobs, seq.finish_reason, seq.stop_reason, self.num_steps)

    def _finish(self, work: _Work) -> None:
        work.done = True
        for group in work.groups:
            self._live.pop(group[0].request_id, None)
        if self.metrics is not None:
            for seq in work.sequences:
                self.metrics.finished(seq.finish_reason)

    # --- accounting -----------------------------------------------------------------------

    def _release_waiting(self, num: int) -> None:
        with self._lock:
            self._num_waiting -= num

    def _count_scheduled(self, work: _Work, everything: bool = False) -> None:
        """Release the waiting slots of ``work``'s sequences scheduled since the last look
        (all of them when it ended)."""
        still = 0 if everything else sum(
            1 for seq in work.sequences if seq.status is SequenceStatus.WAITING)
        if still < work.num_waiting:
            self._release_waiting(work.num_waiting - still)
            work.num_waiting = still

    def _observe(self) -> None:
        """Waiting slots and the gauges, after each step and when the loop goes idle."""
        for work in self._waiting:
            self._count_scheduled(work, everything=work.done)
        self._waiting = [work for work in self._waiting if work.num_waiting]
        if self.metrics is None:
            return
        scheduler, blocks = self.engine.scheduler, self.engine.block_manager
        # waiting: sequences never scheduled yet (queued or not), and preempted ones, which
        # have generated tokens and wait to be recomputed
        preempted = sum(1 for seq in scheduler.waiting if len(seq) > seq.num_prompt_tokens)
        with self._lock:
            waiting = self._num_waiting + preempted
        preemptions = self.engine.num_preemptions
        self.metrics.engine_state(
            running=len(scheduler.running), waiting=waiting,
            kv_cache_usage=1 - blocks.num_free_blocks / blocks.num_blocks,
            new_preemptions=preemptions - self._num_preemptions)
        self._num_preemptions = preemptions


class ContextError(RequestError):
    """The prompt fits the context, but not with the tokens asked for (max_tokens)."""


def check_fits_context(seq: Sequence, max_model_len: int) -> None:
    """OpenAI's rule: the prompt and max_tokens together must fit the context."""
    prompt, asked = seq.num_prompt_tokens, seq.params.max_tokens
    if prompt + asked > max_model_len:
        raise ContextError(f"the prompt has {prompt} tokens and max_tokens={asked}: "
                           f"{prompt + asked} tokens are more than the model's context of "
                           f"{max_model_len}. Ask for at most {max_model_len - prompt} "
                           f"tokens, or shorten the prompt.")
