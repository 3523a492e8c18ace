"""The invoice flow's default mapping without a network: a NetSuite invoice, as the record API returns it
with its item lines expanded and the Zuora account added by the flow's fetch, becomes the body of
Zuora's POST /v1/invoices (shared/api/zuora.md §4)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from runner.flows import registry
from runner.flows.invoice import DEFAULT_MAPPING, GL_TABLE, NETSUITE_ID_FIELD, InvoiceToInvoice
from runner.mapping import MappingError, apply, validate_spec

ACCOUNT = "8ad09be48db5aa07018db6ad3a4a1b32"
GL = {
    GL_TABLE: {
        "4000": "4000 Services",
        "4010": "Subscription Revenue",
    }
}


def ref(record_type: str, record_id: str, name: str) -> dict[str, Any]:
    href = f"https://1234567.suitetalk.api.netsuite.com/services/rest/record/v1/{record_type}/{record_id}"
    return {"links": [{"rel": "self", "href": href}], "id": record_id, "refName": name}


def snapshot(*lines: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """GET /record/v1/invoice/1001?expandSubResources=true, plus the `zuoraAccount` fetch adds."""
    items = list(lines) or [
        {
            "links": [],
            "item": ref("item", "86", "Consulting Hours"),
            "quantity": 2.0,
            "rate": 150.0,
            "amount": 300.0,
            "description": "May workshop",
            "account": ref("account", "54", "4000 Consulting Income"),
            "revRecStartDate": "2024-05-01",
            "revRecEndDate": "2024-05-31",
            "line": 1,
        },
        {
            "links": [],
            "item": ref("item", "87", "Platform"),
            "quantity": 1.0,
            "rate": 99.5,
            "amount": 99.5,
            "account": ref("account", "55", "4010 Subscription Income"),
            "line": 2,
        },
    ]
    record: dict[str, Any] = {
        "links": [ref("invoice", "1001", "")["links"][0]],
        "id": "1001",
        "tranId": "INV1001",
        "tranDate": "2024-05-01",
        "dueDate": "2024-05-31",
        "memo": "May services",
        "entity": ref("customer", "107", "Acme Ltd"),
        "currency": ref("currency", "1", "USD"),
        "status": {"id": "Open", "refName": "Open"},
        "total": 399.5,
        "item": {"links": [], "items": items},
        "zuoraAccount": {"id": ACCOUNT, "customerId": "107", "via": "link"},
    }
    record.update(fields)
    return record


def test_invoice_flow_is_registered_for_netsuite_invoices() -> None:
    flow = registry()["invoice"]

    assert isinstance(flow, InvoiceToInvoice)
    assert (flow.source_system, flow.target_system, flow.source_record) == ("netsuite", "zuora", "invoice")
    assert flow.source_id({"id": 1001, "eventType": "create"}) == "1001"


def test_default_mapping_is_valid_and_fills_every_required_field() -> None:
    problems = validate_spec(DEFAULT_MAPPING, required=InvoiceToInvoice.required_fields, lookups=GL)

    assert problems == []


def test_default_mapping_builds_the_zuora_invoice_body() -> None:
    payload = apply(DEFAULT_MAPPING, snapshot(), lookups=GL).payload

    assert payload == {
        "accountId": ACCOUNT,
        "invoiceDate": "2024-05-01",
        "dueDate": "2024-05-31",
        "invoiceNumber": "INV1001",
        NETSUITE_ID_FIELD: "1001",
        "comments": "May services",
        "invoiceItems": [
            {
                "amount": 300.0,
                "quantity": 2.0,
                "unitPrice": 150.0,
                "serviceStartDate": "2024-05-01",
                "serviceEndDate": "2024-05-31",
                "chargeName": "Consulting Hours",
                "accountingCode": "4000 Services",
                "description": "May workshop",
            },
            {
                "amount": 99.5,
                "quantity": 1.0,
                "unitPrice": 99.5,
                "serviceStartDate": "2024-05-01",  # no service dates on the line: the invoice date
                "chargeName": "Platform",  # the NetSuite item's name
                "accountingCode": "Subscription Revenue",
            },
        ],
    }


def test_service_dates_are_written_as_zuora_days() -> None:
    line = snapshot()["item"]["items"][0] | {"revRecStartDate": "5/3/2024", "revRecEndDate": "5/30/2024"}

    item = apply(DEFAULT_MAPPING, snapshot(line), lookups=GL).payload["invoiceItems"][0]

    assert (item["serviceStartDate"], item["serviceEndDate"]) == ("2024-05-03", "2024-05-30")


def test_gl_accounts_match_the_lookup_table_whatever_their_case() -> None:
    line = snapshot()["item"]["items"][0]
    line["account"] = ref("account", "54", "4000 consulting income ")

    item = apply(DEFAULT_MAPPING, snapshot(line), lookups=GL).payload["invoiceItems"][0]

    assert item["accountingCode"] == "4000 Services"


def test_an_unmapped_gl_account_names_the_line_field_and_the_account() -> None:
    lines = copy.deepcopy(snapshot()["item"]["items"])
    lines[1]["account"] = ref("account", "77", "4999 Miscellaneous Income")

    with pytest.raises(MappingError) as raised:
        apply(DEFAULT_MAPPING, snapshot(*lines), lookups=GL)

    assert raised.value.field == "invoiceItems[1].accountingCode"
    assert "'4999'" in str(raised.value) and GL_TABLE in str(raised.value)


def test_a_missing_gl_table_is_a_mapping_error_not_a_crash() -> None:
    with pytest.raises(MappingError, match=GL_TABLE):
        apply(DEFAULT_MAPPING, snapshot(), lookups={})


BAD_SNAPSHOTS: list[tuple[str, dict[str, Any], str]] = [
    ("no lines", {"item": {"links": [], "items": []}}, "invoiceItems"),
    ("no account", {"zuoraAccount": None}, "accountId"),
    ("no invoice date", {"tranDate": None}, "invoiceDate"),
    ("unreadable date", {"tranDate": "the first of May"}, "invoiceDate"),
]


@pytest.mark.parametrize(("case", "changes", "field"), BAD_SNAPSHOTS, ids=[b[0] for b in BAD_SNAPSHOTS])
def test_invoices_the_mapping_cannot_post_fail_naming_the_field(
    case: str, changes: dict[str, Any], field: str
) -> None:
    with pytest.raises(MappingError) as raised:
        apply(DEFAULT_MAPPING, snapshot(**changes), lookups=GL)

    assert raised.value.field == field


def test_a_line_amount_netsuite_sent_as_text_becomes_a_number() -> None:
    line = snapshot()["item"]["items"][1] | {"amount": "99.50"}

    item = apply(DEFAULT_MAPPING, snapshot(line), lookups=GL).payload["invoiceItems"][0]

    assert item["amount"] == 99.5 and isinstance(item["amount"], float)
