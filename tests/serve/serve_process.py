"""`baseboard serve` in a subprocess on the loopback, and what the tests read it with: the
official openai client, plain HTTP for what that client hides (status lines, headers,
malformed bodies), /metrics parsed into numbers, and the server's resident memory."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
LISTENING = re.compile(r"baseboard serve: listening on (http://\S+)")
START_TIMEOUT_S = 180  # a loaded 2-core machine can take a minute to import torch and load
STOP_TIMEOUT_S = 60
# The test checkpoint's context: longer than tests/engine's 256, so that a request of
# ignore_eos can run for seconds (about a millisecond a token) and a test knows that the
# request it disconnects, or that waits behind it, still runs.
CONTEXT = 8192
SAMPLE = re.compile(r"^([A-Za-z_:][A-Za-z0-9_:]*)(\{.*\})?\s+(\S+)")


@dataclass
class ServerProcess:
    """A running `baseboard serve`. ``url`` is http://127.0.0.1:PORT (no /v1); ``log`` keeps
    the last lines of its stderr, read by a thread so that a chatty server never blocks on
    a full pipe."""

    process: subprocess.Popen
    command: list[str]
    url: str = ""
    log: collections.deque = field(default_factory=lambda: collections.deque(maxlen=400))

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(list(self.log)[-lines:])

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, then SIGKILL past ``timeout``; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(model: Path | str, *flags: str,
                 timeout: float = START_TIMEOUT_S) -> ServerProcess:
    """Start `python -m baseboard.cli serve MODEL --port 0 ...` on 127.0.0.1 (float32, the
    CPU platform, seed 0, then ``flags``) and wait for its listening line."""
    command = [sys.executable, "-m", "baseboard.cli", "serve", str(model), "--host",
               "127.0.0.1", "--port", "0", "--dtype", "float32", "--platform", "cpu",
               "--seed", "0", *flags]
    # One thread: the tiny model gains nothing from two, and a team of two threads on two
    # cores shared with this process waits at every barrier for whichever thread the kernel
    # has set aside (a tiny GEMM then took 3 ms instead of microseconds).
    environment = {**os.environ, "BASEBOARD_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               errors="replace")
    server = ServerProcess(process, command)
    found = threading.Event()

    def read_stderr() -> None:
        for line in process.stderr:
            server.log.append(line.rstrip("\n"))
            match = LISTENING.search(line)
            if match and not found.is_set():
                server.url = match.group(1).rstrip("/")
                found.set()
        found.set()  # stderr closed: the process is gone

    threading.Thread(target=read_stderr, daemon=True).start()
    found.wait(timeout)
    if not server.url:
        status = server.stop()
        pytest.fail(f"`{' '.join(command)}` printed no 'baseboard serve: listening on' line "
                    f"within {timeout:.0f} s (exit status {status}); its stderr ends:\n"
                    f"{server.log_tail()}")
    return server


@contextlib.contextmanager
def running_server(model: Path | str, *flags: str) -> Iterator[ServerProcess]:
    server = start_server(model, *flags)
    try:
        yield server
    finally:
        server.stop()


def openai_client(server: ServerProcess, api_key: str = "unused", timeout: float = 120,
                  asynchronous: bool = False):
    """The official client on the server, with no retries, so that an error status is seen
    as the server sent it."""
    import openai

    kind = openai.AsyncOpenAI if asynchronous else openai.OpenAI
    return kind(base_url=f"{server.url}/v1", api_key=api_key, max_retries=0, timeout=timeout)


# --- plain HTTP ---------------------------------------------------------------------------

_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, never a proxy


@dataclass
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def json(self):
        return json.loads(self.body)


def http(server: ServerProcess, method: str, path: str, body: Optional[bytes | dict] = None,
         headers: Optional[dict[str, str]] = None, timeout: float = 300) -> Reply:
    """One request as sent, error statuses included. ``body``: raw bytes, or a dict sent as
    JSON."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    request = urllib.request.Request(server.url + path, data=body, method=method,
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with _opener.open(request, timeout=timeout) as response:
            return Reply(response.status, _lower(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Reply(error.code, _lower(error.headers), error.read())


def _lower(headers) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text as {sample name: value}, one name's values summed over its labels
    (a histogram gives NAME_bucket, NAME_count and NAME_sum)."""
    values: dict[str, float] = collections.defaultdict(float)
    for line in text.splitlines():
        match = SAMPLE.match(line)
        if match and not line.startswith("#"):
            values[match.group(1)] += float(match.group(3))
    return dict(values)


def metrics(server: ServerProcess, headers: Optional[dict[str, str]] = None
            ) -> dict[str, float]:
    reply = http(server, "GET", "/metrics", headers=headers)
    assert reply.status == 200, reply.body[:500]
    return parse_metrics(reply.body.decode())


def wait_for_metrics(server: ServerProcess, done: Callable[[dict[str, float]], bool],
                     timeout: float = 10.0, headers: Optional[dict[str, str]] = None
                     ) -> dict[str, float]:
    """Poll /metrics until ``done(values)`` holds or ``timeout`` passes; the last values."""
    deadline = time.monotonic() + timeout
    while True:
        values = metrics(server, headers)
        if done(values) or time.monotonic() > deadline:
            return values
        time.sleep(0.05)


def cpu_seconds_over(pid: int, seconds: float) -> float:
    """CPU seconds (user + system, all threads) that ``pid`` spends in the next
    ``seconds``, from /proc/PID/stat."""
    def used() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = used()
    time.sleep(seconds)
    return used() - before


def resident_bytes(pid: int) -> int:
    """VmRSS of ``pid`` and of every process below it (a server may run its engine in a
    child process), read from /proc."""
    total = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total += int(line.split()[1]) * 1024
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = task / "children"
        if children.exists():
            total += sum(resident_bytes(int(child)) for child in children.read_text().split())
    return total
