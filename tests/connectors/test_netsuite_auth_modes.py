"""NetSuite's three ways in: M2M (the contract suite), the authorization code grant, and TBA."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import ConfigurationError
from connectors.http import Attempt
from connectors.netsuite.spec import AUTH_CODE, TBA
from connectors.ping import ping
from tests.connectors.conftest import CODE_SECRET, TBA_CREDS, consent
from tests.connectors.conftest import netsuite_client as make


async def test_authorization_code_consent_yields_a_refresh_token_that_keeps_working(netsuite: Any) -> None:
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    starter = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret=CODE_SECRET
    )

    tokens = await consent(url, http, starter)
    client = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret=CODE_SECRET,
        refresh_token=tokens["refresh_token"],
    )  # fmt: skip
    rows = [row async for row in client.scan("id, companyname", "customer")]
    emulator.expire_tokens()
    again = [row async for row in client.scan("id", "customer")]

    assert [r["companyname"] for r in rows] == ["Customer 0", "Customer 1", "Customer 2"]
    assert len(again) == 3
    assert sum(1 for a in attempts if a.url.endswith("/token")) == 3  # exchange + first + after expiry


async def test_expired_refresh_token_asks_for_consent_again(netsuite: Any) -> None:
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    starter = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret=CODE_SECRET
    )
    tokens = await consent(url, http, starter)
    emulator.expire_refresh_tokens()
    client = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret=CODE_SECRET,
        refresh_token=tokens["refresh_token"],
    )  # fmt: skip

    with pytest.raises(ConfigurationError, match="approve access again"):
        await client.suiteql_page("SELECT id FROM customer", limit=1)


async def test_tba_signs_every_attempt_with_a_fresh_nonce_including_query_parameters(netsuite: Any) -> None:
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    client = make(url, http, attempts, auth_mode=TBA, **TBA_CREDS)
    emulator.faults.fail_next(503, 2)  # two retries: each must carry a new nonce or NetSuite says nonce_used

    page = await client.suiteql_page("SELECT id FROM customer ORDER BY id", limit=2, offset=1)

    assert page["offset"] == 1 and len(page["items"]) == 2
    assert [a.status for a in attempts] == [503, 503, 200]
    assert not any(a.url.endswith("/token") for a in attempts)  # TBA mints no tokens


async def test_tba_realm_is_upper_case_however_the_account_id_was_typed(netsuite: Any) -> None:
    _emulator, url, http = netsuite
    attempts: list[Attempt] = []
    client = make(url, http, attempts, auth_mode=TBA, **TBA_CREDS)
    client.account_id = "1234567_sb1"  # what people type; the realm must stay upper case

    page = await client.suiteql_page("SELECT id FROM customer", limit=1)

    assert page["items"]  # a lower-case `_sb1` realm would be refused; the client upper-cases it


async def test_tba_with_a_wrong_token_secret_fails_as_configuration_after_retries(netsuite: Any) -> None:
    _emulator, url, http = netsuite
    attempts: list[Attempt] = []
    client = make(url, http, attempts, auth_mode=TBA, **{**TBA_CREDS, "token_secret": "wrong-" + "e" * 20})

    result = await ping(client)

    assert result.ok is False and result.reaction == "config"
    assert "INVALID_LOGIN" in result.message
    assert len(attempts) == 10 and {a.status for a in attempts} == {401}
