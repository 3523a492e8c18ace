"""Helpers and fixtures for the Zuora contract suites (conftest.py is shared, so they live here).

Fixtures are declared with `name=` so a test module imports the function (`..._fixture`) and asks for
the fixture by its short name without shadowing the import.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tests.emulators.conftest import tcp_socket
from tests.support.live import serve

HOLD_DEADLINE = 10.0  # seconds a held answer waits for `release()` before giving up


@dataclass
class CalloutReceiver:
    """A callout endpoint: records each POST (raw bytes included) and answers scripted statuses.

    `statuses` are answered in order, then `default_status`; `hold()` parks answers until `release()`.
    """

    statuses: list[int] = field(default_factory=list)
    default_status: int = 200
    received: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event = field(default_factory=threading.Event)

    def reset(self) -> None:
        with self.lock:
            self.statuses.clear()
            self.received.clear()
        self.default_status = 200
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def bodies(self) -> list[dict[str, Any]]:
        with self.lock:
            return [entry["body"] for entry in self.received]

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            raw = await request.body()
            entry = {
                "raw": raw,
                "headers": dict(request.headers),
                "body": json.loads(raw),
                "path": request.url.path,
                "at": time.monotonic(),
            }
            with self.lock:
                self.received.append(entry)
                status = self.statuses.pop(0) if self.statuses else self.default_status
            deadline = time.monotonic() + HOLD_DEADLINE
            while not self.gate.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            return JSONResponse({"success": status == 200}, status_code=status)

        return Starlette(routes=[Route("/{path:path}", hook, methods=["POST"])])


@pytest.fixture(scope="session", name="callout_server")
def callout_server_fixture() -> Iterator[tuple[CalloutReceiver, str]]:
    receiver = CalloutReceiver()
    with serve(receiver.app(), sock=tcp_socket()) as url:
        yield receiver, url


@pytest.fixture(name="callout_receiver")
def callout_receiver_fixture(
    callout_server: tuple[CalloutReceiver, str],
) -> Iterator[tuple[CalloutReceiver, str]]:
    """The session's callout endpoint, emptied, answering 200; yields (receiver, URL of /zuora/callouts)."""
    receiver, url = callout_server
    receiver.reset()
    yield receiver, url + "/zuora/callouts"
    receiver.release()  # never leave a held answer behind for the next test


def signature(secret: str, raw: bytes) -> str:
    """What a receiver computes to check X-Zuora-Signature: sha256=<hex HMAC-SHA256>."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


# Request builders -------------------------------------------------------------------------------


def account_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Acme Ltd",
        "currency": "USD",
        "billCycleDay": 1,
        "paymentTerm": "Net 30",
        "crmId": "NS-1234",
        "billToContact": {"firstName": "Amy", "lastName": "Lawrence", "country": "United States"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def create_account(http: httpx2.Client, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = http.post("/v1/accounts", json=account_body(**overrides), headers=auth)
    assert response.status_code == 200 and response.json()["success"], response.text
    return dict(response.json())


def invoice_item(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "amount": 100,
        "quantity": 1,
        "unitPrice": 100,
        "serviceStartDate": "2024-07-11",
        "chargeName": "Consulting",
        "accountingCode": "4000 Services",
        "description": "NS line 1",
    }
    item.update(overrides)
    return {k: v for k, v in item.items() if v is not None}


def invoice_body(account_number: str = "A00000001", **overrides: Any) -> dict[str, Any]:
    """The notes' §4 sample request (a NetSuite invoice as a standalone Zuora invoice)."""
    body: dict[str, Any] = {
        "accountNumber": account_number,
        "invoiceDate": "2024-07-30",
        "dueDate": "2024-08-29",
        "invoiceNumber": "NS-INV-10023",
        "status": "Draft",
        "invoiceItems": [invoice_item()],
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def create_invoice(http: httpx2.Client, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = http.post("/v1/invoices", json=invoice_body(**overrides), headers=auth)
    assert response.status_code == 200 and response.json()["success"], response.text
    return dict(response.json())


def follow_pages(http: httpx2.Client, auth: dict[str, str], url: str, key: str) -> tuple[list[Any], int]:
    """Every row of a v1 list, following `nextPage` full URLs; (rows, pages)."""
    rows: list[Any] = []
    pages = 0
    next_url: str | None = url
    while next_url:
        body = http.get(next_url, headers=auth).json()
        assert body["success"] is True, body
        rows += body[key]
        pages += 1
        next_url = body.get("nextPage")
        assert pages < 100, "nextPage never ends"
    return rows, pages
