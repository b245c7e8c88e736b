"""The worker processes rank 0 starts (torch.multiprocessing, spawn), and a watcher that
turns a worker's death into an error naming the rank and what it raised.

A worker reports its exception's text through a pipe before it exits; the watcher thread
waits on the processes' sentinels, so the driver learns of a death at once, not when a
collective times out.
"""

from __future__ import annotations

import os
import signal
import tempfile
import threading
import time
import traceback
from multiprocessing.connection import wait
from typing import Any, Callable, Optional

from ..core.errors import BaseboardError

# how long a failed collective waits for the watcher to name the worker that caused it
FAILURE_GRACE_S = 5.0
JOIN_TIMEOUT_S = 30.0


class WorkerError(BaseboardError):
    """A tensor-parallel worker died or failed; the engine cannot go on."""


class Workers:
    """Ranks 1..size-1 as child processes of the driver (rank 0)."""

    def __init__(self, target: Callable, size: int, args: Any):
        import torch.multiprocessing as mp

        context = mp.get_context("spawn")
        fd, path = tempfile.mkstemp(prefix="baseboard-tp-")  # the rendezvous file
        os.close(fd)
        os.unlink(path)  # torch's FileStore creates it; a stale one would confuse it
        self.init_method = f"file://{path}"
        self._store_path = path
        self.errors = context.SimpleQueue()
        self.processes = [context.Process(target=target, daemon=True, name=f"baseboard-tp{rank}",
                                          args=(rank, size, self.init_method, args, self.errors))
                          for rank in range(1, size)]
        for process in self.processes:
            process.start()
        self.failure: Optional[WorkerError] = None
        self.closing = False
        self._on_failure: list[Callable[[], None]] = []
        self._watcher = threading.Thread(target=self._watch, name="baseboard-tp-watcher",
                                         daemon=True)
        self._watcher.start()

    def on_failure(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (from the watcher thread) once a worker has died."""
        self._on_failure.append(callback)

    def _watch(self) -> None:
        alive = {p.sentinel: rank for rank, p in enumerate(self.processes, start=1)}
        while alive:
            for sentinel in wait(list(alive)):
                rank = alive.pop(sentinel)
                if self.closing:
                    continue
                self.failure = WorkerError(self._describe(rank, self.processes[rank - 1]))
                for callback in self._on_failure:
                    try:
                        callback()
                    except Exception:  # an abort that fails leaves the timeouts to act
                        pass
                return

    def _describe(self, rank: int, process: Any) -> str:
        reports = {}
        while not self.errors.empty():
            reported_rank, text = self.errors.get()
            reports[reported_rank] = text
        process.join(1.0)  # its sentinel closes a moment before its exit status is known
        code = process.exitcode
        if code is not None and code < 0:
            how = f"was killed by signal {-code} ({signal.Signals(-code).name})"
        else:
            how = f"exited with code {code}"
        text = reports.get(rank)
        cause = f": {text}" if text else " without reporting an error"
        return (f"tensor-parallel worker rank {rank} (pid {process.pid}) {how}{cause}. The "
                f"engine cannot continue; create a new LLM.")

    def explain(self, exc: BaseException) -> BaseException:
        """The error to raise for ``exc``, a failure on the driver: the dead worker's, once
        the watcher has seen it (waiting a little), else ``exc`` itself."""
        deadline = time.monotonic() + FAILURE_GRACE_S
        while self.failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.failure if self.failure is not None else exc

    def close(self, wait: bool = True) -> None:
        """Wait for the workers to leave (after the driver said stop), then end stragglers;
        ``wait=False`` ends them at once."""
        self.closing = True
        for process in self.processes:
            process.join(JOIN_TIMEOUT_S if wait else 0)
            if process.is_alive():
                process.kill()
                process.join()
        try:
            os.unlink(self._store_path)
        except OSError:
            pass


def report_failure(errors: Any, rank: int, exc: BaseException) -> None:
    """In a worker: hand the driver the text of what went wrong."""
    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    try:
        errors.put((rank, text))
    except Exception:  # the driver is gone: nobody to tell
        pass
