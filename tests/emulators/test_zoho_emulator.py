"""Contract tests for the Zoho CRM emulator: refresh-token OAuth and its throttle, insert/upsert/read, hooks.

Grant codes and scopes: test_zoho_oauth.py. Update, delete, lists and field checks: test_zoho_records.py.
Notification channels: test_zoho_watch.py. Credits and concurrency: test_zoho_limits.py.
"""

from __future__ import annotations

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import ZOHO_CLIENT_ID, ZOHO_REFRESH, ZOHO_SECRET, Clock, zoho_refresh_params
from tests.emulators.zoho_fixtures import write

INVALID_TOKEN = {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}
THROTTLED = {
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "error": "Access Denied",
    "status": "failure",
}


# OAuth ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["form", "query"])
def test_refresh_works_with_form_body_or_query_string(
    zoho_http: httpx2.Client, zoho_url: str, where: str
) -> None:
    if where == "form":
        response = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())
    else:
        response = zoho_http.post("/oauth/v2/token", params=zoho_refresh_params())

    body = response.json()
    assert response.status_code == 200
    assert (body["api_domain"], body["token_type"], body["expires_in"]) == (zoho_url, "Bearer", 3600)
    assert "refresh_token" not in body


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_secret": "wrong"}, "invalid_client"),
        ({"client_id": "1000.UNKNOWN"}, "invalid_client"),
        ({"refresh_token": "1000.revoked"}, "invalid_code"),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type"),
        ({"grant_type": "authorization_code"}, "invalid_code"),
    ],
)
def test_refresh_errors_come_back_as_http_200(
    zoho_http: httpx2.Client, overrides: dict[str, str], error: str
) -> None:
    response = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(**overrides))

    assert (response.status_code, response.json()) == (200, {"error": error})


def test_refresh_is_throttled_after_ten_tokens_in_ten_minutes(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, clock: Clock
) -> None:
    answers = [zoho_http.post("/oauth/v2/token", data=zoho_refresh_params()) for _ in range(11)]

    assert [a.status_code for a in answers] == [200] * 10 + [400]
    assert answers[-1].json() == THROTTLED
    assert zoho.token_requests == 11

    clock.advance(600)
    assert "access_token" in zoho_http.post("/oauth/v2/token", data=zoho_refresh_params()).json()


def test_throttle_counts_each_refresh_token_separately(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    zoho.register_client("1000.ZOHOCLIENT", ZOHO_SECRET, "1000.second.refresh")
    for _ in range(10):
        zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())

    response = zoho_http.post(
        "/oauth/v2/token", data=zoho_refresh_params(refresh_token="1000.second.refresh")
    )

    assert "access_token" in response.json()


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "AUTHENTICATION_FAILURE"),
        ("Zoho-oauthtoken nope", "INVALID_TOKEN"),
        ("Bearer nope", "AUTHENTICATION_FAILURE"),
    ],
)
def test_api_refuses_missing_or_unknown_tokens(
    zoho_http: httpx2.Client, authorization: str | None, code: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}

    response = zoho_http.get("/crm/v8/Accounts/1", headers=headers)

    assert (response.status_code, response.json()["code"], response.json()["status"]) == (401, code, "error")


def test_expired_token_gets_the_invalid_token_body(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    clock.advance(3600)

    response = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    assert (response.status_code, response.json()) == (401, INVALID_TOKEN)


def test_expire_tokens_hook(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    zoho_http.post("/_emulator/expire-tokens")

    assert zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth).json() == INVALID_TOKEN


def test_revoke_hook_makes_the_refresh_token_invalid_code_and_ends_its_tokens(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho.register_client(ZOHO_CLIENT_ID, ZOHO_SECRET, "1000.kept.refresh")
    kept = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(refresh_token="1000.kept.refresh"))

    revoked = zoho_http.post("/_emulator/revoke", json={"refresh_token": ZOHO_REFRESH})

    cached = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)
    renewed = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())
    other = {"Authorization": f"Zoho-oauthtoken {kept.json()['access_token']}"}
    assert revoked.json()["revoked"] == {"refresh_tokens": 1, "access_tokens": 1}
    assert (cached.status_code, cached.json()) == (401, INVALID_TOKEN)
    assert (renewed.status_code, renewed.json()) == (200, {"error": "invalid_code"})
    assert zoho_http.get("/crm/v8/Accounts/1", headers=other).status_code == 204  # another token lives on


