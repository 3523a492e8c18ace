"""Contract tests for invoices on the NetSuite record API: create, read with the item sublist, update."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from connectors.netsuite.emulator import NetSuiteEmulator
from tests.emulators.conftest import Clock, Receiver
from tests.emulators.netsuite_fixtures import (
    RECORD,
    error_code,
    error_detail,
    invoice_body,
    seed_customer,
    seed_invoice,
)
from tests.support.live import wait_for

LINES = (
    {
        "item": {"id": "86"},
        "quantity": 2,
        "rate": 150.0,
        "description": "Consulting",
        "custcol_zuora_charge": "C-1",
    },
    {"item": {"id": "87", "refName": "Support"}, "amount": 99.5},
)


@pytest.fixture
def customer(netsuite: NetSuiteEmulator) -> str:
    return seed_customer(netsuite, "Acme Ltd", externalId="ZUORA-A-1")


def create_invoice(http: httpx2.Client, auth: dict[str, str], body: dict[str, Any]) -> str:
    response = http.post(f"{RECORD}/invoice", json=body, headers=auth)
    assert response.status_code == 204, response.text
    return response.headers["location"].rsplit("/", 1)[1]


def with_customer(value: Any, customer: str) -> Any:
    """`value` with the placeholder "CUSTOMER" replaced by the seeded customer's id."""
    if isinstance(value, dict):
        return {k: with_customer(v, customer) for k, v in value.items()}
    if isinstance(value, list):
        return [with_customer(v, customer) for v in value]
    return customer if value == "CUSTOMER" else value


def stored_lines(netsuite: NetSuiteEmulator, index: int = 0) -> list[dict[str, Any]]:
    return list(netsuite.records("invoice")[index]["item"]["items"])


def test_invoice_create_answers_204_with_location_and_stores_numbered_lines(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    ns_url: str,
    customer: str,
    clock: Clock,
) -> None:
    clock.now = 1_714_557_600.0  # 2024-05-01T10:00:00Z
    body = invoice_body(customer, *LINES, tranId="ZINV-7", dueDate="2024-05-31", externalId="ZUORA-INV-7")

    response = ns_http.post(f"{RECORD}/invoice", json=body, headers=ns_auth)

    assert (response.status_code, response.content) == (204, b"")
    record_id = response.headers["location"].rsplit("/", 1)[1]
    assert response.headers["location"] == f"{ns_url}{RECORD}/invoice/{record_id}"
    stored = netsuite.records("invoice")[0]
    assert (stored["id"], stored["tranId"], stored["tranDate"], stored["dueDate"]) == (
        record_id,
        "ZINV-7",
        "2024-05-01",
        "2024-05-31",
    )
    assert (stored["entity"], stored["currency"], stored["status"], stored["total"]) == (
        {"id": customer},
        {"id": "1"},
        "A",
        399.5,
    )
    assert [
        (x["line"], x["item"]["id"], x["quantity"], x["rate"], x["amount"]) for x in stored["item"]["items"]
    ] == [
        (1, "86", 2.0, 150.0, 300.0),
        (2, "87", 1.0, 99.5, 99.5),
    ]


def test_invoice_tran_id_defaults_from_the_internal_id(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer))

    assert netsuite.records("invoice")[0]["tranId"] == f"INV{record_id}"


def test_invoice_get_shows_the_item_sublist_as_links_only(
    ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str, customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES, tranDate="2024-05-01"))

    response = ns_http.get(f"{RECORD}/invoice/{record_id}", headers=ns_auth)

    assert response.headers["content-type"] == "application/vnd.oracle.resource+json; type=singular"
    body = response.json()
    href = f"{ns_url}{RECORD}/invoice/{record_id}"
    assert body["links"] == [{"rel": "self", "href": href}]
    assert body["item"] == {"links": [{"rel": "self", "href": f"{href}/item"}]}
    assert body["entity"] == {
        "links": [{"rel": "self", "href": f"{ns_url}{RECORD}/customer/{customer}"}],
        "id": customer,
        "refName": "Acme Ltd",
    }
    assert (body["currency"]["refName"], body["status"], body["total"]) == (
        "USD",
        {"id": "Open", "refName": "Open"},
        399.5,
    )
    assert (body["tranDate"], body["tranId"]) == ("2024-05-01", f"INV{record_id}")
    assert body["createdDate"].endswith("Z") and body["lastModifiedDate"] == body["createdDate"]


