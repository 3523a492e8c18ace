"""Contract tests for NetSuite token-based authentication (OAuth 1.0a, HMAC-SHA256) on the REST API."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import httpx2
import pytest

from connectors.netsuite.emulator import NetSuiteEmulator
from tests.emulators.conftest import Clock
from tests.emulators.netsuite_fixtures import (
    ACCOUNT,
    CONSUMER_KEY,
    RECORD,
    SUITEQL,
    TRANSIENT,
    UNAUTHORIZED_BODY,
    TbaSigner,
    error_code,
    register_tba,
    seed_customer,
)

QUERY = {"q": "SELECT id, companyname FROM customer ORDER BY id"}


@pytest.fixture
def tba(netsuite: NetSuiteEmulator, clock: Clock) -> TbaSigner:
    return register_tba(netsuite, clock)


def signed_get(http: httpx2.Client, url: str, signer: TbaSigner, **sign: Any) -> httpx2.Response:
    return http.get(url, headers={"Authorization": signer.header("GET", url, **sign)})


def signed_suiteql(
    http: httpx2.Client, base: str, signer: TbaSigner, query: str = "?limit=2&offset=0", **sign: Any
) -> httpx2.Response:
    url, body = f"{base}{SUITEQL}{query}", json.dumps(QUERY).encode()
    sign.setdefault("body", body)
    headers = {
        **TRANSIENT,
        "Content-Type": "application/json",
        "Authorization": signer.header("POST", url, **sign),
    }
    return http.post(url, content=body, headers=headers)


def www_authenticate(problem: str) -> str:
    return f'OAuth realm="{ACCOUNT}", error="{problem}", error_description="Invalid login attempt."'


def test_tba_signed_get_reads_a_record(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    record_id = seed_customer(netsuite)

    response = signed_get(ns_http, f"{ns_url}{RECORD}/customer/{record_id}", tba)

    assert response.status_code == 200, response.text
    assert response.json()["companyName"] == "Acme Ltd"
    assert netsuite.requests[-1]["headers"]["authorization"] == "OAuth"


def test_tba_suiteql_signs_limit_and_offset_into_the_base_string(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    for name in ("A", "B", "C"):
        seed_customer(netsuite, name)

    page = signed_suiteql(ns_http, ns_url, tba, "?limit=2&offset=2")

    assert page.status_code == 200, page.text
    assert [row["companyname"] for row in page.json()["items"]] == ["C"]


def test_tba_signature_without_the_query_parameters_is_refused(
    ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    # The common client bug behind "SuiteQL paging fails with TBA" (notes §7, pitfall 4).
    response = signed_suiteql(ns_http, ns_url, tba, sign_query=False)

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert response.headers["www-authenticate"] == www_authenticate("signature_invalid")


REFUSALS: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("lower-case sandbox realm", {"realm": "1234567_sb1"}, {}, "token_rejected"),
    ("production realm for a sandbox", {"realm": "1234567"}, {}, "token_rejected"),
    ("no realm", {"realm": None}, {}, "token_rejected"),
    ("HMAC-SHA1", {}, {"sha1": True}, "signature_method_rejected"),
    ("unknown consumer key", {"consumer_key": "ck-stranger"}, {}, "consumer_key_unknown"),
    ("unknown token", {"token_id": "token-nope"}, {}, "token_rejected"),
    ("wrong token secret", {"token_secret": "guess"}, {}, "signature_invalid"),
    ("wrong consumer secret", {"consumer_secret": "guess"}, {}, "signature_invalid"),
    ("five-character nonce", {}, {"oauth": {"oauth_nonce": "abc12"}}, "nonce_rejected"),
    ("timestamp 301 s old", {}, {"oauth": {"oauth_timestamp": "-301"}}, "timestamp_refused"),
    ("timestamp 301 s ahead", {}, {"oauth": {"oauth_timestamp": "+301"}}, "timestamp_refused"),
    ("timestamp not a number", {}, {"oauth": {"oauth_timestamp": "soon"}}, "timestamp_refused"),
    ("oauth_version 2.0", {}, {"oauth": {"oauth_version": "2.0"}}, "version_rejected"),
    ("no nonce", {}, {"oauth": {"oauth_nonce": None}}, "parameter_absent"),
    ("no signature", {}, {"oauth": {"oauth_signature": None}}, "parameter_absent"),
    ("forged signature", {}, {"oauth": {"oauth_signature": "AAAA"}}, "signature_invalid"),
    ("body changed after signing", {}, {"body": b'{"q": "SELECT 1"}'}, "signature_invalid"),
]


@pytest.mark.parametrize(("case", "signer", "sign", "problem"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_tba_refusals_are_invalid_login_with_the_problem_in_www_authenticate(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_url: str,
    tba: TbaSigner,
    clock: Clock,
    case: str,
    signer: dict[str, Any],
    sign: dict[str, Any],
    problem: str,
) -> None:
    oauth = dict(sign.get("oauth", {}))
    stamp = oauth.get("oauth_timestamp")
    if stamp and stamp[0] in "+-":  # relative to the emulator's clock
        oauth["oauth_timestamp"] = str(int(clock.now) + int(stamp))
    signed_as = dataclasses.replace(tba, **signer)

    response = signed_suiteql(ns_http, ns_url, signed_as, **{**sign, "oauth": oauth})

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert response.headers["www-authenticate"] == www_authenticate(problem)
    assert netsuite.requests[-1]["status"] == 401


def test_tba_reused_nonce_and_timestamp_is_nonce_used(
    ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    url = f"{ns_url}{RECORD}/customer/1"
    header = {"Authorization": tba.header("GET", url, oauth={"oauth_nonce": "nonce-123456"})}

    first, replay = ns_http.get(url, headers=header), ns_http.get(url, headers=header)

    assert first.status_code == 404  # authenticated; the record just does not exist
    assert (replay.status_code, replay.headers["www-authenticate"]) == (401, www_authenticate("nonce_used"))


def test_tba_same_nonce_with_a_new_timestamp_is_accepted(
    ns_http: httpx2.Client, ns_url: str, tba: TbaSigner, clock: Clock
) -> None:
    url = f"{ns_url}{RECORD}/customer/1"
    assert signed_get(ns_http, url, tba, oauth={"oauth_nonce": "nonce-123456"}).status_code == 404
    clock.advance(1)

    assert signed_get(ns_http, url, tba, oauth={"oauth_nonce": "nonce-123456"}).status_code == 404


def test_tba_timestamp_skew_is_configurable(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner, clock: Clock
) -> None:
    url = f"{ns_url}{RECORD}/customer/1"
    minute_old = {"oauth_timestamp": str(int(clock.now) - 60)}
    assert signed_get(ns_http, url, tba, oauth=minute_old).status_code == 404

    netsuite.tba_timestamp_skew = 30.0

    refused = signed_get(ns_http, url, tba, oauth=minute_old)
    assert refused.headers["www-authenticate"] == www_authenticate("timestamp_refused")


def test_tba_www_authenticate_can_be_turned_off(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    netsuite.tba_www_authenticate = False

    response = signed_get(ns_http, f"{ns_url}{RECORD}/customer/1", TbaSigner(tba.clock, realm="1234567_sb1"))

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert "www-authenticate" not in response.headers


def test_tba_blocked_integration_is_consumer_key_refused(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    netsuite.tba_blocked_consumers.add(CONSUMER_KEY)

    response = signed_get(ns_http, f"{ns_url}{RECORD}/customer/1", tba)

    assert response.headers["www-authenticate"] == www_authenticate("consumer_key_refused")


def test_tba_revoked_token_is_token_rejected_until_registered_again(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    revoked = ns_http.post("/_emulator/revoke", json={"token_id": tba.token_id})

    response = signed_get(ns_http, f"{ns_url}{RECORD}/customer/1", tba)

    assert revoked.json()["revoked"]["tba_tokens"] == 1
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert response.headers["www-authenticate"] == www_authenticate("token_rejected")
    register_tba(netsuite, tba.clock)
    assert signed_get(ns_http, f"{ns_url}{RECORD}/customer/1", tba).status_code == 404


def test_tba_any_host_name_is_served_and_signed_as_sent(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    # The real host of 1234567_SB1 is 1234567-sb1.suitetalk.api.netsuite.com (notes §0).
    record_id = seed_customer(netsuite)
    path = f"{RECORD}/customer/{record_id}"
    signed_for = f"http://1234567-sb1.suitetalk.api.netsuite.com{path}"
    headers = {
        "Host": "1234567-sb1.suitetalk.api.netsuite.com",
        "Authorization": tba.header("GET", signed_for),
    }

    response = ns_http.get(f"{ns_url}{path}", headers=headers)

    assert response.status_code == 200, response.text
    assert response.json()["links"][0]["href"] == signed_for


def test_tba_form_body_parameters_are_part_of_the_signature(
    ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    url, form = f"{ns_url}{SUITEQL}", [("q", "SELECT id FROM customer")]
    headers = {**TRANSIENT, "Content-Type": "application/x-www-form-urlencoded"}

    with_form = ns_http.post(
        url, data=dict(form), headers={**headers, "Authorization": tba.header("POST", url, form=form)}
    )
    without = ns_http.post(
        url, data=dict(form), headers={**headers, "Authorization": tba.header("POST", url)}
    )

    # Signed with the form: past authentication, refused only because SuiteQL wants JSON.
    assert (with_form.status_code, error_code(with_form)) == (400, "INVALID_CONTENT")
    assert without.headers["www-authenticate"] == www_authenticate("signature_invalid")


def test_tba_creates_records_with_a_signed_json_body(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, tba: TbaSigner
) -> None:
    url, body = f"{ns_url}{RECORD}/customer", json.dumps({"companyName": "Signed Co"}).encode()
    headers = {"Content-Type": "application/json", "Authorization": tba.header("POST", url, body=body)}

    response = ns_http.post(url, content=body, headers=headers)

    assert response.status_code == 204, response.text
    assert [r["companyName"] for r in netsuite.records("customer")] == ["Signed Co"]


def test_clients_hook_registers_a_tba_token(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, clock: Clock
) -> None:
    body = {"consumer_key": "ck-2", "consumer_secret": "cs-2", "token_id": "tk-2", "token_secret": "ts-2"}
    assert ns_http.post("/_emulator/clients", json=body).status_code == 200
    signer = TbaSigner(
        clock, consumer_key="ck-2", consumer_secret="cs-2", token_id="tk-2", token_secret="ts-2"
    )

    assert signed_get(ns_http, f"{ns_url}{RECORD}/customer/1", signer).status_code == 404
    assert netsuite.tba_tokens["tk-2"].consumer_key == "ck-2"


def test_bearer_failures_carry_no_www_authenticate(ns_http: httpx2.Client) -> None:
    response = ns_http.get(f"{RECORD}/customer/1", headers={"Authorization": "Bearer nope"})

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)
    assert "www-authenticate" not in response.headers
