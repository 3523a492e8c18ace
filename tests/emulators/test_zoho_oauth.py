"""Contract tests for the Zoho emulator's accounts server: self-client grant codes, minted refresh tokens, scopes."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import ZOHO_CLIENT_ID, ZOHO_SECRET, Clock, zoho_refresh_params
from tests.emulators.zoho_fixtures import ALL_SCOPES, exchange_code, scoped_auth

SCOPE_MISMATCH = {"code": "OAUTH_SCOPE_MISMATCH", "details": {}, "message": "Unauthorized", "status": "error"}


# Grant-code exchange -----------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["query", "form"])
def test_grant_code_exchange_answers_both_tokens(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_url: str, where: str
) -> None:
    code = zoho.grant_code(ZOHO_CLIENT_ID, "ZohoCRM.modules.ALL")
    params = {"grant_type": "authorization_code", "client_id": ZOHO_CLIENT_ID, "client_secret": ZOHO_SECRET}
    params["code"] = code

    if where == "query":  # as Zoho's self-client page shows it
        response = zoho_http.post("/oauth/v2/token", params=params)
    else:  # as Zoho's Python SDK sends it
        response = zoho_http.post("/oauth/v2/token", data=params)

    body = response.json()
    assert response.status_code == 200
    assert set(body) == {"access_token", "refresh_token", "api_domain", "token_type", "expires_in"}
    assert (body["api_domain"], body["token_type"], body["expires_in"]) == (zoho_url, "Bearer", 3600)
    assert zoho.clients[ZOHO_CLIENT_ID].refresh_tokens[body["refresh_token"]] == frozenset(
        {"ZohoCRM.modules.ALL"}
    )


def test_grant_code_works_only_once(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    code = zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES)

    first, second = exchange_code(zoho_http, code), exchange_code(zoho_http, code)

    assert "refresh_token" in first.json()
    assert (second.status_code, second.json()) == (200, {"error": "invalid_code"})


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("expired", "invalid_code"),
        ("unknown code", "invalid_code"),
        ("missing code", "invalid_code"),
        ("another client's code", "invalid_code"),
        ("wrong secret", "invalid_client"),
        ("unknown client", "invalid_client"),
    ],
)
def test_grant_code_errors_come_back_as_http_200(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, clock: Clock, case: str, error: str
) -> None:
    zoho.register_client("1000.OTHER", "other-secret")
    code = zoho.grant_code("1000.OTHER" if case == "another client's code" else ZOHO_CLIENT_ID, ALL_SCOPES)
    sent = {"unknown code": "1000.not.issued", "missing code": ""}.get(case, code)
    overrides = {"wrong secret": {"client_secret": "wrong"}, "unknown client": {"client_id": "1000.NOBODY"}}
    if case == "expired":
        clock.advance(180)  # the console's default code lifetime: 3 minutes

    response = exchange_code(zoho_http, sent, **overrides.get(case, {}))

    assert (response.status_code, response.json()) == (200, {"error": error})


def test_grant_code_lives_as_long_as_asked(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, clock: Clock
) -> None:
    code = zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES, ttl=600)
    clock.advance(599)

    assert "refresh_token" in exchange_code(zoho_http, code).json()


def test_minted_refresh_token_works_with_the_refresh_grant(
    zoho: ZohoEmulator, zoho_http: httpx2.Client
) -> None:
    minted = exchange_code(zoho_http, zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES)).json()["refresh_token"]

    refreshed = zoho_http.post("/oauth/v2/token", params=zoho_refresh_params(refresh_token=minted)).json()
    auth = {"Authorization": f"Zoho-oauthtoken {refreshed['access_token']}"}

    assert "refresh_token" not in refreshed
    assert zoho_http.get("/crm/v8/Accounts/1", headers=auth).status_code == 204


def test_refresh_tokens_past_twenty_delete_the_oldest(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    minted = [
        exchange_code(zoho_http, zoho.grant_code(ZOHO_CLIENT_ID, ALL_SCOPES)).json()["refresh_token"]
        for _ in range(21)
    ]

    oldest = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(refresh_token=minted[0])).json()
    newest = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(refresh_token=minted[-1])).json()

    assert oldest == {"error": "invalid_code"} and "access_token" in newest
    assert len(zoho.clients[ZOHO_CLIENT_ID].refresh_tokens) == 20


# Test hook --------------------------------------------------------------------------------------


def test_grant_codes_hook_mints_an_exchangeable_code(zoho_http: httpx2.Client) -> None:
    zoho_http.post("/_emulator/clients", json={"client_id": "1000.NEW", "client_secret": "new-secret"})

    minted = zoho_http.post(
        "/_emulator/grant-codes", json={"client_id": "1000.NEW", "scopes": ["ZohoCRM.modules.ALL"], "ttl": 60}
    )
    exchanged = exchange_code(
        zoho_http, minted.json()["code"], client_id="1000.NEW", client_secret="new-secret"
    )

    assert minted.status_code == 201
    assert "refresh_token" in exchanged.json()


@pytest.mark.parametrize(
    "body",
    [
        {"client_id": "1000.NOBODY", "scopes": "ZohoCRM.modules.ALL"},
        {"client_id": ZOHO_CLIENT_ID, "scopes": ""},
        {"client_id": ZOHO_CLIENT_ID},
        {"client_id": ZOHO_CLIENT_ID, "scopes": "ZohoCRM.modules.ALL", "ttl": -1},
    ],
)
def test_grant_codes_hook_refuses_bad_requests(zoho_http: httpx2.Client, body: dict[str, Any]) -> None:
    response = zoho_http.post("/_emulator/grant-codes", json=body)

    assert response.status_code == 400 and "error" in response.json()


# Scopes (notes §1b, §1c) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scopes", "method", "path", "status"),
    [
        ("ZohoCRM.modules.ALL", "GET", "/crm/v8/Contacts/1", 204),
        ("ZohoCRM.modules.accounts.READ", "GET", "/crm/v8/Accounts/1", 204),
        ("ZohoCRM.modules.accounts.READ", "GET", "/crm/v8/Contacts/1", 401),
        ("ZohoCRM.modules.accounts.READ", "DELETE", "/crm/v8/Accounts?ids=1", 401),
        ("ZohoCRM.modules.accounts.DELETE", "DELETE", "/crm/v8/Accounts?ids=1", 400),
        ("ZohoCRM.modules.accounts.WRITE", "DELETE", "/crm/v8/Accounts?ids=1", 400),
        ("zohocrm.modules.accounts.all", "GET", "/crm/v8/Accounts/1", 204),
        ("ZohoCRM.notifications.READ", "GET", "/crm/v8/actions/watch", 204),
        ("ZohoCRM.notifications.READ", "DELETE", "/crm/v8/actions/watch?channel_ids=1", 401),
        ("ZohoCRM.settings.fields.READ", "GET", "/crm/v8/settings/fields?module=Accounts", 200),
        ("ZohoCRM.settings.fields.READ", "GET", "/crm/v8/settings/modules", 401),
        ("ZohoCRM.org.READ", "GET", "/crm/v8/org", 200),
        ("ZohoCRM.org.READ", "GET", "/crm/v8/users?type=CurrentUser", 401),
        ("ZohoCRM.users.READ", "GET", "/crm/v8/users?type=CurrentUser", 200),
    ],
)
def test_scopes_decide_what_a_token_may_call(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, scopes: str, method: str, path: str, status: int
) -> None:
    auth = scoped_auth(zoho_http, zoho, scopes)

    response = zoho_http.request(method, path, headers=auth)

    assert response.status_code == status
    if status == 401:
        assert response.json() == SCOPE_MISMATCH


def test_refreshed_tokens_keep_the_codes_scopes(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    minted = exchange_code(zoho_http, zoho.grant_code(ZOHO_CLIENT_ID, "ZohoCRM.org.READ")).json()[
        "refresh_token"
    ]
    access = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(refresh_token=minted)).json()[
        "access_token"
    ]
    auth = {"Authorization": f"Zoho-oauthtoken {access}"}

    assert zoho_http.get("/crm/v8/org", headers=auth).status_code == 200
    assert zoho_http.get("/crm/v8/Accounts/1", headers=auth).json() == SCOPE_MISMATCH


def test_registered_refresh_tokens_grant_every_scope(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    answers = [
        zoho_http.get(path, headers=zoho_auth).status_code
        for path in ("/crm/v8/Accounts/1", "/crm/v8/actions/watch", "/crm/v8/org", "/crm/v8/settings/modules")
    ]

    assert answers == [204, 204, 200, 200]
