"""The Error triage page through AppTest: groups listed, decided on, replayed, and one record's payload
edited and replayed. The page only enqueues; these tests look at what it left in the database."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlmodel import col, select
from streamlit.testing.v1 import AppTest

from storage.audit import write_record
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobKind, Outcome
from storage.triage import TriageGroup, edits_of
from storage.types import utcnow
from tests.ui.conftest import APP_PATH, FAILED_SOURCE_ID, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/triage.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def only_group(seeded: SeededAudit) -> TriageGroup:
    with session_scope(seeded.engine) as session:
        [group] = session.exec(select(TriageGroup)).all()
        return group


def open_group(seeded: SeededAudit) -> tuple[AppTest, TriageGroup]:
    at = open_page()
    group = only_group(seeded)
    at.selectbox(key="triage_group").set_value(group.id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at, group


def replay_jobs(seeded: SeededAudit) -> list[Job]:
    with session_scope(seeded.engine) as session:
        query = select(Job).where(col(Job.kind) == JobKind.REPLAY).order_by(col(Job.id))
        return list(session.exec(query).all())


def texts(at: AppTest) -> str:
    parts = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(i.value for i in at.info),
        *(s.value for s in at.success),
        *(w.value for w in at.warning),
    ]
    return "\n".join(str(p) for p in parts)


def test_triage_page_is_in_the_sidebar_and_says_when_nothing_failed(ui_database_url: str) -> None:
    at = open_page()

    assert at.title[0].value == "Error triage"
    assert "Nothing to triage" in texts(at)


def test_triage_page_lists_the_failure_group_with_its_pattern_and_count(seeded_audit: SeededAudit) -> None:
    at = open_page()

    [table] = at.dataframe
    rows = table.value.to_dict("records")
    assert [(r["error_class"], r["flow"], r["count"], r["status"]) for r in rows] == [
        ("remote", "customer_account", 1, "● open")
    ]
    assert rows[0]["pattern"].startswith("Zuora rejected the account: billToContact.country <value> is not")
    at.selectbox(key="triage_flow").set_value("invoice_invoice").run()
    assert not at.dataframe and "Nothing to triage" in texts(at)


def test_acknowledge_assign_and_resolve_a_group(seeded_audit: SeededAudit) -> None:
    at, group = open_group(seeded_audit)

    at.button(key="triage_ack").click().run()
    assert only_group(seeded_audit).status == "acknowledged"
    assert "Acknowledged." in texts(at)

    at.text_input(key=f"triage_assignee_{group.id}").input("Dana Ops")
    at.text_area(key=f"triage_note_{group.id}").input("Atlantis is not a country: ask sales")
    at.button(key="triage_assign").click().run()
    assigned = only_group(seeded_audit)
    assert (assigned.status, assigned.assignee, assigned.note, assigned.updated_by) == (
        "assigned",
        "Dana Ops",
        "Atlantis is not a country: ask sales",
        "admin",
    )
    assert at.dataframe[0].value.to_dict("records")[0]["assignee"] == "Dana Ops"

    at.text_input(key=f"triage_resolve_note_{group.id}").input("fixed in NetSuite")
    at.button(key="triage_resolve").click().run()
    resolved = only_group(seeded_audit)
    assert (resolved.status, resolved.resolution, resolved.note) == (
        "resolved",
        "manual",
        "fixed in NetSuite",
    )
    assert "Nothing to triage" in texts(at)
    at.toggle(key="triage_resolved").set_value(True).run()
    assert at.dataframe[0].value.to_dict("records")[0]["status"] == "✓ resolved"


def test_replay_group_asks_for_confirmation_with_the_count_then_enqueues(seeded_audit: SeededAudit) -> None:
    at, _ = open_group(seeded_audit)

    at.button(key="triage_replay").click().run()
    assert replay_jobs(seeded_audit) == []
    assert "Replay **1 failing record** of this group?" in texts(at)
    at.button(key="triage_replay_confirm").click().run()

    [job] = replay_jobs(seeded_audit)
    assert job.payload == {
        "id": FAILED_SOURCE_ID,
        "replay_of": seeded_audit.failed_id,
        "mode": "payload",
        "refetch": False,
    }
    assert f"replay job #{job.id}" not in texts(at)  # one group replay is reported as a tally
    assert "Group #" in texts(at) and "0 of 1 ran" in texts(at)
    assert only_group(seeded_audit).status == "acknowledged"


def test_edit_and_replay_validates_the_json_then_enqueues_the_edited_payload(
    seeded_audit: SeededAudit,
) -> None:
    at, _ = open_group(seeded_audit)
    failed_id = seeded_audit.failed_id
    at.selectbox(key="triage_record").set_value(failed_id).run()
    editor = at.text_area(key=f"triage_payload_{failed_id}")
    stored = json.loads(editor.value)
    assert stored["billToContact"] == {"country": "Atlantis"}

    editor.input('{"name": "Initech",\n "crmId": }')
    at.button(key="triage_edit_replay").click().run()
    assert any("not valid JSON" in e.value and "line 2, column 11" in e.value for e in at.error)

    at.text_area(key=f"triage_payload_{failed_id}").input(json.dumps({**stored, "name": ""}))
    at.button(key="triage_edit_replay").click().run()
    assert any("required fields missing or empty: name, billToContact.lastName" in e.value for e in at.error)
    assert replay_jobs(seeded_audit) == []

    fixed = {**stored, "billToContact": {"country": "United States", "lastName": "Initech"}}
    at.text_area(key=f"triage_payload_{failed_id}").input(json.dumps(fixed))
    at.button(key="triage_edit_replay").click().run()

    [job] = replay_jobs(seeded_audit)
    [edit] = edits_of(seeded_audit.engine, failed_id)
    assert job.payload["edit_id"] == edit.id and job.payload["replay_of"] == failed_id
    assert (edit.payload, edit.edited_by, edit.job_id) == (fixed, "admin", job.id)
    assert f"replay job #{job.id} queued" in texts(at)


def test_the_page_shows_an_edited_replays_outcome_once_the_runner_wrote_it(seeded_audit: SeededAudit) -> None:
    at, _ = open_group(seeded_audit)
    failed_id = seeded_audit.failed_id
    at.selectbox(key="triage_record").set_value(failed_id).run()
    fixed = {"name": "Initech", "crmId": FAILED_SOURCE_ID, "billToContact": {"lastName": "Initech"}}
    at.text_area(key=f"triage_payload_{failed_id}").input(json.dumps(fixed))
    at.button(key="triage_edit_replay").click().run()
    [job] = replay_jobs(seeded_audit)

    # What the runner would write for the replay job (tests/e2e/test_triage.py runs the real one).
    now = utcnow()
    write_record(
        seeded_audit.engine,
        AuditRecord(
            job_id=job.id,
            integration_id=seeded_audit.integration_id,
            flow="customer_account",
            source_system="netsuite",
            source_id=FAILED_SOURCE_ID,
            target_system="zuora",
            target_id="A00000077",
            action="create",
            payload=fixed,
            outcome=Outcome.SUCCEEDED,
            replay_of=failed_id,
            started_at=now,
            finished_at=now + timedelta(seconds=1),
        ),
        [],
    )
    at.run()

    assert f"replay job #{job.id} ran" in texts(at) and "succeeded" in texts(at)
    assert "Nothing to triage" in texts(at)  # the group resolved itself: its only record synced
    assert (only_group(seeded_audit).status, only_group(seeded_audit).resolution) == (
        "resolved",
        "auto_synced",
    )
