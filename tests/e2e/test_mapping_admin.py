"""What the mapping page does, without the page: rows ↔ rules, drafts, versions, diffs, rollback, lookup
tables, samples and preview; ending with a live preview against the NetSuite emulator.

Tests taking `engine` run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from connectors.sandbox import Sandbox, build
from demo.wiring import DemoWiring, wire
from runner import mapping_admin as admin
from runner.flows import registry
from runner.flows.customer_account import DEFAULT_MAPPING as CUSTOMER_MAPPING
from runner.mapping_rows import parse_steps, rows_to_rules, rules_to_rows, semantic
from storage import crud, links, lookups
from storage.audit import write_record
from storage.crypto import Vault
from storage.models import AuditRecord, Outcome
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import create_customer_via_api
from tests.support.live import serve

CUSTOMER = registry()["customer_account"]


def make_integration(engine: Engine, vault: Vault, flows: list[str]) -> int:
    workspace = crud.create_workspace(engine, name="Acme")
    assert workspace.id is not None
    netsuite = crud.create_connection(
        engine, vault, workspace_id=workspace.id, system="netsuite", name="NetSuite",
        base_url="https://1234567.suitetalk.api.netsuite.com",
    )  # fmt: skip
    zuora = crud.create_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="zuora",
        name="Zuora",
        base_url="https://rest.zuora.com",
    )
    integration = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name="NetSuite → Zuora",
        source_connection_id=netsuite.id, target_connection_id=zuora.id, flows=flows,
    )  # fmt: skip
    return integration.id


@pytest.fixture
def integration_id(engine: Engine, vault: Vault) -> int:
    return make_integration(engine, vault, ["invoice", "customer_account", "no_such_flow"])


def rows_with(spec: dict[str, Any], target: str, cells: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's rows with `cells` changed in the row of `target`."""
    rows = admin.rows_of(spec)
    for row in rows:
        if row["target"] == target:
            row.update(cells)
    return rows


# --- rows ↔ rules ------------------------------------------------------------------------------------
@pytest.mark.parametrize("flow", sorted(registry()))
def test_rows_round_trip_every_default_mapping_without_loss(flow: str) -> None:
    rules = registry()[flow].default_mapping["fields"]
    rows = rules_to_rows(rules)

    exact, problems = rows_to_rules(rows, base=rules)
    compact, compact_problems = rows_to_rules(rows)

    assert problems == compact_problems == []
    assert exact == rules  # with the base version every untouched cell keeps its form
    assert semantic(compact) == semantic(rules)  # without it, the same meaning in compact forms


def test_rows_round_trip_rules_the_compact_syntax_must_quote() -> None:
    rules = [
        {"target": "a", "source": ["x,y", " z"], "value": "", "transform": [{"name": "concat", "separator": ", "}]},
        {"target": "b", "value": "true", "default": None, "transform": [{"name": "date", "format": "[%Y]"}]},
        {"target": "c", "value": {"k": [1, 2]}, "transform": [1, "trim"], "required": False},
        {"target": "d", "value": "NaN", "transform": [{"name": "value_map", "map": {"A|B": 1}, "fallback": "keep"}]},
        {"target": "e", "each": "lines", "fields": [{"target": "f", "source": "$.g", "transform": ["upper"]}]},
    ]  # fmt: skip
    rows = rules_to_rows(rules)

    assert rows_to_rules(rows, base=rules) == (rules, [])
    assert semantic(rows_to_rules(rows)[0]) == semantic(rules)
    assert [r["transform"] for r in rows[:4]] == [
        'concat:", "',
        'date:"[%Y]"',
        '[1, "trim"]',
        'value_map {"map": {"A|B": 1}, "fallback": "keep"}',
    ]
    assert [r["value"] for r in rows[:4]] == ['""', '"true"', '{"k": [1, 2]}', "NaN"]


