"""Contract tests for NetSuite's OAuth 2.0 authorization code grant: authorize, PKCE, code, refresh."""

from __future__ import annotations

import base64
import hashlib
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from connectors.netsuite.emulator import NetSuiteEmulator
from tests.emulators.conftest import AppSwitch, Clock, plug
from tests.emulators.netsuite_fixtures import (
    ACCOUNT,
    AUTHORIZE,
    CODE_CLIENT_ID,
    CODE_CLIENT_SECRET,
    RECORD,
    REDIRECT_URI,
    TOKEN,
    UNAUTHORIZED_BODY,
    basic,
)

VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 appendix B
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
STATE = "state-0123456789abcdefghijklmn"
SEVEN_DAYS = 7 * 86400  # seconds


def authorize_params(**overrides: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": CODE_CLIENT_ID,
        "redirect_uri": REDIRECT_URI,
        "scope": "rest_webservices restlets",
        "state": STATE,
        "code_challenge": CHALLENGE,
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    return {k: v for k, v in params.items() if v is not None}


def redirect_query(response: httpx2.Response) -> dict[str, str]:
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def get_code(http: httpx2.Client, **overrides: str | None) -> str:
    return redirect_query(http.get(AUTHORIZE, params=authorize_params(**overrides)))["code"]


def exchange(http: httpx2.Client, code: str, **overrides: str | None) -> httpx2.Response:
    form: dict[str, str | None] = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }
    form.update(overrides)
    return http.post(TOKEN, data={k: v for k, v in form.items() if v is not None}, headers=basic())


def refresh(http: httpx2.Client, token: str, headers: dict[str, str] | None = None) -> httpx2.Response:
    form = {"grant_type": "refresh_token", "refresh_token": token}
    return http.post(TOKEN, data=form, headers=headers or basic())


@pytest.fixture
def code_client(netsuite: NetSuiteEmulator) -> str:
    """A registered authorization-code client; returns its client id."""
    netsuite.register_auth_code_client(CODE_CLIENT_ID, CODE_CLIENT_SECRET, REDIRECT_URI)
    return CODE_CLIENT_ID


@pytest.fixture
def tokens(ns_http: httpx2.Client, code_client: str) -> dict[str, Any]:
    response = exchange(ns_http, get_code(ns_http))
    assert response.status_code == 200, response.text
    return dict(response.json())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# Authorize step ---------------------------------------------------------------------------------


def test_authorize_consents_and_redirects_with_code_state_and_account(
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    query = redirect_query(ns_http.get(AUTHORIZE, params=authorize_params()))

    assert query["state"] == STATE and query["company"] == ACCOUNT
    assert len(query["code"]) >= 20
    assert {"role", "entity"} <= set(query)


def test_authorize_keeps_the_redirect_uri_query(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
) -> None:
    netsuite.register_auth_code_client("c2", "s2", "https://app.example.test/cb?tenant=7")

    response = ns_http.get(
        AUTHORIZE,
        params=authorize_params(client_id="c2", redirect_uri="https://app.example.test/cb?tenant=7"),
    )

    location = urlsplit(response.headers["location"])
    assert parse_qs(location.query)["tenant"] == ["7"] and "code" in parse_qs(location.query)


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_id": "stranger"}, "unauthorized_client"),
        ({"redirect_uri": "https://evil.example.test/cb"}, "invalid_request"),
    ],
    ids=["unknown client", "unregistered redirect_uri"],
)
def test_authorize_refusals_that_cannot_be_redirected_answer_400(
    ns_http: httpx2.Client,
    code_client: str,
    overrides: dict[str, str],
    error: str,
) -> None:
    response = ns_http.get(AUTHORIZE, params=authorize_params(**overrides))

    assert (response.status_code, response.json()["error"]) == (400, error)
    assert "location" not in response.headers


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"scope": None}, "invalid_scope"),
        ({"scope": "rest_webservices everything"}, "invalid_scope"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge_method": None}, "invalid_request"),
    ],
    ids=["response_type token", "no scope", "unknown scope", "plain PKCE", "PKCE method left out"],
)
def test_authorize_refusals_redirect_with_error_and_state(
    ns_http: httpx2.Client,
    code_client: str,
    overrides: dict[str, str | None],
    error: str,
) -> None:
    query = redirect_query(ns_http.get(AUTHORIZE, params=authorize_params(**overrides)))

    assert (query["error"], query["state"]) == (error, STATE)
    assert "code" not in query


