"""No secret appears in any exception text, log line or audit attempt, whatever goes wrong."""

from __future__ import annotations

import logging

import pytest

from connectors.errors import ConnectorError
from connectors.ping import ping
from tests.connectors.conftest import WRONG_SECRET, Harness


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