@pytest.mark.parametrize(
    ("text", "transform"),
    [
        ("trim", "trim"),
        ("trim | upper", ["trim", "upper"]),
        ("date:%d %b, %Y", [{"name": "date", "format": "%d %b, %Y"}]),
        ("first_word | lookup:gl_account_charge", ["first_word", {"name": "lookup", "table": "gl_account_charge"}]),
        ('lookup {"table": "t", "fallback": "keep"}', [{"name": "lookup", "table": "t", "fallback": "keep"}]),
        ('value_map:{"A": "B|C"} | default:0', [{"name": "value_map", "map": {"A": "B|C"}}, {"name": "default", "value": 0}]),
        ('{"name": "number"}', [{"name": "number"}]),
        ('["trim"]', ["trim"]),
        ("upperr", "upperr"),  # unknown names pass through: validate_spec names them
    ],
)  # fmt: skip
def test_parse_steps_reads_the_step_syntax(text: str, transform: Any) -> None:
    assert parse_steps(text) == transform


@pytest.mark.parametrize(
    ("cells", "problem"),
    [
        ({"transform": "trim:x"}, "row 2 · crmId: transform: trim takes no argument (write just trim)"),
        ({"transform": "nope:1"}, "row 2 · crmId: transform: unknown transform 'nope'"),
        ({"transform": "date:"}, "row 2 · crmId: transform: date: give its format after the colon"),
        ({"transform": "trim || upper"}, "row 2 · crmId: transform: step 2 is empty"),
        ({"transform": 'value_map:{"a"'}, "row 2 · crmId: transform: a quote or bracket is not closed"),
        ({"value": '{"a": }'}, "row 2 · crmId: value: cannot read '{\"a\": }'"),
        ({"target": " ", "source": "id"}, "row 2: give the target field this rule fills"),
    ],
)
def test_unreadable_cells_name_their_row_and_target(cells: dict[str, Any], problem: str) -> None:
    rows = rows_with(CUSTOMER_MAPPING, "crmId", cells)

    draft = admin.draft(rows, base=CUSTOMER_MAPPING, flow=CUSTOMER, tables=lookups.DEFAULT_LOOKUPS)

    assert any(p.startswith(problem) for p in draft.problems), draft.problems
    assert not draft.valid


def test_draft_validates_against_the_flow_and_the_lookup_tables() -> None:
    rows = rows_with(CUSTOMER_MAPPING, "name", {"transform": "trim | lookup:no_table"})
    rows = [row for row in rows if row["target"] != "crmId"]
    rows.append({"target": "", "source": "", "required": False})  # a row added and left empty

    draft = admin.draft(rows, base=CUSTOMER_MAPPING, flow=CUSTOMER, tables=lookups.DEFAULT_LOOKUPS)

    assert draft.changed
    assert draft.problems == [
        "name: lookup table 'no_table' does not exist (known: category_classification, currency_code, "
        "gl_account_charge, subsidiary_currency)",
        "crmId: required by this flow but not mapped",
    ]


def test_draft_of_untouched_rows_is_the_base_unchanged() -> None:
    draft = admin.draft(
        admin.rows_of(CUSTOMER_MAPPING), base=CUSTOMER_MAPPING, flow=CUSTOMER, tables=lookups.DEFAULT_LOOKUPS
    )

    assert draft.valid and not draft.changed and draft.spec == CUSTOMER_MAPPING


# --- flows, saving, history --------------------------------------------------------------------------
def test_flows_of_lists_the_enabled_flows_with_their_active_version(
    engine: Engine, integration_id: int
) -> None:
    before = admin.flows_of(engine, integration_id=integration_id)
    admin.save(
        engine,
        integration_id=integration_id,
        flow="customer_account",
        spec=CUSTOMER_MAPPING,
        created_by="ana",
    )
    after = {f.name: f for f in admin.flows_of(engine, integration_id=integration_id)}

    assert [(f.name, f.version, f.label) for f in before] == [
        ("invoice", 0, "default (built in)"),
        ("customer_account", 0, "default (built in)"),
    ]  # in the integration's order; a flow that does not exist is left out
    assert before[1].spec == CUSTOMER_MAPPING
    assert (after["customer_account"].version, after["customer_account"].created_by) == (1, "ana")
    assert after["invoice"].version == 0