def test_authorize_denial_redirects_access_denied(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    netsuite.authorize_denies = True

    query = redirect_query(ns_http.get(AUTHORIZE, params=authorize_params()))

    assert query["error"] == "access_denied"


def test_authorize_path_is_configurable(
    netsuite: NetSuiteEmulator,
    switch: tuple[AppSwitch, str],
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    netsuite.authorize_path = "/oauth2/authorize"
    plug(switch, netsuite.app)  # the path is read when the app is built

    moved = ns_http.get("/oauth2/authorize", params=authorize_params())

    assert redirect_query(moved)["code"]
    assert ns_http.get(AUTHORIZE, params=authorize_params()).status_code == 404


# Code exchange ----------------------------------------------------------------------------------


def test_code_exchange_returns_access_and_refresh_tokens(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, tokens: dict[str, Any]
) -> None:
    assert set(tokens) == {"access_token", "refresh_token", "expires_in", "token_type"}
    assert (tokens["expires_in"], tokens["token_type"]) == ("3600", "bearer")
    issued = netsuite.tokens.lookup(tokens["access_token"])
    assert issued is not None and issued.subject == CODE_CLIENT_ID
    assert issued.claims["scope"] == ["rest_webservices", "restlets"]
    assert ns_http.get(f"{RECORD}/customer/1", headers=bearer(tokens["access_token"])).status_code == 404


def test_code_exchange_without_pkce(
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    code = get_code(ns_http, code_challenge=None, code_challenge_method=None)

    response = exchange(ns_http, code, code_verifier=None)

    assert response.status_code == 200 and "refresh_token" in response.json()


def test_code_exchange_with_a_fresh_pkce_pair(
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()

    response = exchange(ns_http, get_code(ns_http, code_challenge=challenge), code_verifier=verifier)

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("authorize", "form", "needle"),
    [
        ({}, {"code_verifier": "x" * 43}, "does not match"),
        ({}, {"code_verifier": None}, "missing"),
        ({"code_challenge": None, "code_challenge_method": None}, {}, "no code_challenge"),
        ({}, {"redirect_uri": "https://app.example.test/other"}, "redirect_uri"),
        ({}, {"redirect_uri": None}, "redirect_uri"),
        ({}, {"code": "never-issued"}, "unknown"),
    ],
    ids=[
        "bad verifier",
        "no verifier",
        "verifier without challenge",
        "other redirect_uri",
        "no redirect_uri",
        "unknown code",
    ],
)
def test_code_exchange_refusals_are_400_invalid_grant(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
    authorize: dict[str, str | None],
    form: dict[str, str | None],
    needle: str,
) -> None:
    code = get_code(ns_http, **authorize)

    response = exchange(ns_http, **{"code": code, **form})

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")
    assert needle in response.json()["error_description"]


def test_code_refused_once_is_spent(ns_http: httpx2.Client, code_client: str) -> None:
    code = get_code(ns_http)
    assert exchange(ns_http, code, code_verifier="x" * 43).status_code == 400

    again = exchange(ns_http, code)

    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_code_is_single_use(ns_http: httpx2.Client, code_client: str) -> None:
    code = get_code(ns_http)
    assert exchange(ns_http, code).status_code == 200

    again = exchange(ns_http, code)

    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")


def test_code_expires_after_ten_minutes(
    ns_http: httpx2.Client,
    code_client: str,
    clock: Clock,
) -> None:
    code = get_code(ns_http)
    clock.advance(601)

    assert exchange(ns_http, code).json()["error"] == "invalid_grant"


def test_code_issued_to_another_client_is_refused(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    netsuite.register_auth_code_client("other", "other-secret", REDIRECT_URI)
    code = get_code(ns_http)
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
    }

    response = ns_http.post(TOKEN, data=form, headers=basic("other", "other-secret"))

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


@pytest.mark.parametrize(
    "headers",
    [{}, basic(secret="wrong"), basic("nobody"), {"Authorization": "Basic not-base64!"}],
    ids=["no Basic", "wrong secret", "unknown client", "garbled"],
)
@pytest.mark.parametrize("grant", ["authorization_code", "refresh_token"])
def test_code_and_refresh_grants_need_basic_client_auth(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
    headers: dict[str, str],
    grant: str,
) -> None:
    form = {"grant_type": grant, "code": "c", "refresh_token": "r", "redirect_uri": REDIRECT_URI}

    response = ns_http.post(TOKEN, data=form, headers=headers)

    assert (response.status_code, response.json()["error"]) == (401, "invalid_client")
    assert response.headers["www-authenticate"].startswith("Basic")


def test_invalid_client_status_is_configurable(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
) -> None:
    netsuite.basic_invalid_client_status = 400

    response = ns_http.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "r"})

    assert (response.status_code, response.json()["error"]) == (400, "invalid_client")


# Refresh ----------------------------------------------------------------------------------------


def test_refresh_returns_a_new_access_token_and_keeps_the_refresh_token(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, tokens: dict[str, Any], clock: Clock
) -> None:
    clock.advance(3600)
    assert (
        ns_http.get(f"{RECORD}/customer/1", headers=bearer(tokens["access_token"])).json()
        == UNAUTHORIZED_BODY
    )

    response = refresh(ns_http, tokens["refresh_token"])

    body = response.json()
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert body["access_token"] != tokens["access_token"]
    assert ns_http.get(f"{RECORD}/customer/1", headers=bearer(body["access_token"])).status_code == 404
    assert refresh(ns_http, tokens["refresh_token"]).status_code == 200  # confidential: reusable


def test_refresh_token_lasts_seven_days(ns_http: httpx2.Client, tokens: dict[str, Any], clock: Clock) -> None:
    clock.advance(SEVEN_DAYS - 1)
    assert refresh(ns_http, tokens["refresh_token"]).status_code == 200

    clock.advance(1)
    expired = refresh(ns_http, tokens["refresh_token"])

    assert (expired.status_code, expired.json()["error"]) == (400, "invalid_grant")
    assert "expired" in expired.json()["error_description"]


def test_refresh_token_lifetime_is_configurable(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    code_client: str,
    clock: Clock,
) -> None:
    netsuite.refresh_token_ttl = 3 * 3600.0
    token = exchange(ns_http, get_code(ns_http)).json()["refresh_token"]

    clock.advance(3 * 3600)

    assert refresh(ns_http, token).json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("token", "headers"),
    [("not-a-refresh-token", None), (None, basic("other", "other-secret"))],
    ids=["unknown token", "token of another client"],
)
def test_refresh_refusals_are_invalid_grant(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    tokens: dict[str, Any],
    token: str | None,
    headers: dict[str, str] | None,
) -> None:
    netsuite.register_auth_code_client("other", "other-secret", REDIRECT_URI)

    response = refresh(ns_http, token or tokens["refresh_token"], headers)

    assert (response.status_code, response.json()["error"]) == (400, "invalid_grant")


