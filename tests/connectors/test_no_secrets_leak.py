"""No secret appears in any exception text, log line or audit attempt, whatever goes wrong."""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import pytest

from connectors.errors import ConnectorError
from connectors.http import Attempt
from connectors.netsuite.spec import AUTH_CODE, TBA
from connectors.ping import ping
from tests.connectors.conftest import CODE_SECRET, TBA_CREDS, WRONG_SECRET, Harness, consent, netsuite_client


def secrets_of(harness: Harness) -> list[str]:
    c = harness.credentials
    key_lines = c.netsuite_private_key.strip().splitlines()[1:-1]
    issued = [t.token for t in harness.emulator.tokens._tokens.values()]
    return [c.zuora_client_secret, c.zoho_client_secret, c.zoho_refresh_token, *key_lines, *issued]


async def test_no_secret_in_errors_logs_or_attempts(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    async def attempt(call: object) -> None:
        try:
            await call  # type: ignore[misc]
        except ConnectorError as exc:
            texts.extend([str(exc), repr(exc), exc.message, exc.excerpt or "", exc.url])

    await attempt(harness.cheap_call())  # success, token minted
    harness.emulator.expire_tokens()
    await attempt(harness.cheap_call())  # 401 → refresh → resend
    harness.emulator.faults.fail_next(503, 50)
    await attempt(harness.cheap_call())  # transient after five tries
    harness.emulator.faults.reset()
    wrong = harness.make(**WRONG_SECRET[harness.system])
    await attempt(harness.cheap_call(wrong))  # refused credentials
    texts.append(str(await ping(wrong)))
    texts.append(str(await ping(harness.client)))

    texts += [record.getMessage() for record in caplog.records]
    texts += [f"{a.url} {a.response_excerpt} {a.error}" for a in harness.attempts]
    haystack = "\n".join(texts)
    assert len(harness.attempts) > 5  # the scenario really ran
    leaked = [secret[:6] + "…" for secret in secrets_of(harness) if secret and secret in haystack]
    assert leaked == []


def leaked(secrets: list[str], texts: list[str]) -> list[str]:
    haystack = "\n".join(texts)
    return [secret[:6] + "…" for secret in secrets if secret and secret in haystack]


async def collect(texts: list[str], call: Awaitable[object]) -> None:
    """Run `call`; keep every text its failure shows (the message, repr, excerpt and URL)."""
    try:
        await call
    except ConnectorError as exc:
        texts.extend([str(exc), repr(exc), exc.message, exc.excerpt or "", exc.url])


def seen(texts: list[str], attempts: list[Attempt], caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        *texts,
        *(record.getMessage() for record in caplog.records),
        *(f"{a.url} {a.response_excerpt} {a.error}" for a in attempts),
    ]


async def test_no_authorization_code_secret_or_refresh_token_in_errors_logs_or_attempts(
    netsuite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    texts: list[str] = []
    code_mode = {"auth_mode": AUTH_CODE, "client_id": "code-client", "client_secret": CODE_SECRET}
    tokens = await consent(url, http, netsuite_client(url, http, attempts, **code_mode))
    refresh_token = tokens["refresh_token"]
    client = netsuite_client(url, http, attempts, **code_mode, refresh_token=refresh_token)

    await collect(texts, client.suiteql_page("SELECT id FROM customer", limit=1))  # refresh grant
    emulator.expire_tokens()
    await collect(texts, client.suiteql_page("SELECT id FROM customer", limit=1))  # 401 → refresh → resend
    emulator.faults.fail_next(503, 50)
    await collect(texts, client.suiteql_page("SELECT id FROM customer", limit=1))  # transient, five tries
    emulator.faults.reset()
    wrong = netsuite_client(
        url,
        http,
        attempts,
        **{**code_mode, "client_secret": "wrong-" + "e" * 20},
        refresh_token=refresh_token,
    )
    await collect(texts, wrong.suiteql_page("SELECT id FROM customer", limit=1))  # invalid_client
    texts.append(str(await ping(wrong)))
    emulator.expire_refresh_tokens()
    expired = netsuite_client(url, http, attempts, **code_mode, refresh_token=refresh_token)
    await collect(texts, expired.suiteql_page("SELECT id FROM customer", limit=1))  # invalid_grant
    texts.append(str(await ping(expired)))

    assert len(attempts) > 10 and any("approve access again" in t for t in texts)  # the scenario ran
    access = [t.token for t in emulator.tokens._tokens.values()]
    assert (
        leaked([CODE_SECRET, refresh_token, tokens["access_token"], *access], seen(texts, attempts, caplog))
        == []
    )


async def test_no_tba_consumer_or_token_secret_in_errors_logs_or_attempts(
    netsuite: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    texts: list[str] = []
    client = netsuite_client(url, http, attempts, auth_mode=TBA, **TBA_CREDS)

    await collect(texts, client.suiteql_page("SELECT id FROM customer", limit=1))
    emulator.faults.fail_next(503, 50)
    await collect(texts, client.suiteql_page("SELECT id FROM customer", limit=1))
    emulator.faults.reset()
    wrong = netsuite_client(
        url, http, attempts, auth_mode=TBA, **{**TBA_CREDS, "token_secret": "wrong-" + "e" * 20}
    )
    await collect(texts, wrong.suiteql_page("SELECT id FROM customer", limit=1))  # INVALID_LOGIN, retried
    texts.append(str(await ping(wrong)))

    assert len(attempts) > 15 and any("INVALID_LOGIN" in t for t in texts)
    secrets = [TBA_CREDS["consumer_secret"], TBA_CREDS["token_secret"], "wrong-" + "e" * 20]
    assert leaked(secrets, seen(texts, attempts, caplog)) == []


@pytest.mark.parametrize("harness", ["netsuite"], indirect=True)
async def test_no_jwt_client_assertion_in_errors_logs_or_attempts(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    assertions: list[str] = []
    texts: list[str] = []

    def signing(client: Any) -> Any:
        """The client as it is, keeping each assertion it signs (to search for it afterwards)."""
        sign = client.client_assertion

        def kept(now: float | None = None) -> str:
            assertions.append(sign(now))
            return assertions[-1]

        client.client_assertion = kept
        return client

    client = signing(harness.make())
    await collect(texts, harness.cheap_call(client))  # a token from a signed assertion
    harness.emulator.expire_tokens()
    await collect(texts, harness.cheap_call(client))  # 401 → a new assertion
    harness.emulator.faults.include_token_endpoints = True
    harness.emulator.faults.fail_next(503, 50)
    harness.emulator.expire_tokens()
    await collect(texts, harness.cheap_call(client))  # the token endpoint itself failing
    harness.emulator.faults.reset()
    wrong = signing(harness.make(certificate_id="never-mapped"))
    await collect(texts, harness.cheap_call(wrong))  # the assertion refused
    texts.append(str(await ping(wrong)))

    assert len(assertions) >= 4
    signatures = [a.rsplit(".", 1)[1] for a in assertions]  # the signature is what a replay would need
    assert leaked([*assertions, *signatures], seen(texts, harness.attempts, caplog)) == []
