"""Which mappings a SuiteQL bulk read can serve, the query it sends, and the record it rebuilds."""

from __future__ import annotations

from typing import Any

import pytest

from runner.flows import suiteql_read
from runner.flows.customer_account import DEFAULT_MAPPING
from runner.mapping import apply


def test_plan_serves_the_default_customer_mapping_with_one_in_query() -> None:
    plan = suiteql_read.plan(DEFAULT_MAPPING, "customer")

    assert plan is not None
    assert plan.query(["12", "3"]) == (
        "SELECT id, companyname, BUILTIN.DF(currency) AS currency_refname, email, entityid, firstname,"
        " lastname, phone FROM customer WHERE id IN (12, 3)"
    )


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("creditLimit", "a number reads back as text"),
        ("dateCreated", "dates come in the user's preferred format"),
        ("custentity_region", "custom fields are not declared"),
        ("addressBook.items.0.addressBookAddress.city", "a sublist"),
        ("currency.symbol", "a reference gives only its id and display name"),
        ("companyName.first", "a text field has no parts"),
        ("$.companyName", "a whole-record path"),
    ],
)
def test_plan_leaves_to_the_record_api_any_field_suiteql_does_not_give_as_is(source: str, why: str) -> None:
    spec = {"fields": [*DEFAULT_MAPPING["fields"], {"target": "x", "source": source}]}

    assert suiteql_read.plan(spec, "customer") is None, why


def test_plan_refuses_lines_and_unknown_record_types() -> None:
    lines = {
        "fields": [{"target": "items", "each": "item.items", "fields": [{"target": "a", "source": "amount"}]}]
    }

    assert suiteql_read.plan(lines, "customer") is None
    assert suiteql_read.plan(DEFAULT_MAPPING, "invoice") is None


def test_plan_matches_field_names_in_any_case_as_the_mapping_does() -> None:
    spec = {
        "fields": [{"target": "name", "source": "COMPANYNAME"}, {"target": "c", "source": "Currency.RefName"}]
    }

    plan = suiteql_read.plan(spec, "customer")

    assert plan is not None
    assert plan.columns == ["companyname", "currency_refname", "id"]


def test_record_from_a_row_maps_as_the_record_api_record_does() -> None:
    plan = suiteql_read.plan(DEFAULT_MAPPING, "customer")
    assert plan is not None
    rest: dict[str, Any] = {
        "id": "12",
        "companyName": "Acme Ltd",
        "entityId": "ACME",
        "email": "ap@acme.test",
        "currency": {"id": "2", "refName": "EUR"},
        "links": [{"rel": "self", "href": "https://example/customer/12"}],
    }
    row = {"id": "12", "companyname": "Acme Ltd", "entityid": "ACME", "email": "ap@acme.test"}
    row["currency_refname"] = "EUR"

    record = plan.record(row)

    assert record[suiteql_read.SNAPSHOT_KEY] == plan.columns
    assert apply(DEFAULT_MAPPING, record).payload == apply(DEFAULT_MAPPING, rest).payload


def test_record_turns_booleans_and_reference_ids_back_into_record_api_values() -> None:
    spec = {"fields": [{"target": "a", "source": "isInactive"}, {"target": "b", "source": "subsidiary.id"}]}
    plan = suiteql_read.plan(spec, "vendor")
    assert plan is not None

    record = plan.record({"id": "7", "isinactive": "T", "subsidiary": "1"})

    assert record["isInactive"] is True
    assert record["subsidiary"] == {"id": "1"}


def test_unread_is_nothing_for_a_record_api_snapshot_and_the_missing_columns_for_a_suiteql_one() -> None:
    plan = suiteql_read.plan(DEFAULT_MAPPING, "customer")
    assert plan is not None
    partial = plan.record({"id": "12", "companyname": "Acme Ltd"})
    reads_more = {"fields": [*DEFAULT_MAPPING["fields"], {"target": "fax", "source": "fax"}]}
    needs_rest = {"fields": [*DEFAULT_MAPPING["fields"], {"target": "x", "source": "creditLimit"}]}

    assert suiteql_read.unread(reads_more, "customer", {"id": "12", "companyName": "Acme Ltd"}) == []
    assert suiteql_read.unread(DEFAULT_MAPPING, "customer", partial) == []
    assert suiteql_read.unread(reads_more, "customer", partial) == ["fax"]
    assert suiteql_read.unread(needs_rest, "customer", partial) == ["creditLimit"]


def test_query_takes_internal_ids_only_and_at_most_a_thousand() -> None:
    plan = suiteql_read.plan(DEFAULT_MAPPING, "customer")
    assert plan is not None

    with pytest.raises(ValueError):
        plan.query(["12; DROP TABLE customer"])
    with pytest.raises(ValueError):
        plan.query([str(i) for i in range(1001)])
