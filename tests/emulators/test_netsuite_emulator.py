"""Contract tests for the NetSuite emulator: M2M OAuth, record API, SuiteQL, faults, webhooks, hooks."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from zoneinfo import ZoneInfo

import httpx2
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors.netsuite.emulator import INVALID_LOGIN, NetSuiteEmulator
from tests.emulators.conftest import (
    NS_CLIENT_ID,
    NS_EC_KID,
    NS_RSA_KID,
    NS_TOKEN_PATH,
    Clock,
    Receiver,
    fresh_get,
    ns_assertion,
    ns_token_form,
    public_pem,
)
from tests.support.live import wait_for

RECORD = "/services/rest/record/v1"
SUITEQL = "/services/rest/query/v1/suiteql"
TRANSIENT = {"Prefer": "transient"}
UNAUTHORIZED_BODY = {
    "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
    "title": "Unauthorized",
    "status": 401,
    "o:errorDetails": [{"detail": INVALID_LOGIN, "o:errorCode": "INVALID_LOGIN"}],
}


def create(
    http: httpx2.Client, auth: dict[str, str], body: dict[str, Any], record_type: str = "customer"
) -> str:
    response = http.post(f"{RECORD}/{record_type}", json=body, headers=auth)
    assert response.status_code == 204, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def error_code(response: httpx2.Response) -> str:
    return str(response.json()["o:errorDetails"][0]["o:errorCode"])


# OAuth 2.0 client credentials -------------------------------------------------------------------


def test_token_issued_for_ps256_assertion(
    ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    response = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now)))

    assert response.status_code == 200
    body = response.json()
    assert body["expires_in"] == "3600" and body["token_type"] == "bearer"
    assert (
        ns_http.get(
            f"{RECORD}/customer/1", headers={"Authorization": f"Bearer {body['access_token']}"}
        ).status_code
        == 404
    )


def test_token_issued_for_es256_assertion(
    ns_http: httpx2.Client, ns_url: str, ec_key: ec.EllipticCurvePrivateKey, clock: Clock
) -> None:
    assertion = ns_assertion(ec_key, ns_url, clock.now, kid=NS_EC_KID, alg="ES256")

    response = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(assertion))

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "scope", ["rest_webservices", "restlets,rest_webservices", ["restlets", "rest_webservices"]]
)
def test_token_scope_accepted_as_string_or_array(
    ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock, scope: Any
) -> None:
    response = ns_http.post(
        NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now, scope=scope))
    )

    assert response.status_code == 200, response.text


def test_token_audience_ignores_trailing_slash(
    ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    assertion = ns_assertion(rsa_key, ns_url, clock.now, aud=ns_url + NS_TOKEN_PATH + "/")

    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(assertion)).status_code == 200


def test_token_expires_in_is_a_number_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    netsuite.expires_in_as_string = False

    body = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now))).json()

    assert body["expires_in"] == 3600


BAD_CLAIMS = [
    ("expired", {"iat": -4000, "exp": -1000}, "invalid_grant", "expired"),
    ("exp too far after iat", {"iat": 0, "exp": 3601}, "invalid_grant", "at most 3600"),
    ("iat in the future", {"iat": 600, "exp": 900}, "invalid_grant", "future"),
    (
        "wrong audience",
        {"aud": "https://1234567-sb1.suitetalk.api.netsuite.com" + NS_TOKEN_PATH},
        "invalid_grant",
        "aud",
    ),
    ("wrong issuer", {"iss": "someone-else"}, "invalid_client", "iss"),
    ("no rest_webservices scope", {"scope": "restlets"}, "invalid_scope", "rest_webservices"),
    ("no scope", {"scope": None}, "invalid_scope", "rest_webservices"),
    ("no iat", {"iat": None}, "invalid_request", "iat"),
]


@pytest.mark.parametrize(("case", "claims", "error", "needle"), BAD_CLAIMS, ids=[c[0] for c in BAD_CLAIMS])
def test_token_rejects_bad_claims(
    ns_http: httpx2.Client,
    ns_url: str,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
    case: str,
    claims: dict[str, Any],
    error: str,
    needle: str,
) -> None:
    # Relative iat/exp offsets become absolute times against the emulator's clock.
    resolved = {
        k: (int(clock.now) + v if k in ("iat", "exp") and v is not None else v) for k, v in claims.items()
    }

    response = ns_http.post(
        NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now, **resolved))
    )

    assert response.status_code == 400
    assert response.json()["error"] == error
    assert needle in response.json()["error_description"]


def test_token_rejects_unknown_kid(
    ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    response = ns_http.post(
        NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now, kid="nope"))
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_client"
    assert "unknown certificate id" in response.json()["error_description"]


def test_token_rejects_bad_signature(ns_http: httpx2.Client, ns_url: str, clock: Clock) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    response = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(stranger, ns_url, clock.now)))

    assert response.json()["error"] == "invalid_client"
    assert "bad signature" in response.json()["error_description"]


def test_token_rejects_rs256(
    ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    response = ns_http.post(
        NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now, alg="RS256"))
    )

    assert response.status_code == 400
    assert "RS256" in response.json()["error_description"]


def test_rs256_is_accepted_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    netsuite.assertion_algorithms.add("RS256")  # Oracle's older sample signs RS256 (UNCONFIRMED, notes §1a)

    response = ns_http.post(
        NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now, alg="RS256"))
    )

    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("form", "error"),
    [
        ({"grant_type": "password"}, "unsupported_grant_type"),
        ({"client_assertion_type": "urn:something-else"}, "invalid_request"),
        ({"client_assertion": ""}, "invalid_request"),
        ({"client_assertion": "not-a-jwt"}, "invalid_request"),
    ],
)
def test_token_rejects_malformed_requests(
    ns_http: httpx2.Client,
    ns_url: str,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
    form: dict[str, str],
    error: str,
) -> None:
    data = {**ns_token_form(ns_assertion(rsa_key, ns_url, clock.now)), **form}

    response = ns_http.post(NS_TOKEN_PATH, data=data)

    assert (response.status_code, response.json()["error"]) == (400, error)


@pytest.mark.parametrize("authorization", [None, "Bearer unknown-token", "Basic abc"])
def test_record_api_refuses_missing_or_unknown_tokens(
    ns_http: httpx2.Client, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = ns_http.get(f"{RECORD}/customer/1000", headers=headers)

    assert response.status_code == 401
    assert response.json() == UNAUTHORIZED_BODY


def test_token_expires_after_an_hour(ns_http: httpx2.Client, ns_auth: dict[str, str], clock: Clock) -> None:
    assert ns_http.get(f"{RECORD}/customer/1", headers=ns_auth).status_code == 404

    clock.advance(3600)

    response = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)
    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)


def test_expire_tokens_hook_invalidates_issued_tokens(
    ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    assert ns_http.post("/_emulator/expire-tokens").status_code == 200

    assert (
        ns_http.post(
            SUITEQL, json={"q": "SELECT id FROM customer"}, headers={**ns_auth, **TRANSIENT}
        ).status_code
        == 401
    )


def test_revoke_hook_refuses_the_certificate_and_ends_the_tokens_it_minted(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_url: str,
    ns_auth: dict[str, str],
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    clock: Clock,
) -> None:
    revoked = ns_http.post("/_emulator/revoke", json={"certificate_id": NS_RSA_KID})

    cached = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)
    renewed = ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now)))
    other = ns_assertion(ec_key, ns_url, clock.now, kid=NS_EC_KID, alg="ES256")
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] == {
        "certificates": 1,
        "refresh_tokens": 0,
        "tba_tokens": 0,
        "access_tokens": 1,
    }
    assert (cached.status_code, cached.json()) == (401, UNAUTHORIZED_BODY)
    assert (renewed.status_code, renewed.json()["error"]) == (400, "invalid_client")
    assert "revoked" in renewed.json()["error_description"]
    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(other)).status_code == 200  # its own mapping


def test_revoke_by_client_id_ends_every_certificate_and_token_of_the_integration(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_url: str,
    ns_auth: dict[str, str],
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
) -> None:
    counts = netsuite.revoke(client_id=NS_CLIENT_ID)

    ec_assertion = ns_assertion(ec_key, ns_url, clock.now, kid=NS_EC_KID, alg="ES256")
    assert (counts["certificates"], counts["access_tokens"]) == (2, 1)
    assert ns_http.get(f"{RECORD}/customer/1", headers=ns_auth).status_code == 401
    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ec_assertion)).json()["error"] == "invalid_client"
    # Mapping a certificate again (a new mapping, as Oracle requires) restores access.
    netsuite.register_m2m_client(NS_CLIENT_ID, NS_RSA_KID, public_pem(rsa_key))
    assertion = ns_assertion(rsa_key, ns_url, clock.now)
    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(assertion)).status_code == 200


def test_revoke_hook_without_a_body_revokes_everything(
    ns_http: httpx2.Client, ns_url: str, ns_auth: dict[str, str], rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    assert ns_http.post("/_emulator/revoke").json()["revoked"]["certificates"] == 2

    assert ns_http.get(f"{RECORD}/customer/1", headers=ns_auth).status_code == 401
    assertion = ns_assertion(rsa_key, ns_url, clock.now)
    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(assertion)).json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    ("body", "status"),
    [({"certificate_id": "never-mapped"}, 404), ({"client_id": "stranger"}, 404), ({"colour": "red"}, 400)],
)
def test_revoke_hook_refuses_unknown_targets(
    ns_http: httpx2.Client, body: dict[str, str], status: int
) -> None:
    assert ns_http.post("/_emulator/revoke", json=body).status_code == status


# Record API ---------------------------------------------------------------------------------------


def test_create_answers_204_with_location_and_stores_the_record(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str
) -> None:
    response = ns_http.post(f"{RECORD}/customer", json={"companyName": "Acme Ltd"}, headers=ns_auth)
    second = create(ns_http, ns_auth, {"companyName": "Beta"})

    assert response.status_code == 204 and response.content == b""
    assert response.headers["location"] == f"{ns_url}{RECORD}/customer/1000"
    assert second == "1001"
    assert [(r["id"], r["companyName"], r["entityId"]) for r in netsuite.records("customer")] == [
        ("1000", "Acme Ltd", "Acme Ltd"),
        ("1001", "Beta", "Beta"),
    ]


def test_get_returns_flat_fields_links_references_and_dates(
    ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str, clock: Clock
) -> None:
    clock.now = 1_700_000_000.0
    record_id = create(
        ns_http,
        ns_auth,
        {
            "companyName": "Acme Ltd",
            "email": "ap@acme.test",
            "subsidiary": {"id": "2"},
            "addressBook": {"items": [{"addressBookAddress": {"city": "Austin"}}]},
        },
    )

    response = ns_http.get(f"{RECORD}/customer/{record_id}", headers=ns_auth)

    assert response.headers["content-type"] == "application/vnd.oracle.resource+json; type=singular"
    body = response.json()
    assert body["links"] == [{"rel": "self", "href": f"{ns_url}{RECORD}/customer/{record_id}"}]
    assert (body["id"], body["companyName"], body["email"], body["isInactive"]) == (
        record_id,
        "Acme Ltd",
        "ap@acme.test",
        False,
    )
    assert body["subsidiary"] == {
        "links": [{"rel": "self", "href": f"{ns_url}{RECORD}/subsidiary/2"}],
        "id": "2",
        "refName": "2",
    }
    assert body["dateCreated"] == body["lastModifiedDate"] == "2023-11-14T22:13:20Z"
    assert body["addressBook"] == {
        "links": [{"rel": "self", "href": f"{ns_url}{RECORD}/customer/{record_id}/addressBook"}]
    }


def test_get_expands_sublists_on_request(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    items = [{"addressBookAddress": {"city": "Austin"}}]
    record_id = create(ns_http, ns_auth, {"companyName": "Acme", "addressBook": {"items": items}})

    body = ns_http.get(f"{RECORD}/customer/{record_id}?expandSubResources=true", headers=ns_auth).json()

    assert body["addressBook"]["items"] == items


def test_get_by_external_id(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    record_id = create(ns_http, ns_auth, {"companyName": "Acme", "externalId": "ZUORA-A-1"})

    assert ns_http.get(f"{RECORD}/customer/eid:ZUORA-A-1", headers=ns_auth).json()["id"] == record_id


@pytest.mark.parametrize("key", ["999999", "eid:missing"])
def test_get_missing_record_is_404_nonexistent_id(
    ns_http: httpx2.Client, ns_auth: dict[str, str], key: str
) -> None:
    response = ns_http.get(f"{RECORD}/customer/{key}", headers=ns_auth)

    assert response.status_code == 404
    assert response.json()["title"] == "Not Found" and error_code(response) == "NONEXISTENT_ID"


def test_patch_updates_fields_and_modified_date(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], clock: Clock
) -> None:
    record_id = create(ns_http, ns_auth, {"companyName": "Acme", "phone": "1"})
    clock.advance(60)

    response = ns_http.patch(f"{RECORD}/customer/{record_id}", json={"phone": "2"}, headers=ns_auth)

    assert response.status_code == 204
    stored = netsuite.records("customer")[0]
    assert (stored["companyName"], stored["phone"]) == ("Acme", "2")
    assert stored["lastModifiedDate"] > stored["dateCreated"]


def test_patch_status_is_configurable(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str
) -> None:
    netsuite.patch_status = 200  # what LedgerSync's stubs answer (UNCONFIRMED, notes §3)
    record_id = create(ns_http, ns_auth, {"companyName": "Acme"})

    response = ns_http.patch(f"{RECORD}/customer/{record_id}", json={"phone": "2"}, headers=ns_auth)

    assert response.status_code == 200
    assert response.headers["location"] == f"{ns_url}{RECORD}/customer/{record_id}"
    assert netsuite.records("customer")[0]["phone"] == "2"


def test_patch_missing_record_is_404(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    response = ns_http.patch(f"{RECORD}/customer/4242", json={"phone": "2"}, headers=ns_auth)

    assert (response.status_code, error_code(response)) == (404, "NONEXISTENT_ID")


def test_upsert_by_external_id_creates_then_updates(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    first = ns_http.put(f"{RECORD}/customer/eid:CID002", json={"companyName": "Acme"}, headers=ns_auth)
    second = ns_http.put(f"{RECORD}/customer/eid:CID002", json={"companyName": "Acme 2"}, headers=ns_auth)

    assert first.status_code == second.status_code == 204
    assert first.headers["location"] == second.headers["location"]
    stored = netsuite.records("customer")
    assert [(r["externalId"], r["companyName"]) for r in stored] == [("CID002", "Acme 2")]


def test_put_without_external_id_is_refused(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    response = ns_http.put(f"{RECORD}/customer/1000", json={"companyName": "Acme"}, headers=ns_auth)

    assert (response.status_code, error_code(response)) == (400, "INVALID_PARAMETER")


@pytest.mark.parametrize(
    ("content", "code", "path"),
    [
        (b"{not json", "INVALID_CONTENT", None),
        (b"[1, 2]", "INVALID_CONTENT", None),
        (b'{"email": "a@b.test"}', "USER_ERROR", "companyName"),
        (b'{"isPerson": true, "firstName": "Amy"}', "USER_ERROR", "lastName"),
    ],
)
def test_create_refuses_invalid_bodies(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    content: bytes,
    code: str,
    path: str | None,
) -> None:
    headers = {**ns_auth, "Content-Type": "application/json"}

    response = ns_http.post(f"{RECORD}/customer", content=content, headers=headers)

    assert response.status_code == 400
    detail = response.json()["o:errorDetails"][0]
    assert detail["o:errorCode"] == code and detail.get("o:errorPath") == path
    assert netsuite.records("customer") == []


def test_person_customer_needs_no_company_name(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    create(ns_http, ns_auth, {"isPerson": True, "firstName": "Amy", "lastName": "Lawrence"})

    assert netsuite.records("customer")[0]["entityId"] == "Amy Lawrence"


@pytest.mark.parametrize(
    ("record_type", "body"), [("vendor", {"companyName": "Supplies Co"}), ("contact", {"lastName": "Smith"})]
)
def test_vendor_and_contact_use_the_same_record_api(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    record_type: str,
    body: dict[str, Any],
) -> None:
    record_id = create(ns_http, ns_auth, body, record_type)

    assert ns_http.get(f"{RECORD}/{record_type}/{record_id}", headers=ns_auth).status_code == 200
    assert netsuite.records(record_type)[0]["id"] == record_id


ENTITY_CASES = [
    ("vendor", {"companyName": "Supplies Co"}, "companyName"),
    ("contact", {"firstName": "Amy", "lastName": "Lawrence"}, "lastName"),
]


@pytest.mark.parametrize(("record_type", "body", "name_field"), ENTITY_CASES)
def test_vendor_and_contact_patch_by_id_and_by_external_id(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    clock: Clock,
    record_type: str,
    body: dict[str, Any],
    name_field: str,
) -> None:
    record_id = create(ns_http, ns_auth, {**body, "externalId": "NS-7"}, record_type)
    clock.advance(60)

    by_id = ns_http.patch(f"{RECORD}/{record_type}/{record_id}", json={"phone": "1"}, headers=ns_auth)
    by_eid = ns_http.patch(f"{RECORD}/{record_type}/eid:NS-7", json={"email": "a@b.test"}, headers=ns_auth)
    missing = ns_http.patch(f"{RECORD}/{record_type}/eid:NS-8", json={"phone": "2"}, headers=ns_auth)

    assert (by_id.status_code, by_eid.status_code) == (204, 204)
    assert (missing.status_code, error_code(missing)) == (404, "NONEXISTENT_ID")
    [stored] = netsuite.records(record_type)
    assert (stored["id"], stored[name_field], stored["phone"], stored["email"]) == (
        record_id,
        body[name_field],
        "1",
        "a@b.test",
    )
    assert stored["lastModifiedDate"] > stored["dateCreated"]


@pytest.mark.parametrize(("record_type", "body", "name_field"), ENTITY_CASES)
def test_vendor_and_contact_upsert_by_external_id_creates_then_updates(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    ns_url: str,
    record_type: str,
    body: dict[str, Any],
    name_field: str,
) -> None:
    url = f"{RECORD}/{record_type}/eid:ZOHO-42"

    first = ns_http.put(url, json=body, headers=ns_auth)
    second = ns_http.put(url, json={**body, name_field: "Renamed"}, headers=ns_auth)

    assert first.status_code == second.status_code == 204
    assert first.headers["location"] == second.headers["location"]
    record_id = first.headers["location"].removeprefix(f"{ns_url}{RECORD}/{record_type}/")
    [stored] = netsuite.records(record_type)
    assert (stored["id"], stored["externalId"], stored[name_field]) == (record_id, "ZOHO-42", "Renamed")
    read = ns_http.get(url, headers=ns_auth).json()
    assert (read["id"], read[name_field]) == (record_id, "Renamed")


@pytest.mark.parametrize(("record_type", "body", "name_field"), ENTITY_CASES)
def test_vendor_and_contact_upsert_still_checks_mandatory_fields(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    record_type: str,
    body: dict[str, Any],
    name_field: str,
) -> None:
    response = ns_http.put(f"{RECORD}/{record_type}/eid:X-1", json={"phone": "1"}, headers=ns_auth)

    assert (response.status_code, error_code(response)) == (400, "USER_ERROR")
    assert netsuite.records(record_type) == []


CUSTOM = f"{RECORD}/customrecord_zuora_sub_event"


def test_custom_record_create_answers_204_with_location_and_reads_back(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str
) -> None:
    body = {"name": "SUB-0001", "custrecord_zse_status": "Active", "custrecord_zse_customer": {"id": "1137"}}

    response = ns_http.post(CUSTOM, json=body, headers=ns_auth)

    assert response.status_code == 204 and response.content == b""
    record_id = response.headers["location"].removeprefix(f"{ns_url}{CUSTOM}/")
    read = ns_http.get(f"{CUSTOM}/{record_id}", headers=ns_auth)
    assert read.headers["content-type"] == "application/vnd.oracle.resource+json; type=singular"
    assert (read.json()["id"], read.json()["name"], read.json()["custrecord_zse_status"]) == (
        record_id,
        "SUB-0001",
        "Active",
    )
    assert read.json()["custrecord_zse_customer"]["id"] == "1137"
    assert [r["id"] for r in netsuite.records("customrecord_zuora_sub_event")] == [record_id]


def test_custom_record_upsert_patch_and_get_by_external_id(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    url = f"{CUSTOM}/eid:SUB-0001"

    created = ns_http.put(url, json={"name": "SUB-0001", "custrecord_zse_status": "Active"}, headers=ns_auth)
    updated = ns_http.put(url, json={"custrecord_zse_status": "Cancelled"}, headers=ns_auth)
    patched = ns_http.patch(url, json={"custrecord_zse_note": "renewal lapsed"}, headers=ns_auth)

    assert (created.status_code, updated.status_code, patched.status_code) == (204, 204, 204)
    assert created.headers["location"] == updated.headers["location"]
    read = ns_http.get(url, headers=ns_auth).json()
    assert (read["externalId"], read["name"], read["custrecord_zse_status"]) == (
        "SUB-0001",
        "SUB-0001",
        "Cancelled",
    )
    assert read["custrecord_zse_note"] == "renewal lapsed"
    assert len(netsuite.records("customrecord_zuora_sub_event")) == 1


def test_custom_record_patch_and_get_of_a_missing_record_is_404(
    ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    patched = ns_http.patch(f"{CUSTOM}/eid:SUB-404", json={"name": "x"}, headers=ns_auth)
    read = ns_http.get(f"{CUSTOM}/4242", headers=ns_auth)

    assert (patched.status_code, error_code(patched)) == (404, "NONEXISTENT_ID")
    assert (read.status_code, error_code(read)) == (404, "NONEXISTENT_ID")


def test_custom_records_can_be_switched_off(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.allow_custom_records = False  # the custom record type does not exist in the account

    response = ns_http.post(CUSTOM, json={"name": "SUB-0001"}, headers=ns_auth)

    assert (response.status_code, error_code(response)) == (404, "INVALID_RECORD_TYPE")


@pytest.mark.parametrize("by", ["id", "eid"])
def test_delete_answers_204_and_removes_the_record(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], by: str
) -> None:
    record_id = create(ns_http, ns_auth, {"companyName": "Acme", "externalId": "CID1"})
    key = record_id if by == "id" else "eid:CID1"

    response = ns_http.delete(f"{RECORD}/customer/{key}", headers=ns_auth)
    again = ns_http.delete(f"{RECORD}/customer/{key}", headers=ns_auth)

    assert response.status_code == 204 and response.content == b""
    assert (again.status_code, error_code(again)) == (404, "NONEXISTENT_ID")
    assert netsuite.records("customer") == []


def test_property_names_match_case_insensitively(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    create(ns_http, ns_auth, {"companyname": "Acme", "entityid": "ACME-1"})

    stored = netsuite.records("customer")[0]
    assert (stored["companyName"], stored["entityId"]) == ("Acme", "ACME-1")


def test_property_names_match_exactly_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.case_insensitive_properties = False  # UNCONFIRMED either way (notes §3)

    response = ns_http.post(f"{RECORD}/customer", json={"companyname": "Acme"}, headers=ns_auth)

    assert (response.status_code, error_code(response)) == (400, "USER_ERROR")
    assert response.json()["o:errorDetails"][0]["o:errorPath"] == "companyName"


def test_unknown_record_type_is_404(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    assert ns_http.get(f"{RECORD}/spaceship/1", headers=ns_auth).status_code == 404


# SuiteQL --------------------------------------------------------------------------------------


def seed_customers(netsuite: NetSuiteEmulator, count: int) -> list[str]:
    return [
        netsuite.seed(
            "customer",
            {
                "companyName": f"Company {n}",
                "isInactive": n % 2 == 0,
                "lastModifiedDate": f"2024-05-0{n}T10:00:00Z",
            },
        )
        for n in range(1, count + 1)
    ]


def suiteql(http: httpx2.Client, auth: dict[str, str], q: str, **params: int) -> httpx2.Response:
    return http.post(SUITEQL, params=params, json={"q": q}, headers={**auth, **TRANSIENT})


def test_suiteql_needs_prefer_transient(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    response = ns_http.post(SUITEQL, json={"q": "SELECT id FROM customer"}, headers=ns_auth)

    assert response.status_code == 400
    assert response.json()["o:errorDetails"][0]["o:errorHeader"] == "Prefer"


def test_suiteql_pages_with_envelope_and_links(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str
) -> None:
    seed_customers(netsuite, 5)

    first = suiteql(ns_http, ns_auth, "SELECT id FROM customer ORDER BY id", limit=2, offset=0).json()
    last = suiteql(ns_http, ns_auth, "SELECT id FROM customer ORDER BY id", limit=2, offset=4).json()

    assert (first["count"], first["hasMore"], first["offset"], first["totalResults"]) == (2, True, 0, 5)
    assert first["items"] == [{"links": [], "id": "1000"}, {"links": [], "id": "1001"}]
    assert first["links"] == [
        {"rel": "next", "href": f"{ns_url}{SUITEQL}?limit=2&offset=2"},
        {"rel": "self", "href": f"{ns_url}{SUITEQL}?limit=2&offset=0"},
    ]
    assert (last["count"], last["hasMore"], [r["id"] for r in last["items"]]) == (1, False, ["1004"])
    assert [link["rel"] for link in last["links"]] == ["self"]


def test_suiteql_rows_are_lower_case_strings_with_booleans_and_no_nulls(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.seed(
        "customer", {"companyName": "Acme", "isInactive": True, "lastModifiedDate": "2024-05-02T10:11:12Z"}
    )

    columns = "id, companyName, isinactive, email, lastmodifieddate"
    as_text = "TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lm"
    row = suiteql(ns_http, ns_auth, f"SELECT {columns}, {as_text} FROM customer").json()["items"][0]

    assert row == {
        "links": [],
        "id": "1000",
        "companyname": "Acme",
        "isinactive": "T",
        "lastmodifieddate": "5/2/2024",
        "lm": "2024-05-02 10:11:12",
    }


def test_suiteql_null_columns_come_as_json_null_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.suiteql_omit_nulls = False  # UNCONFIRMED (notes §4): left out by default
    netsuite.seed("customer", {"companyName": "Acme"})

    row = suiteql(ns_http, ns_auth, "SELECT id, email, companyname FROM customer").json()["items"][0]

    assert row == {"links": [], "id": "1000", "email": None, "companyname": "Acme"}


def test_suiteql_time_zone_is_configurable(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    # 02:00 UTC on 2 May is 22:00 on 1 May in New York (EDT, UTC-4).
    netsuite.seed("customer", {"companyName": "Acme", "lastModifiedDate": "2024-05-02T02:00:00Z"})
    q = (
        "SELECT id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lm, lastmodifieddate FROM customer "
        "WHERE lastmodifieddate >= TO_TIMESTAMP('2024-05-01 23:00:00', 'YYYY-MM-DD HH24:MI:SS')"
    )
    in_utc = suiteql(ns_http, ns_auth, q).json()["items"]
    netsuite.suiteql_time_zone = ZoneInfo("America/New_York")  # UNCONFIRMED (notes §4): UTC by default

    in_new_york = suiteql(ns_http, ns_auth, q).json()["items"]
    every = suiteql(ns_http, ns_auth, q.split(" WHERE ")[0]).json()["items"]

    assert [(r["lm"], r["lastmodifieddate"]) for r in in_utc] == [("2024-05-02 02:00:00", "5/2/2024")]
    assert in_new_york == []
    assert [(r["lm"], r["lastmodifieddate"]) for r in every] == [("2024-05-01 22:00:00", "5/1/2024")]


SINCE_MAY_3 = "TO_TIMESTAMP('2024-05-03 00:00:00', 'YYYY-MM-DD HH24:MI:SS')"
BEFORE_MAY_2_10AM = "TO_TIMESTAMP('2024-05-02 10:00:00', 'YYYY-MM-DD HH24:MI:SS')"


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ("isinactive = 'F'", ["1000", "1002", "1004"]),
        ("isinactive != 'F'", ["1001", "1003"]),
        ("id > 1002", ["1003", "1004"]),
        ("id <= '1001'", ["1000", "1001"]),
        (f"lastmodifieddate >= {SINCE_MAY_3}", ["1002", "1003", "1004"]),
        (f"lastmodifieddate < {BEFORE_MAY_2_10AM} AND isinactive = 'F'", ["1000"]),
        ("companyname = 'Company 4'", ["1003"]),
        ("email IS NULL AND id >= 1004", ["1004"]),
        ("id IN (1003, 1000, 9999)", ["1000", "1003"]),
        ("id IN ('1001') AND isinactive != 'F'", ["1001"]),
    ],
)
def test_suiteql_filters_rows(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    where: str,
    expected: list[str],
) -> None:
    seed_customers(netsuite, 5)

    response = suiteql(ns_http, ns_auth, f"SELECT id FROM customer WHERE {where} ORDER BY id")

    assert [row["id"] for row in response.json()["items"]] == expected


def test_suiteql_orders_descending_and_supports_aliases(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    seed_customers(netsuite, 3)

    rows = suiteql(
        ns_http, ns_auth, "SELECT c.id AS internalId FROM customer c ORDER BY c.lastmodifieddate DESC"
    ).json()["items"]

    assert [r["internalid"] for r in rows] == ["1002", "1001", "1000"]


def test_suiteql_builtin_df_shows_a_references_name_and_any_other_columns_value(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.seed("customer", {"companyName": "Acme", "currency": {"id": "2", "refName": "EUR"}})

    q = "SELECT currency, BUILTIN.DF(currency) AS currency_name, BUILTIN.DF(companyname) FROM customer"
    row = suiteql(ns_http, ns_auth, q).json()["items"][0]

    assert row == {"links": [], "currency": "2", "currency_name": "EUR", "expr3": "Acme"}


def test_suiteql_select_star_returns_every_column(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.seed("vendor", {"companyName": "Supplies", "externalId": "V-1"})

    row = suiteql(ns_http, ns_auth, "SELECT * FROM vendor").json()["items"][0]

    assert {"id", "companyname", "externalid", "isinactive", "entityid", "datecreated"} <= set(row)


def test_suiteql_selects_contacts_with_their_company(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    company = netsuite.seed("customer", {"companyName": "Acme"})
    netsuite.seed("contact", {"firstName": "Amy", "lastName": "Lawrence", "email": "amy@acme.test"})
    netsuite.seed("contact", {"lastName": "Smith", "company": {"id": company}, "isInactive": True})
    columns = "id, entityid, firstname, lastname, email, company, isinactive"

    rows = suiteql(ns_http, ns_auth, f"SELECT {columns} FROM contact ORDER BY id DESC").json()["items"]
    active = suiteql(ns_http, ns_auth, "SELECT c.id FROM contact c WHERE c.isinactive = 'F'").json()

    assert [r["id"] for r in active["items"]] == [str(int(company) + 1)]
    assert rows == [
        {
            "links": [],
            "id": str(int(company) + 2),
            "entityid": "Smith",
            "lastname": "Smith",
            "company": company,
            "isinactive": "T",
        },
        {
            "links": [],
            "id": str(int(company) + 1),
            "entityid": "Amy Lawrence",
            "firstname": "Amy",
            "lastname": "Lawrence",
            "email": "amy@acme.test",
            "isinactive": "F",
        },
    ]


@pytest.mark.parametrize(
    ("q", "needle"),
    [
        ("SELECT id FROM salesorder", "salesorder"),
        ("SELECT c.id FROM customer c LEFT JOIN vendor v ON c.id = v.id", "JOIN"),
        ("SELECT id FROM customer GROUP BY id", "GROUP"),
        ("SELECT BUILTIN.DF(subsidiary, 'x') FROM customer", "BUILTIN.DF"),
        ("SELECT UPPER(companyname) FROM customer", "UPPER"),
        ("SELECT id FROM customer WHERE id IN ()", "expected a literal"),
        ("SELECT id FROM customer WHERE lastmodifieddate > '2024-01-01'", "TO_TIMESTAMP"),
        ("DELETE FROM customer", "SELECT"),
    ],
)
def test_suiteql_refuses_unsupported_sql_naming_the_problem(
    ns_http: httpx2.Client, ns_auth: dict[str, str], q: str, needle: str
) -> None:
    response = suiteql(ns_http, ns_auth, q)

    assert (response.status_code, error_code(response)) == (400, "INVALID_PARAMETER")
    assert needle.lower() in response.json()["o:errorDetails"][0]["detail"].lower()


@pytest.mark.parametrize("limit", [0, 1001])
def test_suiteql_limit_must_be_1_to_1000(ns_http: httpx2.Client, ns_auth: dict[str, str], limit: int) -> None:
    response = suiteql(ns_http, ns_auth, "SELECT id FROM customer", limit=limit)

    assert response.status_code == 400
    assert response.json()["o:errorDetails"][0]["o:errorQueryParam"] == "limit"


def test_suiteql_offset_multiple_of_limit_is_enforced_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.require_offset_multiple_of_limit = True

    assert suiteql(ns_http, ns_auth, "SELECT id FROM customer", limit=10, offset=5).status_code == 400
    assert suiteql(ns_http, ns_auth, "SELECT id FROM customer", limit=10, offset=10).status_code == 200


# Faults and concurrency ------------------------------------------------------------------------------


def test_concurrency_over_the_limit_gets_429(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, ns_auth: dict[str, str]
) -> None:
    # Long enough that all five are still in flight when the sixth arrives, even on a loaded machine.
    netsuite.faults.latency = 3.0

    with ThreadPoolExecutor(max_workers=5) as pool:
        held = [pool.submit(fresh_get, ns_url, f"{RECORD}/customer/1", ns_auth) for _ in range(5)]
        wait_for(lambda: netsuite.faults.in_flight == 5, what="five calls in flight")
        refused = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)

    assert [f.result().status_code for f in held] == [404] * 5
    assert (refused.status_code, error_code(refused)) == (429, "CONCURRENCY_LIMIT_EXCEEDED")
    assert "retry-after" not in refused.headers
    # The gate is released just after the answer is sent, so the last release may trail the client.
    wait_for(lambda: netsuite.faults.in_flight == 0, what="every call released")


def test_fail_next_injects_errors_in_netsuite_shape(ns_http: httpx2.Client, ns_auth: dict[str, str]) -> None:
    ns_http.post("/_emulator/faults", json={"fail_next": {"status": 429, "count": 2}})

    statuses = [ns_http.get(f"{RECORD}/customer/1", headers=ns_auth) for _ in range(3)]

    assert [r.status_code for r in statuses] == [429, 429, 404]
    assert error_code(statuses[0]) == "CONCURRENCY_LIMIT_EXCEEDED"


def test_concurrency_error_code_is_configurable(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.concurrency_error_code = "SSS_REQUEST_LIMIT_EXCEEDED"  # UNCONFIRMED (notes §5)
    netsuite.faults.fail_next(429)

    response = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)

    assert (response.status_code, error_code(response)) == (429, "SSS_REQUEST_LIMIT_EXCEEDED")


def test_injected_401_is_the_real_invalid_login_body(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.faults.fail_next(401)

    response = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)

    assert (response.status_code, response.json()) == (401, UNAUTHORIZED_BODY)


def test_token_endpoint_is_exempt_from_faults_unless_asked(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    form = ns_token_form(ns_assertion(rsa_key, ns_url, clock.now))
    netsuite.faults.fail_next(503)
    assert ns_http.post(NS_TOKEN_PATH, data=form).status_code == 200

    ns_http.post("/_emulator/faults", json={"include_token_endpoints": True})
    assert ns_http.post(NS_TOKEN_PATH, data=form).status_code == 503


def test_latency_delays_api_answers(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    ns_http.post("/_emulator/faults", json={"latency": 0.2})

    started = time.monotonic()
    ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)

    assert time.monotonic() - started >= 0.2


def test_total_latency_counts_the_emulators_own_work(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With latency_is_total the answer leaves `latency` after the call arrived, however long the work took
    # (up to that): a slow route (0.15 s of work here) no longer adds to the 0.3 s.
    snapshot = ns_http.post("/_emulator/faults", json={"latency": 0.3, "latency_is_total": True}).json()
    assert snapshot["latency_is_total"] is True
    work = netsuite.find

    def slow(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.15)
        return work(*args, **kwargs)

    monkeypatch.setattr(netsuite, "find", slow)
    timings = []
    for _ in range(3):
        started = time.monotonic()
        answer = ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)
        timings.append(time.monotonic() - started)
    assert answer.status_code == 404  # the route ran; its answer waited for the deadline
    assert all(0.3 <= took < 0.44 for took in timings), timings

    ns_http.post("/_emulator/faults", json={"latency_is_total": False})
    started = time.monotonic()
    ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)
    assert time.monotonic() - started >= 0.3


# Test hooks --------------------------------------------------------------------------------------


def test_request_log_redacts_authorization_to_its_scheme(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    ns_http.get(f"{RECORD}/customer/1", headers=ns_auth)

    logged = ns_http.get("/_emulator/requests").json()

    entry = logged[-1]
    assert (entry["method"], entry["path"], entry["status"]) == ("GET", f"{RECORD}/customer/1", 404)
    assert entry["headers"]["authorization"] == "Bearer"
    assert netsuite.requests[-1]["status"] == 404


def test_request_log_masks_the_client_assertion(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_url: str, rsa_key: rsa.RSAPrivateKey, clock: Clock
) -> None:
    assertion = ns_assertion(rsa_key, ns_url, clock.now)

    ns_http.post(NS_TOKEN_PATH, params=ns_token_form(assertion))

    assert assertion not in str(netsuite.requests)


def test_reset_empties_state_but_keeps_clients(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    ns_url: str,
    rsa_key: rsa.RSAPrivateKey,
    clock: Clock,
) -> None:
    create(ns_http, ns_auth, {"companyName": "Acme"})

    assert ns_http.post("/_emulator/reset").status_code == 200

    assert netsuite.records("customer") == [] and netsuite.requests == []
    assert (
        ns_http.post(NS_TOKEN_PATH, data=ns_token_form(ns_assertion(rsa_key, ns_url, clock.now))).status_code
        == 200
    )
    assert create(ns_http, ns_auth, {"companyName": "Again"}) == "1000"


def test_seed_and_records_hooks(ns_http: httpx2.Client) -> None:
    seeded = ns_http.post("/_emulator/seed/customer", json={"companyName": "Seeded", "externalId": "S-1"})

    listed = ns_http.get("/_emulator/records/customer").json()

    assert seeded.status_code == 201
    assert [(r["id"], r["companyName"]) for r in listed] == [(seeded.json()["id"], "Seeded")]
    assert ns_http.get("/_emulator/records/spaceship").status_code == 404


def test_clients_hook_registers_a_certificate(ns_http: httpx2.Client, ns_url: str, clock: Clock) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    from tests.emulators.conftest import public_pem

    body = {"client_id": NS_CLIENT_ID, "certificate_id": "new-cert", "public_key_pem": public_pem(key)}
    assert ns_http.post("/_emulator/clients", json=body).status_code == 200

    assertion = ns_assertion(key, ns_url, clock.now, kid="new-cert", alg="ES256")
    assert ns_http.post(NS_TOKEN_PATH, data=ns_token_form(assertion)).status_code == 200


# Webhooks (our User Event script) -------------------------------------------------------------------


def test_webhook_posts_create_and_edit_with_the_secret(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    receiver: tuple[Receiver, str],
    clock: Clock,
) -> None:
    found, url = receiver
    netsuite.add_webhook(f"{url}/hooks/netsuite", "s3cret")
    clock.now = 1_714_644_672.345  # 2024-05-02T10:11:12.345Z

    record_id = create(ns_http, ns_auth, {"companyName": "Acme"})
    ns_http.patch(f"{RECORD}/customer/{record_id}", json={"phone": "1"}, headers=ns_auth)

    wait_for(lambda: len(netsuite.deliveries) == 2, what="two webhook deliveries")
    assert [d["status"] for d in netsuite.deliveries] == [200, 200]
    events = sorted(found.received, key=lambda e: e["body"]["eventType"])
    # What connectors/netsuite/suitescript/ml_connector_user_event.js sends, key for key and in order;
    # occurredAt is JavaScript's Date.toISOString().
    assert [list(e["body"].items()) for e in events] == [
        [
            ("recordType", "customer"),
            ("id", record_id),
            ("eventType", "create"),
            ("contextType", "create"),
            ("accountId", "1234567_SB1"),
            ("occurredAt", "2024-05-02T10:11:12.345Z"),
        ],
        [
            ("recordType", "customer"),
            ("id", record_id),
            ("eventType", "edit"),
            ("contextType", "edit"),
            ("accountId", "1234567_SB1"),
            ("occurredAt", "2024-05-02T10:11:12.345Z"),
        ],
    ]
    assert all(e["headers"]["x-webhook-secret"] == "s3cret" for e in events)
    assert all(e["headers"]["content-type"] == "application/json" for e in events)


def events_received(found: Receiver, count: int) -> list[tuple[str, str, str, str]]:
    """(recordType, id, eventType, contextType) of the first `count` events, once they arrived."""
    wait_for(lambda: len(found.received) >= count, what=f"{count} webhook event(s)")
    with found.lock:
        bodies = [e["body"] for e in found.received[:count]]
    return [(b["recordType"], b["id"], b["eventType"], b["contextType"]) for b in bodies]


def test_webhook_upsert_sends_create_then_edit(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    found, url = receiver
    netsuite.add_webhook(url, "s3cret")

    first = ns_http.put(f"{RECORD}/customer/eid:CID7", json={"companyName": "Acme"}, headers=ns_auth)
    record_id = first.headers["location"].rsplit("/", 1)[1]
    created = events_received(found, 1)[-1]
    ns_http.put(f"{RECORD}/customer/eid:CID7", json={"companyName": "Acme 2"}, headers=ns_auth)
    edited = events_received(found, 2)[-1]

    assert [created, edited] == [
        ("customer", record_id, "create", "create"),
        ("customer", record_id, "edit", "edit"),
    ]


@pytest.mark.parametrize(
    ("record_type", "body", "change"),
    [
        ("vendor", {"companyName": "Supplies Co"}, {"phone": "555-0199"}),
        ("contact", {"firstName": "Amy", "lastName": "Lawrence"}, {"email": "amy@acme.test"}),
    ],
)
def test_webhook_fires_for_vendor_and_contact_changes(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    receiver: tuple[Receiver, str],
    record_type: str,
    body: dict[str, Any],
    change: dict[str, Any],
) -> None:
    found, url = receiver
    netsuite.add_webhook(url, "s3cret")

    # Each change waits for its event: separate deliveries may arrive in any order.
    record_id = create(ns_http, ns_auth, body, record_type)
    created = events_received(found, 1)[-1]
    ns_http.patch(f"{RECORD}/{record_type}/{record_id}", json=change, headers=ns_auth)
    edited = events_received(found, 2)[-1]
    ns_http.delete(f"{RECORD}/{record_type}/{record_id}", headers=ns_auth)
    deleted = events_received(found, 3)[-1]

    assert [created, edited, deleted] == [
        (record_type, record_id, "create", "create"),
        (record_type, record_id, "edit", "edit"),
        (record_type, record_id, "delete", "delete"),
    ]


def test_webhook_fires_on_delete_and_custom_records_send_nothing(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    found, url = receiver
    record_id = create(ns_http, ns_auth, {"companyName": "Acme", "externalId": "CID9"})
    netsuite.add_webhook(url, "s3cret")

    ns_http.put(f"{RECORD}/customrecord_zuora_sub_event/eid:SUB-1", json={"name": "SUB-1"}, headers=ns_auth)
    ns_http.delete(f"{RECORD}/customer/eid:CID9", headers=ns_auth)

    assert events_received(found, 1) == [("customer", record_id, "delete", "delete")]
    wait_for(lambda: netsuite.pending_deliveries == 0, what="every delivery finished")
    assert len(netsuite.deliveries) == 1


def test_webhook_failure_is_logged_once_without_retry(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    receiver: tuple[Receiver, str],
) -> None:
    found, url = receiver
    found.status = 500
    netsuite.add_webhook(url, "s3cret")

    create(ns_http, ns_auth, {"companyName": "Acme"})

    wait_for(lambda: netsuite.deliveries and netsuite.pending_deliveries == 0, what="the delivery")
    assert [d["status"] for d in netsuite.deliveries] == [500]
    assert len(found.received) == 1


def test_webhook_to_an_unreachable_url_records_the_error(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.add_webhook("http://127.0.0.1:9/nothing-here", "s3cret")

    create(ns_http, ns_auth, {"companyName": "Acme"})

    wait_for(lambda: netsuite.deliveries, what="the failed delivery")
    assert "error" in netsuite.deliveries[0] and "status" not in netsuite.deliveries[0]


def test_webhook_hooks_register_and_remove(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, receiver: tuple[Receiver, str]
) -> None:
    found, url = receiver
    ns_http.post("/_emulator/webhooks", json={"url": url, "secret": "abc"})

    ns_http.post("/_emulator/seed/customer?notify=true", json={"companyName": "Seeded"})
    wait_for(lambda: netsuite.deliveries, what="the delivery for the seeded record")
    ns_http.delete("/_emulator/webhooks")
    ns_http.post("/_emulator/seed/customer?notify=true", json={"companyName": "Quiet"})

    assert ns_http.get("/_emulator/deliveries").json()[0]["body"]["eventType"] == "create"
    assert netsuite.webhooks == [] and netsuite.pending_deliveries == 0 and len(found.received) == 1


async def test_drain_waits_for_scheduled_deliveries(
    netsuite: NetSuiteEmulator, ns_url: str, ns_token: str, receiver: tuple[Receiver, str]
) -> None:
    netsuite.add_webhook(receiver[1], "s3cret")
    async with httpx2.AsyncClient(base_url=ns_url) as client:
        await client.post(
            f"{RECORD}/customer",
            json={"companyName": "Acme"},
            headers={"Authorization": f"Bearer {ns_token}"},
        )

    await netsuite.drain()

    assert netsuite.pending_deliveries == 0 and len(netsuite.deliveries) == 1


def test_seeded_ids_are_never_reused_by_creates(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    netsuite.seed("customer", {"id": "5000", "companyName": "Imported"})

    assert create(ns_http, ns_auth, {"companyName": "New"}) == "5001"
