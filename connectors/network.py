"""The sockets under our HTTP clients: an asyncio-native network backend for httpcore2.

httpx2 → httpcore2 (HTTP/1.1 over h11) → a *network backend* that opens sockets and moves bytes. The
default backend goes through anyio, which on every read and write enters a cancel scope and a
`fail_after` context and asks sniffio which event loop runs; and before reusing an idle pooled
connection httpcore2 asks the stream whether the server closed it, which anyio answers with a `poll`
system call per idle connection per request. Measured with py-spy on the runner (bench/overhead.py,
zero-latency emulators), that was about a third of the runner's CPU inside HTTP calls. The runner is
asyncio (uvloop) only, so this backend talks to the event loop directly:

- a `Protocol` per connection buffers what the loop reads; `read` takes from the buffer or waits on one
  future, with a `call_later` timer for the timeout;
- whether an idle connection was closed by the server (or holds bytes it never asked for, such as a 408
  sent just before closing) is two attributes of that protocol, not a system call;
- writes go straight to the transport and wait only while the transport has paused writing.

Behaviour kept from httpcore2's own backends: timeouts raise ConnectTimeout / ReadTimeout / WriteTimeout,
socket errors ConnectError / ReadError / WriteError (httpx2 turns them into its own exceptions, which
connectors.http classifies as transient), TLS is started in place (`loop.start_tls`) with the given SSL
context and server name, and socket options apply after connecting.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable
from typing import Any

import httpcore2
import httpx2

# Bytes a connection buffers before it stops reading from the socket (the peer then waits), and below
# which it reads again: a response body larger than this streams through without growing memory.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class _Connection(asyncio.Protocol):
    """What the event loop reads from one socket, and whether it may still be written to."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.transport: asyncio.Transport | None = None
        self.reading_paused = False
        self.writing_paused = False
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.transport.pause_reading()
            self.reading_paused = True
        _wake(self._readable)

    def eof_received(self) -> bool:
        self.eof = True
        _wake(self._readable)
        return False  # let the transport close itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        _wake(self._readable)
        _wake(self._writable)

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        _wake(self._writable)

    def readable(self) -> asyncio.Future[None]:
        self._readable = asyncio.get_running_loop().create_future()
        return self._readable

    def writable(self) -> asyncio.Future[None]:
        self._writable = asyncio.get_running_loop().create_future()
        return self._writable


def _wake(waiter: asyncio.Future[None] | None) -> None:
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


async def _wait(waiter: asyncio.Future[None], timeout: float | None, error: type[Exception]) -> None:
    """Wait for `waiter`, raising `error` after `timeout` seconds (None: no limit)."""
    if timeout is None:
        await waiter
        return
    loop = asyncio.get_running_loop()
    timer = loop.call_later(timeout, _expire, waiter, error)
    try:
        await waiter
    finally:
        timer.cancel()


def _expire(waiter: asyncio.Future[None], error: type[Exception]) -> None:
    if not waiter.done():
        waiter.set_exception(error("timed out"))


class AsyncioStream(httpcore2.AsyncNetworkStream):
    """One connection's byte stream, as httpcore2 reads and writes it."""

    def __init__(self, transport: asyncio.Transport, connection: _Connection) -> None:
        self._transport = transport
        self._connection = connection

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        connection = self._connection
        if not connection.buffer and not connection.eof:
            await _wait(connection.readable(), timeout, httpcore2.ReadTimeout)
        if connection.buffer:
            data = bytes(connection.buffer[:max_bytes])
            del connection.buffer[:max_bytes]
            if connection.reading_paused and len(connection.buffer) <= LOW_WATER:
                connection.reading_paused = False
                self._transport.resume_reading()
            return data
        if connection.error is not None:
            raise httpcore2.ReadError(str(connection.error) or type(connection.error).__name__)
        return b""  # the server closed the connection: h11 decides whether that ends the response

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            error = self._connection.error
            raise httpcore2.WriteError(str(error) if error else "the connection is closed")
        self._transport.write(buffer)
        if self._connection.writing_paused:
            await _wait(self._connection.writable(), timeout, httpcore2.WriteTimeout)
            if self._connection.error is not None:
                raise httpcore2.WriteError(str(self._connection.error))

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(
                    self._transport, self._connection, ssl_context, server_hostname=server_hostname
                )
        except TimeoutError as exc:
            self._transport.abort()
            raise httpcore2.ConnectTimeout("TLS handshake timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.abort()
            raise httpcore2.ConnectError(str(exc)) from exc
        if transport is None:  # the peer closed during the handshake
            raise httpcore2.ConnectError("the server closed the connection during the TLS handshake")
        self._connection.transport = transport  # type: ignore[assignment]  # flow control goes via TLS now
        return AsyncioStream(transport, self._connection)  # type: ignore[arg-type]

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Asked of idle connections before reuse: bytes nobody asked for, or the server's close,
            # both mean the connection must not carry another request.
            return bool(self._connection.buffer) or self._connection.eof
        names = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername"}
        if info in names:
            return self._transport.get_extra_info(names[info])
        if info == "socket":
            return self._transport.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore2.AsyncNetworkBackend):
    """Opens connections on the running asyncio event loop (uvloop in the runner)."""

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_connection(
                    _Connection, host, port, local_addr=local
                )
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"connecting to {host}:{port} timed out") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        raw = transport.get_extra_info("socket")
        if raw is not None:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                raw.setsockopt(*option)
        return AsyncioStream(transport, connection)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore2.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, connection = await loop.create_unix_connection(_Connection, path)
        except TimeoutError as exc:
            raise httpcore2.ConnectTimeout(f"connecting to {path} timed out") from exc
        except OSError as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        return AsyncioStream(transport, connection)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class AsyncioTransport(httpx2.AsyncHTTPTransport):
    """httpx2's HTTP transport on the asyncio backend: HTTP/1.1, `limits` pooled connections, TLS
    verified with the system's trust store (or `verify`, as httpx2 takes it)."""

    def __init__(self, *, limits: httpx2.Limits, verify: ssl.SSLContext | str | bool = True) -> None:
        super().__init__(limits=limits, verify=verify)
        # httpx2 builds its connection pool with the default backend and offers no way to choose
        # another; the pool is rebuilt with the same settings on ours (tests/connectors/test_network.py
        # pins this to httpx2's construction).
        self._pool = httpcore2.AsyncConnectionPool(
            ssl_context=httpx2.create_ssl_context(verify=verify),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=AsyncioBackend(),
        )


def async_client(*, timeout: float, max_connections: int) -> httpx2.AsyncClient:
    """An httpx2 client on the asyncio backend with its own pool of `max_connections`."""
    limits = httpx2.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return httpx2.AsyncClient(timeout=timeout, transport=AsyncioTransport(limits=limits))
