"""Serve an ASGI app with uvicorn on an ephemeral loopback port for the length of a test.

Tests talk to emulators and the runner over real HTTP, so every server in the suite goes through
`serve()`. The server runs in a daemon thread with its own event loop; leaving the context asks it to
shut down and waits for it.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import uvicorn

STARTUP_DEADLINE = 15.0  # seconds
SHUTDOWN_DEADLINE = 15.0  # seconds

T = TypeVar("T")


@contextmanager
def serve(app: Any, host: str = "127.0.0.1", sock: socket.socket | None = None) -> Iterator[str]:
    """Run `app` on `host` at a free port (or on an already bound `sock`) and yield its base URL."""
    if sock is None:
        # IPPROTO_TCP (not 0) lets asyncio set TCP_NODELAY on accepted connections; without it every
        # keep-alive response waits ~40 ms on Nagle.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, 0))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=STARTUP_DEADLINE, what=f"server on port {port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(SHUTDOWN_DEADLINE)
        sock.close()


def wait_for(
    predicate: Callable[[], T], *, timeout: float = 10.0, interval: float = 0.02, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
