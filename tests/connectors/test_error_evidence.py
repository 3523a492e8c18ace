"""Every error carries its evidence: system, method, URL without secrets, status, an excerpt of the
remote body, retry-after where known. Errors the client raises itself (a batch too large, a paginator
that would loop, a search past Zoho's limit, a record refused inside a success) included."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest

from connectors.errors import ConfigurationError, ConnectorError, RemoteError, TransientError
from connectors.http import RetryPolicy
from connectors.netsuite.client import SUITEQL_PATH, TOKEN_PATH
from connectors.registry import build_client
from connectors.zoho.client import SearchLimitReached
from connectors.zoho.emulator_oauth import TOKENS_PER_WINDOW
from tests.connectors.conftest import Harness


@dataclass(frozen=True)
class Case:
    kind: type[ConnectorError]
    method: str
    path: str  # the URL after the base URL (the emulator's, or the scripted host's)
    status: int | None  # None: never answered (refused before sending)
    excerpt: str | None = None  # the whole excerpt expected, when it is exactly known
    retry_after: float | None = None


async def zoho_token_refused(h: Harness) -> None:
    await h.cheap_call(h.make(client_secret="not-the-secret"))


async def zoho_token_throttled(h: Harness) -> None:
    h.emulator.oauth.tokens_per_window = 0  # type: ignore[attr-defined]  # this refresh token is spent
    try:
        await h.cheap_call(h.make())
    finally:
        h.emulator.oauth.tokens_per_window = TOKENS_PER_WINDOW  # type: ignore[attr-defined]


async def zoho_oversized_batch(h: Harness) -> None:
    records = [{"Account_Name": f"A {n}"} for n in range(101)]
    await h.client.upsert("Accounts", records, duplicate_check_fields=["Account_Name"])  # type: ignore[attr-defined]


async def zoho_search_past_the_limit(h: Harness) -> None:
    for n in range(2001):
        h.emulator.seed("Accounts", {"Account_Name": f"Many {n}"})
    await h.client.search_records("Accounts", {"Account_Name": ("starts_with", "Many")})  # type: ignore[attr-defined]


async def zoho_update_refused(h: Harness) -> None:
    await h.client.update_record("Accounts", "5725767000000999999", {"Phone": "1"})  # type: ignore[attr-defined]


async def zuora_token_refused(h: Harness) -> None:
    await h.cheap_call(h.make(client_secret="not-the-secret"))


async def zuora_record_refused(h: Harness) -> None:
    await h.client.create_invoice({"accountNumber": "A-none", "invoiceItems": []}, idempotency_key="bad")  # type: ignore[attr-defined]


async def netsuite_token_refused(h: Harness) -> None:
    await h.cheap_call(h.make(certificate_id="never-mapped"))


async def netsuite_record_missing(h: Harness) -> None:
    await h.client.get_record("customer", "999999")  # type: ignore[attr-defined]


EMULATED: list[tuple[str, Callable[[Harness], Awaitable[None]], Case]] = [
    ("zoho", zoho_token_refused, Case(ConfigurationError, "POST", "/oauth/v2/token", 200, "invalid_client")),
    ("zoho", zoho_token_throttled, Case(TransientError, "POST", "/oauth/v2/token", 400, "Access Denied", 600.0)),
    ("zoho", zoho_oversized_batch, Case(RemoteError, "POST", "/crm/v8/Accounts/upsert", None)),
    ("zoho", zoho_search_past_the_limit, Case(SearchLimitReached, "GET", "/crm/v8/Accounts/search", 200)),
    ("zoho", zoho_update_refused, Case(RemoteError, "PUT", "/crm/v8/Accounts/5725767000000999999", 400)),
    ("zuora", zuora_token_refused, Case(ConfigurationError, "POST", "/oauth/token", 401, "invalid_client")),
    ("zuora", zuora_record_refused, Case(RemoteError, "POST", "/v1/invoices", 200)),
    ("netsuite", netsuite_token_refused, Case(ConfigurationError, "POST", TOKEN_PATH, 400, "invalid_client")),
    ("netsuite", netsuite_record_missing, Case(RemoteError, "GET", "/services/rest/record/v1/customer/999999", 404)),
]  # fmt: skip


def assert_evidence(error: ConnectorError, system: str, base_url: str, case: Case) -> None:
    assert type(error) is case.kind
    assert error.system == system
    assert (error.method, error.url, error.status) == (case.method, f"{base_url}{case.path}", case.status)
    assert "?" not in error.url
    if case.excerpt is not None:
        assert error.excerpt == case.excerpt
    elif case.status is not None:
        assert error.excerpt  # the remote body, as evidence
    assert error.retry_after == case.retry_after
    assert f"{case.method} {error.url}" in str(error)


@pytest.mark.parametrize(
    ("harness", "act", "case"),
    EMULATED,
    ids=[f"{system}-{act.__name__}" for system, act, _ in EMULATED],
    indirect=["harness"],
)
async def test_errors_carry_system_method_url_status_excerpt_and_retry_after(
    harness: Harness, act: Callable[[Harness], Awaitable[None]], case: Case
) -> None:
    with pytest.raises(ConnectorError) as caught:
        await act(harness)

    assert_evidence(caught.value, harness.system, harness.url, case)


# --- paginators that refuse to loop: the far side is scripted, since no emulator repeats itself --------


def zoho_repeating_page_token(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/oauth/v2/token":
        body = {"access_token": "a", "api_domain": "https://www.zohoapis.com", "expires_in": 3600}
        return httpx2.Response(200, json=body)
    info = {"more_records": True, "next_page_token": "same-token"}
    return httpx2.Response(200, json={"data": [{"id": "1"}], "info": info})


def zuora_repeating_locator(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/oauth/token":
        return httpx2.Response(200, json={"access_token": "a", "expires_in": 3599})
    return httpx2.Response(200, json={"records": [{"Id": "1"}], "done": False, "queryLocator": "L1"})


def netsuite_keys_not_advancing(request: httpx2.Request) -> httpx2.Response:
    return httpx2.Response(200, json={"items": [{"id": "1"}, {"id": "2"}], "hasMore": True})


async def read_all(client: Any, system: str) -> None:
    if system == "zoho":
        [_ async for _ in client.list_records("Accounts", fields=["Account_Name"])]
    elif system == "zuora":
        [_ async for _ in client.query("select Id from Account")]
    else:
        [_ async for _ in client.scan("id", "customer", page=2)]


LOOPS = [
    ("zoho", "https://accounts.zoho.com", zoho_repeating_page_token,
     Case(RemoteError, "GET", "/crm/v8/Accounts", 200), "https://www.zohoapis.com"),
    ("zuora", "https://rest.na.zuora.com", zuora_repeating_locator,
     Case(RemoteError, "POST", "/v1/action/queryMore", 200), "https://rest.na.zuora.com"),
    ("netsuite", "https://1234567.suitetalk.api.netsuite.com", netsuite_keys_not_advancing,
     Case(RemoteError, "POST", SUITEQL_PATH, 200), "https://1234567.suitetalk.api.netsuite.com"),
]  # fmt: skip
CREDENTIALS = {
    "zoho": ({"client_id": "1000.C"}, {"client_secret": "s", "refresh_token": "r"}),
    "zuora": ({"client_id": "c"}, {"client_secret": "s"}),
    "netsuite": (
        {"account_id": "1234567", "auth_mode": "tba", "consumer_key": "ck", "token_id": "tk"},
        {"consumer_secret": "cs", "token_secret": "ts"},
    ),
}


@pytest.mark.parametrize(
    ("system", "base_url", "far_side", "case", "api_url"), LOOPS, ids=[x[0] for x in LOOPS]
)
async def test_a_paginator_that_would_loop_raises_with_the_evidence(
    system: str,
    base_url: str,
    far_side: Callable[[httpx2.Request], httpx2.Response],
    case: Case,
    api_url: str,
) -> None:
    settings, secrets = CREDENTIALS[system]
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(far_side)) as http:
        client = build_client(
            system, base_url=base_url, settings=settings, secrets=secrets, sandbox=False, http=http,
            retry=RetryPolicy(max_tries=1),
        )  # fmt: skip
        with pytest.raises(ConnectorError) as caught:
            await read_all(client, system)

    assert_evidence(caught.value, system, api_url, case)
