"""The server's engine loop: the one thread that owns an ``LLMEngine`` and steps it while
anything is queued. Requests join the running batch at its next step (continuous batching
across HTTP requests; the engine's scheduler decides who runs).

The loop knows its requests by number. It takes commands (start, abort, shutdown) from an
inlet: ``ThreadInlet.post`` from any thread of this process, or ``PipeInlet``, a pipe the
loop's own thread reads between steps. It answers through ``outlet``, a callable that
receives one list of events per step:

    ("deliver", job, item)   for a request's reader: its prompts' token ids once started,
                             then (deltas, finished) per step, each delta a plain tuple of
                             CompletionDelta's fields (a fifth of the pickling cost), or an
                             exception that ends it
    ("release", count)       this many sequences stopped waiting (scheduled or ended)
    ("state", running, preempted, kv_cache_usage, new_preemptions)   after each step
    ("closed", error)        the loop has stopped: drained (None), or broken by ``error``

The outlet is AsyncEngine.receive in this process, or a pipe to it when the loop runs in a
process of its own (engine_process.py). Prompts, chat templates and detokenization run
here, beside the tokenizer; so does detokenizing for requests with stop strings, whose
text decides when they end. The other requests' deltas carry no text (None): the server
decodes them (AsyncEngine), off this loop's thread.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Union

from ..core.errors import BaseboardError, ModelError, RequestError
from ..engine.sampling_params import SamplingParams
from ..engine.sequence import Sequence, SequenceStatus
from .protocol import FieldError
from .request_stream import CompletionDelta

FINISH_REASON = [f.name for f in dataclasses.fields(CompletionDelta)].index("finish_reason")

logger = logging.getLogger(__name__)

Event = tuple
Outlet = Callable[[list[Event]], None]
Command = tuple  # (name, payload)


class ThreadInlet:
    """Commands posted from other threads of this process (the in-process server)."""

    def __init__(self) -> None:
        self._commands: deque[Command] = deque()
        self._wake = threading.Event()

    def post(self, command: str, payload: Any = None) -> None:
        """Queue a command ("start" with a StartCommand, "abort" with a job number,
        "shutdown"); any thread."""
        self._commands.append((command, payload))
        self._wake.set()

    def take(self, wait: bool) -> list[Command]:
        """Every command queued, after waiting for one if ``wait``."""
        if wait:
            self._wake.wait()
        self._wake.clear()  # before reading the queue: a later post wakes the next wait
        commands = []
        while self._commands:
            commands.append(self._commands.popleft())
        return commands


class PipeInlet:
    """Commands read from ``conn`` by the loop's own thread, between its steps. A reader
    thread would wait for the GIL behind every step's Python: 5 ms at the median and 10 at
    p90 a command (the interpreter's switch interval), which each request paid before its
    prefill. A closed pipe (the server has gone) reads as "shutdown"."""

    def __init__(self, conn: Any):
        self.conn = conn
        self.closed = False

    def take(self, wait: bool) -> list[Command]:
        commands: list[Command] = []
        if self.closed:
            return commands
        try:
            if wait:
                self.conn.poll(None)
            while self.conn.poll():
                commands.append(self.conn.recv())
        except (EOFError, OSError):
            self.closed = True
            commands.append(("shutdown", None))
        return commands


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation, rendered through the model's chat template on the engine's side
    (where its tokenizer is)."""

    messages: list[dict]
    add_generation_prompt: bool = True

    def render(self, llm: Any) -> dict:
        from jinja2 import TemplateError

        try:
            return llm.apply_chat_template(self.messages,
                                           add_generation_prompt=self.add_generation_prompt)
        except TemplateError as exc:  # templates raise on conversations they do not take
            raise FieldError(f"the model's chat template refused the messages: {exc}",
                             "messages") from None
        except ModelError as exc:  # no chat template
            raise FieldError(f"{exc} Use /v1/completions with a prompt.", "messages") from None


# A prompt as LLMEngine.make_sequence takes it, or a conversation.
PromptSource = Union[str, dict, ChatPrompt]


class StepError(BaseboardError):
    """An engine step failed as a whole: every request in it was stopped."""


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


@dataclass(frozen=True)
class StartCommand:
    """A request: ``prompts`` (each gets ``params.n`` completions). ``check_context``:
    prompt + max_tokens must fit max_model_len (the OpenAI rule when a client gives
    max_tokens). ``num_waiting``: its sequences, counted as waiting by the server."""

    job: int
    prompts: list[PromptSource]
    params: SamplingParams
    check_context: bool
    num_waiting: int


@dataclass(eq=False)  # compared and hashed by identity
class _Job:
    """A started request as the loop sees it."""

    start: StartCommand
    num_waiting: int  # its sequences counted as waiting (not scheduled yet)
    groups: list[list[Sequence]] = field(default_factory=list)  # per prompt, n completions
    sent_tokens: dict[tuple[int, int], int] = field(default_factory=dict)
    done: bool = False

    @property
    def sequences(self) -> list[Sequence]:
        return [seq for group in self.groups for seq in group]


class EngineLoop:
    """Steps ``llm.engine`` for the requests posted to it; see the module's docstring."""

    def __init__(self, llm: Any, outlet: Outlet, inlet: Union[ThreadInlet, PipeInlet]):
        self.llm = llm
        self.engine = llm.engine
        self.outlet = outlet
        self.inlet = inlet
        self.num_steps = 0
        self._closing = False
        self._live: dict[str, tuple[_Job, int]] = {}  # engine request id -> (job, prompt)
        self._jobs: dict[int, _Job] = {}
        self._waiting: list[_Job] = []  # started jobs with sequences not scheduled yet
        self._events: list[Event] = []
        self._num_preemptions = self.engine.num_preemptions

    def run(self) -> None:
        """Serve until "shutdown" came and everything queued has finished."""
        try:
            idle = False
            while True:
                commands = self.inlet.take(wait=idle and not self._closing)
                for command in commands:
                    self._command(*command)
                if self.engine.has_unfinished():
                    self._step()
                else:
                    self._observe()
                self._flush()
                idle = not self.engine.has_unfinished()
                if idle and self._closing and not commands:
                    break
        except BaseException as exc:  # the loop itself broke: nothing more can be served
            logger.exception("the engine loop stopped")
            self._events.append(("closed", exc))
            self._flush()
            return
        self._events.append(("closed", None))
        self._flush()

    def _flush(self) -> None:
        if self._events:
            events, self._events = self._events, []
            self.outlet(events)

    def _deliver(self, job: _Job, item: Any) -> None:
        self._events.append(("deliver", job.start.job, item))

    def _release(self, count: int) -> None:
        if count:
            self._events.append(("release", count))

    def _command(self, command: str, payload: Any) -> None:
        if command == "start":
            self._start(payload)
        elif command == "abort":
            job = self._jobs.get(payload)
            if job is not None:
                self._stop(job)
        elif command == "shutdown":
            self._closing = True
        else:
            raise ValueError(f"unknown engine loop command {command!r}")

    def _start(self, start: StartCommand) -> None:
        """Tokenize and check every prompt; queue them all, or none if one is refused."""
        job = _Job(start, start.num_waiting)
        try:
            for prompt in start.prompts:
                if isinstance(prompt, ChatPrompt):
                    prompt = prompt.render(self.llm)
                first = self.engine.make_sequence(prompt, start.params)
                if start.check_context:
                    check_fits_context(first, self.engine.max_model_len)
                job.groups.append([first] + self.engine.make_siblings(first))
        except Exception as exc:  # a bad request fails alone, before it touches the engine
            self._release(job.num_waiting)
            self._deliver(job, exc)
            return
        self._jobs[start.job] = job
        for prompt_index, group in enumerate(job.groups):
            self._live[group[0].request_id] = (job, prompt_index)
            for seq in group:
                # the engine reads the text of a request with stop strings after every
                # token; the others' text is decoded where the stream is written
                seq.streamed = bool(start.params.stop_strings)
        self.engine.enqueue(job.sequences)
        self._waiting.append(job)
        self._deliver(job, [group[0].prompt_token_ids for group in job.groups])

    def _stop(self, job: _Job) -> None:
        """Abort a request (its client went away): its blocks are freed now."""
        if job.done:
            return
        job.done = True
        self._jobs.pop(job.start.job, None)
        for group in job.groups:
            self.engine.abort(group[0].request_id)
            self._live.pop(group[0].request_id, None)
        self._count_scheduled(job, everything=True)

    def _fail(self, job: _Job, exc: BaseException) -> None:
        self._stop(job)
        self._deliver(job, exc)

    def _step(self) -> None:
        try:
            advanced = self.engine.step()
        except Exception as exc:  # not one request's fault: the step as a whole failed
            logger.exception("an engine step failed")
            error = StepError(f"an engine step failed ({type(exc).__name__}: {exc}); the "
                              f"requests in the engine were stopped.")
            for job in {job for job, _ in self._live.values()}:
                self._fail(job, error)
            return
        self.num_steps += 1
        outputs: dict[_Job, list[tuple]] = {}
        for seq in advanced:
            job, prompt_index = self._live.get(seq.request_id, (None, 0))
            if job is None or job.done:
                continue
            if seq.error is not None:
                self._fail(job, seq.error)
                continue
            outputs.setdefault(job, []).append(self._delta(job, seq, prompt_index))
        for job, deltas in outputs.items():
            if job.done:  # failed by a later sequence of the same step
                continue
            # only a step that ended one of its completions can have ended the request
            finished = (any(delta[FINISH_REASON] is not None for delta in deltas)
                        and all(seq.finished for seq in job.sequences))
            if finished:
                self._finish(job)
            self._deliver(job, (deltas, finished))
        self._observe()

    def _delta(self, job: _Job, seq: Sequence, prompt_index: int) -> tuple:
        """CompletionDelta's fields, in its order."""
        key = (prompt_index, seq.index)
        sent = job.sent_tokens.get(key, 0)
        new = seq.token_ids[seq.num_prompt_tokens + sent:seq.num_known_tokens]
        job.sent_tokens[key] = sent + len(new)
        logprobs = seq.logprobs[sent:sent + len(new)] if seq.logprobs is not None else None
        text = seq.take_stream_delta() if seq.streamed or not seq.params.detokenize else None
        return (prompt_index, seq.index, text, new, logprobs, seq.finish_reason,
                seq.stop_reason, self.num_steps)

    def _finish(self, job: _Job) -> None:
        job.done = True
        self._jobs.pop(job.start.job, None)
        for group in job.groups:
            self._live.pop(group[0].request_id, None)

    def _count_scheduled(self, job: _Job, everything: bool = False) -> None:
        """Release the waiting slots of ``job``'s sequences scheduled since the last look
        (all of them when it ended)."""
        still = 0 if everything else sum(
            1 for seq in job.sequences if seq.status is SequenceStatus.WAITING)
        if still < job.num_waiting:
            self._release(job.num_waiting - still)
            job.num_waiting = still

    def _observe(self) -> None:
        """Waiting slots and the engine's state, after each step and when idle."""
        for job in self._waiting:
            self._count_scheduled(job, everything=job.done)
        self._waiting = [job for job in self._waiting if job.num_waiting]
        scheduler, blocks = self.engine.scheduler, self.engine.block_manager
        # preempted sequences have generated tokens and wait to be recomputed
        preempted = sum(1 for seq in scheduler.waiting if len(seq) > seq.num_prompt_tokens)
        preemptions = self.engine.num_preemptions
        self._events.append(("state", len(scheduler.running), preempted,
                             1 - blocks.num_free_blocks / blocks.num_blocks,
                             preemptions - self._num_preemptions))
        self._num_preemptions = preemptions
