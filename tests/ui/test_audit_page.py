"""The audit page through Streamlit's AppTest: the real app.py and views/audit.py against a seeded SQLite."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.sql import Select
from streamlit.testing.v1 import AppTest

from storage.audit import AuditFilter, count_query, list_query, write_record
from storage.crud import create_integration
from storage.crypto import get_vault
from storage.models import AuditRecord, Outcome
from storage.types import utcnow
from tests.ui.conftest import (
    APP_PATH,
    FAILED_ERROR,
    FAILED_SOURCE_ID,
    RETRYING_SOURCE_ID,
    SUCCEEDED_SOURCE_ID,
    SUCCEEDED_TARGET_ID,
    SeededAudit,
    signed_in,
)
from views._ui import COUNT_LIMIT, Count, audit_counts, excerpt_for_display, md_code, md_escape, shorten

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database


def open_app() -> AppTest:
    """The app as a browser would first see it (the audit page is the default page)."""
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/audit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def add_integration(seeded: SeededAudit, name: str) -> int:
    """A second integration between the seeded connections; returns its id."""
    integration = create_integration(
        seeded.engine,
        get_vault(),
        workspace_id=seeded.workspace_id,
        name=name,
        source_connection_id=seeded.connection_ids[0],
        target_connection_id=seeded.connection_ids[1],
        flows=["customer_zoho_account"],
    )
    return integration.id


def listed_ids(at: AppTest) -> list[int]:
    """The record ids in the audit list, top to bottom."""
    return [int(v) for v in at.dataframe[0].value["id"]]


def texts(at: AppTest) -> str:
    """Everything written as markdown, captions, alerts and JSON, joined for `in` checks."""
    parts: list[Any] = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(w.value for w in at.warning),
        *(i.value for i in at.info),
    ]
    return "\n".join(str(p) for p in parts)


def test_audit_page_renders_without_exception(seeded_audit: SeededAudit) -> None:
    first = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at = open_app()

    assert any("database: SQLite" in c.value for c in first.sidebar.caption)
    assert [t.value for t in at.title] == ["Audit log"]


def test_audit_page_lists_records_newest_first(seeded_audit: SeededAudit) -> None:
    at = open_app()

    table = at.dataframe[0].value
    assert listed_ids(at) == seeded_audit.newest_first
    assert list(table["source_id"]) == [FAILED_SOURCE_ID, SUCCEEDED_SOURCE_ID, RETRYING_SOURCE_ID]
    assert list(table["outcome"]) == ["✗ failed", "✓ succeeded", "↻ retrying"]
    assert set(table["integration"]) == {seeded_audit.integration_name}
    short_error = table["error"][0]
    assert FAILED_ERROR.startswith(short_error.removesuffix("…"))
    assert short_error.endswith("…")
    assert len(short_error) <= 90


def test_audit_page_metrics_count_records_by_outcome(seeded_audit: SeededAudit) -> None:
    at = open_app()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"In filter": "3", "Succeeded": "1", "Retrying": "1", "Failed": "1"}


def test_audit_page_outcome_filter_narrows_to_failed(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.segmented_control(key="audit_outcome").set_value("failed").run()

    assert listed_ids(at) == [seeded_audit.failed_id]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"In filter": "1", "Succeeded": "0", "Retrying": "0", "Failed": "1"}


@pytest.mark.parametrize(
    ("widget", "key", "value", "expected"),
    [
        ("selectbox", "audit_flow", "invoice_invoice", ["retrying"]),
        ("selectbox", "audit_error_class", "remote", ["failed"]),
        ("selectbox", "audit_range", "Last hour", ["failed", "succeeded"]),
        ("text_input", "audit_source_id", SUCCEEDED_SOURCE_ID, ["succeeded"]),
        ("text_input", "audit_target_id", SUCCEEDED_TARGET_ID, ["succeeded"]),
        ("text_input", "audit_source_id", f"  {FAILED_SOURCE_ID} ", ["failed"]),
    ],
)
def test_audit_page_filter_narrows_list(
    seeded_audit: SeededAudit, widget: str, key: str, value: str, expected: list[str]
) -> None:
    at = open_app()

    getattr(at, widget)(key=key).set_value(value).run()

    ids = {
        "failed": seeded_audit.failed_id,
        "succeeded": seeded_audit.succeeded_id,
        "retrying": seeded_audit.retrying_id,
    }
    assert listed_ids(at) == [ids[name] for name in expected]


def test_audit_page_hides_integration_column_while_only_one_exists(seeded_audit: SeededAudit) -> None:
    at = open_app()
    assert "integration" not in at.dataframe[0].proto.column_order

    add_integration(seeded_audit, "NetSuite → Zoho")
    at.run()

    assert "integration" in at.dataframe[0].proto.column_order


def test_audit_page_integration_filter_lists_only_that_integration(seeded_audit: SeededAudit) -> None:
    other_id = add_integration(seeded_audit, "NetSuite → Zoho")
    write_record(
        seeded_audit.engine,
        AuditRecord(
            integration_id=other_id,
            flow="customer_zoho_account",
            source_system="netsuite",
            source_id="4004",
            target_system="zoho",
            outcome=Outcome.SUCCEEDED,
        ),
        [],
    )
    at = open_app()
    assert len(listed_ids(at)) == 4

    at.selectbox(key="audit_integration").set_value(other_id).run()

    assert [str(s) for s in at.dataframe[0].value["source_id"]] == ["4004"]


def test_audit_page_filter_without_match_says_what_to_do(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.text_input(key="audit_source_id").set_value("no-such-id").run()

    assert not at.dataframe
    assert "No records match these filters" in texts(at)


def test_audit_page_record_id_shows_snapshot_payload_and_attempts(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.number_input(key="record").set_value(seeded_audit.succeeded_id).run()

    assert not at.exception
    snapshot, payload, response = (json.loads(j.value) for j in at.json)
    assert snapshot["companyName"] == "Globex Corporation"
    assert payload == {"name": "Globex Corporation", "currency": "USD", "crmId": SUCCEEDED_SOURCE_ID}
    assert response["accountNumber"] == SUCCEEDED_TARGET_ID
    assert [t.label for t in at.tabs] == ["Source snapshot", "Payload sent", "Response", "Attempts (2)"]
    attempts = at.dataframe[1].value
    assert list(attempts["seq"]) == [1, 2]
    assert list(attempts["status"]) == [429, 200]
    assert list(attempts["url"]) == ["https://rest.zuora.com/v1/accounts"] * 2
    assert [e.label for e in at.expander] == [
        "Response excerpt · attempt 1 · POST → 429",
        "Response excerpt · attempt 2 · POST → 200",
    ]
    assert '"accountNumber": "A00000042"' in at.code[1].value
    page = texts(at)
    assert f"Record #{seeded_audit.succeeded_id} · customer\\_account" in page
    assert "-badge[:material/check_circle: succeeded]" in page
    assert "v3" in page
    assert not at.error


def test_audit_page_failed_record_shows_error_with_what_to_do(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.number_input(key="record").set_value(seeded_audit.failed_id).run()

    [error] = at.error
    assert md_escape(FAILED_ERROR) in error.value
    assert "**remote**" in error.value
    assert "fix the data or the mapping" in error.value
    payload = json.loads(at.json[1].value)
    assert payload["billToContact"] == {"country": "Atlantis"}
    assert list(at.dataframe[1].value["status"]) == [400]


def test_audit_page_retrying_record_shows_warning_not_error(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.number_input(key="record").set_value(seeded_audit.retrying_id).run()

    assert not at.error
    assert "503" in at.warning[0].value
    assert "No response was kept" in texts(at)


def test_audit_page_unknown_record_id_warns(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.number_input(key="record").set_value(9999).run()

    assert [w.value for w in at.warning] == ["There is no audit record #9999."]
    assert not at.json


def test_audit_page_paginates_fifty_per_page(seeded_audit: SeededAudit) -> None:
    old = utcnow() - timedelta(days=2)
    for n in range(50):
        write_record(
            seeded_audit.engine,
            AuditRecord(
                integration_id=seeded_audit.integration_id,
                flow="customer_account",
                source_system="netsuite",
                source_id=f"bulk-{n:02d}",
                target_system="zuora",
                outcome=Outcome.SUCCEEDED,
                started_at=old + timedelta(seconds=n),
            ),
            [],
        )
    at = open_app()
    assert len(listed_ids(at)) == 50
    assert "Showing 1–50 of 53, newest first." in texts(at)

    at.pagination[0].select(2).run()

    assert [str(s) for s in at.dataframe[0].value["source_id"]] == ["bulk-02", "bulk-01", "bulk-00"]
    assert "Showing 51–53 of 53, newest first." in texts(at)


def test_audit_page_empty_database_shows_empty_message(empty_database: str) -> None:
    at = open_app()

    assert "No audit records yet — records appear here once the runner syncs something" in texts(at)
    assert not at.dataframe
    assert not at.metric


@pytest.mark.parametrize(
    ("text", "escaped"),
    [
        ("customer_account", "customer\\_account"),
        ("see [docs](http://x)", "see \\[docs\\]\\(http\\://x\\)"),
        (":red[alarm] **bold**", "\\:red\\[alarm\\] \\*\\*bold\\*\\*"),
        ("plain words", "plain words"),
    ],
)
def test_md_escape_keeps_remote_text_literal(text: str, escaped: str) -> None:
    assert md_escape(text) == escaped


@pytest.mark.parametrize(
    ("text", "code"),
    [("1001", "`1001`"), ("a`b", "`` a`b ``"), ("``x", "``` ``x ```")],
)
def test_md_code_fences_around_backticks(text: str, code: str) -> None:
    assert md_code(text) == code


@pytest.mark.parametrize(
    ("text", "short"),
    [
        (None, ""),
        ("", ""),
        ("one line", "one line"),
        ("first line\nsecond line", "first line"),
        ("x" * 100, "x" * 89 + "…"),
    ],
)
def test_shorten_keeps_first_line_within_limit(text: str | None, short: str) -> None:
    assert shorten(text) == short


def test_excerpt_for_display_pretty_prints_json_and_keeps_cut_bodies() -> None:
    assert excerpt_for_display('{"a": 1}') == ('{\n  "a": 1\n}', "json")
    assert excerpt_for_display('{"a": [1, 2') == ('{"a": [1, 2', None)


def add_records(seeded: SeededAudit, count: int, **fields: Any) -> None:
    """`count` more records in one statement, a second apart, older than the seeded ones."""
    table = AuditRecord.__table__
    start = utcnow() - timedelta(days=2)
    values = {
        "integration_id": seeded.integration_id,
        "flow": "customer_account",
        "source_system": "netsuite",
        "target_system": "zuora",
        "outcome": Outcome.SUCCEEDED,
        **fields,
    }
    rows = [
        {**values, "source_id": f"many-{n}", "started_at": start + timedelta(seconds=n)} for n in range(count)
    ]
    with seeded.engine.begin() as connection:
        connection.execute(table.insert(), rows)


def test_audit_page_counts_stop_at_the_limit_and_say_so(seeded_audit: SeededAudit) -> None:
    add_records(seeded_audit, COUNT_LIMIT)  # succeeded: with the seeded three, one more than the limit
    at = open_app()
    at.selectbox(key="audit_range").set_value("All time").run()

    metrics = {m.label: m.value for m in at.metric}
    assert metrics == {"In filter": "10,000+", "Succeeded": "10,000+", "Retrying": "1", "Failed": "1"}
    assert "Showing 1–50 of 10,000+, newest first. The list stops at the newest 10,000" in texts(at)
    at.pagination[0].select(COUNT_LIMIT // 50).run()
    assert "Showing 9,951–10,000 of 10,000+" in texts(at)


def test_audit_counts_are_exact_below_the_limit(seeded_audit: SeededAudit) -> None:
    counts = audit_counts(seeded_audit.engine, AuditFilter(), limit=2)

    assert counts.total == Count(2, capped=True)
    assert counts.by_outcome == {"succeeded": Count(1), "retrying": Count(1), "failed": Count(1)}
    assert [str(counts.total), str(Count(1234))] == ["2+", "1,234"]


def test_audit_page_system_filter_matches_either_side(seeded_audit: SeededAudit) -> None:
    add_records(seeded_audit, 1, source_system="zoho", target_system="netsuite", flow="zoho_change")
    at = open_app()
    at.selectbox(key="audit_range").set_value("All time").run()

    at.selectbox(key="audit_system").set_value("zoho").run()
    assert [str(s) for s in at.dataframe[0].value["source_id"]] == ["many-0"]
    at.selectbox(key="audit_system").set_value("zuora").run()
    assert len(listed_ids(at)) == 3


def test_audit_page_custom_dates_bound_the_list(seeded_audit: SeededAudit) -> None:
    add_records(seeded_audit, 1)  # two days ago
    at = open_app()
    at.selectbox(key="audit_range").set_value("Custom dates").run()
    two_days_ago = (utcnow() - timedelta(days=2)).date()

    at.date_input(key="audit_dates").set_value((two_days_ago, two_days_ago)).run()

    assert [str(s) for s in at.dataframe[0].value["source_id"]] == ["many-0"]


def explain(engine: Engine, query: Select[Any]) -> list[str]:
    """SQLite's plan for `query`, one line per step."""
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as connection:
        return [row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]


