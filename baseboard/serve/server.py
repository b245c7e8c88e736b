"""Running the app under uvicorn on a socket bound beforehand, so that ``--port 0``'s port
is known and the listening line is printed only once connections are accepted.

On SIGTERM or SIGINT uvicorn stops accepting, waits for the running responses to finish
(no timeout), then the app's lifespan stops the engine loop, which drains first, and the
command exits with status 0. A second Ctrl-C stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
import sys
import threading
from typing import Iterator

import uvicorn

from ..core.errors import ConfigError


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (0: a free port), before the model loads so
    that a taken port fails at once; it listens once uvicorn serves it (until then a
    client's connection is refused, not left hanging)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not 0: asyncio turns Nagle off (TCP_NODELAY) only on connections
    # whose socket says TCP, and with it on each response waited ~40 ms for a delayed ACK
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another "
                          f"--host or --port (0 picks a free port).") from None
    return listener


def url_of(listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class AnnouncingServer(uvicorn.Server):
    """uvicorn's server, printing ``announcement`` to stderr once it accepts connections."""

    def __init__(self, config: uvicorn.Config, announcement: str):
        super().__init__(config)
        self.announcement = announcement

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's graceful shutdown on SIGTERM and SIGINT, without its raising the signal
        again once stopped (which would end a drained server with status -15 or 130)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            print(f"{self.announcement} ({serving_stack(self.config)})", file=sys.stderr,
                  flush=True)


def serving_stack(config: uvicorn.Config) -> str:
    """The event loop and HTTP parser uvicorn runs on: 'uvloop, httptools' where those are
    installed, else 'asyncio, h11'."""
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    http = "httptools" if "HttpTools" in config.http_protocol_class.__name__ else "h11"
    return f"{loop}, {http}"


def run(app: object, listener: socket.socket) -> None:
    """Serve ``app`` on ``listener`` until SIGTERM or SIGINT."""
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=None)
    AnnouncingServer(config, f"baseboard serve: listening on {url_of(listener)}").run(
        sockets=[listener])
