"""The contract every client keeps, asserted against each system's emulator over HTTP."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigurationError, CredentialsRevoked, TransientError
from connectors.ping import ping
from tests.connectors.conftest import WRONG_SECRET, Harness


async def test_client_makes_an_authenticated_call_with_one_token_request(harness: Harness) -> None:
    await harness.cheap_call()
    await harness.cheap_call()

    assert len(harness.token_attempts()) == 1
    assert [a.status for a in harness.api_attempts()] == [200, 200] or harness.system == "zoho"
    assert all(a.status is not None and a.status < 300 for a in harness.api_attempts())


async def test_expired_token_causes_one_refresh_and_one_resend(harness: Harness) -> None:
    await harness.cheap_call()
    harness.emulator.expire_tokens()

    await harness.cheap_call()

    statuses = [a.status for a in harness.api_attempts()]
    assert statuses[1] == 401 and statuses[2] < 300 and len(statuses) == 3
    assert len(harness.token_attempts()) == 2


async def test_wrong_secret_is_a_configuration_error_with_an_actionable_message(harness: Harness) -> None:
    client = harness.make(**WRONG_SECRET[harness.system])

    with pytest.raises(ConfigurationError) as caught:
        await harness.cheap_call(client)

    assert caught.value.system == harness.system
    assert harness.api_attempts() == []  # nothing was sent without a token
    result = await ping(client)
    assert result.ok is False and result.reaction == "config"
    assert any(word in result.message for word in ("Certificate ID", "client ID and secret"))


async def test_429_with_retry_after_waits_then_succeeds(harness: Harness) -> None:
    if harness.system == "netsuite":
        harness.emulator.concurrency_retry_after = 3  # type: ignore[attr-defined]
    await harness.cheap_call()  # a token first, so only the API call meets the 429
    harness.emulator.faults.fail_next(429, 1)

    await harness.cheap_call()

    statuses = [a.status for a in harness.api_attempts()]
    assert statuses[-2:][0] == 429 and statuses[-1] < 300
    assert len(harness.sleeps.waits) == 1
    retry_after = {"netsuite": 3.0, "zuora": 1.0, "zoho": 0.0}[harness.system]
    assert harness.sleeps.waits[0] >= retry_after


async def test_5xx_every_time_is_transient_after_exactly_five_tries(harness: Harness) -> None:
    await harness.cheap_call()
    harness.attempts.clear()
    harness.emulator.faults.fail_next(503, 50)

    with pytest.raises(TransientError) as caught:
        await harness.cheap_call()

    assert [a.status for a in harness.api_attempts()] == [503] * 5
    assert len(harness.sleeps.waits) == 4
    assert caught.value.status == 503 and caught.value.system == harness.system


async def test_backoff_grows_exponentially_with_full_jitter(harness: Harness) -> None:
    await harness.cheap_call()
    harness.emulator.faults.fail_next(500, 50)

    with pytest.raises(TransientError):
        await harness.cheap_call()

    caps = [0.5 * 2**n for n in range(4)]
    assert all(0 <= wait <= cap for wait, cap in zip(harness.sleeps.waits, caps, strict=True))


async def test_unreachable_host_is_transient_and_ping_says_so(harness: Harness) -> None:
    client = harness.make()
    client.base_url = "http://127.0.0.1:9"  # discard port: nothing listens

    result = await ping(client)

    assert result.ok is False and result.reaction == "transient"
    assert "Could not reach 127.0.0.1:9" in result.message


async def test_revoked_credentials_are_a_configuration_error_asking_to_re_enter_them(
    harness: Harness,
) -> None:
    await harness.cheap_call()  # a cached token, minted while the credentials were good
    revoked = harness.revoke_credentials()
    try:
        with pytest.raises(CredentialsRevoked) as caught:
            await harness.cheap_call()
        api, tokens = [a.status for a in harness.api_attempts()], harness.token_attempts()
        result = await ping(harness.client)
    finally:
        harness.restore_credentials()

    assert sum(revoked.values()) > 0  # the hook really took something away
    assert isinstance(caught.value, ConfigurationError) and caught.value.reaction == "config"
    assert "revoked or changed" in caught.value.message and "Re-enter them" in caught.value.message
    assert caught.value.system == harness.system and caught.value.method == "POST"
    assert "token" in caught.value.url and caught.value.status is not None
    assert api[-1] == 401 and len(tokens) == 2  # one refresh was tried, and refused
    assert result.ok is False and result.reaction == "config"
    assert "re-enter" in result.message.lower() and "revoked" in result.message


async def test_paging_ends_after_the_last_page(harness: Harness) -> None:
    rows, pages = await harness.page_through(7 if harness.system != "zuora" else 45)

    expected = {"netsuite": (7, 3), "zuora": (45, 2), "zoho": (7, 3)}[harness.system]
    ids = [str(row.get("id")) for row in rows]
    assert (len(rows), pages) == expected
    assert len(set(ids)) == len(ids)  # every record once: no page read twice