WEEK_AGO = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (AuditFilter(since=WEEK_AGO), "ix_audit_started"),
        (AuditFilter(since=WEEK_AGO, until=WEEK_AGO + timedelta(days=1)), "ix_audit_started"),
        (AuditFilter(outcome="failed", since=WEEK_AGO), "ix_audit_outcome_started"),
        (AuditFilter(flow="invoice", since=WEEK_AGO), "ix_audit_flow_started"),
        (AuditFilter(integration_id=2, since=WEEK_AGO), "ix_audit_integration_started"),
        (AuditFilter(error_class="bug", since=WEEK_AGO), "ix_audit_error_class_started"),
        (AuditFilter(source_id="1001", since=WEEK_AGO), "ix_audit_source_started"),
        (AuditFilter(outcome="failed"), "ix_audit_outcome_started"),
    ],
)
def test_audit_filters_are_served_by_an_index_in_page_order(
    seeded_audit: SeededAudit, filters: AuditFilter, index: str
) -> None:
    page = explain(seeded_audit.engine, list_query(filters, limit=50, offset=100))
    count = explain(seeded_audit.engine, count_query(filters, limit=COUNT_LIMIT + 1))

    # The page is read off the index in newest-first order (no sort step), the count off the index alone.
    assert [line for line in page if "auditrecord" in line] == [
        line for line in page if f"USING INDEX {index}" in line
    ]
    assert not any("TEMP B-TREE" in line for line in page), page
    assert any(f"USING COVERING INDEX {index}" in line for line in count), count


