"""Helpers and fixtures for the Zoho emulator suites, beside the shared ones in conftest.py.

Fixtures here are plain functions; a test module that wants one binds it at module level
(`notify_receiver = zoho_fixtures.notify_receiver`) so pytest finds it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import ZOHO_CLIENT_ID, ZOHO_SECRET, tcp_socket
from tests.support.live import serve, wait_for

WATCH = "/crm/v8/actions/watch"
CHANNEL = "1000000068001"  # a channel id as Zoho's docs show them: a long
ALL_SCOPES = (
    "ZohoCRM.modules.ALL,ZohoCRM.notifications.ALL,ZohoCRM.settings.ALL,ZohoCRM.users.READ,ZohoCRM.org.READ"
)


@dataclass
class NotificationReceiver:
    """A `notify_url` endpoint: keeps each POST (path, query, headers, JSON body) and answers `status`."""

    status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event | None = None  # when set, each POST waits for it before answering

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            if self.gate is not None:
                await anyio.to_thread.run_sync(self.gate.wait, 5.0)
            entry = {
                "path": request.url.path,
                "query": dict(request.query_params),
                "headers": dict(request.headers),
                "body": await request.json(),
            }
            with self.lock:
                self.received.append(entry)
            return JSONResponse({"ok": self.status < 400}, status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [entry["body"] for entry in self.received]

    def wait(self, count: int) -> list[dict[str, Any]]:
        """The first `count` bodies, once that many have arrived (polls; never sleeps a fixed time)."""
        wait_for(lambda: len(self.bodies()) >= count, timeout=5.0, what=f"{count} notification(s)")
        return self.bodies()[:count]


@pytest.fixture(scope="session")
def notify_server() -> Iterator[tuple[NotificationReceiver, str]]:
    receiver = NotificationReceiver()
    with serve(receiver.app(), sock=tcp_socket()) as url:
        yield receiver, url


@pytest.fixture
def notify_receiver(notify_server: tuple[NotificationReceiver, str]) -> tuple[NotificationReceiver, str]:
    """The session's notification receiver, emptied and answering 200."""
    receiver, url = notify_server
    with receiver.lock:
        receiver.received.clear()
    receiver.status = 200
    receiver.gate = None
    return receiver, url


@pytest.fixture
def hook_url(notify_receiver: tuple[NotificationReceiver, str]) -> str:
    """A notify_url on the receiver with a query string, which Zoho echoes as `query_params`."""
    return notify_receiver[1] + "/zoho?t=42"


def stamp(ts: float) -> str:
    """The emulator's channel_expiry text for epoch seconds `ts` (offset form, whole seconds)."""
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="seconds")


def channel(
    url: str, events: list[str] | None = None, channel_id: str = CHANNEL, **extra: Any
) -> dict[str, Any]:
    """One `watch[]` object: Accounts.all on `url` unless told otherwise."""
    return {"channel_id": channel_id, "events": events or ["Accounts.all"], "notify_url": url, **extra}


def send(http: httpx2.Client, auth: dict[str, str], method: str, *items: dict[str, Any]) -> httpx2.Response:
    """A Notification API call with `{"watch": [items]}` as the body."""
    return http.request(method, WATCH, json={"watch": list(items)}, headers=auth)


def exchange_code(http: httpx2.Client, code: str, **overrides: str) -> httpx2.Response:
    """POST the self-client grant-code exchange the way Zoho's docs show it: all in the query string."""
    params = {
        "grant_type": "authorization_code",
        "client_id": ZOHO_CLIENT_ID,
        "client_secret": ZOHO_SECRET,
        "code": code,
    }
    params.update(overrides)
    return http.post("/oauth/v2/token", params=params)


def scoped_auth(http: httpx2.Client, zoho: ZohoEmulator, scopes: str) -> dict[str, str]:
    """An Authorization header whose token carries exactly `scopes` (minted through a grant code)."""
    body = exchange_code(http, zoho.grant_code(ZOHO_CLIENT_ID, scopes)).json()
    return {"Authorization": f"Zoho-oauthtoken {body['access_token']}"}


def write(
    http: httpx2.Client,
    auth: dict[str, str],
    module: str,
    records: list[Any],
    *,
    upsert: bool = False,
    **extra: Any,
) -> httpx2.Response:
    """Insert (or upsert) `records` with workflows off, as a sync would."""
    path = f"/crm/v8/{module}/upsert" if upsert else f"/crm/v8/{module}"
    return http.post(path, json={"data": records, "trigger": [], **extra}, headers=auth)


def new_ids(response: httpx2.Response) -> list[str]:
    """The record ids a successful batch write answered with, in input order."""
    return [item["details"]["id"] for item in response.json()["data"]]