def test_invoice_get_expands_item_lines_on_request(
    ns_http: httpx2.Client, ns_auth: dict[str, str], ns_url: str, customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES))

    body = ns_http.get(f"{RECORD}/invoice/{record_id}?expandSubResources=true", headers=ns_auth).json()

    assert body["item"]["links"] == [{"rel": "self", "href": f"{ns_url}{RECORD}/invoice/{record_id}/item"}]
    assert body["item"]["items"] == [
        {
            "links": [],
            "item": {
                "links": [{"rel": "self", "href": f"{ns_url}{RECORD}/item/86"}],
                "id": "86",
                "refName": "86",
            },
            "quantity": 2.0,
            "rate": 150.0,
            "description": "Consulting",
            "custcol_zuora_charge": "C-1",
            "line": 1,
            "amount": 300.0,
        },
        {
            "links": [],
            "item": {
                "links": [{"rel": "self", "href": f"{ns_url}{RECORD}/item/87"}],
                "id": "87",
                "refName": "Support",
            },
            "amount": 99.5,
            "line": 2,
            "quantity": 1.0,
            "rate": 99.5,
        },
    ]


def test_invoice_get_by_external_id(ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, externalId="ZUORA-INV-9"))

    assert ns_http.get(f"{RECORD}/invoice/eid:ZUORA-INV-9", headers=ns_auth).json()["id"] == record_id


def test_invoice_patch_updates_numbered_lines_and_adds_the_others(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str, clock: Clock
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES))
    clock.advance(60)
    patch = {
        "memo": "Q2",
        "item": {"items": [{"line": 1, "quantity": 3}, {"item": {"id": "90"}, "amount": 5}]},
    }

    response = ns_http.patch(f"{RECORD}/invoice/{record_id}", json=patch, headers=ns_auth)

    assert response.status_code == 204
    stored = netsuite.records("invoice")[0]
    assert [(x["line"], x["item"]["id"], x["amount"]) for x in stored["item"]["items"]] == [
        (1, "86", 450.0),
        (2, "87", 99.5),
        (3, "90", 5.0),
    ]
    assert (stored["memo"], stored["total"]) == ("Q2", 554.5)
    assert stored["lastModifiedDate"] > stored["createdDate"]


def test_invoice_patch_with_replace_item_replaces_the_lines(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES))
    patch = {"item": {"items": [{"item": {"id": "91"}, "quantity": 4, "rate": 2.5}]}}

    response = ns_http.patch(f"{RECORD}/invoice/{record_id}?replace=item", json=patch, headers=ns_auth)

    assert response.status_code == 204
    assert [(x["line"], x["item"]["id"], x["amount"]) for x in stored_lines(netsuite)] == [(1, "91", 10.0)]


def test_invoice_patch_without_item_keeps_the_lines(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES))

    ns_http.patch(f"{RECORD}/invoice/{record_id}", json={"dueDate": "2024-06-30"}, headers=ns_auth)

    assert len(stored_lines(netsuite)) == 2 and netsuite.records("invoice")[0]["dueDate"] == "2024-06-30"


