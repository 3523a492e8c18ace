"""Fixtures for the emulator contract suites: a live loopback server per session, fresh state per test.

Starting uvicorn costs ~0.2 s, so one server per session serves an `AppSwitch` and each test plugs
its own freshly built emulator app into it. Every request still crosses real HTTP through `serve()`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.zoho.emulator import ZohoEmulator
from connectors.zuora.emulator import ZuoraEmulator
from tests.support.live import serve

NS_CLIENT_ID = "ns-client-1"
NS_RSA_KID = "cert-rsa"
NS_EC_KID = "cert-ec"
ZUORA_CLIENT_ID = "zuora-client"
ZUORA_SECRET = "zuora-secret"
ZOHO_CLIENT_ID = "1000.ZOHOCLIENT"
ZOHO_SECRET = "zoho-secret"
ZOHO_REFRESH = "1000.refresh.token"
NS_TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"


class Clock:
    """A hand-driven clock for emulators: starts at real time, moves only when a test says so."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class AppSwitch:
    """An ASGI app forwarding to whichever app the current test plugged in."""

    def __init__(self) -> None:
        self.target: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert self.target is not None, "no emulator plugged in"
        await self.target(scope, receive, send)


@dataclass
class Receiver:
    """A webhook receiver: records each POST and answers `status`."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            entry = {"headers": dict(request.headers), "body": await request.json(), "path": request.url.path}
            with self.lock:
                self.received.append(entry)
            return JSONResponse({"ok": self.status < 400}, status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


def tcp_socket() -> socket.socket:
    """A loopback listening socket created with proto=IPPROTO_TCP.

    asyncio only sets TCP_NODELAY on accepted sockets whose proto is IPPROTO_TCP; with proto 0, every
    keep-alive response (headers, then body) stalls ~40 ms on Nagle plus delayed ACK.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="session")
def switch() -> Iterator[tuple[AppSwitch, str]]:
    app = AppSwitch()
    with serve(app, sock=tcp_socket()) as url:
        yield app, url


@pytest.fixture(scope="session")
def session_http(switch: tuple[AppSwitch, str]) -> Iterator[httpx2.Client]:
    """One client for the session (building a client costs an SSL context); tests pass headers per call."""
    with httpx2.Client(base_url=switch[1], timeout=10.0) as client:
        yield client


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[tuple[Receiver, str]]:
    found = Receiver()
    with serve(found.app(), sock=tcp_socket()) as url:
        yield found, url


@pytest.fixture
def receiver(receiver_server: tuple[Receiver, str]) -> tuple[Receiver, str]:
    """The session's webhook receiver, emptied and answering 200."""
    found, url = receiver_server
    with found.lock:
        found.received.clear()
    found.status = 200
    return found, url


@pytest.fixture
def clock() -> Clock:
    return Clock()


def fresh_get(base_url: str, path: str, headers: dict[str, str]) -> httpx2.Response:
    """GET on a connection of its own, for tests that need calls in flight at once."""
    with httpx2.Client(base_url=base_url, timeout=10.0) as client:
        return client.get(path, headers=headers)


def plug(switch: tuple[AppSwitch, str], app: ASGIApp) -> str:
    switch[0].target = app
    return switch[1]


# NetSuite -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def public_pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture
def netsuite(
    clock: Clock, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> NetSuiteEmulator:
    emulator = NetSuiteEmulator(clock=clock)
    emulator.register_m2m_client(NS_CLIENT_ID, NS_RSA_KID, public_pem(rsa_key))
    emulator.register_m2m_client(NS_CLIENT_ID, NS_EC_KID, public_pem(ec_key))
    return emulator


@pytest.fixture
def ns_url(switch: tuple[AppSwitch, str], netsuite: NetSuiteEmulator) -> str:
    return plug(switch, netsuite.app)


@pytest.fixture
def ns_http(ns_url: str, session_http: httpx2.Client) -> httpx2.Client:
    return session_http


def ns_assertion(
    key: Any, url: str, now: float, *, kid: str = NS_RSA_KID, alg: str = "PS256", **claims: Any
) -> str:
    """A client assertion as NetSuite wants it; `claims` override or (with None) drop defaults."""
    payload: dict[str, Any] = {
        "iss": NS_CLIENT_ID,
        "scope": ["rest_webservices"],
        "aud": url + NS_TOKEN_PATH,
        "iat": int(now),
        "exp": int(now) + 3000,
    }
    payload.update(claims)
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid, "typ": "JWT"})


def ns_token_form(assertion: str) -> dict[str, str]:
    return {
        "grant_type": "client_credentials",
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    }


@pytest.fixture
def ns_token(ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock) -> str:
    response = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now)))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def ns_auth(ns_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {ns_token}"}


# Zuora ----------------------------------------------------------------------------------------


@pytest.fixture
def zuora(clock: Clock) -> ZuoraEmulator:
    emulator = ZuoraEmulator(clock=clock)
    emulator.register_client(ZUORA_CLIENT_ID, ZUORA_SECRET)
    return emulator


@pytest.fixture
def zuora_http(
    switch: tuple[AppSwitch, str], zuora: ZuoraEmulator, session_http: httpx2.Client
) -> httpx2.Client:
    plug(switch, zuora.app)
    return session_http


@pytest.fixture
def zuora_auth(zuora_http: httpx2.Client) -> dict[str, str]:
    form = {"client_id": ZUORA_CLIENT_ID, "client_secret": ZUORA_SECRET, "grant_type": "client_credentials"}
    response = zuora_http.post("/oauth/token", data=form)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


# Zoho -----------------------------------------------------------------------------------------


@pytest.fixture
def zoho(clock: Clock) -> ZohoEmulator:
    emulator = ZohoEmulator(clock=clock)
    emulator.register_client(ZOHO_CLIENT_ID, ZOHO_SECRET, ZOHO_REFRESH)
    return emulator


@pytest.fixture
def zoho_url(switch: tuple[AppSwitch, str], zoho: ZohoEmulator) -> str:
    return plug(switch, zoho.app)


@pytest.fixture
def zoho_http(zoho_url: str, session_http: httpx2.Client) -> httpx2.Client:
    return session_http


def zoho_refresh_params(**overrides: str) -> dict[str, str]:
    params = {
        "refresh_token": ZOHO_REFRESH,
        "client_id": ZOHO_CLIENT_ID,
        "client_secret": ZOHO_SECRET,
        "grant_type": "refresh_token",
    }
    params.update(overrides)
    return params


@pytest.fixture
def zoho_auth(zoho_http: httpx2.Client) -> dict[str, str]:
    response = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())
    assert "access_token" in response.json(), response.text
    return {"Authorization": f"Zoho-oauthtoken {response.json()['access_token']}"}