def test_revoke_by_client_id_revokes_each_of_its_refresh_tokens(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho.register_client(ZOHO_CLIENT_ID, ZOHO_SECRET, "1000.second.refresh")

    counts = zoho.revoke(client_id=ZOHO_CLIENT_ID)

    second = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params(refresh_token="1000.second.refresh"))
    assert counts == {"refresh_tokens": 2, "access_tokens": 1}
    assert zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth).json() == INVALID_TOKEN
    assert second.json() == {"error": "invalid_code"}
    assert ZOHO_CLIENT_ID in zoho.clients  # the self client itself stays


@pytest.mark.parametrize("body", [{"refresh_token": "1000.never.issued"}, {"client_id": "1000.NOBODY"}])
def test_revoke_hook_refuses_unknown_targets(zoho_http: httpx2.Client, body: dict[str, str]) -> None:
    assert zoho_http.post("/_emulator/revoke", json=body).status_code == 404


# Records API ------------------------------------------------------------------------------------


def test_insert_answers_201_with_results_in_input_order(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    response = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}, {"Account_Name": "Beta"}])

    assert response.status_code == 201
    items = response.json()["data"]
    assert [(i["code"], i["status"], i["message"]) for i in items] == [
        ("SUCCESS", "success", "record added")
    ] * 2
    assert [r["Account_Name"] for r in zoho.records("Accounts")] == ["Acme", "Beta"]
    assert [i["details"]["id"] for i in items] == [r["id"] for r in zoho.records("Accounts")]
    assert {"Created_Time", "Modified_Time", "Created_By", "Modified_By"} <= set(items[0]["details"])


def test_insert_with_mixed_results_is_207_with_per_record_errors(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    response = write(zoho_http, zoho_auth, "Contacts", [{"Last_Name": "Smith"}, {"First_Name": "No Last"}])

    assert response.status_code == 207
    failed = response.json()["data"][1]
    assert failed == {
        "code": "MANDATORY_NOT_FOUND",
        "details": {"api_name": "Last_Name", "json_path": "$.data[1].Last_Name"},
        "message": "required field not found",
        "status": "error",
    }
    assert len(zoho.records("Contacts")) == 1


@pytest.mark.parametrize(
    ("module", "field"), [("Accounts", "Account_Name"), ("Vendors", "Vendor_Name"), ("Contacts", "Last_Name")]
)
def test_insert_all_failing_is_400_naming_the_mandatory_field(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], module: str, field: str
) -> None:
    response = write(zoho_http, zoho_auth, module, [{"Phone": "1"}])

    assert response.status_code == 400
    assert response.json()["data"][0]["details"]["api_name"] == field


def test_insert_with_a_taken_unique_value_is_duplicate_data(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme", "NetSuite_Id": "1137"}])

    response = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme 2", "NetSuite_Id": "1137"}])

    assert response.status_code == 400
    assert response.json()["data"][0]["code"] == "DUPLICATE_DATA"
    assert response.json()["data"][0]["details"]["api_name"] == "NetSuite_Id"


def test_contact_lookups_must_point_at_existing_records(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    account_id = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}]).json()["data"][0][
        "details"
    ]["id"]

    response = write(
        zoho_http,
        zoho_auth,
        "Contacts",
        [
            {"Last_Name": "Smith", "Account_Name": {"id": account_id}},
            {"Last_Name": "Jones", "Account_Name": {"id": "42"}},
        ],
    )

    assert response.status_code == 207
    assert response.json()["data"][1]["code"] == "INVALID_DATA"
    assert response.json()["data"][1]["details"]["api_name"] == "Account_Name"
    contact_id = response.json()["data"][0]["details"]["id"]
    read = zoho_http.get(f"/crm/v8/Contacts/{contact_id}", headers=zoho_auth).json()["data"][0]
    assert read["Account_Name"] == {"name": "Acme", "id": account_id}
    assert read["Full_Name"] == "Smith"


