"""The asyncio network backend under our HTTP clients (connectors/network.py), against small servers
on loopback that misbehave on purpose: connections closed while idle, bytes nobody asked for, slow
answers, large bodies, TLS with a trusted and an untrusted certificate. Each runs on asyncio's own loop
and on uvloop (the runner's)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors.network import Http11Transport, async_client

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
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer) + answer + self.extra
                )
                await writer.drain()
                if self.close_after or self.extra:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            self.closed += 1


def transport(client: httpx2.AsyncClient) -> Http11Transport:
    found = client._transport  # the transport the client was built with
    assert isinstance(found, Http11Transport)
    return found


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Let the event loop run until `predicate()` holds (the client must *see* a server's close)."""
    deadline = asyncio.get_running_loop().time() + DEADLINE
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