@pytest.mark.parametrize(
    ("filters", "index"),
    [
        (AuditFilter(outcome="succeeded", source_id="1001"), "ix_audit_source_started"),
        (
            AuditFilter(outcome="failed", integration_id=1, source_id="1001", since=WEEK_AGO),
            "ix_audit_source_started",
        ),
        (AuditFilter(outcome="failed", target_id="A00000042"), "ix_auditrecord_target_id"),
        (AuditFilter(outcome="failed", flow="invoice", error_class="remote"), "ix_audit_error_class_started"),
        (AuditFilter(outcome="failed", integration_id=1, flow="invoice"), "ix_audit_flow_started"),
    ],
)
def test_audit_filters_combined_take_the_most_selective_index(
    seeded_audit: SeededAudit, filters: AuditFilter, index: str
) -> None:
    # SQLite has no statistics here: the likelihood hints alone keep it off the outcome index, which
    # would walk every failed (or succeeded) record to find one source record's.
    for query in (list_query(filters, limit=50), count_query(filters, limit=COUNT_LIMIT + 1)):
        plan = explain(seeded_audit.engine, query)
        assert any(f"INDEX {index} " in line for line in plan), plan


@pytest.mark.parametrize(
    "filters",
    [AuditFilter(target_id="A00000042"), AuditFilter(system="zoho", since=WEEK_AGO), AuditFilter()],
)
def test_audit_filters_without_their_own_index_still_read_one(
    seeded_audit: SeededAudit, filters: AuditFilter
) -> None:
    page = explain(seeded_audit.engine, list_query(filters, limit=50))

    assert all("INDEX" in line for line in page if "auditrecord" in line), page
