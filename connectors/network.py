"""The wire under our HTTP clients: an HTTP/1.1 transport for httpx2 on the asyncio event loop.

httpx2's own transport hands each request to httpcore2's connection pool, which parses HTTP with h11
(pure Python) and reaches the socket through anyio. Measured with py-spy on the runner
(`python -m bench.overhead --profile`, zero-latency emulators), that machinery was about half of the
runner's CPU per synced record: the pool's bookkeeping, anyio's cancel scopes and event-loop sniffing
on every read and write, and h11's parser. The runner is asyncio (uvloop) only and talks to a few API
hosts over HTTP/1.1 with bodies of a few kilobytes, so this transport does exactly that and no more:

- responses are parsed by httptools (the C binding of llhttp, Node.js's parser, which uvicorn already
  uses for our own server), fed straight from the event loop's `data_received`;
- a request is written in one piece (head and body) when its body is in memory, streamed otherwise
  (chunked when httpx2 framed it so), waiting only while the socket's buffer is full;
- the response is read whole before `handle_async_request` returns, so the connection goes back to the
  pool at once; our API clients read every body anyway (none streams a download);
- idle connections are kept per origin, newest first, for `keepalive_expiry` seconds; one the server
  closed, or that holds bytes nobody asked for (a "408" sent before closing), is never reused — both are
  flags the protocol keeps, not a system call;
- at most `max_connections` exchanges run at once (waiting longer than the pool timeout is a
  PoolTimeout) and at most that many connections are open.

Failures are httpx2's own exceptions, which connectors.http classifies as transient: ConnectTimeout /
ReadTimeout / WriteTimeout / PoolTimeout, ConnectError (refused, TLS verification), ReadError /
WriteError, RemoteProtocolError (a malformed answer, or the server closing mid-response). TLS is
verified with the system's trust store (or `verify`, as httpx2 takes it). Not supported, because the
product does not use them: proxies, HTTP/2, Unix sockets, protocol upgrades.
"""

from __future__ import annotations

import asyncio
import json as _json
import socket
import ssl
import time
from collections.abc import AsyncIterable
from typing import Any

import httptools
import httpx2

# A request body larger than this is written in chunks as it is produced rather than joined first.
JOIN_LIMIT = 64 * 1024
_FORBIDDEN = (b"\r", b"\n", b"\0")