def test_save_refuses_an_invalid_mapping_and_stores_nothing(engine: Engine, integration_id: int) -> None:
    spec = {"fields": [rule for rule in CUSTOMER_MAPPING["fields"] if rule["target"] != "name"]}

    with pytest.raises(admin.InvalidMapping) as refused:
        admin.save(
            engine, integration_id=integration_id, flow="customer_account", spec=spec, created_by="ana"
        )

    assert refused.value.problems == ["name: required by this flow but not mapped"]
    assert admin.history(engine, integration_id=integration_id) == []


def test_history_lists_versions_newest_first_without_lookup_tables(
    engine: Engine, integration_id: int
) -> None:
    edited = copy.deepcopy(CUSTOMER_MAPPING)
    edited["fields"][0]["transform"] = ["trim", "upper"]
    for spec in (CUSTOMER_MAPPING, edited):
        admin.save(
            engine, integration_id=integration_id, flow="customer_account", spec=spec, created_by="ana"
        )
    lookups.save_lookup(engine, integration_id=integration_id, name="gl_account_charge", rows={"1": "x"})

    versions = admin.history(engine, integration_id=integration_id)

    assert [(v.flow, v.version, v.active) for v in versions] == [
        ("customer_account", 2, True),
        ("customer_account", 1, False),
    ]
    assert admin.spec_at(engine, integration_id=integration_id, flow="customer_account", version=2) == edited
    assert (
        admin.spec_at(engine, integration_id=integration_id, flow="customer_account", version=0)
        == CUSTOMER_MAPPING
    )
    with pytest.raises(LookupError):
        admin.spec_at(engine, integration_id=integration_id, flow="customer_account", version=7)


def test_diff_and_changes_show_what_a_version_changed() -> None:
    edited = copy.deepcopy(CUSTOMER_MAPPING)
    edited["fields"][0]["transform"] = ["trim", "upper"]
    edited["fields"] = [r for r in edited["fields"] if r["target"] != "billToContact.workPhone"]
    edited["fields"].append({"target": "notes", "value": "synced"})
    reshaped = copy.deepcopy(CUSTOMER_MAPPING)
    reshaped["fields"][0]["transform"] = [{"name": "trim"}]  # the same rule, written differently

    text = admin.diff(CUSTOMER_MAPPING, edited, old_label="version 1", new_label="version 2")

    assert text.startswith("--- version 1\n+++ version 2\n")
    assert '-      "transform": "trim",' in text and '+        "upper"' in text
    assert admin.changes(CUSTOMER_MAPPING, edited).summary() == (
        "added: notes; removed: billToContact.workPhone; changed: name"
    )
    assert not admin.changes(CUSTOMER_MAPPING, reshaped)
    assert admin.diff(CUSTOMER_MAPPING, copy.deepcopy(CUSTOMER_MAPPING), old_label="a", new_label="b") == ""


def test_tables_used_names_each_lookup_table_with_the_fields_reading_it() -> None:
    spec = copy.deepcopy(registry()["invoice"].default_mapping)
    spec["fields"].append(
        {
            "target": "currency",
            "source": "currency",
            "transform": {"name": "lookup", "table": "currency_code"},
        }
    )

    assert admin.tables_used(spec) == {
        "gl_account_charge": ["invoiceItems[].accountingCode"],
        "currency_code": ["currency"],
    }