def test_non_object_record_is_invalid_data(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = write(zoho_http, zoho_auth, "Accounts", ["not an object", {"Account_Name": "Acme"}])

    assert response.status_code == 207
    assert response.json()["data"][0]["details"]["expected_data_type"] == "jsonobject"


def test_upsert_inserts_then_updates_on_the_duplicate_check_field(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    check = {"duplicate_check_fields": ["NetSuite_Id"]}

    first = write(
        zoho_http,
        zoho_auth,
        "Accounts",
        [{"Account_Name": "Acme", "NetSuite_Id": "1137"}],
        upsert=True,
        **check,
    )
    second = write(
        zoho_http,
        zoho_auth,
        "Accounts",
        [{"Account_Name": "Acme Renamed", "NetSuite_Id": "1137", "Phone": "1"}],
        upsert=True,
        **check,
    )

    assert first.status_code == second.status_code == 200
    inserted, updated = first.json()["data"][0], second.json()["data"][0]
    assert (inserted["action"], inserted["duplicate_field"], inserted["message"]) == (
        "insert",
        None,
        "record added",
    )
    assert (updated["action"], updated["duplicate_field"], updated["message"]) == (
        "update",
        "NetSuite_Id",
        "record updated",
    )
    assert updated["details"]["id"] == inserted["details"]["id"]
    assert [(r["Account_Name"], r["Phone"]) for r in zoho.records("Accounts")] == [("Acme Renamed", "1")]


def test_upsert_without_check_fields_matches_the_system_field(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    write(zoho_http, zoho_auth, "Vendors", [{"Vendor_Name": "Supplies Co"}])

    response = write(
        zoho_http, zoho_auth, "Vendors", [{"Vendor_Name": "Supplies Co", "Phone": "2"}], upsert=True
    )

    assert response.json()["data"][0]["duplicate_field"] == "Vendor_Name"
    assert len(zoho.records("Vendors")) == 1


def test_upsert_mixed_results_is_207(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = write(
        zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}, {"Phone": "1"}], upsert=True
    )

    assert response.status_code == 207
    assert [i["status"] for i in response.json()["data"]] == ["success", "error"]


def test_upsert_refuses_fields_that_are_not_duplicate_checks(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    response = write(
        zoho_http,
        zoho_auth,
        "Accounts",
        [{"Account_Name": "Acme"}],
        upsert=True,
        duplicate_check_fields=["Phone"],
    )

    assert (response.status_code, response.json()["code"]) == (400, "INVALID_DATA")


@pytest.mark.parametrize("operation", ["insert", "upsert", "update"])
def test_more_than_100_records_is_refused(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], operation: str
) -> None:
    records = [{"Account_Name": f"Company {n}"} for n in range(101)]

    if operation == "update":  # PUT /{module}: each record names its id (notes §2b)
        body = {"data": [{"id": str(5725767000000500000 + n), **r} for n, r in enumerate(records)]}
        response = zoho_http.put("/crm/v8/Accounts", json=body, headers=zoho_auth)
    else:
        response = write(zoho_http, zoho_auth, "Accounts", records, upsert=operation == "upsert")

    # OAS example updateRecord/400-limitexceedederror: the refusal sits inside data[].
    assert response.status_code == 400
    assert response.json()["data"] == [
        {
            "code": "LIMIT_EXCEEDED",
            "details": {"maximum_length": 100, "api_name": "data"},
            "message": "count of records in your request exceeds the limit",
            "status": "error",
        }
    ]
    assert zoho.records("Accounts") == []


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{oops", "INVALID_DATA"),
        (b'{"data": []}', "MANDATORY_NOT_FOUND"),
        (b'{"rows": []}', "MANDATORY_NOT_FOUND"),
    ],
)
def test_bad_request_bodies_are_refused(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], body: bytes, code: str
) -> None:
    response = zoho_http.post(
        "/crm/v8/Accounts", content=body, headers={**zoho_auth, "Content-Type": "application/json"}
    )

    assert (response.status_code, response.json()["code"]) == (400, code)


