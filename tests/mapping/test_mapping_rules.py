"""The mapping engine's rules: each transform, list mapping with `each`, flows_back, spec validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from runner.flows.customer_account import DEFAULT_MAPPING
from runner.mapping import TRANSFORMS, Mapped, MappingError, apply, lookup, validate_spec
from storage.lookups import DEFAULT_LOOKUPS

LOOKUPS = {
    "gl_account_charge": {"4000": "C-100", "4100": "C-200"},
    "gl_rows": {"4000": {"code": "C-100", "name": "Subscriptions"}},
}


def one(rule: dict[str, Any], record: dict[str, Any], **kwargs: Any) -> Any:
    """The value `rule` gives `record` (None when the field is left out)."""
    return apply({"fields": [{"target": "out", **rule}]}, record, **kwargs).payload.get("out")


def fails(rule: dict[str, Any], record: dict[str, Any], **kwargs: Any) -> MappingError:
    with pytest.raises(MappingError) as caught:
        apply({"fields": [{"target": "out", **rule}]}, record, **kwargs)
    return caught.value


def test_apply_maps_the_customer_default_as_before() -> None:
    record = {"id": 7, "companyName": " Acme ", "currency": {"refName": "EUR"}, "email": "ap@acme.test"}

    mapped = apply(DEFAULT_MAPPING, record)

    assert mapped.payload == {
        "name": "Acme",
        "crmId": 7,
        "currency": "EUR",
        "billCycleDay": 1,
        "billToContact": {"firstName": "Accounts", "lastName": " Acme ", "workEmail": "ap@acme.test"},
    }
    assert mapped.create_only == {"currency", "billCycleDay"}
    assert mapped.flows_back == frozenset()
    assert "currency" not in mapped.for_update() and mapped.for_update()["name"] == "Acme"


def test_apply_takes_the_first_non_empty_source() -> None:
    assert one({"source": ["a", "b", "c"]}, {"a": " ", "b": None, "c": "third"}) == "third"


def test_apply_reads_paths_case_insensitively_and_into_lists() -> None:
    record = {"isInactive": True, "addressbook": {"items": [{"addr1": "1 Main St"}]}}

    assert lookup(record, "isinactive") is True
    assert lookup(record, "addressbook.items.0.addr1") == "1 Main St"
    assert lookup(record, "addressbook.items.5.addr1") is None


def test_apply_names_the_required_field_that_stays_empty() -> None:
    error = fails({"source": "lastName", "required": True}, {"lastName": "  "})

    assert error.field == "out"
    assert str(error) == "out: required but has no value (source 'lastName' is empty)"


@pytest.mark.parametrize(
    ("transform", "given", "expected"),
    [
        ("trim", "  Acme  ", "Acme"),
        ("upper", "usd", "USD"),
        ("lower", "AP@ACME.TEST", "ap@acme.test"),
        ({"name": "trim"}, " x ", "x"),
        (["trim", {"name": "upper"}], " eur ", "EUR"),
        ("upper", 42, 42),
        ({"name": "number"}, "12.50", 12.5),
        ({"name": "number"}, " -3 ", -3),
        ({"name": "number"}, "1e3", 1000.0),
        ({"name": "number"}, 99.95, 99.95),
        ({"name": "number"}, 7, 7),
        ({"name": "date"}, "2024-01-05", "2024-01-05"),
        ({"name": "date"}, "2024-01-05T23:30:00Z", "2024-01-05"),
        ({"name": "date"}, "2024-01-05T10:30:00.000+02:00", "2024-01-05"),
        ({"name": "date"}, "1/5/2024", "2024-01-05"),
        ({"name": "date"}, "12/31/2023", "2023-12-31"),
        ({"name": "date"}, "2024-01-05 10:30:00", "2024-01-05"),
        ({"name": "date", "format": "%d/%m/%Y %H:%M"}, "1/5/2024 10:30 pm", "05/01/2024 22:30"),
        ({"name": "date", "format": "%Y-%m-%dT%H:%M:%S"}, "2024-01-05 10:30:00", "2024-01-05T10:30:00"),
        ({"name": "value_map", "map": {"1": "Net 30"}}, 1, "Net 30"),
        ({"name": "value_map", "map": {"US Dollar": "USD"}}, "us dollar ", "USD"),
        ({"name": "value_map", "map": {"true": "Active"}}, True, "Active"),
        ({"name": "value_map", "map": {"a": "b"}, "fallback": "keep"}, "zz", "zz"),
        ({"name": "value_map", "map": {"a": "b"}, "fallback": "Other"}, "zz", "Other"),
        ({"name": "lookup", "table": "gl_account_charge"}, "4000", "C-100"),
        ({"name": "lookup", "table": "gl_account_charge"}, 4100, "C-200"),
        ({"name": "lookup", "table": "gl_account_charge"}, 4000.0, "C-100"),
        ({"name": "lookup", "table": "gl_rows", "column": "code"}, "4000", "C-100"),
        ({"name": "lookup", "table": "gl_account_charge", "fallback": "C-000"}, "9999", "C-000"),
        ({"name": "default", "value": "Accounts"}, None, "Accounts"),
        ({"name": "default", "value": "Accounts"}, "Sales", "Sales"),
        (["trim", {"name": "default", "value": "x"}], "   ", "x"),
        ({"name": "value_map", "map": {"a": "A", "b": "B"}}, ["a", "b"], ["A", "B"]),
    ],
)
def test_transform_turns_the_source_into_the_target(transform: Any, given: Any, expected: Any) -> None:
    assert one({"source": "in", "transform": transform}, {"in": given}, lookups=LOOKUPS) == expected


@pytest.mark.parametrize(
    ("transform", "given", "message"),
    [
        ({"name": "date"}, "next tuesday", "out: cannot read 'next tuesday' as a date"),
        ({"name": "date"}, "2024-13-45", "out: cannot read '2024-13-45' as a date"),
        ({"name": "date"}, 20240105, "out: cannot read 20240105 as a date"),
        ({"name": "number"}, "12,50", "out: '12,50' is not a number"),
        ({"name": "number"}, "nan", "out: 'nan' is not a number"),
        ({"name": "number"}, True, "out: true is not a number"),
        ({"name": "number"}, {"amount": 1}, 'out: {"amount": 1} is not a number'),
        ({"name": "value_map", "map": {"a": "b"}}, "zz", "out: 'zz' is not in the value map (known: a)"),
        (
            {"name": "lookup", "table": "gl_account_charge"},
            "9999",
            "out: '9999' is not in lookup table 'gl_account_charge' (known: 4000, 4100)",
        ),
        (
            {"name": "lookup", "table": "gl_rows", "column": "code"},
            "4100",
            "out: '4100' is not in lookup table 'gl_rows' (column 'code')",
        ),
        (
            {"name": "lookup", "table": "tax_codes"},
            "4000",
            "out: lookup table 'tax_codes' does not exist (known: gl_account_charge, gl_rows)",
        ),
        ({"name": "concat"}, [{"a": 1}], "out: concat joins text and numbers"),
    ],
)
def test_transform_failure_names_the_field_and_the_value(transform: Any, given: Any, message: str) -> None:
    assert str(fails({"source": "in", "transform": transform}, {"in": given}, lookups=LOOKUPS)).startswith(
        message
    )


def test_lookup_without_tables_names_the_missing_table() -> None:
    error = fails(
        {"source": "in", "transform": {"name": "lookup", "table": "gl_account_charge"}}, {"in": "4000"}
    )

    assert str(error) == "out: lookup table 'gl_account_charge' does not exist (known: none)"


def test_lookup_step_reads_the_default_tables() -> None:
    rule = {"source": "currency.refName", "transform": {"name": "lookup", "table": "currency_code"}}

    assert one(rule, {"currency": {"refName": "British pound"}}, lookups=DEFAULT_LOOKUPS) == "GBP"


def test_concat_joins_every_non_empty_source() -> None:
    rule = {
        "source": ["firstName", "middleName", "lastName"],
        "transform": {"name": "concat", "separator": " "},
    }

    assert one(rule, {"firstName": "Ada", "middleName": "", "lastName": "Lovelace"}) == "Ada Lovelace"
    assert one(rule, {"lastName": "Lovelace"}) == "Lovelace"
    assert one(rule, {}) is None


def test_concat_steps_before_it_apply_to_each_value() -> None:
    rule = {"source": ["city", "zip"], "transform": ["trim", {"name": "concat", "separator": ", "}, "upper"]}

    assert one(rule, {"city": " Paris ", "zip": 75001}) == "PARIS, 75001"


def test_concat_joins_a_list_valued_source() -> None:
    assert (
        one({"source": "tags", "transform": {"name": "concat", "separator": ";"}}, {"tags": ["a", "b"]})
        == "a;b"
    )


def test_default_key_fills_an_empty_result_after_the_steps() -> None:
    rule = {"source": "in", "transform": {"name": "value_map", "map": {"x": " "}}, "default": "Other"}

    assert one(rule, {"in": "x"}) == "Other"
    assert one({"default": 30}, {}) == 30


def test_constant_value_goes_through_the_steps() -> None:
    assert one({"value": " net 30 ", "transform": ["trim", "upper"]}, {}) == "NET 30"


INVOICE = {
    "fields": [
        {"target": "invoiceNumber", "source": "tranId", "required": True},
        {
            "target": "invoiceItems",
            "each": "item.items",
            "required": True,
            "fields": [
                {
                    "target": "chargeAmount",
                    "source": "amount",
                    "transform": {"name": "number"},
                    "required": True,
                },
                {
                    "target": "accountingCode",
                    "source": "account.refName",
                    "transform": {"name": "lookup", "table": "gl_account_charge"},
                },
                {
                    "target": "serviceStartDate",
                    "source": ["revRecStartDate", "$.tranDate"],
                    "transform": "date",
                },
                {"target": "currency", "source": "$.currency.refName"},
            ],
        },
    ]
}


def invoice(*items: dict[str, Any]) -> dict[str, Any]:
    return {
        "tranId": "INV-1",
        "tranDate": "1/5/2024",
        "currency": {"refName": "USD"},
        "item": {"items": list(items)},
    }


def test_each_maps_every_element_and_reads_the_root_with_dollar_paths() -> None:
    record = invoice(
        {"amount": "100.00", "account": {"refName": "4000"}, "revRecStartDate": "2024-02-01"},
        {"amount": 25, "account": {"refName": 4100}},
    )

    mapped = apply(INVOICE, record, lookups=LOOKUPS)

    assert mapped.payload["invoiceItems"] == [
        {
            "chargeAmount": 100.0,
            "accountingCode": "C-100",
            "serviceStartDate": "2024-02-01",
            "currency": "USD",
        },
        {"chargeAmount": 25, "accountingCode": "C-200", "serviceStartDate": "2024-01-05", "currency": "USD"},
    ]


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (invoice(), "invoiceItems: required but the list at 'item.items' is empty"),
        ({"tranId": "INV-1"}, "invoiceItems: required but the list at 'item.items' is empty"),
        ({"tranId": "INV-1", "item": {"items": "nope"}}, "invoiceItems: 'item.items' is not a list but nope"),
        (invoice({"amount": 1}, "line"), "invoiceItems[1]: is not an object but line"),
        (
            invoice({"amount": 1}, {"amount": 2}, {}),
            "invoiceItems[2].chargeAmount: required but has no value",
        ),
        (invoice({"amount": "ten"}), "invoiceItems[0].chargeAmount: 'ten' is not a number"),
        (
            invoice({"amount": 1, "account": {"refName": "7777"}}),
            "invoiceItems[0].accountingCode: '7777' is not in lookup table 'gl_account_charge'",
        ),
    ],
)
def test_each_errors_name_the_element_and_field(record: dict[str, Any], message: str) -> None:
    with pytest.raises(MappingError) as caught:
        apply(INVOICE, record, lookups=LOOKUPS)

    assert str(caught.value).startswith(message)


def test_each_leaves_out_an_empty_optional_list() -> None:
    spec = {"fields": [{"target": "lines", "each": "items", "fields": [{"target": "x", "source": "x"}]}]}

    assert apply(spec, {"items": []}).payload == {}


def test_flows_back_marks_targets_and_filters_the_write_back_payload() -> None:
    spec = {
        "fields": [
            {"target": "companyName", "source": "Account_Name", "flows_back": True},
            {"target": "custentity_tier.id", "source": "Tier", "flows_back": True},
            {"target": "comments", "source": "Description", "flows_back": False},
            {"target": "email", "source": "Email"},
        ]
    }

    mapped = apply(spec, {"Account_Name": "Acme", "Tier": "2", "Description": "d", "Email": "a@b.test"})

    assert mapped.flows_back == {"companyName", "custentity_tier.id"}
    assert mapped.for_write_back() == {"companyName": "Acme", "custentity_tier": {"id": "2"}}


def test_mapped_defaults_to_no_flows_back() -> None:
    assert Mapped(payload={"a": 1}, create_only=frozenset()).flows_back == frozenset()


def test_transforms_registry_lists_every_step_with_help() -> None:
    assert {"trim", "upper", "lower", "date", "number", "value_map", "lookup", "concat", "default"} <= set(
        TRANSFORMS
    )
    assert all(transform.help for transform in TRANSFORMS.values())


@pytest.mark.parametrize(
    ("rules", "problem"),
    [
        ([], "fields: a mapping needs a non-empty list of field rules"),
        ([{"source": "x"}], "rule 1: 'target' must be a dotted path, not None"),
        ([{"target": "a..b", "source": "x"}], "rule 1: 'target' must be a dotted path"),
        (
            [{"target": "a", "source": "x", "requred": True}],
            "a: unknown key 'requred' (did you mean 'required'?)",
        ),
        ([{"target": "a"}], "a: give a 'source', a 'value' or a 'default'"),
        ([{"target": "a", "source": "x", "value": 1}], "a: give either a 'source' or a 'value', not both"),
        ([{"target": "a", "source": []}], "a: 'source' must be a path or a non-empty list of paths"),
        ([{"target": "a", "source": "x", "required": "yes"}], "a: 'required' must be true or false"),
        ([{"target": "a", "source": "x", "flows_back": 1}], "a: 'flows_back' must be true or false"),
        (
            [{"target": "a", "source": "x", "transform": "titlecase"}],
            "a: unknown transform 'titlecase' (known: trim, upper, lower, date, first_word, number, value_map, lookup, concat, default)",
        ),
        (
            [{"target": "a", "source": "x", "transform": "uper"}],
            "a: unknown transform 'uper' (did you mean 'upper'?)",
        ),
        ([{"target": "a", "source": "x", "transform": {"map": {}}}], "a: a transform step needs a 'name'"),
        ([{"target": "a", "source": "x", "transform": [3]}], "a: a transform step is a name or an object"),
        (
            [{"target": "a", "source": "x", "transform": {"name": "value_map"}}],
            "a: value_map: parameter 'map' is required",
        ),
        (
            [{"target": "a", "source": "x", "transform": {"name": "value_map", "map": ["a"]}}],
            "a: value_map: parameter 'map' must be an object",
        ),
        (
            [{"target": "a", "source": "x", "transform": {"name": "date", "fromat": "%Y"}}],
            "a: date: unknown parameter 'fromat' (did you mean 'format'?) (known: format)",
        ),
        (
            [{"target": "a", "source": "x", "transform": {"name": "date", "format": 5}}],
            "a: date: parameter 'format' must be text",
        ),
        (
            [{"target": "a", "source": "x", "transform": {"name": "lookup"}}],
            "a: lookup: parameter 'table' is required",
        ),
        (
            [{"target": "a", "source": "x", "transform": {"name": "trim", "chars": " "}}],
            "a: trim: unknown parameter 'chars' (known: none)",
        ),
        ([{"target": "a", "source": "x"}, {"target": "a", "source": "y"}], "a: mapped twice"),
        ([{"target": "a", "source": "x"}, {"target": "a.b", "source": "y"}], "a.b: overlaps 'a'"),
        ([{"target": "l", "each": "items"}], "l: a rule with 'each' needs a non-empty list of 'fields'"),
        (
            [{"target": "l", "each": "", "fields": [{"target": "x", "source": "x"}]}],
            "l: 'each' must be the path of a list",
        ),
        (
            [{"target": "l", "each": "items", "source": "x", "fields": [{"target": "x", "source": "x"}]}],
            "l: 'source' does not apply to a rule with 'each'",
        ),
        (
            [
                {
                    "target": "l",
                    "each": "items",
                    "fields": [{"target": "x", "source": "x", "create_only": True}],
                }
            ],
            "l[].x: 'create_only' applies to the whole list",
        ),
        (
            [
                {
                    "target": "l",
                    "each": "items",
                    "fields": [{"target": "x", "source": "x", "transform": "nope"}],
                }
            ],
            "l[].x: unknown transform 'nope'",
        ),
        (
            [
                {
                    "target": "l",
                    "each": "items",
                    "fields": [{"target": "x", "source": "x"}, {"target": "x", "value": 1}],
                }
            ],
            "l[].x: mapped twice",
        ),
        (
            [{"target": "l", "each": "items", "fields": [{"source": "x"}]}],
            "l: rule 1 of its 'fields': 'target' must be",
        ),
    ],
)
def test_validate_spec_names_the_field_at_fault(rules: list[Any], problem: str) -> None:
    problems = validate_spec({"fields": rules})

    assert any(found.startswith(problem) for found in problems), problems


def test_validate_spec_accepts_every_rule_form() -> None:
    spec = {
        "fields": [
            *DEFAULT_MAPPING["fields"],
            {
                "target": "notes",
                "source": ["a", "b"],
                "transform": [{"name": "concat", "separator": "-"}, "trim"],
            },
            {"target": "terms", "transform": {"name": "default", "value": "Net 30"}},
            {
                "target": "code",
                "source": "x",
                "transform": {"name": "lookup", "table": "gl_account_charge", "fallback": None},
            },
            {
                "target": "status",
                "source": "s",
                "transform": {"name": "value_map", "map": {}, "fallback": "keep"},
            },
            {
                "target": "when",
                "source": "d",
                "transform": {"name": "date", "format": "%Y-%m-%d"},
                "flows_back": True,
            },
        ]
    }

    assert validate_spec(spec) == []
    assert validate_spec(INVOICE, required=["invoiceNumber", "invoiceItems[].chargeAmount"]) == []


def test_validate_spec_reports_required_targets_no_rule_fills() -> None:
    problems = validate_spec(
        DEFAULT_MAPPING, required=["name", "billToContact", "accountNumber", "billToContact.city"]
    )

    assert problems == [
        "accountNumber: required by this flow but not mapped",
        "billToContact.city: required by this flow but not mapped",
    ]


def test_validate_spec_checks_lookup_tables_only_when_given() -> None:
    spec = {
        "fields": [{"target": "code", "source": "x", "transform": {"name": "lookup", "table": "gl_acount"}}]
    }

    assert validate_spec(spec) == []
    assert validate_spec(spec, lookups=LOOKUPS) == [
        "code: lookup table 'gl_acount' does not exist (known: gl_account_charge, gl_rows)"
    ]


def test_apply_refuses_an_invalid_spec_naming_the_field() -> None:
    with pytest.raises(MappingError) as caught:
        apply({"fields": [{"target": "a", "source": "x", "transform": "nope"}]}, {"x": "y"})

    assert caught.value.field == "a"


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=8,
)
KEYS = st.sampled_from(
    [
        "id",
        "companyName",
        "entityId",
        "currency",
        "refName",
        "firstName",
        "lastName",
        "email",
        "phone",
        "LASTNAME",
    ]
)
RECORDS = st.dictionaries(
    KEYS | st.text(max_size=6), JSON | st.dictionaries(KEYS, JSON, max_size=3), max_size=8
)


LINES = st.fixed_dictionaries(
    {},
    optional={
        "amount": st.sampled_from(["12.50", "3", "-1e3", "1,5", ""]) | JSON,
        "account": st.fixed_dictionaries({}, optional={"refName": JSON}) | JSON,
        "revRecStartDate": st.sampled_from(["2024-01-05", "1/5/2024", "", "soon"]) | JSON,
    },
)
INVOICES = st.fixed_dictionaries(
    {"tranId": JSON},
    optional={
        "tranDate": JSON,
        "currency": JSON,
        "item": st.fixed_dictionaries({"items": st.lists(LINES | JSON, max_size=3)}) | JSON,
    },
)


PROPERTY_SPECS = [
    # spec, the targets a mapped payload always has, the fields an error may name (None: any)
    (DEFAULT_MAPPING, {"name", "crmId"}, {"name", "crmId", "billToContact.lastName"}),
    (INVOICE, {"invoiceNumber", "invoiceItems"}, None),
]


@settings(max_examples=150, deadline=None, database=None)
@given(record=RECORDS | INVOICES)
def test_apply_raises_only_mapping_errors_on_any_json_record(record: dict[str, Any]) -> None:
    for spec, always, blamed in PROPERTY_SPECS:
        try:
            mapped = apply(spec, record, lookups=LOOKUPS)
        except MappingError as exc:
            assert blamed is None or exc.field in blamed
        else:
            assert always <= mapped.payload.keys()
