"""The engine loop in a process of its own, for `baseboard serve`.

In one process the engine's thread and the HTTP event loop take turns at the GIL: every
token of every stream costs the event loop tens of microseconds of Python (a chunk, its
JSON, its write), and the engine's next step waits for them. On an H200 that held a
0.5B model's server to a quarter of ``LLM.generate``'s throughput. Here the model, its
tokenizer and the loop (engine_loop.py) live in a spawned child; the server's process
sends it commands and reads its events, one message per step, through a pipe.

The child ignores SIGINT and SIGTERM: the server drains on them and then tells the child
to stop (``shutdown``), and a child whose server went away (the pipe closed) finishes what
runs and exits. The loop's own thread reads the commands between its steps (PipeInlet).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, Optional

from ..core.errors import BaseboardError
from .engine_loop import EngineLoop, Event, PipeInlet


JOIN_TIMEOUT_S = 10.0  # how long a child whose pipe closed may take to exit


class EngineProcessError(BaseboardError):
    """The engine's process ended while loading the model or while serving."""


@dataclass(frozen=True)
class EngineInfo:
    """What the server prints and needs of the engine the child loaded."""

    platform: str
    dtype: str
    max_model_len: int
    max_num_seqs: int
    implementations: dict[str, str]  # op -> the implementation selected
    warnings: list[str]
    tokenizer: Any  # the model's, for the text the server decodes (None: no tokenizer)


class EngineProcess:
    """Spawns the child, loads ``LLM(**llm_options)`` there and waits until it is ready
    (raising what the load raised); then the backend AsyncEngine runs on (``connect``,
    ``start``, ``post``, ``join``, ``running``)."""

    def __init__(self, llm_options: dict[str, Any]):
        context = multiprocessing.get_context("spawn")
        self._conn, child_end = context.Pipe()
        # not a daemon: a daemonic process may not start the tensor-parallel workers
        self.process = context.Process(target=_child_main, args=(child_end, llm_options),
                                       name="baseboard-engine")
        self.process.start()
        child_end.close()
        try:
            kind, payload = self._conn.recv()
        except EOFError:
            self.process.join()
            raise EngineProcessError(
                f"the engine process exited with status {self.process.exitcode} while "
                f"loading the model; its messages above say why.") from None
        except BaseException:  # Ctrl-C while loading: the child ignores it
            self.process.kill()
            self.process.join()
            raise
        if kind == "failed":
            self.process.join()
            raise payload
        self.info: EngineInfo = payload
        self.max_model_len = payload.max_model_len
        self.tokenizer = payload.tokenizer
        self._receive: Optional[Callable[[list[Event]], None]] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._send_lock = threading.Lock()
        self._ended = False  # the child's end of the pipe has closed
        self._closed_seen = False  # the loop said it stopped

    def connect(self, receive: Callable[[list[Event]], None]) -> None:
        self._receive = receive

    def start(self) -> None:
        """Read the child's events on the running event loop (the app's lifespan calls
        this): a reader thread would wait for the GIL behind the loop's work while the
        child, its pipe full, waited for the reader."""
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._conn.fileno(), self._read)
        # uvloop (libuv) makes a watched descriptor non-blocking, and a Connection needs it
        # blocking: a message larger than the socket's buffer (a long prompt) would stop
        # half-sent or half-read with EAGAIN. Readiness alone is what the loop watches.
        os.set_blocking(self._conn.fileno(), True)

    def _read(self) -> None:
        """Every batch of events the child has sent so far, handed over at once; once its
        end of the pipe closes, a child that ended without saying so (killed, crashed)
        fails what runs."""
        events: list[Event] = []
        try:
            while self._conn.poll():
                events.extend(self._conn.recv())
        except (EOFError, OSError):
            self._loop.remove_reader(self._conn.fileno())
            self._ended = True
        self._closed_seen = self._closed_seen or any(e[0] == "closed" for e in events)
        if events:
            self._receive(events)
        if self._ended and not self._closed_seen:
            self.process.join(JOIN_TIMEOUT_S)
            self._receive([("closed", EngineProcessError(
                f"the engine process exited with status {self.process.exitcode}"))])

    def post(self, command: str, payload: Any) -> None:
        with self._send_lock:
            try:
                self._conn.send((command, payload))
            except (BrokenPipeError, ConnectionResetError):
                pass  # the child has gone: the reader reports it

    def join(self, timeout: Optional[float]) -> bool:
        self.process.join(timeout)
        return not self.process.is_alive()

    def running(self) -> bool:
        return not self._ended and self.process.is_alive()


def portable(error: BaseException) -> BaseException:
    """``error`` if it survives the pipe's pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _portable_events(events: list[Event]) -> list[Event]:
    out = []
    for event in events:
        if event[0] == "deliver" and isinstance(event[2], BaseException):
            event = ("deliver", event[1], portable(event[2]))
        elif event[0] == "closed" and event[1] is not None:
            event = ("closed", portable(event[1]))
        out.append(event)
    return out


def _child_main(conn: Any, llm_options: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ..engine.llm import LLM

    try:
        llm = LLM(**llm_options)
    except BaseException as exc:  # the server raises it as if it had loaded the model
        conn.send(("failed", portable(exc)))
        return
    config = llm.config
    conn.send(("ready", EngineInfo(llm.plan.platform, str(config.dtype).replace("torch.", ""),
                                   config.max_model_len, config.max_num_seqs,
                                   dict(llm.plan.selected()), list(llm.engine.warnings),
                                   llm.engine.tokenizer)))

    def send(events: list[Event]) -> None:
        try:
            conn.send(_portable_events(events))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server has gone: the loop reads its closed pipe as "shutdown"

    EngineLoop(llm, send, PipeInlet(conn)).run()
    llm.engine.close()
    sys.stderr.flush()
