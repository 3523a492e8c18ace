"""Where the runner's alerts land in tests: a webhook receiver that checks every signature, and an SMTP
sink that keeps every message. Both listen on loopback for the length of a test."""

from __future__ import annotations

import asyncio
import email
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import Message
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.alerts import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from tests.support.live import serve, wait_for


@dataclass(frozen=True)
class Received:
    """One webhook as it arrived: the raw body, its JSON, and whether its signature checked out."""

    body: bytes
    payload: dict[str, Any]
    verified: bool

    @property
    def event(self) -> str:
        return str(self.payload["event"])

    @property
    def incident(self) -> dict[str, Any]:
        return dict(self.payload["incident"])


class WebhookReceiver:
    """Collects the alert webhooks POSTed to `url`, verifying each with `secret`."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.url = ""
        self._lock = threading.Lock()
        self._received: list[Received] = []

    async def _hook(self, request: Request) -> Response:
        body = await request.body()
        verified = verify_signature(
            self.secret,
            body,
            request.headers.get(TIMESTAMP_HEADER, ""),
            request.headers.get(SIGNATURE_HEADER, ""),
        )
        with self._lock:
            self._received.append(Received(body, json.loads(body), verified))
        return JSONResponse({"ok": True})

    def clear(self) -> None:
        with self._lock:
            self._received.clear()

    @property
    def received(self) -> list[Received]:
        with self._lock:
            return list(self._received)

    def of(self, kind: str, event: str | None = None) -> list[Received]:
        """The notices about incidents of `kind` (and `event`, when given), in arrival order."""
        return [
            r for r in self.received if r.incident["kind"] == kind and (event is None or r.event == event)
        ]

    def wait(self, kind: str, event: str, *, timeout: float = 20.0) -> Received:
        """The first `event` notice of `kind`, waiting for it up to `timeout` seconds."""
        return wait_for(lambda: self.of(kind, event), timeout=timeout, what=f"a {kind} {event} webhook")[0]


@contextmanager
def webhook_receiver(secret: str) -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver(secret)
    app = Starlette(routes=[Route("/hook", receiver._hook, methods=["POST"])])
    with serve(app) as url:
        receiver.url = f"{url}/hook"
        yield receiver


class SmtpSink:
    """A minimal SMTP server (EHLO, MAIL, RCPT, DATA, QUIT) keeping each message it is given."""

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._messages: list[Message] = []

    @property
    def messages(self) -> list[Message]:
        with self._lock:
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def subjects(self, containing: str) -> list[str]:
        return [str(m["Subject"]) for m in self.messages if containing in str(m["Subject"])]

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 sink ESMTP\r\n")
        try:
            while line := await reader.readline():
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    writer.write(b"250 sink\r\n")
                elif verb == b"DATA":
                    writer.write(b"354 end with <CRLF>.<CRLF>\r\n")
                    await writer.drain()
                    lines: list[bytes] = []
                    while (data := await reader.readline()) not in (b".\r\n", b""):
                        lines.append(data[1:] if data.startswith(b"..") else data)
                    with self._lock:
                        self._messages.append(email.message_from_bytes(b"".join(lines)))
                    writer.write(b"250 OK queued\r\n")
                elif verb == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    await writer.drain()
                    break
                else:  # MAIL, RCPT, RSET, NOOP
                    writer.write(b"250 OK\r\n")
                await writer.drain()
        finally:
            writer.close()


@contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await asyncio.start_server(sink._session, "127.0.0.1", 0)
        sink.port = server.sockets[0].getsockname()[1]
        ready.set()
        async with server:
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield sink
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