class _Exchange:
    """The response a connection is reading, as httptools parses it (its callbacks). One per
    connection: llhttp reads the responses of a kept-alive connection one after the other, and making
    a parser costs more than the rest of a small exchange."""

    __slots__ = (
        "body",
        "complete",
        "extra",
        "head_only",
        "headers",
        "headers_done",
        "keep_alive",
        "parser",
        "reason",
        "status",
        "version",
    )

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.start(head_only=False)
        self.complete = True  # nothing asked yet: any byte is one nobody asked for

    def start(self, *, head_only: bool) -> None:
        """Expect the response to a new request."""
        self.head_only = head_only  # a HEAD request: the answer has headers only
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.headers_done = False
        self.complete = False
        self.extra = False  # more bytes came after the response ended
        self.keep_alive = False  # the response lets the connection carry another request
        self.status = 0
        self.version = "1.1"

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True

    # Once the response is complete, whatever else the same bytes hold (a second response nobody asked
    # for) only marks the connection spent: it must not touch this one.

    def on_status(self, status: bytes) -> None:
        if not self.complete:
            self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        # After the headers, httptools reports a chunked body's trailer fields here too: not headers.
        if not (self.complete or self.headers_done):
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        status = self.parser.get_status_code()
        if status < 200:
            return  # an interim answer (100 Continue): the real one follows
        self.status, self.version = status, self.parser.get_http_version()
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message ends
        if self.head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        if self.head_only:
            self.extra = True  # a HEAD answer has no body: these bytes are not ours
            return
        self.body += body

    def on_message_complete(self) -> None:
        if self.complete:
            return
        if self.parser.get_status_code() < 200:
            self.reason, self.headers = b"", []
            return
        self.complete = True

    def body_runs_to_close(self) -> bool:
        """Whether the body is delimited by the server closing the connection (HTTP/1.0 style)."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                return False
        return True


class _Wire(asyncio.Protocol):
    """One connection: bytes from the event loop go straight into the current exchange's parser."""

    def __init__(self, origin: tuple[str, str, int]) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.exchange = _Exchange()
        self.error: BaseException | None = None  # a parse error of the current exchange
        self.eof = False  # the server closed (or the connection broke)
        self.stray = False  # bytes arrived while no request was waiting for them
        self.writing_paused = False
        self.idle_since = 0.0
        self._progress: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange.complete:
            self.stray = True
        else:
            try:
                exchange.parser.feed_data(data)
            except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
                # An upgrade (101) nobody asked for is as malformed an answer as any here.
                if not exchange.complete:  # garbage after a complete response only retires the connection
                    self.error = exc
                self.stray = True
            if exchange.extra:
                self.stray = True
        _wake(self._progress)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._progress)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        _wake(self._progress)
        _wake(self._writable)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self._writable)

    # --- used by the transport ----------------------------------------------------------------------

    def usable(self, now: float, expiry: float) -> bool:
        """Whether this idle connection may carry another request."""
        return not (self.eof or self.stray or self.error) and now - self.idle_since < expiry

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def exchange_with(
        self, request: httpx2.Request, timeouts: dict[str, float | None]
    ) -> httpx2.Response:
        exchange = self.exchange
        exchange.start(head_only=request.method == "HEAD")
        try:
            await self._write(request, timeouts.get("write"))
        except httpx2.WriteError:
            if not exchange.complete:  # a server may answer (413, 401) and close before reading it all
                raise
        await self._read(exchange, request, timeouts.get("read"))
        return httpx2.Response(
            exchange.status,
            headers=exchange.headers,
            stream=httpx2.ByteStream(bytes(exchange.body)),
            extensions={
                "http_version": b"HTTP/" + exchange.version.encode("ascii"),
                "reason_phrase": exchange.reason.strip(),
            },
        )

    def reusable(self) -> bool:
        exchange = self.exchange
        return (
            exchange.complete
            and exchange.keep_alive
            and not (self.eof or self.stray or self.error)
            # llhttp reads a HEAD answer's Content-Length as a body still to come: that parser is spent
            and not exchange.head_only
        )

    async def _write(self, request: httpx2.Request, timeout: float | None) -> None:
        head = _head(request)
        stream = request.stream
        if isinstance(stream, httpx2.ByteStream):
            body = request.content
            await self._send(head + body if len(body) <= JOIN_LIMIT else head, timeout, request)
            if len(body) > JOIN_LIMIT:
                await self._send(body, timeout, request)
            return
        chunked = any(
            name.lower() == b"transfer-encoding" and b"chunked" in value.lower()
            for name, value in request.headers.raw
        )
        await self._send(head, timeout, request)
        assert isinstance(stream, AsyncIterable), "the async client hands the transport async streams"
        async for part in stream:
            if part:
                await self._send(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part, timeout, request)
        if chunked:
            await self._send(b"0\r\n\r\n", timeout, request)

    async def _send(self, data: bytes, timeout: float | None, request: httpx2.Request) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            raise httpx2.WriteError("the server closed the connection", request=request)
        transport.write(data)
        if self.writing_paused:
            self._writable = asyncio.get_running_loop().create_future()
            await _wait(self._writable, timeout, httpx2.WriteTimeout, request)
            if self.eof and self.writing_paused:
                raise httpx2.WriteError("the server closed the connection while we wrote", request=request)

    async def _read(self, exchange: _Exchange, request: httpx2.Request, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        while not exchange.complete:
            if self.error is not None:
                raise httpx2.RemoteProtocolError(f"malformed HTTP response: {self.error}", request=request)
            if self.eof:
                if exchange.headers_done and exchange.body_runs_to_close():
                    exchange.complete = True  # the close ends a body without length
                    break
                said = "before the response ended" if exchange.headers_done else "without sending a response"
                raise httpx2.RemoteProtocolError(f"Server disconnected {said}.", request=request)
            self._progress = loop.create_future()
            await _wait(self._progress, timeout, httpx2.ReadTimeout, request)


def _head(request: httpx2.Request) -> bytes:
    """The request line and headers, refusing what would split the message (CR, LF or NUL in a name
    or value, a colon or nothing as a name, a space or CR/LF in the target)."""
    target = request.url.raw_path
    raw = request.headers.raw
    head = b"".join(
        [
            b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), target),
            *[b"%s: %s\r\n" % (name, value) for name, value in raw],
            b"\r\n",
        ]
    )
    # Every CR and LF of a sound head ends one of its lines: counting them checks all fields at once.
    lines = len(raw) + 2
    if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head or b" " in target:
        raise httpx2.LocalProtocolError(
            f"illegal request line or header in {_offender(request)}", request=request
        )
    for name, _value in raw:
        if not name or b":" in name:
            raise httpx2.LocalProtocolError(f"illegal header name {name!r}", request=request)
    return head


