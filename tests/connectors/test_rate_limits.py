"""Rate limits respected, not fought: the wait each system names in its declared headers, and the
per-connection cap on calls in flight."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import pytest

from connectors.http import Attempt, RetryPolicy, parse_retry_after
from connectors.registry import SYSTEMS, build_client
from connectors.zuora.client import ZuoraClient
from tests.connectors.conftest import Harness, Sleeps, settings_and_secrets


@pytest.mark.parametrize(
    ("system", "status", "headers", "expected"),
    [
        ("zuora", 429, {"RateLimit-Reset": "7"}, 7.0),
        ("zuora", 429, {"Retry-After": "3", "RateLimit-Reset": "7"}, 3.0),
        ("zuora", 200, {"RateLimit-Reset": "7"}, None),  # sent on every answer: no reason to wait
        ("zuora", 503, {"Retry-After": "2"}, 2.0),
        ("netsuite", 429, {"Retry-After": "4"}, 4.0),
        ("netsuite", 429, {"RateLimit-Reset": "7"}, None),  # NetSuite declares no reset header
        ("zoho", 429, {"X-RATELIMIT-RESET": "12"}, 12.0),
        ("zoho", 429, {"Retry-After": "soon"}, None),
    ],
)
def test_each_system_reads_the_wait_from_its_declared_headers(
    system: str, status: int, headers: dict[str, str], expected: float | None
) -> None:
    declared = SYSTEMS[system].spec.rate_limit

    assert parse_retry_after(httpx2.Headers(headers), status, declared) == expected


def epoch_in_30_seconds() -> dict[str, str]:
    return {"X-RATELIMIT-RESET": str(int(time.time()) + 30)}  # an epoch time, not a number of seconds


def date_in_a_minute() -> dict[str, str]:
    when = datetime.now(UTC) + timedelta(seconds=60)
    return {"Retry-After": format_datetime(when, usegmt=True)}  # the HTTP-date form of Retry-After


@pytest.mark.parametrize(
    ("headers", "low", "high"), [(epoch_in_30_seconds, 25.0, 31.0), (date_in_a_minute, 55.0, 61.0)]
)
def test_reset_times_and_dates_become_seconds_from_now(
    headers: Callable[[], dict[str, str]], low: float, high: float
) -> None:
    wait = parse_retry_after(httpx2.Headers(headers()), 429, SYSTEMS["zoho"].spec.rate_limit)

    assert wait is not None and low <= wait <= high


def limited_then_fine(reset: str) -> httpx2.MockTransport:
    """Zuora answering one 429 that names only RateLimit-Reset, then success: no emulator sends a 429
    without Retry-After, so this far side is scripted."""
    calls = {"api": 0}

    def answer(request: httpx2.Request) -> httpx2.Response:
        if request.url.path == "/oauth/token":
            return httpx2.Response(200, json={"access_token": "t", "expires_in": 3599})
        calls["api"] += 1
        if calls["api"] == 1:
            limited = {"success": False, "reasons": [{"code": 50000070, "message": "rate limit"}]}
            headers = {"RateLimit-Reset": reset, "RateLimit-Remaining": "0", "RateLimit-Limit": "2500"}
            return httpx2.Response(429, json=limited, headers=headers)
        return httpx2.Response(200, json={"data": [], "success": True})

    return httpx2.MockTransport(answer)


async def test_429_with_only_ratelimit_reset_waits_that_long() -> None:
    sleeps = Sleeps()
    attempts: list[Attempt] = []
    async with httpx2.AsyncClient(transport=limited_then_fine("7")) as http:
        client = build_client(
            "zuora",
            base_url="https://rest.na.zuora.com",
            settings={"client_id": "c"},
            secrets={"client_secret": "s"},
            sandbox=False,
            http=http,
            on_attempt=attempts.append,
            retry=RetryPolicy(sleep=sleeps),
        )
        assert isinstance(client, ZuoraClient)
        found = await client.find_account_by_crm_id("NS-1")

    assert found is None
    assert [a.status for a in attempts if "/oauth/" not in a.url] == [429, 200]
    assert sleeps.waits == [7.0]  # RateLimit-Reset, not the jitter (at most 0.5 s before the 2nd try)


async def test_a_429_names_what_the_rate_limit_headers_say() -> None:
    async with httpx2.AsyncClient(transport=limited_then_fine("7")) as http:
        client = build_client(
            "zuora",
            base_url="https://rest.na.zuora.com",
            settings={"client_id": "c"},
            secrets={"client_secret": "s"},
            sandbox=False,
            http=http,
            retry=RetryPolicy(max_tries=1),
        )
        with pytest.raises(Exception) as caught:
            await client.find_account_by_crm_id("NS-1")  # type: ignore[attr-defined]

    assert "0 of 2500 calls left" in str(caught.value) and caught.value.retry_after == 7.0  # type: ignore[attr-defined]


async def test_connection_concurrency_cap_keeps_calls_in_flight_under_it(harness: Harness) -> None:
    cap, calls = 2, 8
    await harness.cheap_call()  # a token first: the cap covers token requests too, but they are not the point
    harness.emulator.faults.concurrency_limit = cap  # a busy answer (429) for any call beyond the cap
    harness.emulator.faults.latency = 0.05  # seconds: long enough for calls to overlap
    settings, secrets = settings_and_secrets(harness.system, harness.credentials)

    def client_with(limit: int | None) -> object:
        extra = {"max_concurrency": str(limit)} if limit else {}
        return build_client(
            harness.system,
            base_url=harness.url,
            settings={**settings, **extra},
            secrets=secrets,
            sandbox=True,
            http=harness.client.http,
            on_attempt=harness.attempts.append,
            retry=RetryPolicy(sleep=harness.sleeps),
        )

    uncapped = client_with(None)
    # Some of these may fail for good (five busy answers in a row): only the busy answers count here.
    await asyncio.gather(*(harness.cheap_call(uncapped) for _ in range(calls)), return_exceptions=True)  # type: ignore[arg-type]
    overrun = [a.status for a in harness.api_attempts()].count(429)
    harness.attempts.clear()
    capped = client_with(cap)
    await asyncio.gather(*(harness.cheap_call(capped) for _ in range(calls)))  # type: ignore[arg-type]

    assert overrun > 0  # without the cap the same load goes past the emulator's limit
    assert capped.max_concurrency == cap  # type: ignore[attr-defined]  # from the connection's settings
    api = [a.status for a in harness.api_attempts()]
    assert len(api) == calls and all(status is not None and status < 300 for status in api)