def test_rollback_saves_the_old_spec_as_the_newest_version(engine: Engine, integration_id: int) -> None:
    edited = copy.deepcopy(CUSTOMER_MAPPING)
    edited["fields"].append({"target": "notes", "value": "synced"})
    admin.save(engine, integration_id=integration_id, flow="customer_account", spec=edited, created_by="ana")

    saved = admin.rollback(
        engine, integration_id=integration_id, flow="customer_account", version=0, created_by="bo"
    )

    active = crud.active_mapping(engine, integration_id=integration_id, flow="customer_account")
    assert active is not None and (active.version, active.created_by) == (saved.version, "bo") == (2, "bo")
    assert active.spec == CUSTOMER_MAPPING
    assert [v.version for v in admin.history(engine, integration_id=integration_id)] == [2, 1]


# --- lookup tables -----------------------------------------------------------------------------------
def test_lookup_tables_are_the_starters_with_stored_versions_over_them(
    engine: Engine, integration_id: int
) -> None:
    lookups.save_lookup(
        engine, integration_id=integration_id, name="currency_code", rows={"Yen": "JPY"}, created_by="ana"
    )
    lookups.save_lookup(engine, integration_id=integration_id, name="regions", rows={"EU": {"code": "E"}})

    tables = {t.name: t for t in admin.lookup_tables(engine, integration_id=integration_id)}

    assert sorted(tables) == sorted([*lookups.DEFAULT_LOOKUPS, "regions"])
    assert (tables["currency_code"].rows, tables["currency_code"].version) == ({"Yen": "JPY"}, 1)
    assert tables["currency_code"].created_by == "ana"
    assert tables["gl_account_charge"].version == admin.DEFAULT_VERSION
    assert {n: t.rows for n, t in tables.items()} == lookups.lookups_for(
        engine, integration_id=integration_id
    )


def test_lookup_rows_round_trip_and_report_bad_rows() -> None:
    table = {"4000": "4000 Services", "EU": {"code": "E"}, "n": 1, "t": "true"}

    assert admin.rows_to_lookup(admin.lookup_rows(table)) == (table, [])
    _, problems = admin.rows_to_lookup(
        [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}, {"key": "", "value": "x"}, {"key": "b"}, {}]
    )
    assert problems == [
        "row 2 · a: the key is listed twice",
        "row 3: give the key (the value the mapping looks up)",
        "row 4 · b: give the value 'b' stands for",
    ]


def test_save_lookup_table_makes_a_version_and_refuses_bad_names(engine: Engine, integration_id: int) -> None:
    saved = admin.save_lookup_table(
        engine, integration_id=integration_id, name="gl_account_charge", rows={"1": "x"}, description="d",
        created_by="ana",
    )  # fmt: skip

    assert (saved.version, saved.spec) == (1, {"rows": {"1": "x"}, "description": "d"})
    for name, rows in (("Bad Name", {"1": "x"}), ("empty", {})):
        with pytest.raises(admin.InvalidMapping):
            admin.save_lookup_table(
                engine, integration_id=integration_id, name=name, rows=rows, description="", created_by="ana"
            )


# --- samples and preview -----------------------------------------------------------------------------
def test_stored_sample_is_the_newest_snapshot_of_the_flow(engine: Engine, integration_id: int) -> None:
    now = utcnow()
    for minutes, source_id, snapshot in ((30, "1", {"id": "1"}), (20, "2", {"id": "2"}), (10, "3", None)):
        record = AuditRecord(
            integration_id=integration_id, flow="customer_account", source_system="netsuite", source_id=source_id,
            target_system="zuora", source_snapshot=snapshot, outcome=Outcome.FAILED,
            started_at=now - timedelta(minutes=minutes),
        )  # fmt: skip
        write_record(engine, record, [])

    sample = admin.stored_sample(engine, integration_id=integration_id, flow="customer_account")

    assert sample is not None and sample.record == {"id": "2"}  # the newest one that read its source
    assert sample.origin.startswith("audit record #2: netsuite 2, read ")
    assert admin.stored_sample(engine, integration_id=integration_id, flow="invoice") is None


@pytest.mark.parametrize(
    ("text", "problem"), [("{", "the pasted text is not JSON"), ("[1]", "paste one source record")]
)
def test_parse_sample_refuses_anything_but_a_json_object(text: str, problem: str) -> None:
    with pytest.raises(admin.SampleUnavailable, match=problem):
        admin.parse_sample(text)


