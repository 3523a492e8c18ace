"""Our HTTP/1.1 transport and client under the runner's API clients (connectors/network.py), against
small servers on loopback that misbehave on purpose: connections closed while idle, bytes nobody asked for, slow
answers, large bodies, TLS with a trusted and an untrusted certificate. Each runs on asyncio's own loop
and on uvloop (the runner's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import ipaddress
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.network import JOIN_LIMIT, Client, Http11Transport, async_client

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
LOOPS = ["asyncio", "uvloop"]
DEADLINE = 5.0  # seconds any wait in these tests may take before it counts as a failure


def run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


class Server:
    """A loopback HTTP/1.1 server: `answer(request_head, body)` gives the raw bytes to send back;
    counts the connections it accepted."""

    def __init__(self, *, close_after: bool = False, extra: bytes = b"", delay: float = 0.0) -> None:
        self.connections = 0
        self.closed = 0
        self.close_after = close_after  # close the connection after each response (despite keep-alive)
        self.extra = extra  # bytes sent after each response, unasked
        self.delay = delay  # seconds before answering
        self.url = ""
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Server:
        return await self.start()

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> Server:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ssl_context)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length")
                    ),
                    0,
                )
                body = await reader.readexactly(length) if length else b""
                if self.delay:
                    await asyncio.sleep(self.delay)
                answer = (
                    body if head.startswith(b"POST") else b"x" * int(head.split(b" ")[1].strip(b"/") or 0)
                )
                size = len(answer)
                if head.startswith(b"HEAD"):
                    answer = b""  # the headers a GET would have, without the body
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + answer + self.extra)
                await writer.drain()
                if self.close_after or self.extra:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed += 1


Answer = bytes | tuple[bytes, ...]  # one raw answer; a tuple is written piece by piece, a moment apart


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request off the wire: its head and its body (by Content-Length, or de-chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    fields = dict(
        (name.strip().lower(), value.strip())
        for name, _, value in (line.partition(b":") for line in head.split(b"\r\n")[1:] if line)
    )
    if b"chunked" in fields.get(b"transfer-encoding", b"").lower():
        body = bytearray()
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            chunk = await reader.readexactly(size + 2)
            if chunk[-2:] != b"\r\n":
                raise ValueError(f"a chunk of {size} bytes does not end with CRLF: {chunk[-8:]!r}")
            body += chunk[:-2]
        if await reader.readexactly(2) != b"\r\n":  # the empty line after the last chunk (no trailers)
            raise ValueError("the chunked body does not end with an empty line")
        return head, bytes(body)
    return head, await reader.readexactly(int(fields.get(b"content-length", 0)))


class Canned:
    """A loopback server that answers the requests of each connection with `answers`, raw and in order.
    After the last one it closes the connection when `close` is set; otherwise it waits, and closes
    without answering if another request comes. Records each request it read (head, body) and counts
    the connections it accepted and closed."""

    def __init__(self, *answers: Answer, close: bool = False) -> None:
        self.answers = answers
        self.close = close
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self.closed = 0
        self.url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Canned:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._handlers:  # connections the client still holds: end them here, not in asyncio.run
            _, pending = await asyncio.wait(self._handlers, timeout=0.5)
            for handler in pending:
                handler.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        try:
            for index in range(len(self.answers) + 1):
                self.requests.append(await read_request(reader))
                if index == len(self.answers):
                    break  # a request beyond the canned answers: close without answering
                answer = self.answers[index]
                for number, piece in enumerate((answer,) if isinstance(answer, bytes) else answer):
                    if number:
                        await asyncio.sleep(0.02)  # the client reads the pieces separately
                    writer.write(piece)
                    await writer.drain()
                if self.close and index == len(self.answers) - 1:
                    break
        except (asyncio.IncompleteReadError, asyncio.CancelledError, ConnectionError):
            pass  # the client closed (or the test ended)
        finally:
            writer.close()
            with suppress(ConnectionError):
                await writer.wait_closed()
            self.closed += 1
            self._handlers.discard(handler)


def transport(client: httpx2.AsyncClient) -> Http11Transport:
    found = client._transport  # the transport the client was built with
    assert isinstance(found, Http11Transport)
    return found


async def until(predicate: Callable[[], bool], what: str, within: float = DEADLINE) -> None:
    """Let the event loop run until `predicate()` holds (the client must *see* a server's close)."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.005)


def idle_connection_expired(client: httpx2.AsyncClient) -> bool:
    pool = transport(client)
    connections = pool.idle_connections()
    now = time.monotonic()
    # Retired at once (the stray bytes came with the answer) or kept but seen as unusable: either way
    # no idle connection would carry the next request.
    return not any(c.usable(now, pool.keepalive_expiry) for c in connections)


@pytest.mark.parametrize("loop", LOOPS)
def test_requests_reuse_one_kept_alive_connection(loop: str) -> None:
    async def main() -> None:
        async with Server() as server, async_client(timeout=DEADLINE, max_connections=4) as client:
            got = [await client.get(f"{server.url}/{size}") for size in (0, 10, 1000)]
            posted = await client.post(server.url, content=b'{"name": "Acme"}')

            assert [len(r.content) for r in got] == [0, 10, 1000]
            assert posted.content == b'{"name": "Acme"}'
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_connection_the_server_closed_while_idle_is_not_reused(loop: str) -> None:
    async def main() -> None:
        async with (
            Server(close_after=True) as server,
            async_client(timeout=DEADLINE, max_connections=4) as client,
        ):
            for attempt in range(3):
                response = await client.get(f"{server.url}/5")
                assert response.status_code == 200
                await until(lambda n=attempt + 1: server.closed == n, "the server to close the connection")
                await until(lambda: idle_connection_expired(client), "the client to see the close")

            assert server.connections == 3

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_bytes_nobody_asked_for_retire_an_idle_connection(loop: str) -> None:
    # A server that times a connection out may send "408 Request Timeout" and close: those bytes must
    # never be read as the answer to the next request.
    stray = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    async def main() -> None:
        async with Server(extra=stray) as server, async_client(timeout=DEADLINE, max_connections=4) as client:
            first = await client.get(f"{server.url}/3")
            await until(lambda: idle_connection_expired(client), "the client to see the stray bytes")
            second = await client.get(f"{server.url}/4")

            assert (first.status_code, second.status_code) == (200, 200)
            assert second.content == b"xxxx"
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_large_bodies_stream_both_ways_intact(loop: str) -> None:
    size = 4 * 1024 * 1024  # well past the backend's read buffer and the socket buffers

    async def main() -> None:
        body = bytes(range(256)) * (size // 256)
        async with Server() as server, async_client(timeout=DEADLINE * 4, max_connections=1) as client:
            down = await client.get(f"{server.url}/{size}")
            up = await client.post(server.url, content=body)

            assert down.content == b"x" * size
            assert up.content == body

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_slow_answer_is_a_read_timeout(loop: str) -> None:
    async def main() -> None:
        async with Server(delay=2.0) as server, async_client(timeout=0.2, max_connections=1) as client:
            with pytest.raises(httpx2.ReadTimeout):
                await client.get(f"{server.url}/1")

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_refused_connection_is_a_connect_error(loop: str) -> None:
    async def main() -> None:
        server = await Server().start()
        url = server.url
        await server.__aexit__()  # nothing listens there any more
        async with async_client(timeout=DEADLINE, max_connections=1) as client:
            with pytest.raises(httpx2.ConnectError):
                await client.get(f"{url}/1")

    run(loop, main)


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (its own trust anchor) and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ml-connector test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


@pytest.mark.parametrize("loop", LOOPS)
def test_tls_is_verified_against_the_trust_store(loop: str, tmp_path: Path) -> None:
    cert_file, key_file = _certificate(tmp_path)
    serving = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    serving.load_cert_chain(cert_file, key_file)

    async def main() -> None:
        server = await Server().start(serving)
        try:
            trusted = ssl.create_default_context(cafile=str(cert_file))
            limits = httpx2.Limits(max_connections=2, max_keepalive_connections=2)
            async with httpx2.AsyncClient(transport=Http11Transport(limits=limits, verify=trusted)) as client:
                response = await client.get(f"{server.url}/7")
                again = await client.post(server.url, content=b"over TLS")
            assert (response.content, again.content) == (b"x" * 7, b"over TLS")
            assert server.connections == 1

            async with async_client(timeout=DEADLINE, max_connections=1) as client:  # the system's store
                with pytest.raises(httpx2.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await client.get(f"{server.url}/1")
        finally:
            await server.__aexit__()

    run(loop, main)


def pool_client(limits: httpx2.Limits, timeout: httpx2.Timeout | float = DEADLINE) -> httpx2.AsyncClient:
    return httpx2.AsyncClient(timeout=timeout, transport=Http11Transport(limits=limits))


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


@pytest.mark.parametrize("loop", LOOPS)
def test_a_head_answer_has_no_body_and_its_connection_is_not_reused(loop: str) -> None:
    # The answer carries the Content-Length a GET would have and no body; llhttp would wait for that
    # body, so the connection is closed rather than parsed again.
    async def main() -> None:
        async with Server() as server, async_client(timeout=DEADLINE, max_connections=2) as client:
            head = await client.head(f"{server.url}/5")
            await until(lambda: server.closed == 1, "the client to close the HEAD's connection")
            got = await client.get(f"{server.url}/3")

            assert (head.status_code, head.headers["content-length"], head.content) == (200, "5", b"")
            assert got.content == b"xxx"
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_interim_1xx_answers_are_skipped_for_the_final_one(loop: str) -> None:
    # A 100 Continue and a 103 Early Hints (with headers of its own) come before the real answer, in
    # the same read or in separate ones; the connection's parser then carries the next exchange.
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n"
    final = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nX-Final: yes\r\n\r\ndone"

    async def main() -> None:
        async with (
            Canned(interim + final, (interim, final)) as server,
            async_client(timeout=DEADLINE, max_connections=1) as client,
        ):
            answers = [await client.post(server.url, content=b"{}") for _ in range(2)]

            for answer in answers:
                assert (answer.status_code, answer.reason_phrase, answer.content) == (201, "Created", b"done")
                assert answer.headers["x-final"] == "yes" and "link" not in answer.headers
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_body_without_length_runs_to_the_close(loop: str) -> None:
    # Neither Content-Length nor chunked: the body is whatever comes until the server closes, and that
    # connection is spent.
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst ", b"and second")

    async def main() -> None:
        async with (
            Canned(answer, close=True) as server,
            async_client(timeout=DEADLINE, max_connections=1) as client,
        ):
            got = [await client.get(server.url) for _ in range(2)]

            assert [r.content for r in got] == [b"first and second"] * 2
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_chunked_answers_are_joined_and_keep_the_connection(loop: str) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n1;name=value\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    split = (chunked[:50], chunked[50:62], chunked[62:])  # cut inside the head and inside a chunk

    async def main() -> None:
        async with (
            Canned(chunked, split) as server,
            async_client(timeout=DEADLINE, max_connections=1) as client,
        ):
            got = [await client.get(server.url) for _ in range(2)]

            assert [r.content for r in got] == [b"hello world"] * 2
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_trailers_of_a_chunked_answer_are_not_taken_for_headers(loop: str) -> None:
    # Fields after the last chunk are trailers, not the response's headers (httpcore drops them).
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-Checksum: abc\r\n\r\n"

    async def main() -> None:
        async with Canned(chunked, OK) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            first = await client.get(server.url)
            second = await client.get(server.url)

            assert (first.content, second.content) == (b"ok", b"ok")
            assert server.connections == 1
            assert "x-checksum" not in first.headers

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_streamed_request_body_is_chunked_when_httpx_framed_it_so(loop: str) -> None:
    async def parts() -> AsyncIterator[bytes]:
        yield b"first,"
        yield b""  # an empty part must not end the body (a zero-size chunk would)
        yield b"second"

    async def main() -> None:
        async with Canned(OK, OK, OK) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            await client.post(server.url, content=parts())  # no length: Transfer-Encoding: chunked
            await client.post(server.url, content=parts(), headers={"Content-Length": "12"})
            await client.get(server.url)  # each body ended where the server expected it

            (chunked_head, chunked), (sized_head, sized), _ = server.requests
            assert b"transfer-encoding: chunked" in chunked_head.lower()
            assert b"content-length" not in chunked_head.lower()
            assert b"transfer-encoding" not in sized_head.lower()
            assert chunked == sized == b"first,second"
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_request_bodies_on_both_sides_of_the_join_limit_arrive_intact(loop: str) -> None:
    # Up to JOIN_LIMIT the body goes out with the head in one write; past it, in a write of its own.
    sizes = [JOIN_LIMIT - 1, JOIN_LIMIT, JOIN_LIMIT + 1, 3 * JOIN_LIMIT + 7, 5]

    async def main() -> None:
        async with Server() as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            for size in sizes:
                body = (bytes(range(251)) * (size // 251 + 1))[:size]
                echoed = await client.post(server.url, content=body)
                assert echoed.content == body, size
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_gzip_encoded_answers_are_decoded(loop: str) -> None:
    text = b'{"records": []} ' * 200
    packed = gzip.compress(text)
    sized = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n" % len(packed) + packed
    chunked = (
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"%x\r\n%s\r\n" % (10, packed[:10])
        + b"%x\r\n%s\r\n0\r\n\r\n" % (len(packed) - 10, packed[10:])
    )

    async def main() -> None:
        async with (
            Canned(sized, chunked) as server,
            async_client(timeout=DEADLINE, max_connections=1) as client,
        ):
            got = [await client.get(server.url) for _ in range(2)]

            assert [r.content for r in got] == [text, text]
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_answer_saying_connection_close_is_not_reused(loop: str) -> None:
    # The server keeps its end open: the client must close it, and the next request needs another.
    close = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"

    async def main() -> None:
        async with Canned(close) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            first = await client.get(server.url)
            await until(lambda: server.closed == 1, "the client to close the connection")
            second = await client.get(server.url)

            assert (first.content, second.content) == (b"ok", b"ok")
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "answer",
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"abc"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", b"lo\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_a_server_closing_mid_answer_is_a_protocol_error(loop: str, answer: tuple[bytes, ...]) -> None:
    async def main() -> None:
        async with (
            Canned(answer, close=True) as server,
            async_client(timeout=DEADLINE, max_connections=1) as client,
        ):
            with pytest.raises(httpx2.RemoteProtocolError, match="disconnected before the response ended"):
                await client.get(server.url)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_server_closing_without_answering_is_a_protocol_error(loop: str) -> None:
    async def main() -> None:
        async with Canned(close=True) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
                await client.get(server.url)
            assert len(server.requests) == 1  # it did read the request

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize(
    "answer",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n",
    ],
    ids=["status-line", "content-length", "chunk-size"],
)
def test_a_malformed_answer_is_a_protocol_error_at_once(loop: str, answer: bytes) -> None:
    # The server keeps the connection open: the error must come from the parser, not from a timeout.
    async def main() -> None:
        async with Canned(answer) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            started = time.monotonic()
            with pytest.raises(httpx2.RemoteProtocolError, match="malformed"):
                await client.get(server.url)
            assert time.monotonic() - started < 1.0
            assert transport(client).idle_connections() == []

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_unasked_upgrade_is_a_protocol_error_that_stays_in_the_transport(loop: str) -> None:
    # llhttp stops at a 101 with Upgrade headers (httptools raises HttpParserUpgrade, which is not an
    # HttpParserError): that must not escape the protocol's data_received into the event loop.
    upgrade = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"

    async def main() -> None:
        escaped: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, context: escaped.append(context))
        async with Canned(upgrade) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            with pytest.raises(httpx2.RemoteProtocolError):
                await client.get(server.url)
            assert [context.get("exception") for context in escaped] == []

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_unsupported_url_schemes_are_refused(loop: str) -> None:
    async def main() -> None:
        async with async_client(timeout=DEADLINE, max_connections=1) as client:
            with pytest.raises(httpx2.UnsupportedProtocol):
                await client.get("ftp://127.0.0.1/file")
            with pytest.raises(httpx2.UnsupportedProtocol):
                await transport(client).handle_async_request(httpx2.Request("GET", "ws://127.0.0.1/"))
            assert transport(client)._open == 0  # nothing was dialled

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_header_names_and_values_that_would_split_the_message_are_refused(loop: str) -> None:
    smuggled = [
        ("X-Note", "a\r\nX-Injected: 1"),
        ("X-Note", "a\nX-Injected: 1"),
        ("X-Note", "a\rX-Injected: 1"),
        ("X-Note", "a\0b"),
        ("X-Injected: 1\r\nX-Note", "a"),
        ("X-Injected:1", "a"),
    ]

    async def main() -> None:
        async with Canned(OK) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            for name, value in smuggled:
                with pytest.raises(httpx2.LocalProtocolError):
                    await client.get(server.url, headers={name: value})
            clean = await client.get(server.url, headers={"X-Note": "fine"})  # the slot came back

            assert clean.content == b"ok"
            assert [head for head, _ in server.requests if b"injected" in head.lower()] == []
            assert len(server.requests) == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_concurrent_requests_beyond_max_connections_share_one_connection(loop: str) -> None:
    async def main() -> None:
        async with Server(delay=0.05) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            got = await asyncio.gather(client.get(f"{server.url}/1"), client.get(f"{server.url}/2"))

            assert [r.content for r in got] == [b"x", b"xx"]
            assert server.connections == 1

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_waiting_longer_than_the_pool_timeout_is_a_pool_timeout(loop: str) -> None:
    limits = httpx2.Limits(max_connections=2, max_keepalive_connections=2)

    async def main() -> None:
        async with (
            Server(delay=0.4) as server,
            pool_client(limits, httpx2.Timeout(5.0, pool=0.05)) as client,
        ):
            busy = [asyncio.create_task(client.get(f"{server.url}/1")) for _ in range(2)]
            await until(lambda: server.connections == 2, "both slots to be taken")
            started = time.monotonic()
            with pytest.raises(httpx2.PoolTimeout):
                await client.get(f"{server.url}/2")
            waited = time.monotonic() - started
            done = await asyncio.gather(*busy)
            server.delay = 0.0
            after = await client.get(f"{server.url}/3")  # the slot the third request waited for is not lost

            assert waited < 0.3  # it gave up at the pool timeout, not when a slot came free
            assert [r.status_code for r in done] == [200, 200]
            assert after.content == b"xxx"
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_idle_connections_beyond_max_keepalive_are_closed(loop: str) -> None:
    limits = httpx2.Limits(max_connections=3, max_keepalive_connections=1)

    async def main() -> None:
        async with Server(delay=0.05) as server, pool_client(limits) as client:
            await asyncio.gather(*(client.get(f"{server.url}/1") for _ in range(3)))
            await until(lambda: server.closed == 2, "the client to close the idle connections beyond one")
            kept = transport(client).idle_connections()
            again = await client.get(f"{server.url}/2")

            assert len(kept) == 1
            assert again.content == b"xx"
            assert server.connections == 3  # the kept one carried it

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_max_keepalive_zero_keeps_no_idle_connection(loop: str) -> None:
    # httpx's Limits(max_keepalive_connections=0): every connection is closed once its exchange ends.
    limits = httpx2.Limits(max_connections=2, max_keepalive_connections=0)

    async def main() -> None:
        async with Server() as server, pool_client(limits) as client:
            first = await client.get(f"{server.url}/1")
            kept = transport(client).idle_connections()
            second = await client.get(f"{server.url}/2")

            assert (first.content, second.content) == (b"x", b"xx")
            assert kept == []
            assert server.connections == 2

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_the_client_closes_its_idle_connections(loop: str) -> None:
    limits = httpx2.Limits(max_connections=3, max_keepalive_connections=3)

    async def main() -> None:
        async with Server(delay=0.05) as server:
            client = pool_client(limits)
            await asyncio.gather(*(client.get(f"{server.url}/1") for _ in range(3)))
            assert (len(transport(client).idle_connections()), server.closed) == (3, 0)

            await client.aclose()
            await until(lambda: server.closed == 3, "the server to see the idle connections close")
            assert transport(client).idle_connections() == []

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_at_most_max_connections_are_open_counting_idle_ones_to_other_hosts(loop: str) -> None:
    # An idle connection to one host must make room when the pool is full of requests to another,
    # also when those requests connect at the same time.
    limits = httpx2.Limits(max_connections=2, max_keepalive_connections=2)

    async def main() -> None:
        async with Server() as other, Server(delay=0.5) as server, pool_client(limits) as client:
            await client.get(f"{other.url}/1")  # leaves one idle connection to `other`
            busy = [asyncio.create_task(client.get(f"{server.url}/1")) for _ in range(2)]
            try:
                await until(lambda: server.connections == 2, "both requests to connect")
                # Before the answers come (0.5 s), so not the eviction when they are kept idle.
                await until(
                    lambda: other.closed == 1,
                    "the idle connection to `other` to close while two more are open",
                    within=0.3,
                )
            finally:
                done = await asyncio.gather(*busy, return_exceptions=True)
            assert [getattr(r, "status_code", r) for r in done] == [200, 200]

    run(loop, main)


def _fields(head: bytes) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """A request head as (request line, sorted (lower name, value) pairs)."""
    line, *rest = head.split(b"\r\n\r\n")[0].split(b"\r\n")
    pairs = [tuple(part.strip() for part in field.split(b":", 1)) for field in rest]
    return line, sorted((name.lower(), value) for name, value in pairs)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_short_path_sends_what_httpx2s_own_path_sends(loop: str) -> None:
    # network.Client answers our API clients' requests straight from the transport; what reaches the
    # server must be byte for byte what AsyncClient.request would send (up to header order), for a JSON
    # body, bytes, no body on POST and on GET, and a header that overrides a client default.
    calls: list[dict[str, Any]] = [
        {
            "method": "POST",
            "json": {"name": "Zoë", "n": [1, 2.5, None]},
            "headers": {"Idempotency-Key": "k-1"},
        },
        {"method": "PUT", "content": b"raw bytes", "headers": {"Content-Type": "text/plain"}},
        {"method": "POST"},
        {"method": "GET", "headers": {"Accept": "application/json", "Authorization": "Bearer t"}},
    ]

    async def main() -> None:
        async with Canned(*[OK] * len(calls)) as short, Canned(*[OK] * len(calls)) as long:
            async with async_client(timeout=DEADLINE, max_connections=1) as client:
                assert isinstance(client, Client)
                for call in calls:
                    call = dict(call)
                    method = call.pop("method")
                    response = await client.request(method, httpx2.URL(f"{short.url}/v1/x?a=1"), **call)
                    assert (response.status_code, response.text) == (200, "ok")
                    assert response.request.method == method
                    assert str(response.request.url) == f"{short.url}/v1/x?a=1"
            async with httpx2.AsyncClient(
                timeout=DEADLINE, transport=Http11Transport(limits=httpx2.Limits(max_connections=1))
            ) as plain:
                for call in calls:
                    call = dict(call)
                    await plain.request(call.pop("method"), f"{long.url}/v1/x?a=1", **call)
        for (short_head, short_body), (long_head, long_body) in zip(
            short.requests, long.requests, strict=False
        ):
            ours, theirs = _fields(short_head), _fields(long_head)
            port_free = (
                [(n, v) for n, v in ours[1] if n != b"host"],
                [(n, v) for n, v in theirs[1] if n != b"host"],
            )
            assert ours[0] == theirs[0]
            assert port_free[0] == port_free[1]
            assert short_body == long_body
        assert len(short.requests) == len(long.requests) == len(calls)

    run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_the_short_path_steps_aside_for_what_it_does_not_do(loop: str) -> None:
    # Query params, a cookie the client holds, event hooks, form data: the request goes httpx2's own way
    # (and still arrives whole).
    seen: list[str] = []

    async def hook(request: httpx2.Request) -> None:
        seen.append(request.method)

    async def main() -> None:
        async with Canned(*[OK] * 4) as server, async_client(timeout=DEADLINE, max_connections=1) as client:
            await client.request("GET", f"{server.url}/p", params={"q": "1"})
            await client.request("POST", f"{server.url}/f", data={"a": "b"})
            client.cookies.set("session", "s1")
            await client.request("GET", f"{server.url}/c")
            client.cookies.clear()
            client.event_hooks = {"request": [hook], "response": []}
            await client.request("GET", f"{server.url}/h")
        heads = [head for head, _ in server.requests]
        assert heads[0].startswith(b"GET /p?q=1 ")
        assert heads[1].startswith(b"POST /f ") and server.requests[1][1] == b"a=b"
        assert b"session=s1" in heads[2]
        assert seen == ["GET"]

    run(loop, main)