def test_invoice_upsert_by_external_id_creates_then_updates(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    url = f"{RECORD}/invoice/eid:ZUORA-INV-1"
    first = ns_http.put(url, json=invoice_body(customer, tranDate="2024-05-01"), headers=ns_auth)
    second = ns_http.put(
        url,
        json={"item": {"items": [{"item": {"id": "86"}, "amount": 75}]}},
        headers=ns_auth,
        params={"replace": "item"},
    )

    assert first.status_code == second.status_code == 204
    assert first.headers["location"] == second.headers["location"]
    [stored] = netsuite.records("invoice")
    assert (stored["externalId"], stored["tranDate"], stored["total"]) == ("ZUORA-INV-1", "2024-05-01", 75.0)


def test_invoice_status_is_set_by_netsuite_not_the_caller(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    create_invoice(ns_http, ns_auth, invoice_body(customer, status={"id": "B"}))

    assert netsuite.records("invoice")[0]["status"] == "A"


BAD_INVOICES: list[tuple[str, dict[str, Any], str, str]] = [
    ("no entity", {"item": {"items": [{"item": {"id": "86"}, "amount": 1}]}}, "USER_ERROR", "entity"),
    ("unknown customer", invoice_body("424242"), "USER_ERROR", "entity"),
    ("no lines", {"entity": {"id": "CUSTOMER"}, "item": {"items": []}}, "USER_ERROR", "item"),
    ("no item sublist", {"entity": {"id": "CUSTOMER"}}, "USER_ERROR", "item"),
    ("line without item", invoice_body("CUSTOMER", {"amount": 5}), "USER_ERROR", "item.items[0].item"),
    (
        "line without amount or rate",
        invoice_body("CUSTOMER", {"item": {"id": "86"}}),
        "USER_ERROR",
        "item.items[0].amount",
    ),
    (
        "quantity as text",
        invoice_body("CUSTOMER", {"item": {"id": "86"}, "rate": 1, "quantity": "two"}),
        "INVALID_CONTENT",
        "item.items[0].quantity",
    ),
    ("line not an object", invoice_body("CUSTOMER", "86"), "INVALID_CONTENT", "item.items[0]"),  # type: ignore[arg-type]
    ("item not a sublist", {"entity": {"id": "CUSTOMER"}, "item": [1]}, "INVALID_CONTENT", "item"),
    ("tranDate not ISO", invoice_body("CUSTOMER", tranDate="05/01/2024"), "INVALID_CONTENT", "tranDate"),
]


@pytest.mark.parametrize(("case", "body", "code", "path"), BAD_INVOICES, ids=[b[0] for b in BAD_INVOICES])
def test_invoice_create_refuses_invalid_bodies_and_stores_nothing(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    customer: str,
    case: str,
    body: dict[str, Any],
    code: str,
    path: str,
) -> None:
    response = ns_http.post(f"{RECORD}/invoice", json=with_customer(body, customer), headers=ns_auth)

    assert (response.status_code, response.json()["status"], response.json()["title"]) == (
        400,
        400,
        "Bad Request",
    )
    assert (error_code(response), error_detail(response)["o:errorPath"]) == (code, path)
    assert netsuite.records("invoice") == []


def test_invoice_patch_refused_changes_nothing(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer, *LINES, memo="before"))
    before = netsuite.records("invoice")

    patch = {"memo": "after", "item": {"items": [{"item": {"id": "86"}}]}}
    response = ns_http.patch(f"{RECORD}/invoice/{record_id}", json=patch, headers=ns_auth)

    # The path points into the request body, not into the merged sublist.
    assert (response.status_code, error_detail(response)["o:errorPath"]) == (400, "item.items[0].amount")
    assert netsuite.records("invoice") == before


def test_seed_invoice_with_status_and_dates(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], customer: str
) -> None:
    record_id = seed_invoice(
        netsuite,
        customer,
        *LINES,
        status="Paid In Full",
        lastModifiedDate="2024-05-02T10:00:00Z",
        tranDate="2024-05-01",
    )

    body = ns_http.get(f"{RECORD}/invoice/{record_id}", headers=ns_auth).json()

    assert (body["status"]["refName"], body["lastModifiedDate"], body["total"]) == (
        "Paid In Full",
        "2024-05-02T10:00:00Z",
        399.5,
    )
    assert netsuite.records("invoice")[0]["status"] == "B"


@pytest.mark.parametrize(
    "body",
    [invoice_body("1000", {"item": {"id": "86"}}), invoice_body("1000", status="Lost")],
    ids=["line without amount", "unknown status"],
)
def test_seed_hook_refuses_a_malformed_invoice(ns_http: httpx2.Client, body: dict[str, Any]) -> None:
    response = ns_http.post("/_emulator/seed/invoice", json=body)

    assert response.status_code == 400
    assert ns_http.get("/_emulator/records/invoice").json() == []


def test_invoice_writes_notify_the_user_event_script(
    netsuite: NetSuiteEmulator,
    ns_http: httpx2.Client,
    ns_auth: dict[str, str],
    customer: str,
    receiver: tuple[Receiver, str],
) -> None:
    found, url = receiver
    netsuite.add_webhook(url, "s3cret")

    record_id = create_invoice(ns_http, ns_auth, invoice_body(customer))

    wait_for(lambda: found.received, what="the invoice webhook")
    assert {k: found.received[0]["body"][k] for k in ("recordType", "id", "eventType")} == {
        "recordType": "invoice",
        "id": record_id,
        "eventType": "create",
    }
