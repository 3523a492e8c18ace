"""NetSuite's three ways in: M2M (the contract suite), the authorization code grant, and TBA."""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from connectors.errors import ConfigurationError
from connectors.http import Attempt, RetryPolicy
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.netsuite.spec import AUTH_CODE, TBA
from connectors.ping import ping
from connectors.registry import build_client
from tests.support.live import serve

ACCOUNT = "1234567_SB1"
REDIRECT = "https://app.example.test/oauth/netsuite"
TBA_CREDS = {
    "consumer_key": "ck-" + "a" * 20,
    "consumer_secret": "cs-" + "b" * 20,
    "token_id": "tk-" + "c" * 20,
    "token_secret": "ts-" + "d" * 20,
}


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def netsuite() -> AsyncIterator[tuple[NetSuiteEmulator, str, httpx2.AsyncClient]]:
    emulator = NetSuiteEmulator(ACCOUNT)
    emulator.register_auth_code_client("code-client", "code-secret", REDIRECT)
    emulator.register_tba(**TBA_CREDS)
    for n in range(3):
        emulator.seed("customer", {"companyName": f"Customer {n}"})
    with serve(emulator.app) as url:
        async with httpx2.AsyncClient() as http:
            yield emulator, url, http


def make(url: str, http: httpx2.AsyncClient, attempts: list[Attempt], **settings: Any) -> NetSuiteClient:
    client = build_client(
        "netsuite",
        base_url=url,
        settings={
            "account_id": ACCOUNT,
            **{k: v for k, v in settings.items() if "secret" not in k and k != "refresh_token"},
        },
        secrets={k: v for k, v in settings.items() if "secret" in k or k == "refresh_token"},
        sandbox=True,
        http=http,
        on_attempt=attempts.append,
        retry=RetryPolicy(sleep=_no_sleep),
    )
    assert isinstance(client, NetSuiteClient)
    return client


async def consent(url: str, http: httpx2.AsyncClient, client: NetSuiteClient) -> dict[str, Any]:
    """Step 1 and 2 of the authorization code grant with PKCE, as the app does it."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(8)
    authorize = client.authorize_url(
        redirect_uri=REDIRECT, state=state, code_challenge=challenge, ui_base=url
    )
    redirect = await http.get(authorize, follow_redirects=False)
    assert redirect.status_code in (302, 303), redirect.text
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["state"] == [state]
    return await client.exchange_code(code=query["code"][0], redirect_uri=REDIRECT, code_verifier=verifier)


async def test_authorization_code_consent_yields_a_refresh_token_that_keeps_working(netsuite: Any) -> None:
    emulator, url, http = netsuite
    attempts: list[Attempt] = []
    starter = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret="code-secret"
    )

    tokens = await consent(url, http, starter)
    client = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret="code-secret",
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
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret="code-secret"
    )
    tokens = await consent(url, http, starter)
    emulator.expire_refresh_tokens()
    client = make(
        url, http, attempts, auth_mode=AUTH_CODE, client_id="code-client", client_secret="code-secret",
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
