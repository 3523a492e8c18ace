"""The comparison rules of reconciliation, without any system: which renderings of one value are equal,
which differences are real, when a record must be fetched, and how a rewritten crmId still pairs."""

from __future__ import annotations

from typing import Any, cast

import pytest

from runner.flows import FlowContext, registry
from runner.flows.customer_account import DEFAULT_MAPPING
from runner.flows.zoho_records import ACCOUNT_MAPPING
from runner.reconcile.checks import Sides, match_keys, needs_fetch, record_from_row, suiteql_columns
from runner.reconcile.compare import differences, normal


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (None, ""),
        ("  Acme   Ltd ", "Acme Ltd"),
        (1, "1.00"),
        (99.5, "99.50"),
        (True, "T"),
        (False, "false"),
        ({"id": "42", "name": "Acme"}, "42"),
        ("2024-05-01", "2024-05-01T00:00:00Z"),
    ],
)
def test_normal_makes_two_renderings_of_one_value_equal(ours: Any, theirs: Any) -> None:
    assert normal(ours) == normal(theirs)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("Acme", "ACME"), ("555-0101", "555-9999"), (1, 1.01), (True, False), ("x", None)],
)
def test_normal_keeps_real_differences(ours: Any, theirs: Any) -> None:
    assert normal(ours) != normal(theirs)


def test_differences_name_each_field_that_differs_with_both_values_as_they_are() -> None:
    expected = {"name": "Acme", "billToContact.workPhone": "555-0101", "crmId": "7"}
    actual = {"name": "Acme ", "billToContact.workPhone": "555-9999", "crmId": 7}

    assert differences(expected, actual) == [
        {"field": "billToContact.workPhone", "netsuite": "555-0101", "target": "555-9999"}
    ]


def test_a_mapping_of_top_level_fields_is_compared_from_suiteql_rows_and_addresses_need_a_fetch() -> None:
    assert not needs_fetch(DEFAULT_MAPPING)
    assert needs_fetch(ACCOUNT_MAPPING)  # the billing address lives in the address book sublist
    assert suiteql_columns(DEFAULT_MAPPING) == [
        "companyname",
        "email",
        "entityid",
        "firstname",
        "lastname",
        "phone",
    ]
    record = record_from_row(ACCOUNT_MAPPING, {"id": "7", "companyname": "Acme", "isinactive": "F"})
    assert record["companyName"] == "Acme" and record["isInactive"] is False


def test_match_keys_follow_a_mapping_that_writes_another_field_as_crm_id() -> None:
    spec = {"fields": [*(r for r in DEFAULT_MAPPING["fields"] if r["target"] != "crmId")]}
    spec["fields"].append({"target": "crmId", "source": "entityId", "required": True})
    context = cast(FlowContext, type("Ctx", (), {"mapping": spec, "lookups": {}})())
    sides = Sides(context, registry()["customer_account"])
    rows = [{"id": "7", "companyname": "Acme", "entityid": "CUST-7"}]

    assert match_keys(sides, rows, "crmId", fetch=False) == {"7": "CUST-7"}
    plain = Sides(cast(FlowContext, type("Ctx", (), {"mapping": None, "lookups": {}})()), sides.flow)
    assert match_keys(plain, rows, "crmId", fetch=False) == {}  # the id itself: nothing to map