def test_expire_refresh_tokens_hook_forces_reauthorization(
    ns_http: httpx2.Client, tokens: dict[str, Any]
) -> None:
    assert ns_http.post("/_emulator/expire-refresh-tokens").status_code == 200

    assert refresh(ns_http, tokens["refresh_token"]).json()["error"] == "invalid_grant"


def test_revoke_hook_ends_the_refresh_token_and_the_access_tokens_of_the_client(
    ns_http: httpx2.Client, tokens: dict[str, Any]
) -> None:
    revoked = ns_http.post("/_emulator/revoke", json={"client_id": CODE_CLIENT_ID})

    refused = refresh(ns_http, tokens["refresh_token"])
    assert revoked.json()["revoked"]["refresh_tokens"] == 1
    assert ns_http.get(f"{RECORD}/customer/1", headers=bearer(tokens["access_token"])).json() == (
        UNAUTHORIZED_BODY
    )
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_grant")
    assert "revoked" in refused.json()["error_description"]
    # A new consent gives working tokens again.
    assert exchange(ns_http, get_code(ns_http)).status_code == 200


def test_clients_hook_registers_an_auth_code_client(ns_http: httpx2.Client) -> None:
    body = {"client_id": CODE_CLIENT_ID, "client_secret": CODE_CLIENT_SECRET, "redirect_uri": REDIRECT_URI}

    assert ns_http.post("/_emulator/clients", json=body).status_code == 200

    assert exchange(ns_http, get_code(ns_http)).status_code == 200


def test_request_log_never_holds_codes_verifiers_or_tokens(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, tokens: dict[str, Any]
) -> None:
    refresh(ns_http, tokens["refresh_token"])

    logged = str(netsuite.requests)

    for secret in (VERIFIER, CODE_CLIENT_SECRET, tokens["refresh_token"], tokens["access_token"]):
        assert secret not in logged
    assert [r["path"] for r in netsuite.requests] == [AUTHORIZE, TOKEN, TOKEN]