def _offender(request: httpx2.Request) -> str:
    """Which part of the request would split the message, for the error (never a header's value)."""
    if any(bad in request.url.raw_path for bad in (b"\r", b"\n", b"\0", b" ")):
        return "the URL"
    for name, value in request.headers.raw:
        if any(bad in name or bad in value for bad in _FORBIDDEN):
            return f"header {name.decode('ascii', 'replace')!r}: its value must be one line, without NUL"
    return "the request"


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _wait(
    waiter: asyncio.Future[None],
    timeout: float | None,
    error: type[httpx2.TimeoutException],
    request: httpx2.Request,
) -> None:
    """Wait for `waiter`, raising `error` after `timeout` seconds (None: no limit)."""
    if timeout is None:
        await waiter
        return
    timer = asyncio.get_running_loop().call_later(timeout, _expire, waiter)
    try:
        await waiter
    except TimeoutError:
        raise error("timed out", request=request) from None
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class Http11Transport(httpx2.AsyncBaseTransport):
    """HTTP/1.1 on the running asyncio event loop (uvloop in the runner): `limits.max_connections`
    exchanges at once, idle connections kept `limits.keepalive_expiry` seconds (at most
    `limits.max_keepalive_connections` of them), TLS verified with the system's trust store or
    `verify`."""

    def __init__(self, *, limits: httpx2.Limits, verify: ssl.SSLContext | str | bool = True) -> None:
        self.max_connections = limits.max_connections or 100
        # As httpx2 reads its Limits: no idle limit given means max_connections, 0 keeps none idle, and
        # no expiry means idle connections are kept until the server closes them.
        kept = limits.max_keepalive_connections
        self.max_idle = self.max_connections if kept is None else min(kept, self.max_connections)
        expiry = limits.keepalive_expiry
        self.keepalive_expiry = float("inf") if expiry is None else expiry
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # built when the first https URL is asked for
        self._slots: asyncio.Semaphore | None = None  # made on the event loop that uses it
        self._idle: dict[tuple[str, str, int], list[_Wire]] = {}
        self._open = 0  # connections open, busy or idle
        self._closed = False

    def idle_connections(self) -> list[_Wire]:
        return [wire for wires in self._idle.values() for wire in wires]

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx2.UnsupportedProtocol(f"the URL scheme must be http or https: {url}", request=request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_connections)
        slots = self._slots
        if slots.locked():
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await slots.acquire()
            except TimeoutError:
                raise httpx2.PoolTimeout("no connection came free in time", request=request) from None
        else:
            await slots.acquire()
        try:
            origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
            wire = self._reuse(origin) or await self._connect(origin, timeouts.get("connect"), request)
            try:
                response = await wire.exchange_with(request, timeouts)
            except BaseException:
                self._retire(wire)
                raise
            if wire.reusable() and not self._closed:
                self._keep(wire)
            else:
                self._retire(wire)
            return response
        finally:
            slots.release()

    async def aclose(self) -> None:
        self._closed = True
        for wire in self.idle_connections():
            self._retire(wire)
        self._idle.clear()

    def _reuse(self, origin: tuple[str, str, int]) -> _Wire | None:
        wires = self._idle.get(origin)
        now = time.monotonic()
        while wires:
            wire = wires.pop()
            if wire.usable(now, self.keepalive_expiry):
                return wire
            self._retire(wire)
        return None

    def _keep(self, wire: _Wire) -> None:
        wire.idle_since = time.monotonic()
        self._idle.setdefault(wire.origin, []).append(wire)
        if sum(len(wires) for wires in self._idle.values()) > self.max_idle:
            self._evict_one()

    def _retire(self, wire: _Wire) -> None:
        wire.close()
        self._open -= 1

    def _evict_one(self) -> None:
        """Close the idle connection that has waited longest."""
        oldest = min(
            (wires[0] for wires in self._idle.values() if wires), key=lambda w: w.idle_since, default=None
        )
        if oldest is not None:
            self._idle[oldest.origin].remove(oldest)
            self._retire(oldest)

    async def _connect(
        self, origin: tuple[str, str, int], timeout: float | None, request: httpx2.Request
    ) -> _Wire:
        if self._open >= self.max_connections:
            self._evict_one()  # idle ones of other origins make room
        self._open += 1  # counted from now: requests connecting at once each see the others
        try:
            return await self._dial(origin, timeout, request)
        except BaseException:
            self._open -= 1
            raise

    async def _dial(
        self, origin: tuple[str, str, int], timeout: float | None, request: httpx2.Request
    ) -> _Wire:
        scheme, host, port = origin
        context = self._ssl_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, wire = await loop.create_connection(
                    lambda: _Wire(origin),
                    host,
                    port,
                    ssl=context,
                    server_hostname=host if context is not None else None,
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification (ssl.SSLError is an OSError)
            raise httpx2.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        raw = transport.get_extra_info("socket")
        if raw is not None and raw.family in (socket.AF_INET, socket.AF_INET6):
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return wire

    def _ssl_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx2.create_ssl_context(verify=self._verify)
        return self._ssl


class Client(httpx2.AsyncClient):
    """httpx2's AsyncClient on Http11Transport, with a short path for the requests our API clients make.

    `AsyncClient.request` builds a Request through the client's merge steps (base URL, query params,
    headers, cookies, timeouts), then sends it through the auth, redirect and cookie layers; the
    profile of the runner put that at about as much CPU as the exchange itself. A request with at most
    headers and a JSON or bytes body, to an absolute URL, from a client whose cookie jar is empty and
    that has no auth and no event hooks (every pool the runner makes), gets the same Request (the
    client's default headers, then the request's, Host, Content-Length and Content-Type as httpx2 sets
    them, the client's timeouts) and the same Response (read, `request` set) straight from the
    transport. Anything else goes the long way, unchanged. Redirects are not followed either way
    (httpx2's default), and cookies the servers set are not kept (the APIs authenticate by header).
    """

    def __init__(self, *, timeout: float, transport: Http11Transport) -> None:
        super().__init__(timeout=timeout, transport=transport)
        self._wire = transport
        self._extensions = {"timeout": self.timeout.as_dict()}
        # The client's default headers (Accept, Accept-Encoding, Connection, User-Agent), by lower name.
        self._defaults = {name.lower(): (name, value) for name, value in self.headers.raw}

    async def request(  # type: ignore[override]
        self,
        method: str,
        url: httpx2.URL | str,
        *,
        content: bytes | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        params: Any = None,
        **other: Any,
    ) -> httpx2.Response:
        short = (
            not other
            and params is None
            and (content is None or isinstance(content, bytes))
            and not self.cookies
            and self.auth is None
            and not (self.event_hooks["request"] or self.event_hooks["response"])
            and not self.is_closed
        )
        if not short:
            return await super().request(
                method, url, content=content, json=json, headers=headers, params=params, **other
            )
        target = url if isinstance(url, httpx2.URL) else httpx2.URL(url)
        if not target.is_absolute_url:
            return await super().request(method, url, content=content, json=json, headers=headers)
        return await self._send_short(method, target, content, json, headers)

    async def _send_short(
        self, method: str, url: httpx2.URL, content: bytes | None, json: Any, headers: dict[str, str] | None
    ) -> httpx2.Response:
        fields = dict(self._defaults)
        if json is not None:
            # As httpx2 encodes a `json=` body (httpx2._content.encode_json).
            content = _json.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            fields.setdefault(b"content-type", (b"Content-Type", b"application/json"))
        for name, value in (headers or {}).items():
            fields[name.lower().encode("ascii")] = (name.encode("ascii"), value.encode("ascii"))
        raw = [(b"Host", url.netloc), *fields.values()]
        body = content or b""
        if body or method in ("POST", "PUT", "PATCH"):
            raw.append((b"Content-Length", b"%d" % len(body)))
        request = httpx2.Request(
            method, url, headers=raw, stream=httpx2.ByteStream(body), extensions=self._extensions
        )
        request.read()
        response = await self._wire.handle_async_request(request)
        response.request = request
        response.read()  # the body is in memory already: the synchronous read skips async iteration
        return response


def async_client(*, timeout: float, max_connections: int) -> httpx2.AsyncClient:
    """An httpx2 client on our HTTP/1.1 transport with its own pool of `max_connections`."""
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return Client(timeout=timeout, transport=Http11Transport(limits=limits))
