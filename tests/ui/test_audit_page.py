"""The audit page through Streamlit's AppTest: the real app.py and pages/audit.py against a seeded SQLite."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from pages._ui import excerpt_for_display, md_code, md_escape, shorten
from storage.audit import write_record
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

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database


def open_app() -> AppTest:
    """The app as a browser would first see it (the audit page is the default page)."""
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("pages/audit.py").run()
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