def test_try_mapping_notes_each_field_of_the_sample() -> None:
    sample = admin.parse_sample('{"id": 5, "companyName": " Hooli "}')

    result = admin.try_mapping(CUSTOMER_MAPPING, sample, flow=CUSTOMER, tables=lookups.DEFAULT_LOOKUPS)

    notes = {row["target"]: row for row in admin.note_rows(result)}
    assert result.ok and result.payload["name"] == "Hooli"
    assert notes["name"] == {
        "target": "name",
        "source": "companyName",
        "value": "Hooli",
        "note": "from companyName",
        "error": "",
    }
    assert notes["billToContact.workEmail"]["note"] == "skipped: empty"


# --- live samples over real HTTP ---------------------------------------------------------------------
@dataclass
class Emulators:
    sandbox: Sandbox
    wiring: DemoWiring

    def create(self, record_type: str, fields: dict[str, Any]) -> str:
        c = self.sandbox.credentials
        return create_customer_via_api(
            c.netsuite_url, client_id=c.netsuite_client_id, certificate_id=c.netsuite_certificate_id,
            private_key=c.netsuite_private_key, fields=fields, record_type=record_type,
        )  # fmt: skip


@pytest.fixture
def emulators(engine: Engine, vault: Vault) -> Iterator[Emulators]:
    """The sandbox emulators and the demo integrations wired to them; no runner, no webhooks."""
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for system in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(sandbox, system).app, sock=sockets[system]))
        yield Emulators(sandbox, wire(engine, vault, sandbox.credentials))


def test_live_preview_fetches_a_customer_from_netsuite_by_id(
    engine: Engine, vault: Vault, settings: Settings, emulators: Emulators
) -> None:
    customer_id = emulators.create(
        "customer", {"companyName": "  Live Sample Ltd ", "email": "ap@live.example"}
    )
    integration_id = emulators.wiring.integration_id

    sample = admin.fetch_sample(
        engine, vault, settings, integration_id=integration_id, flow="customer_account", source_id=customer_id
    )
    result = admin.try_mapping(
        CUSTOMER_MAPPING,
        sample,
        flow=CUSTOMER,
        tables=lookups.lookups_for(engine, integration_id=integration_id),
    )

    assert str(sample.record["id"]) == customer_id
    assert sample.origin == f"netsuite customer {customer_id}, fetched live"
    assert any(a.method == "GET" and a.url.endswith(f"/customer/{customer_id}") for a in sample.attempts)
    assert result.ok and result.payload["name"] == "Live Sample Ltd"
    assert result.payload["billToContact"]["workEmail"] == "ap@live.example"
    with pytest.raises(admin.SampleUnavailable, match="netsuite"):
        admin.fetch_sample(
            engine,
            vault,
            settings,
            integration_id=integration_id,
            flow="customer_account",
            source_id="999999",
        )


def test_live_preview_of_an_invoice_never_syncs_its_customer(
    engine: Engine, vault: Vault, settings: Settings, emulators: Emulators
) -> None:
    customer_id = emulators.create("customer", {"companyName": "Unsynced Co"})
    integration_id = emulators.wiring.integration_id
    invoice_id = emulators.create(
        "invoice",
        {
            "entity": {"id": customer_id},
            "tranDate": "2024-05-01",
            "item": {"items": [{"item": {"id": "86"}, "amount": 10.0}]},
        },
    )

    with pytest.raises(admin.SampleUnavailable, match="a preview only reads"):
        admin.fetch_sample(
            engine, vault, settings, integration_id=integration_id, flow="invoice", source_id=invoice_id,
        )  # fmt: skip

    assert emulators.sandbox.zuora.accounts() == []  # nothing was created in Zuora
    assert (
        links.find(engine, integration_id=integration_id, flow="customer_account", source_id=customer_id)
        is None
    )
