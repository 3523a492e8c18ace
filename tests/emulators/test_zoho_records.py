"""Contract tests for the Zoho emulator's Records API beyond insert: update, delete, field checks, lists, metadata."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import Clock
from tests.emulators.zoho_fixtures import new_ids, write

Record = dict[str, Any]


def put(http: httpx2.Client, auth: dict[str, str], path: str, records: list[Any]) -> httpx2.Response:
    return http.put(path, json={"data": records, "trigger": []}, headers=auth)


# Update (notes §2b) --------------------------------------------------------------------------------


def test_update_by_ids_in_the_body_merges_fields(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    first = zoho.seed("Accounts", {"Account_Name": "Acme", "Phone": "1"})
    second = zoho.seed("Accounts", {"Account_Name": "Beta"})
    clock.advance(60)

    response = put(
        zoho_http,
        zoho_auth,
        "/crm/v8/Accounts",
        [{"id": second, "Website": "b.example"}, {"id": first, "Phone": "2"}],
    )

    assert response.status_code == 200
    assert [(i["code"], i["message"], i["details"]["id"]) for i in response.json()["data"]] == [
        ("SUCCESS", "record updated", second),
        ("SUCCESS", "record updated", first),
    ]
    stored = {r["id"]: r for r in zoho.records("Accounts")}
    assert (stored[first]["Account_Name"], stored[first]["Phone"]) == ("Acme", "2")
    assert stored[second]["Website"] == "b.example"
    assert stored[first]["Modified_Time"] > stored[first]["Created_Time"]


def test_update_one_record_by_its_url(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    record_id = zoho.seed("Contacts", {"Last_Name": "Smith"})

    response = put(zoho_http, zoho_auth, f"/crm/v8/Contacts/{record_id}", [{"First_Name": "Ann"}])

    assert (response.status_code, response.json()["data"][0]["details"]["id"]) == (200, record_id)
    assert zoho.records("Contacts")[0]["First_Name"] == "Ann"


def test_update_with_null_clears_a_field(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    record_id = zoho.seed("Accounts", {"Account_Name": "Acme", "Phone": "1"})

    put(zoho_http, zoho_auth, "/crm/v8/Accounts", [{"id": record_id, "Phone": None}])

    assert "Phone" not in zoho.records("Accounts")[0]


@pytest.mark.parametrize(
    ("bad", "code", "details"),
    [
        (lambda ids: {"Phone": "9"}, "MANDATORY_NOT_FOUND", {"api_name": "id", "json_path": "$.data[1].id"}),
        (
            lambda ids: {"id": "4242", "Phone": "9"},
            "INVALID_DATA",
            {"api_name": "id", "json_path": "$.data[1].id"},
        ),
        (
            lambda ids: {"id": ids[1], "Account_Name": ""},
            "MANDATORY_NOT_FOUND",
            {"api_name": "Account_Name", "json_path": "$.data[1].Account_Name"},
        ),
        (
            lambda ids: {"id": ids[1], "NetSuite_Id": "A-1"},
            "DUPLICATE_DATA",
            {"api_name": "NetSuite_Id", "json_path": "$.data[1].NetSuite_Id"},
        ),
        (
            lambda ids: {"id": ids[1], "Employees": "many"},
            "INVALID_DATA",
            {"api_name": "Employees", "json_path": "$.data[1].Employees", "expected_data_type": "integer"},
        ),
    ],
)
def test_update_mixed_results_are_207_with_per_record_errors(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    bad: Callable[[list[str]], Record],
    code: str,
    details: dict[str, Any],
) -> None:
    ids = [
        zoho.seed("Accounts", {"Account_Name": name, "NetSuite_Id": f"A-{n}"})
        for n, name in enumerate("AB", 1)
    ]

    response = put(zoho_http, zoho_auth, "/crm/v8/Accounts", [{"id": ids[0], "Phone": "7"}, bad(ids)])

    assert response.status_code == 207
    failed = response.json()["data"][1]
    assert (failed["code"], failed["status"]) == (code, "error")
    assert details.items() <= failed["details"].items()
    assert [r.get("Phone") for r in zoho.records("Accounts")] == ["7", None]  # the bad record is untouched


def test_update_all_failing_is_400(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = put(zoho_http, zoho_auth, "/crm/v8/Vendors", [{"id": "1", "Phone": "1"}])

    assert (response.status_code, response.json()["data"][0]["code"]) == (400, "INVALID_DATA")


def test_update_of_an_unknown_id_in_the_url_names_it(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    response = put(zoho_http, zoho_auth, "/crm/v8/Accounts/4242", [{"Phone": "1"}])

    assert response.status_code == 400
    assert response.json()["data"][0] == {
        "code": "INVALID_DATA",
        "details": {"id": "4242", "resource_path_index": 1},
        "message": "the id given seems to be invalid",
        "status": "error",
    }


@pytest.mark.parametrize(
    ("path", "body", "code"),
    [
        ("/crm/v8/Accounts", b"{oops", "INVALID_DATA"),
        ("/crm/v8/Accounts", b'{"data": []}', "MANDATORY_NOT_FOUND"),
        ("/crm/v8/Accounts/1", b'{"data": [{"Phone": "1"}, {"Phone": "2"}]}', "INVALID_DATA"),
    ],
)
def test_update_refuses_bad_bodies(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], path: str, body: bytes, code: str
) -> None:
    response = zoho_http.put(path, content=body, headers={**zoho_auth, "Content-Type": "application/json"})

    assert (response.status_code, response.json()["code"]) == (400, code)


def test_single_record_put_rule_can_be_relaxed(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    # UNCONFIRMED rule (notes §2b): off, each record of the body updates the URL's record in turn.
    zoho.single_record_put_takes_one = False
    record_id = zoho.seed("Accounts", {"Account_Name": "Acme"})

    response = put(zoho_http, zoho_auth, f"/crm/v8/Accounts/{record_id}", [{"Phone": "1"}, {"Fax": "2"}])

    assert response.status_code == 200
    assert [item["message"] for item in response.json()["data"]] == ["record updated"] * 2
    [stored] = zoho.records("Accounts")
    assert (stored["Phone"], stored["Fax"]) == ("1", "2")


def test_ids_per_read_limit_is_configurable(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    ids = ",".join(str(n) for n in range(101))
    default = zoho_http.get(f"/crm/v8/Accounts?ids={ids}&fields=Account_Name", headers=zoho_auth)
    zoho.max_ids = 2  # UNCONFIRMED cap (notes §2d)

    lowered = zoho_http.get("/crm/v8/Accounts?ids=1,2,3&fields=Account_Name", headers=zoho_auth)

    assert (default.status_code, default.json()["details"]) == (400, {"param_name": "ids", "limit": 100})
    assert (lowered.status_code, lowered.json()["code"]) == (400, "LIMIT_EXCEEDED")
    assert lowered.json()["details"] == {"param_name": "ids", "limit": 2}


# Insert and upsert field checks (notes §2a; OAS createRecords examples) ------------------------------


@pytest.mark.parametrize(
    ("module", "record", "api_name", "extra"),
    [
        (
            "Accounts",
            {"Account_Name": "A", "Employees": "many"},
            "Employees",
            {"expected_data_type": "integer"},
        ),
        (
            "Accounts",
            {"Account_Name": "A", "Annual_Revenue": "lots"},
            "Annual_Revenue",
            {"expected_data_type": "double"},
        ),
        ("Accounts", {"Account_Name": "A", "Phone": {"n": 1}}, "Phone", {"expected_data_type": "phone"}),
        ("Accounts", {"Account_Name": "A" * 256}, "Account_Name", {"maximum_length": 255}),
        (
            "Accounts",
            {"Account_Name": "A", "Owner": {"id": "1"}},
            "Owner",
            {"expected_data_type": "ownerlookup"},
        ),
        (
            "Accounts",
            {"Account_Name": "A", "Parent_Account": {"id": "9"}},
            "Parent_Account",
            {"expected_data_type": "lookup"},
        ),
        ("Vendors", {"Vendor_Name": "V", "Email": "not-an-email"}, "Email", {"expected_data_type": "email"}),
        (
            "Contacts",
            {"Last_Name": "S", "Date_of_Birth": "31/12/1990"},
            "Date_of_Birth",
            {"expected_data_type": "date"},
        ),
        (
            "Contacts",
            {"Last_Name": "S", "Vendor_Name": "Supplies"},
            "Vendor_Name",
            {"expected_data_type": "lookup"},
        ),
    ],
)
def test_insert_checks_field_values(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    module: str,
    record: Record,
    api_name: str,
    extra: dict[str, Any],
) -> None:
    response = write(zoho_http, zoho_auth, module, [record])

    assert response.status_code == 400
    item = response.json()["data"][0]
    assert (item["code"], item["status"]) == ("INVALID_DATA", "error")
    assert item["details"] == {"api_name": api_name, "json_path": f"$.data[0].{api_name}", **extra}
    assert zoho.records(module) == []


def test_duplicate_data_names_the_existing_record(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    existing = zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "1137"})

    response = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme 2", "NetSuite_Id": "1137"}])

    details = response.json()["data"][0]["details"]
    assert (details["api_name"], details["json_path"], details["id"]) == (
        "NetSuite_Id",
        "$.data[0].NetSuite_Id",
        existing,
    )
    assert details["duplicate_record"]["id"] == existing
    assert details["duplicate_record"]["module"]["api_name"] == "Accounts"
    assert details["more_records"] is False


def test_read_only_fields_are_ignored_on_write(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    record = {"id": "1", "Last_Name": "Smith", "Full_Name": "X", "Created_Time": "2000-01-01T00:00:00+00:00"}

    record_id = new_ids(write(zoho_http, zoho_auth, "Contacts", [record]))[0]

    stored = zoho.records("Contacts")[0]
    assert stored["id"] == record_id != "1"
    assert "Full_Name" not in stored and not stored["Created_Time"].startswith("2000")


def test_upsert_answers_insert_and_update_in_input_order(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    existing = zoho.seed("Contacts", {"Last_Name": "Smith", "Email": "s@example.com"})
    records = [
        {"Last_Name": "Jones", "Email": "j@example.com"},
        {"Last_Name": "Smyth", "Email": "s@example.com"},
    ]

    response = write(zoho_http, zoho_auth, "Contacts", records, upsert=True, duplicate_check_fields=["Email"])

    assert response.status_code == 200
    items = response.json()["data"]
    assert [(i["action"], i["duplicate_field"]) for i in items] == [("insert", None), ("update", "Email")]
    assert items[1]["details"]["id"] == existing
    assert sorted(r["Last_Name"] for r in zoho.records("Contacts")) == ["Jones", "Smyth"]


def test_upsert_that_blanks_a_mandatory_field_names_the_record(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    existing = zoho.seed("Vendors", {"Vendor_Name": "Supplies", "NetSuite_Id": "V-1"})

    response = write(
        zoho_http,
        zoho_auth,
        "Vendors",
        [{"NetSuite_Id": "V-1", "Vendor_Name": ""}],
        upsert=True,
        duplicate_check_fields=["NetSuite_Id"],
    )

    # OAS example upsertRecords/400-mandatorynotfoundrecordid.
    assert response.json()["data"][0]["details"] == {
        "api_name": "Vendor_Name",
        "json_path": "$.data[0].Vendor_Name",
        "id": existing,
    }


# Delete ------------------------------------------------------------------------------------------


def test_delete_by_ids_answers_per_id(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    keep, gone = (
        zoho.seed("Accounts", {"Account_Name": "Keep"}),
        zoho.seed("Accounts", {"Account_Name": "Gone"}),
    )

    response = zoho_http.delete(f"/crm/v8/Accounts?ids={gone},4242", headers=zoho_auth)

    assert response.status_code == 207
    assert response.json()["data"] == [
        {"code": "SUCCESS", "details": {"id": gone}, "message": "record deleted", "status": "success"},
        {
            "code": "INVALID_DATA",
            "details": {"id": "4242"},
            "message": "record not deleted",
            "status": "error",
        },
    ]
    assert [r["id"] for r in zoho.records("Accounts")] == [keep]


def test_delete_one_record_by_its_url(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    record_id = zoho.seed("Contacts", {"Last_Name": "Smith"})

    response = zoho_http.delete(f"/crm/v8/Contacts/{record_id}", headers=zoho_auth)

    assert (response.status_code, response.json()["data"][0]["message"]) == (200, "record deleted")
    assert zoho.records("Contacts") == []


@pytest.mark.parametrize(
    ("path", "code", "details"),
    [
        ("/crm/v8/Accounts", "REQUIRED_PARAM_MISSING", {"param_name": "ids"}),
        (
            "/crm/v8/Accounts?ids=" + ",".join(str(n) for n in range(101)),
            "LIMIT_EXCEEDED",
            {"param_name": "ids", "limit": 100},
        ),
        ("/crm/v8/Accounts/4242", "INVALID_DATA", {"resource_path_index": 1}),
    ],
)
def test_delete_refusals(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], path: str, code: str, details: dict[str, Any]
) -> None:
    response = zoho_http.delete(path, headers=zoho_auth)

    assert (response.status_code, response.json()["code"], response.json()["details"]) == (400, code, details)


# Lists (notes §2d; OAS getRecords) ----------------------------------------------------------------


def test_list_requires_fields_unless_configured_off(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho.seed("Accounts", {"Account_Name": "Acme"})

    refused = zoho_http.get("/crm/v8/Accounts", headers=zoho_auth)
    zoho.require_fields_param = False
    allowed = zoho_http.get("/crm/v8/Accounts", headers=zoho_auth)

    assert (refused.status_code, refused.json()) == (
        400,
        {
            "code": "REQUIRED_PARAM_MISSING",
            "details": {"param_name": "fields"},
            "message": "required param is missing",
            "status": "error",
        },
    )
    assert allowed.json()["data"][0]["Account_Name"] == "Acme"


@pytest.mark.parametrize(
    ("query", "code", "details"),
    [
        (
            "fields=" + ",".join(f"F{n}" for n in range(51)),
            "LIMIT_EXCEEDED",
            {"param_name": "fields", "limit": 50},
        ),
        (
            "fields=Phone&ids=" + ",".join(str(n) for n in range(101)),
            "LIMIT_EXCEEDED",
            {"param_name": "ids", "limit": 100},
        ),
        ("fields=Phone&page=first", "INVALID_DATA", {"param_name": "page"}),
        (
            "fields=Phone&sort_by=Phone",
            "INVALID_DATA",
            {"param_name": "sort_by", "supported_values": ["id", "Created_Time", "Modified_Time"]},
        ),
        (
            "fields=Phone&sort_order=up",
            "INVALID_DATA",
            {"param_name": "sort_order", "supported_values": ["asc", "desc"]},
        ),
    ],
)
def test_list_refuses_bad_parameters(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], query: str, code: str, details: dict[str, Any]
) -> None:
    response = zoho_http.get(f"/crm/v8/Accounts?{query}", headers=zoho_auth)

    assert (response.status_code, response.json()["code"], response.json()["details"]) == (400, code, details)


def test_list_first_page_says_more_records(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    for n in range(3):
        zoho.seed("Accounts", {"Account_Name": f"Company {n}", "Phone": str(n)})

    body = zoho_http.get("/crm/v8/Accounts?fields=Account_Name&page=1&per_page=2", headers=zoho_auth).json()

    assert [set(r) for r in body["data"]] == [{"id", "Account_Name"}] * 2
    assert {k: body["info"][k] for k in ("per_page", "count", "page", "more_records", "sort_by")} == {
        "per_page": 2,
        "count": 2,
        "page": 1,
        "more_records": True,
        "sort_by": "id",
    }


def test_list_sorts_by_modified_time_descending(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    older, newer = (
        zoho.seed("Accounts", {"Account_Name": "Older"}),
        zoho.seed("Accounts", {"Account_Name": "Newer"}),
    )
    clock.advance(5)
    zoho.update_record("Accounts", older, {"Phone": "1"}, notify=False)

    body = zoho_http.get(
        "/crm/v8/Accounts?fields=Account_Name&sort_by=Modified_Time&sort_order=desc", headers=zoho_auth
    ).json()

    assert [r["id"] for r in body["data"]] == [older, newer]
    assert (body["info"]["sort_by"], body["info"]["sort_order"]) == ("Modified_Time", "desc")


def test_list_with_if_modified_since_returns_changes_or_304(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    zoho.seed("Accounts", {"Account_Name": "Old"})
    clock.advance(10)
    since = {**zoho_auth, "If-Modified-Since": zoho.records("Accounts")[0]["Modified_Time"]}
    unchanged = zoho_http.get("/crm/v8/Accounts?fields=Account_Name", headers=since)
    clock.advance(10)
    fresh = zoho.seed("Accounts", {"Account_Name": "New"})

    changed = zoho_http.get("/crm/v8/Accounts?fields=Account_Name", headers=since)

    assert (unchanged.status_code, unchanged.content) == (304, b"")
    assert [r["id"] for r in changed.json()["data"]] == [fresh]


# Metadata the official SDK reads ----------------------------------------------------------------


def test_field_metadata_marks_mandatory_lookup_and_unique_fields(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    fields = {
        f["api_name"]: f
        for f in zoho_http.get("/crm/v8/settings/fields?module=Contacts", headers=zoho_auth).json()["fields"]
    }

    assert fields["Last_Name"]["system_mandatory"] is True and fields["Email"]["data_type"] == "email"
    assert fields["Account_Name"]["lookup"]["module"]["api_name"] == "Accounts"
    assert fields["NetSuite_Id"]["unique"] and fields["NetSuite_Id"]["custom_field"] is True


@pytest.mark.parametrize(
    ("query", "code"), [("", "REQUIRED_PARAM_MISSING"), ("?module=Spaceships", "INVALID_MODULE")]
)
def test_field_metadata_refusals(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], query: str, code: str
) -> None:
    response = zoho_http.get(f"/crm/v8/settings/fields{query}", headers=zoho_auth)

    assert (response.status_code, response.json()["code"]) == (400, code)


def test_modules_users_and_org_describe_the_emulated_org(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    modules = zoho_http.get("/crm/v8/settings/modules", headers=zoho_auth).json()["modules"]
    users = zoho_http.get("/crm/v8/users?type=CurrentUser", headers=zoho_auth).json()["users"]
    org = zoho_http.get("/crm/v8/org", headers=zoho_auth).json()["org"]

    assert [(m["api_name"], m["api_supported"]) for m in modules] == [
        ("Accounts", True),
        ("Vendors", True),
        ("Contacts", True),
    ]
    assert users[0]["email"] and org[0]["id"] and org[0]["zgid"]


# Routing errors and record hooks -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("PATCH", "/crm/v8/Accounts", 400, "INVALID_REQUEST_METHOD"),
        ("GET", "/crm/v8/Accounts/1/notes/2", 404, "INVALID_URL_PATTERN"),
        ("GET", "/crm/v8/settings/layouts", 404, "INVALID_URL_PATTERN"),
    ],
)
def test_unknown_routes_answer_in_zoho_shape(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], method: str, path: str, status: int, code: str
) -> None:
    response = zoho_http.request(method, path, headers=zoho_auth)

    assert (response.status_code, response.json()["code"]) == (status, code)


def test_record_hooks_edit_and_delete_like_a_crm_user(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    record_id = zoho.seed("Accounts", {"Account_Name": "Acme"})

    edited = zoho_http.patch(f"/_emulator/records/Accounts/{record_id}", json={"Phone": "5"})
    phone = zoho.records("Accounts")[0]["Phone"]
    deleted = zoho_http.delete(f"/_emulator/records/Accounts/{record_id}")

    assert (edited.status_code, phone, deleted.status_code) == (200, "5", 200)
    assert zoho.records("Accounts") == []
    assert zoho_http.delete(f"/_emulator/records/Accounts/{record_id}").status_code == 404
    assert zoho_http.patch("/_emulator/records/Spaceships/1", json={}).status_code == 404
