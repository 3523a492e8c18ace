"""Contract tests for the Zuora emulator: OAuth, accounts, Object Query, ZOQL, idempotency, limits, hooks."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.emulator_kit import EmulatorMiddleware, json_response
from connectors.zuora.emulator import ZuoraEmulator
from connectors.zuora.emulator_routes import idempotent
from tests.emulators.conftest import ZUORA_CLIENT_ID, ZUORA_SECRET, AppSwitch, Clock, plug
from tests.support.live import wait_for

AUTH_ERROR = {"success": False, "reasons": [{"code": 90000011, "message": "Authentication error"}]}


def account_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Acme Ltd",
        "currency": "USD",
        "billCycleDay": 1,
        "crmId": "NS-1234",
        "NetSuiteCustomerId__c": "1234",
        "billToContact": {"firstName": "Amy", "lastName": "Lawrence", "country": "United States"},
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def create_account(http: httpx2.Client, auth: dict[str, str], **overrides: Any) -> dict[str, Any]:
    response = http.post("/v1/accounts", json=account_body(**overrides), headers=auth)
    assert response.status_code == 200 and response.json()["success"], response.text
    return dict(response.json())


def token_form(**overrides: str) -> dict[str, str]:
    return {
        "client_id": ZUORA_CLIENT_ID,
        "client_secret": ZUORA_SECRET,
        "grant_type": "client_credentials",
        **overrides,
    }


# OAuth ---------------------------------------------------------------------------------------------


def test_token_response_has_zuora_fields_and_rate_headers(zuora_http: httpx2.Client) -> None:
    response = zuora_http.post("/oauth/token", data=token_form())

    body = response.json()
    assert response.status_code == 200
    assert (body["token_type"], body["expires_in"]) == ("bearer", 3599)
    assert {"access_token", "scope", "jti"} <= set(body)
    assert response.headers["x-ratelimit-limit-minute"] == "100"
    assert response.headers["x-ratelimit-remaining-minute"] == "99"


@pytest.mark.parametrize(
    ("form", "status", "error"),
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "stranger"}, 401, "invalid_client"),
        ({"client_secret": ""}, 401, "invalid_client"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ],
)
def test_token_refuses_bad_requests(
    zuora_http: httpx2.Client, form: dict[str, str], status: int, error: str
) -> None:
    response = zuora_http.post("/oauth/token", data=token_form(**form))

    assert (response.status_code, response.json()["error"]) == (status, error)
    assert response.json()["error_description"]


def test_token_endpoint_is_rate_limited_per_ip(zuora: ZuoraEmulator, zuora_http: httpx2.Client) -> None:
    zuora.token_rate_limit_per_minute = 2

    statuses = [zuora_http.post("/oauth/token", data=token_form()).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/accounts/A00000001"),
        ("POST", "/v1/accounts"),
        ("GET", "/object-query/accounts"),
        ("POST", "/v1/action/query"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token"])
def test_api_refuses_missing_or_unknown_tokens(
    zuora_http: httpx2.Client, method: str, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = zuora_http.request(method, path, json={}, headers=headers)

    assert (response.status_code, response.json()) == (401, AUTH_ERROR)


def test_token_expires_after_its_ttl(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], clock: Clock
) -> None:
    clock.advance(3599)

    response = zuora_http.get("/v1/accounts/A00000001", headers=zuora_auth)

    assert (response.status_code, response.json()) == (401, AUTH_ERROR)


def test_expire_tokens_invalidates_issued_tokens(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.expire_tokens()

    assert zuora_http.get("/object-query/accounts", headers=zuora_auth).status_code == 401


def test_revoke_hook_deletes_the_client_and_ends_its_tokens(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    revoked = zuora_http.post("/_emulator/revoke", json={"client_id": ZUORA_CLIENT_ID})

    cached = zuora_http.get("/object-query/accounts", headers=zuora_auth)
    renewed = zuora_http.post("/oauth/token", data=token_form())
    assert revoked.json()["revoked"] == {"clients": 1, "access_tokens": 1}
    assert (cached.status_code, cached.json()) == (401, AUTH_ERROR)
    assert (renewed.status_code, renewed.json()["error"]) == (401, "invalid_client")
    zuora.register_client(ZUORA_CLIENT_ID, ZUORA_SECRET)  # a new OAuth client restores access
    assert zuora_http.post("/oauth/token", data=token_form()).status_code == 200


def test_revoke_without_a_client_id_deletes_every_client(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.register_client("second", "second-secret")

    assert zuora.revoke() == {"clients": 2, "access_tokens": 1}
    assert zuora_http.get("/object-query/accounts", headers=zuora_auth).status_code == 401
    assert zuora.clients == {}


def test_revoke_hook_refuses_an_unknown_client(zuora_http: httpx2.Client) -> None:
    assert zuora_http.post("/_emulator/revoke", json={"client_id": "stranger"}).status_code == 404


# Accounts -------------------------------------------------------------------------------------


def test_create_account_answers_ids_and_stores_the_account(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    body = create_account(zuora_http, zuora_auth)
    second = create_account(zuora_http, zuora_auth, name="Beta", crmId="NS-2")

    assert re.fullmatch(r"[0-9a-f]{32}", body["accountId"])
    assert (body["accountNumber"], second["accountNumber"]) == ("A00000001", "A00000002")
    assert body["billToContactId"] != body["soldToContactId"]
    stored = zuora.accounts()[0]
    assert (stored["id"], stored["crmId"], stored["NetSuiteCustomerId__c"], stored["status"]) == (
        body["accountId"],
        "NS-1234",
        "1234",
        "Active",
    )
    assert stored["soldToContact"]["lastName"] == "Lawrence"  # sold-to defaults to a copy of bill-to


CREATE_ERRORS = [
    ("missing name", {"name": None}, 53100022, "'name' may not be null"),
    ("missing currency", {"currency": None}, 53100022, "'currency' may not be null"),
    ("missing bill cycle day", {"billCycleDay": None}, 53100022, "'billCycleDay' may not be null"),
    (
        "missing bill-to first name",
        {"billToContact": {"lastName": "L"}},
        53100022,
        "'billToContact.firstName' may not be null",
    ),
    ("missing bill-to contact", {"billToContact": None}, 53100022, "'billToContact' may not be null"),
    ("unknown field", {"CrmId": "x"}, 53100021, "'CrmId' is not a valid field"),
    ("bad bill cycle day", {"billCycleDay": 32}, 53100020, "billCycleDay"),
    ("inactive currency", {"currency": "XXX"}, 53100020, "XXX"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "code", "message"), CREATE_ERRORS, ids=[c[0] for c in CREATE_ERRORS]
)
def test_create_account_validation_answers_200_with_reasons(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    case: str,
    overrides: dict[str, Any],
    code: int,
    message: str,
) -> None:
    response = zuora_http.post("/v1/accounts", json=account_body(**overrides), headers=zuora_auth)

    body = response.json()
    assert (response.status_code, body["success"]) == (200, False)
    assert body["processId"]
    assert any(r["code"] == code and message in r["message"] for r in body["reasons"]), body
    assert zuora.accounts() == []


def test_create_account_with_malformed_json_is_category_90(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Content-Type": "application/json"}

    response = zuora_http.post("/v1/accounts", content=b"{oops", headers=headers)

    assert response.json()["reasons"][0]["code"] == 53100090


@pytest.mark.parametrize("by", ["accountId", "accountNumber"])
def test_get_account_by_id_or_number(zuora_http: httpx2.Client, zuora_auth: dict[str, str], by: str) -> None:
    created = create_account(zuora_http, zuora_auth)

    body = zuora_http.get(f"/v1/accounts/{created[by]}", headers=zuora_auth).json()

    assert body["success"] is True
    assert body["basicInfo"]["id"] == created["accountId"]
    assert (body["basicInfo"]["crmId"], body["basicInfo"]["NetSuiteCustomerId__c"]) == ("NS-1234", "1234")
    assert body["billingAndPayment"]["currency"] == "USD" and body["billingAndPayment"]["billCycleDay"] == 1
    assert body["metrics"]["balance"] == 0
    assert (
        body["billToContact"]["firstName"] == "Amy"
        and body["soldToContact"]["id"] == created["soldToContactId"]
    )


def test_get_unknown_account_is_404_category_40(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    response = zuora_http.get("/v1/accounts/A99999999", headers=zuora_auth)

    assert response.status_code == 404
    assert (response.json()["success"], response.json()["reasons"][0]["code"]) == (False, 50000040)


def test_get_unknown_account_can_answer_200_when_configured(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.not_found_status = 200

    response = zuora_http.get("/v1/accounts/A99999999", headers=zuora_auth)

    assert (response.status_code, response.json()["success"]) == (200, False)


def test_put_account_updates_fields_and_contacts(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    created = create_account(zuora_http, zuora_auth)

    response = zuora_http.put(
        f"/v1/accounts/{created['accountNumber']}",
        json={"name": "Acme Renamed", "billToContact": {"city": "Austin"}, "Segment__c": "SMB"},
        headers=zuora_auth,
    )

    assert response.json() == {"success": True}
    stored = zuora.accounts()[0]
    assert (
        stored["name"],
        stored["billToContact"]["city"],
        stored["billToContact"]["firstName"],
        stored["Segment__c"],
    ) == (
        "Acme Renamed",
        "Austin",
        "Amy",
        "SMB",
    )


def test_put_unknown_account_is_404(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    assert zuora_http.put("/v1/accounts/nope", json={"name": "x"}, headers=zuora_auth).status_code == 404


# Object Query and ZOQL -----------------------------------------------------------------------------


def test_object_query_filters_on_crmid_case_insensitively(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    created = create_account(zuora_http, zuora_auth, crmId="NS-ABC")
    create_account(zuora_http, zuora_auth, crmId="NS-OTHER", name="Other")

    response = zuora_http.get(
        "/object-query/accounts",
        params={"filter[]": "crmid.EQ:ns-abc", "fields[]": "id,accountnumber,name,crmid"},
        headers=zuora_auth,
    )

    assert response.json() == {
        "data": [
            {"id": created["accountId"], "accountnumber": "A00000001", "name": "Acme Ltd", "crmid": "NS-ABC"}
        ]
    }


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["accountnumber.EQ:A00000002"], ["Beta"]),
        (["name.EQ:beta"], ["Beta"]),
        (["status.EQ:Active", "name.NE:Beta"], ["Acme Ltd"]),
        (["crmid.EQ:null"], ["Beta"]),
    ],
)
def test_object_query_filters_are_anded(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], filters: list[str], expected: list[str]
) -> None:
    create_account(zuora_http, zuora_auth)
    create_account(zuora_http, zuora_auth, name="Beta", crmId=None)

    response = zuora_http.get("/object-query/accounts", params={"filter[]": filters}, headers=zuora_auth)

    assert [row["name"] for row in response.json()["data"]] == expected


def test_object_query_leaves_out_nulls_unless_asked(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth, crmId=None)

    plain = zuora_http.get("/object-query/accounts", headers=zuora_auth).json()["data"][0]
    full = zuora_http.get("/object-query/accounts?includeNullFields=true", headers=zuora_auth).json()["data"][
        0
    ]

    assert "crmid" not in plain and full["crmid"] is None


def test_object_query_pages_with_a_cursor(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    for n in range(5):
        create_account(zuora_http, zuora_auth, name=f"Company {n}")

    names: list[str] = []
    params: dict[str, Any] = {"pageSize": 2}
    pages = 0
    while True:
        body = zuora_http.get("/object-query/accounts", params=params, headers=zuora_auth).json()
        names += [row["name"] for row in body["data"]]
        pages += 1
        if "nextPage" not in body:
            break
        params = {"pageSize": 2, "cursor": body["nextPage"]}

    assert (names, pages) == ([f"Company {n}" for n in range(5)], 3)


@pytest.mark.parametrize(
    "params",
    [
        {"pageSize": 100},
        {"pageSize": 0},
        {"filter[]": "balance.EQ:0"},
        {"filter[]": "crmid.SW:NS"},
        {"cursor": "@@@"},
    ],
)
def test_object_query_refuses_bad_parameters(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], params: dict[str, Any]
) -> None:
    response = zuora_http.get("/object-query/accounts", params=params, headers=zuora_auth)

    assert (response.status_code, response.json()["success"]) == (400, False)


def test_object_query_single_account(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    created = create_account(zuora_http, zuora_auth)

    by_number = zuora_http.get("/object-query/accounts/A00000001", headers=zuora_auth).json()
    missing = zuora_http.get("/object-query/accounts/A0000999", headers=zuora_auth)

    assert (by_number["id"], by_number["netsuitecustomerid__c"]) == (created["accountId"], "1234")
    assert missing.status_code == 404


def test_zoql_selects_pascal_case_fields(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    created = create_account(zuora_http, zuora_auth)
    create_account(zuora_http, zuora_auth, name="Other", crmId="NS-9")

    fields = "Id, AccountNumber, Name, CrmId, NetSuiteCustomerId__c"
    query = f"select {fields} from Account where CrmId = 'NS-1234' and Status = 'Active'"
    response = zuora_http.post("/v1/action/query", json={"queryString": query}, headers=zuora_auth)

    record = {
        "Id": created["accountId"],
        "AccountNumber": "A00000001",
        "Name": "Acme Ltd",
        "CrmId": "NS-1234",
    }
    assert response.json() == {
        "records": [{**record, "NetSuiteCustomerId__c": "1234"}],
        "size": 1,
        "done": True,
    }


def test_zoql_leaves_out_null_fields(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    create_account(zuora_http, zuora_auth, crmId=None)

    records = zuora_http.post(
        "/v1/action/query", json={"queryString": "select Id, CrmId from Account"}, headers=zuora_auth
    ).json()["records"]

    assert list(records[0]) == ["Id"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("select Nope from Account", "INVALID_FIELD"),
        ("select Id from Order", "MALFORMED_QUERY"),  # ZOQL has no Orders (notes §3)
        ("select * from Account", "MALFORMED_QUERY"),
        ("select Id from Account where", "MALFORMED_QUERY"),
        ("select Id from Account order by Id", "MALFORMED_QUERY"),
    ],
)
def test_zoql_errors(zuora_http: httpx2.Client, zuora_auth: dict[str, str], query: str, code: str) -> None:
    response = zuora_http.post("/v1/action/query", json={"queryString": query}, headers=zuora_auth)

    assert (response.status_code, response.json()["code"]) == (400, code)


@pytest.mark.parametrize(
    ("query", "category"),
    [("select Nope from Account", 21), ("select Id from Order", 20)],  # unknown field, invalid value
)
def test_zoql_errors_can_answer_in_the_v1_envelope(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], query: str, category: int
) -> None:
    # UNCONFIRMED shape (notes §8): the Actions {code, message} by default, the v1 envelope on request.
    zuora.configure(zoql_error_format="v1", zoql_error_status=200)

    response = zuora_http.post("/v1/action/query", json={"queryString": query}, headers=zuora_auth)
    locator = zuora_http.post("/v1/action/queryMore", json={"queryLocator": "nope"}, headers=zuora_auth)

    assert (response.status_code, response.json()["success"]) == (200, False)
    assert response.json()["reasons"][0]["code"] % 100 == category
    assert "ZOQL" in response.json()["reasons"][0]["message"]
    assert (locator.status_code, locator.json()["reasons"][0]["code"] % 100) == (200, 20)


def test_zoql_error_format_must_be_known(zuora: ZuoraEmulator) -> None:
    with pytest.raises(ValueError, match="zoql_error_format"):
        zuora.configure(zoql_error_format="xml")


# Idempotency-Key -------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_result(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Idempotency-Key": "job-1"}

    first = zuora_http.post("/v1/accounts", json=account_body(), headers=headers)
    second = zuora_http.post("/v1/accounts", json=account_body(), headers=headers)

    assert first.json() == second.json() and second.status_code == 200
    assert second.headers["content-type"] == first.headers["content-type"] == "application/json"
    assert len(zuora.accounts()) == 1


def test_idempotency_key_replays_the_original_status_and_headers(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.configure(error_http_status=400)  # the refusal is then an HTTP error, not 200 + success:false
    headers = {**zuora_auth, "Idempotency-Key": "job-6"}
    body = account_body(currency="XXX")

    first = zuora_http.post("/v1/accounts", json=body, headers=headers)
    zuora.configure(error_http_status=200)
    second = zuora_http.post("/v1/accounts", json=body, headers=headers)

    assert (first.status_code, second.status_code) == (400, 400)
    assert second.content == first.content and second.json()["success"] is False
    assert second.headers["content-type"] == "application/json"
    assert "ratelimit-remaining" in second.headers and "zuora-request-id" in second.headers


def test_idempotency_key_applies_to_patch_and_not_to_put(
    zuora: ZuoraEmulator, switch: tuple[AppSwitch, str], session_http: httpx2.Client
) -> None:
    # No Zuora operation emulated here takes PATCH (account update is PUT, notes §3), so a route of
    # this test's own runs behind the emulator's idempotency layer and middleware.
    calls: list[str] = []

    async def change(request: Request) -> Response:
        calls.append(request.method)
        return json_response({"success": True, "call": len(calls)}, 201, {"Location": "/v1/things/T1"})

    route = Route("/v1/things/{key}", idempotent(zuora, change), methods=["POST", "PATCH", "PUT"])
    plug(switch, Starlette(routes=[route], middleware=[Middleware(EmulatorMiddleware, emulator=zuora)]))
    patch = {"Idempotency-Key": "patch-1"}

    first = session_http.patch("/v1/things/T1", json={"notes": "a"}, headers=patch)
    replay = session_http.patch("/v1/things/T1", json={"notes": "a"}, headers=patch)
    other_body = session_http.patch("/v1/things/T1", json={"notes": "b"}, headers=patch)
    other_method = session_http.post("/v1/things/T1", json={"notes": "a"}, headers=patch)
    puts = [session_http.put("/v1/things/T1", json={}, headers={"Idempotency-Key": "put-1"}) for _ in "ab"]

    assert (first.status_code, replay.status_code) == (201, 201)
    assert replay.json() == first.json() == {"success": True, "call": 1}
    assert replay.headers["location"] == "/v1/things/T1"
    assert (other_body.status_code, other_method.status_code) == (422, 422)
    assert [r.json()["call"] for r in puts] == [2, 3]  # PUT ignores the key
    assert calls == ["PATCH", "PUT", "PUT"]


def test_idempotency_key_replays_failures_too(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Idempotency-Key": "job-2"}
    body = account_body(name=None)

    first = zuora_http.post("/v1/accounts", json=body, headers=headers).json()
    second = zuora_http.post("/v1/accounts", json=body, headers=headers).json()

    assert first == second and first["success"] is False


def test_idempotency_key_with_another_body_is_422(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Idempotency-Key": "job-3"}
    zuora_http.post("/v1/accounts", json=account_body(), headers=headers)

    response = zuora_http.post("/v1/accounts", json=account_body(name="Different"), headers=headers)

    assert (response.status_code, response.json()["success"]) == (422, False)
    assert len(zuora.accounts()) == 1


def test_idempotency_key_in_flight_is_409(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Idempotency-Key": "job-4"}
    zuora.hold_writes()
    results: list[httpx2.Response] = []
    first = threading.Thread(target=lambda: results.append(_post_account(zuora_http.base_url, headers)))
    first.start()
    wait_for(lambda: zuora.idempotency_keys_in_flight == ["job-4"], what="the first request to claim its key")

    clash = zuora_http.post("/v1/accounts", json=account_body(), headers=headers)
    zuora.release_writes()
    first.join(10)

    assert (clash.status_code, clash.json()["success"]) == (409, False)
    assert results[0].status_code == 200 and len(zuora.accounts()) == 1


def _post_account(base_url: Any, headers: dict[str, str]) -> httpx2.Response:
    with httpx2.Client(base_url=base_url, timeout=10.0) as client:
        return client.post("/v1/accounts", json=account_body(), headers=headers)


def test_idempotency_key_expires_after_24_hours(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], clock: Clock
) -> None:
    zuora.token_ttl = 10 * 24 * 3600
    auth = {
        "Authorization": "Bearer " + zuora_http.post("/oauth/token", data=token_form()).json()["access_token"]
    }
    headers = {**auth, "Idempotency-Key": "job-5"}
    zuora_http.post("/v1/accounts", json=account_body(), headers=headers)

    clock.advance(24 * 3600 + 1)
    zuora_http.post("/v1/accounts", json=account_body(), headers=headers)

    assert len(zuora.accounts()) == 2


def test_idempotency_key_longer_than_255_is_refused(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    response = zuora_http.post(
        "/v1/accounts", json=account_body(), headers={**zuora_auth, "Idempotency-Key": "k" * 256}
    )

    assert response.status_code == 400


# Headers, rate limits, concurrency, faults ----------------------------------------------------------


def test_responses_carry_request_id_track_id_and_rate_limit_headers(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Zuora-Track-Id": "trace-42"}

    first = zuora_http.get("/object-query/accounts", headers=headers)
    second = zuora_http.get("/object-query/accounts", headers=headers)

    assert first.headers["zuora-track-id"] == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", first.headers["zuora-request-id"])
    assert first.headers["zuora-request-id"] != second.headers["zuora-request-id"]
    assert first.headers["ratelimit-limit"] == "2500, 2500;w=60"
    assert (first.headers["ratelimit-remaining"], second.headers["ratelimit-remaining"]) == ("2499", "2498")
    assert 1 <= int(first.headers["ratelimit-reset"]) <= 60
    assert (first.headers["concurrency-limit-limit"], first.headers["concurrency-limit-type"]) == (
        "40",
        "Default",
    )


def test_rate_limit_per_minute_answers_429_with_retry_after(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], clock: Clock
) -> None:
    zuora.rate_limit_per_minute = 2
    statuses = [zuora_http.get("/object-query/accounts", headers=zuora_auth) for _ in range(3)]

    refused = statuses[2]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    assert refused.json()["reasons"][0]["code"] % 100 == 70
    assert refused.headers["ratelimit-remaining"] == "0"
    assert int(refused.headers["retry-after"]) == int(refused.headers["ratelimit-reset"]) >= 1

    clock.advance(60)
    assert zuora_http.get("/object-query/accounts", headers=zuora_auth).status_code == 200


def test_rate_limited_body_is_configurable(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    # UNCONFIRMED body (notes §7): a tenant setting swaps the v1 envelope for any JSON.
    gateway = {"message": "API rate limit exceeded"}
    zuora_http.post("/_emulator/settings", json={"rate_limited_body": gateway})
    zuora.rate_limit_per_minute = 1
    zuora_http.get("/object-query/accounts", headers=zuora_auth)

    refused = zuora_http.get("/object-query/accounts", headers=zuora_auth)
    zuora.faults.fail_next(429)
    zuora.rate_limit_per_minute = 100
    injected = zuora_http.get("/object-query/accounts", headers=zuora_auth)

    assert (refused.status_code, refused.json()) == (429, gateway)
    assert (injected.status_code, injected.json()) == (429, gateway)
    assert int(refused.headers["retry-after"]) >= 1 and int(injected.headers["retry-after"]) >= 1


def test_token_rate_limited_body_is_configurable(zuora: ZuoraEmulator, zuora_http: httpx2.Client) -> None:
    zuora.configure(token_rate_limit_per_minute=1, token_rate_limited_body={"error": "too_many_requests"})
    zuora_http.post("/oauth/token", data=token_form())

    refused = zuora_http.post("/oauth/token", data=token_form())

    assert (refused.status_code, refused.json()) == (429, {"error": "too_many_requests"})
    assert int(refused.headers["retry-after"]) >= 1


def _hold(base_url: Any, method: str, path: str, headers: dict[str, str], body: Any) -> httpx2.Response:
    """One call on a connection of its own, so several can be in flight at once."""
    with httpx2.Client(base_url=base_url, timeout=10.0) as client:
        return client.request(method, path, json=body, headers=headers)


def test_concurrency_over_the_limit_gets_429(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    # Writes park after admission while `hold_writes` is on, so two calls stay in flight for sure.
    zuora.faults.configure({"concurrency_limit": 2})
    zuora.hold_writes()
    query = {"queryString": "select Id from Account"}

    with ThreadPoolExecutor(max_workers=2) as pool:
        held = [
            pool.submit(_hold, zuora_http.base_url, "POST", "/v1/action/query", zuora_auth, query)
            for _ in range(2)
        ]
        wait_for(lambda: zuora.faults.in_flight == 2, what="two calls in flight")
        refused = zuora_http.get("/object-query/accounts", headers=zuora_auth)
        zuora.release_writes()

    assert [f.result().status_code for f in held] == [200, 200]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert (refused.headers["concurrency-limit-limit"], refused.headers["concurrency-limit-remaining"]) == (
        "2",
        "0",
    )
    assert refused.json()["reasons"][0]["code"] % 100 == 70


def test_high_volume_operations_have_their_own_concurrency_pool(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    # Create account is a high-volume operation (200 in flight) apart from the default class (40).
    zuora.configure(high_volume_concurrency_limit=1)
    zuora.faults.configure({"concurrency_limit": 1})
    zuora.hold_writes()

    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(_hold, zuora_http.base_url, "POST", "/v1/accounts", zuora_auth, account_body())
        wait_for(lambda: zuora.high_volume_in_flight == 1, what="one account create in flight")
        default_class = zuora_http.get("/object-query/accounts", headers=zuora_auth)
        refused = zuora_http.post("/v1/accounts", json=account_body(name="Second"), headers=zuora_auth)
        zuora.release_writes()

    assert held.result().status_code == 200 and len(zuora.accounts()) == 1
    assert (default_class.status_code, default_class.headers["concurrency-limit-type"]) == (200, "Default")
    assert default_class.headers["concurrency-limit-limit"] == "1"
    assert (refused.status_code, refused.json()["reasons"][0]["code"] % 100) == (429, 70)
    assert (refused.headers["concurrency-limit-type"], refused.headers["concurrency-limit-limit"]) == (
        "High-volume transactions",
        "1",
    )
    assert zuora.high_volume_in_flight == 0 and zuora.faults.in_flight == 0


def test_high_volume_class_defaults_to_200(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    response = zuora_http.post("/v1/accounts", json=account_body(), headers=zuora_auth)

    assert (response.headers["concurrency-limit-type"], response.headers["concurrency-limit-limit"]) == (
        "High-volume transactions",
        "200",
    )


@pytest.mark.parametrize(("status", "category"), [(429, 70), (500, 60), (503, 61)])
def test_fail_next_answers_in_the_v1_shape(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], status: int, category: int
) -> None:
    zuora_http.post("/_emulator/faults", json={"fail_next": {"status": status, "count": 1}})

    response = zuora_http.get("/object-query/accounts", headers=zuora_auth)

    assert response.status_code == status
    assert response.json()["reasons"][0]["code"] % 100 == category
    assert "ratelimit-remaining" in response.headers
    assert ("retry-after" in response.headers) == (status == 429)
    assert zuora_http.get("/object-query/accounts", headers=zuora_auth).status_code == 200


def test_unknown_route_gets_the_gateway_404(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> None:
    response = zuora_http.get("/v1/nothing-here", headers=zuora_auth)

    assert (response.status_code, response.json()) == (404, {"message": "no Route matched with those values"})


# Test hooks --------------------------------------------------------------------------------------


def test_records_and_seed_hooks(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    seeded = zuora_http.post("/_emulator/seed/accounts", json={"name": "Seeded", "crmId": "NS-7"}).json()

    listed = zuora_http.get("/_emulator/records/accounts").json()
    found = zuora_http.get(
        "/object-query/accounts", params={"filter[]": "crmid.EQ:NS-7"}, headers=zuora_auth
    ).json()

    assert [a["id"] for a in listed] == [seeded["id"]] == [row["id"] for row in found["data"]]


def test_reset_empties_accounts_and_keys_but_keeps_clients(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora_http.post("/v1/accounts", json=account_body(), headers={**zuora_auth, "Idempotency-Key": "k1"})

    zuora_http.post("/_emulator/reset")

    assert zuora.accounts() == [] and zuora.requests == []
    assert zuora_http.post("/oauth/token", data=token_form()).status_code == 200
    replay = zuora_http.post(
        "/v1/accounts", json=account_body(), headers={**zuora_auth, "Idempotency-Key": "k1"}
    )
    assert replay.json()["accountNumber"] == "A00000001" and len(zuora.accounts()) == 1


def test_clients_hook_registers_a_client(zuora_http: httpx2.Client) -> None:
    zuora_http.post("/_emulator/clients", json={"client_id": "demo", "client_secret": "demo-secret"})

    response = zuora_http.post("/oauth/token", data=token_form(client_id="demo", client_secret="demo-secret"))

    assert response.status_code == 200


def test_request_log_hides_secrets(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora_http.get("/object-query/accounts", headers=zuora_auth)

    log = zuora_http.get("/_emulator/requests").json()

    assert [entry["path"] for entry in log] == ["/oauth/token", "/object-query/accounts"]
    assert log[1]["headers"]["authorization"] == "Bearer" and log[1]["status"] == 200
    assert ZUORA_SECRET not in str(zuora.requests)


def test_settings_hook_reads_and_changes_tenant_settings(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client
) -> None:
    before = zuora_http.get("/_emulator/settings").json()

    after = zuora_http.post(
        "/_emulator/settings",
        json={"orders_tenant": True, "accounting_codes": ["4000 Services"], "callout_interval": 0},
    )
    refused = zuora_http.post("/_emulator/settings", json={"ordersTenant": True})

    assert (before["orders_tenant"], before["high_volume_concurrency_limit"], before["not_found_status"]) == (
        False,
        200,
        404,
    )
    assert after.json()["accounting_codes"] == ["4000 Services"]
    assert (zuora.orders_tenant, zuora.accounting_codes, zuora.callout_interval) == (
        True,
        {"4000 Services"},
        0,
    )
    assert refused.status_code == 400 and "ordersTenant" in refused.json()["error"]


@pytest.mark.parametrize(
    "record_type", ["invoices", "subscriptions", "payments", "productRatePlanCharges", "callouts"]
)
def test_records_hook_lists_every_resource(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], record_type: str
) -> None:
    response = zuora_http.get(f"/_emulator/records/{record_type}")

    assert response.status_code == 200
    assert response.json() == zuora.records(record_type)
    assert (len(response.json()) == 2) == (record_type == "productRatePlanCharges")  # the default catalog