def test_unknown_module_is_invalid_module(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = write(zoho_http, zoho_auth, "Spaceships", [{"Name": "x"}])

    assert (response.status_code, response.json()["code"]) == (400, "INVALID_MODULE")


def test_get_record_by_id_wraps_it_in_data(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    record_id = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme", "Phone": "1"}]).json()[
        "data"
    ][0]["details"]["id"]

    record = zoho_http.get(f"/crm/v8/Accounts/{record_id}", headers=zoho_auth).json()["data"][0]

    assert (record["id"], record["Account_Name"], record["Phone"]) == (record_id, "Acme", "1")
    assert record["Owner"]["email"] and record["Created_Time"].endswith("+00:00")


def test_get_unknown_record_is_204(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = zoho_http.get("/crm/v8/Accounts/123", headers=zoho_auth)

    assert (response.status_code, response.content) == (204, b"")


def test_get_by_ids_leaves_out_missing_ids_and_picks_fields(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    items = write(
        zoho_http, zoho_auth, "Accounts", [{"Account_Name": "A", "Phone": "1"}, {"Account_Name": "B"}]
    ).json()["data"]
    first, second = (i["details"]["id"] for i in items)

    body = zoho_http.get(
        f"/crm/v8/Accounts?ids={second},999,{first}&fields=Account_Name", headers=zoho_auth
    ).json()

    assert body["data"] == [{"Account_Name": "B", "id": second}, {"Account_Name": "A", "id": first}]
    assert (body["info"]["count"], body["info"]["more_records"]) == (2, False)


def test_get_by_ids_with_nothing_found_is_204(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = zoho_http.get("/crm/v8/Accounts?ids=1,2&fields=Account_Name", headers=zoho_auth)

    assert (response.status_code, response.content) == (204, b"")


def test_list_pages_with_per_page(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    for n in range(3):
        zoho.seed("Accounts", {"Account_Name": f"Company {n}"})

    body = zoho_http.get("/crm/v8/Accounts?fields=Account_Name&per_page=2&page=2", headers=zoho_auth).json()

    assert [r["Account_Name"] for r in body["data"]] == ["Company 2"]
    assert (body["info"]["page"], body["info"]["more_records"]) == (2, False)


# Faults and hooks -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"), [(429, "TOO_MANY_REQUESTS"), (500, "INTERNAL_ERROR"), (401, "INVALID_TOKEN")]
)
def test_fail_next_answers_in_zoho_shape(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], status: int, code: str
) -> None:
    zoho_http.post("/_emulator/faults", json={"fail_next": {"status": status, "count": 1}})

    response = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    assert (response.status_code, response.json()["code"], response.json()["status"]) == (
        status,
        code,
        "error",
    )
    assert zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth).status_code == 204


def test_token_endpoint_is_exempt_from_injected_failures(
    zoho: ZohoEmulator, zoho_http: httpx2.Client
) -> None:
    zoho.faults.fail_next(500)

    assert "access_token" in zoho_http.post("/oauth/v2/token", data=zoho_refresh_params()).json()
    assert zoho.faults.pending_failures == 1


def test_records_seed_and_reset_hooks(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    seeded = zoho_http.post("/_emulator/seed/Accounts", json={"Account_Name": "Seeded"}).json()
    listed = zoho_http.get("/_emulator/records/Accounts").json()
    zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())

    zoho_http.post("/_emulator/reset")

    assert [r["id"] for r in listed] == [seeded["id"]]
    assert zoho.records("Accounts") == [] and zoho.token_requests == 0
    assert "access_token" in zoho_http.post("/oauth/v2/token", data=zoho_refresh_params()).json()
    assert zoho_http.get("/_emulator/records/Spaceships").status_code == 404


def test_request_log_masks_the_refresh_token_in_the_query(
    zoho: ZohoEmulator, zoho_http: httpx2.Client
) -> None:
    zoho_http.post("/oauth/v2/token", params=zoho_refresh_params())

    entry = zoho.requests[-1]

    assert entry["query"]["refresh_token"] == "[redacted]" and entry["query"]["client_secret"] == "[redacted]"
    assert ZOHO_REFRESH not in str(zoho.requests) and ZOHO_SECRET not in str(zoho.requests)


def test_clients_hook_registers_a_refresh_token(zoho_http: httpx2.Client) -> None:
    body = {"client_id": "1000.DEMO", "client_secret": "demo", "refresh_token": "1000.demo.refresh"}
    zoho_http.post("/_emulator/clients", json=body)

    response = zoho_http.post("/oauth/v2/token", data={**body, "grant_type": "refresh_token"})

    assert "access_token" in response.json()
