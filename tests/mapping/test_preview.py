"""preview: what the mapping page shows for one record, field by field, without raising."""

from __future__ import annotations

from typing import Any

from runner.flows.customer_account import DEFAULT_MAPPING
from runner.mapping import FieldNote, preview

LOOKUPS = {"gl_account_charge": {"4000": "C-100"}}


def notes_by_target(notes: list[FieldNote]) -> dict[str, FieldNote]:
    return {note.target: note for note in notes}


def test_preview_explains_where_each_value_came_from() -> None:
    spec = {
        "fields": [
            {"target": "name", "source": ["companyName", "entityId"], "transform": "trim"},
            {"target": "billCycleDay", "value": 1},
            {"target": "firstName", "source": "firstName", "default": "Accounts"},
            {"target": "phone", "source": "phone"},
            {
                "target": "code",
                "source": "account",
                "transform": {"name": "lookup", "table": "gl_account_charge"},
            },
        ]
    }

    shown = preview(spec, {"companyName": " Acme ", "account": 4000}, lookups=LOOKUPS)

    assert shown.ok and shown.errors == []
    assert shown.payload == {"name": "Acme", "billCycleDay": 1, "firstName": "Accounts", "code": "C-100"}
    assert [(n.target, n.source, n.value, n.note, n.error) for n in shown.notes] == [
        ("name", "companyName", "Acme", "from companyName", None),
        ("billCycleDay", "constant", 1, "constant", None),
        ("firstName", "default", "Accounts", "default used: source empty", None),
        ("phone", "phone", None, "skipped: empty", None),
        ("code", "account", "C-100", "from account; lookup gl_account_charge: 4000 → C-100", None),
    ]


def test_preview_collects_every_field_error_and_keeps_the_rest() -> None:
    spec = {
        "fields": [
            {"target": "name", "source": "companyName", "required": True},
            {"target": "amount", "source": "total", "transform": {"name": "number"}},
            {
                "target": "status",
                "source": "status",
                "transform": {"name": "value_map", "map": {"A": "Active"}},
            },
            {"target": "email", "source": "email"},
        ]
    }

    shown = preview(spec, {"total": "lots", "status": "Z", "email": "ap@acme.test"})

    assert not shown.ok
    assert shown.payload == {"email": "ap@acme.test"}
    assert shown.errors == [
        "name: required but has no value (source 'companyName' is empty)",
        "amount: 'lots' is not a number",
        "status: 'Z' is not in the value map (known: A)",
    ]
    notes = notes_by_target(shown.notes)
    assert notes["amount"].error == "'lots' is not a number"
    assert (notes["amount"].source, notes["amount"].value) == ("total", "lots")
    assert notes["email"].error is None


def test_preview_does_not_run_rules_the_spec_gets_wrong() -> None:
    spec = {
        "fields": [
            {"target": "name", "source": "companyName"},
            {"target": "currency", "source": "currency", "transform": "titlecase"},
            {"target": "code", "source": "account", "transform": {"name": "lookup", "table": "gl_acount"}},
        ]
    }

    shown = preview(spec, {"companyName": "Acme", "currency": "usd", "account": "4000"}, lookups=LOOKUPS)

    assert shown.payload == {"name": "Acme"}
    assert shown.errors[0].startswith("currency: unknown transform 'titlecase'")
    assert shown.errors[1] == "code: lookup table 'gl_acount' does not exist (known: gl_account_charge)"
    notes = notes_by_target(shown.notes)
    assert notes["currency"].note == "not run: the rule has problems"
    assert notes["currency"].error and notes["currency"].error.startswith("unknown transform")


def test_preview_reports_required_targets_missing_or_empty() -> None:
    shown = preview(
        DEFAULT_MAPPING, {"id": "7", "companyName": "Acme"}, required=["name", "crmId", "accountNumber"]
    )

    assert shown.errors == ["accountNumber: required by this flow but not mapped"]

    spec = {"fields": [{"target": "name", "source": "companyName"}]}
    assert preview(spec, {}, required=["name"]).errors == [
        "name: required by this flow but empty for this record"
    ]


def test_preview_notes_each_element_after_its_list() -> None:
    spec = {
        "fields": [
            {
                "target": "invoiceItems",
                "each": "item.items",
                "fields": [
                    {"target": "chargeAmount", "source": "amount", "transform": {"name": "number"}},
                    {"target": "serviceStartDate", "source": "$.tranDate", "transform": {"name": "date"}},
                ],
            }
        ]
    }
    record: dict[str, Any] = {
        "tranDate": "1/5/2024",
        "item": {"items": [{"amount": "10.5"}, {"amount": "x"}]},
    }

    shown = preview(spec, record)

    assert [note.target for note in shown.notes] == [
        "invoiceItems",
        "invoiceItems[0].chargeAmount",
        "invoiceItems[0].serviceStartDate",
        "invoiceItems[1].chargeAmount",
        "invoiceItems[1].serviceStartDate",
    ]
    notes = notes_by_target(shown.notes)
    assert notes["invoiceItems"].note == "from item.items: 2 items"
    assert notes["invoiceItems[0].serviceStartDate"].note == "from $.tranDate; date: 1/5/2024 → 2024-01-05"
    assert shown.errors == ["invoiceItems[1].chargeAmount: 'x' is not a number"]
    assert shown.payload == {
        "invoiceItems": [
            {"chargeAmount": 10.5, "serviceStartDate": "2024-01-05"},
            {"serviceStartDate": "2024-01-05"},
        ]
    }


def test_preview_of_a_spec_without_fields_only_reports() -> None:
    shown = preview({"rules": []}, {"id": 1})

    assert (shown.payload, shown.notes) == ({}, [])
    assert shown.errors == ["fields: a mapping needs a non-empty list of field rules"]


def test_preview_shows_concat_and_fallback_steps() -> None:
    spec = {
        "fields": [
            {"target": "name", "source": ["first", "last"], "transform": {"name": "concat"}},
            {
                "target": "type",
                "source": "kind",
                "transform": {"name": "value_map", "map": {}, "fallback": "keep"},
            },
        ]
    }

    notes = notes_by_target(preview(spec, {"first": "Ada", "last": "Lovelace", "kind": "Lead"}).notes)

    assert (notes["name"].source, notes["name"].value) == ("first, last", "Ada Lovelace")
    assert notes["name"].note == "from first, last; concat: 2 values"
    assert notes["type"].note == "from kind; value_map: Lead not found, kept"
