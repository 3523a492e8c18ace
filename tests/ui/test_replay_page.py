"""Replay from the audit page through AppTest: one click on a record, and the filtered failures in bulk.

The page only enqueues; these tests look at the jobs it left in the database (what the runner would
claim), and stand in for the runner by writing the replay's audit record as the executor does.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlmodel import col, select
from streamlit.testing.v1 import AppTest

import runner.replay
from runner.replay import ReplayMode, replay_filtered
from storage.audit import AuditFilter, write_record
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobKind, JobStatus, Outcome
from storage.types import utcnow
from tests.ui.conftest import APP_PATH, FAILED_SOURCE_ID, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database


def open_app() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/audit.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def open_record(record_id: int) -> AppTest:
    at = open_app()
    at.number_input(key="record").set_value(record_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def replay_jobs(seeded: SeededAudit) -> list[Job]:
    with session_scope(seeded.engine) as session:
        return list(
            session.exec(select(Job).where(col(Job.kind) == JobKind.REPLAY).order_by(col(Job.id))).all()
        )


def failed_record(seeded: SeededAudit, source_id: str, minutes_ago: float, **fields: object) -> int:
    """A failed customer_account record of `source_id`, with a payload and a snapshot unless told."""
    values: dict[str, object] = {
        "payload": {"name": f"Customer {source_id}", "crmId": source_id},
        "source_snapshot": {"id": source_id, "companyName": f"Customer {source_id}"},
        "error_class": "remote",
        "error_message": "Zuora rejected the account",
        **fields,
    }
    record = AuditRecord(
        integration_id=seeded.integration_id,
        flow="customer_account",
        source_system="netsuite",
        source_id=source_id,
        target_system="zuora",
        outcome=Outcome.FAILED,
        started_at=utcnow() - timedelta(minutes=minutes_ago),
        **values,
    )
    written = write_record(seeded.engine, record, [])
    assert written.id is not None
    return written.id


def texts(at: AppTest) -> str:
    parts = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(i.value for i in at.info),
        *(s.value for s in at.success),
    ]
    return "\n".join(str(p) for p in parts)


# --- one record ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "refetch"),
    [(ReplayMode.PAYLOAD, False), (ReplayMode.REMAP, False), (ReplayMode.REMAP, True)],
)
def test_replay_button_enqueues_one_replay_job_as_chosen(
    seeded_audit: SeededAudit, mode: ReplayMode, refetch: bool
) -> None:
    failed_id = seeded_audit.failed_id
    at = open_record(failed_id)

    at.radio(key=f"audit_replay_mode_{failed_id}").set_value(mode)
    at.checkbox(key=f"audit_replay_refetch_{failed_id}").set_value(refetch)
    at.button(key=f"audit_replay_{failed_id}").click().run()

    [job] = replay_jobs(seeded_audit)
    assert (job.flow, job.integration_id, job.status) == (
        "customer_account",
        seeded_audit.integration_id,
        JobStatus.QUEUED,
    )
    assert job.payload == {"id": FAILED_SOURCE_ID, "replay_of": failed_id, "mode": mode, "refetch": refetch}
    assert f"Replay queued as job #{job.id} (queued)" in texts(at)


def test_replay_offers_the_sent_payload_first_and_the_current_mapping_without_one(
    seeded_audit: SeededAudit,
) -> None:
    no_payload = failed_record(seeded_audit, "5005", 1, payload=None)

    at = open_record(seeded_audit.failed_id)
    assert at.radio(key=f"audit_replay_mode_{seeded_audit.failed_id}").value == ReplayMode.PAYLOAD
    assert at.radio[0].options == [
        "Re-send the payload that was sent",
        "Map the stored source again with the current mapping",
    ]
    at.number_input(key="record").set_value(no_payload).run()

    assert at.radio(key=f"audit_replay_mode_{no_payload}").value == ReplayMode.REMAP


def test_replay_refused_says_why_and_enqueues_nothing(seeded_audit: SeededAudit) -> None:
    bare = failed_record(seeded_audit, "6006", 1, payload=None, source_snapshot=None)
    at = open_record(bare)

    at.button(key=f"audit_replay_{bare}").click().run()

    assert any("no stored source snapshot" in e.value for e in at.error)
    assert replay_jobs(seeded_audit) == []


def test_replay_links_to_its_own_audit_record_once_the_runner_wrote_it(seeded_audit: SeededAudit) -> None:
    failed_id = seeded_audit.failed_id
    at = open_record(failed_id)
    at.button(key=f"audit_replay_{failed_id}").click().run()
    [job] = replay_jobs(seeded_audit)
    replayed = write_record(  # what the executor writes for the replay job
        seeded_audit.engine,
        AuditRecord(
            job_id=job.id,
            replay_of=failed_id,
            integration_id=seeded_audit.integration_id,
            flow="customer_account",
            source_system="netsuite",
            source_id=FAILED_SOURCE_ID,
            target_system="zuora",
            target_id="A00000077",
            outcome=Outcome.SUCCEEDED,
        ),
        [],
    )

    at.run()
    assert f"Replay job #{job.id} ran: record #{replayed.id}" in texts(at)
    at.button(key=f"audit_open_replay_{replayed.id}").click().run()

    assert at.number_input(key="record").value == replayed.id
    assert f"Record #{replayed.id} · customer\\_account" in texts(at)
    assert (
        at.button(key=f"audit_open_original_{replayed.id}").label == f"Open the original, record #{failed_id}"
    )


def test_replay_warns_when_a_newer_record_of_the_source_succeeded(seeded_audit: SeededAudit) -> None:
    older = failed_record(seeded_audit, FAILED_SOURCE_ID, 60)

    at = open_record(older)

    assert f"Record #{seeded_audit.failed_id} of the same source record is newer" not in texts(at)
    newer = write_record(
        seeded_audit.engine,
        AuditRecord(
            integration_id=seeded_audit.integration_id,
            flow="customer_account",
            source_system="netsuite",
            source_id=FAILED_SOURCE_ID,
            target_system="zuora",
            outcome=Outcome.SUCCEEDED,
        ),
        [],
    )
    at.run()
    assert f"Record #{newer.id} of the same source record is newer (succeeded)" in texts(at)


# --- bulk ----------------------------------------------------------------------------------------------


@pytest.fixture
def more_failures(seeded_audit: SeededAudit) -> Iterator[dict[str, int]]:
    """Beside the seeded failure: an older failure of the same source, another source's failure, and a
    failure that a later success already fixed."""
    fixed = failed_record(seeded_audit, "8008", 50)
    write_record(
        seeded_audit.engine,
        AuditRecord(
            integration_id=seeded_audit.integration_id,
            flow="customer_account",
            source_system="netsuite",
            source_id="8008",
            target_system="zuora",
            outcome=Outcome.SUCCEEDED,
            started_at=utcnow() - timedelta(minutes=40),
        ),
        [],
    )
    yield {
        "older": failed_record(seeded_audit, FAILED_SOURCE_ID, 20),
        "other": failed_record(seeded_audit, "7007", 10),
        "fixed": fixed,
    }


def test_bulk_replay_counts_first_then_enqueues_each_source_once_with_a_progress_bar(
    seeded_audit: SeededAudit, more_failures: dict[str, int]
) -> None:
    at = open_app()
    assert "audit_bulk_confirm" not in _keys(at)

    at.button(key="audit_bulk_count").click().run()

    [count] = at.info
    assert (
        "**4 failed records** in this filter (customer\\_account 4), from **3 source records**" in count.value
    )
    assert replay_jobs(seeded_audit) == []  # counting enqueues nothing
    at.radio(key="audit_bulk_mode").set_value(ReplayMode.REMAP)
    at.button(key="audit_bulk_confirm").click().run()

    jobs = replay_jobs(seeded_audit)
    assert sorted(job.payload["replay_of"] for job in jobs) == sorted(
        [seeded_audit.failed_id, more_failures["other"]]
    )
    assert {job.payload["mode"] for job in jobs} == {ReplayMode.REMAP}
    [bar] = at.progress
    assert (bar.value, bar.text) == (100, "Enqueued 2 of 2 replays")
    summary = at.success[0].value
    assert "Enqueued **2 replay jobs**" in summary
    assert "Folded in 1 older failure of the same source records" in summary
    assert "Left alone 1 source record that a later sync already succeeded with" in summary
    at.run()
    assert "audit_bulk_confirm" not in _keys(at)  # the confirmation is spent: no second click
    assert "Enqueued **2 replay jobs**" in texts(at)


def test_bulk_replay_follows_the_filter(seeded_audit: SeededAudit, more_failures: dict[str, int]) -> None:
    at = open_app()
    at.text_input(key="audit_source_id").set_value("7007").run()

    at.button(key="audit_bulk_count").click().run()
    assert "**1 failed record** in this filter" in at.info[0].value
    at.button(key="audit_bulk_confirm").click().run()

    [job] = replay_jobs(seeded_audit)
    assert job.payload["replay_of"] == more_failures["other"]


def test_bulk_replay_count_is_forgotten_when_the_filter_changes(
    seeded_audit: SeededAudit, more_failures: dict[str, int]
) -> None:
    at = open_app()
    at.button(key="audit_bulk_count").click().run()
    assert "audit_bulk_confirm" in _keys(at)

    at.selectbox(key="audit_flow").set_value("customer_account").run()

    assert "audit_bulk_confirm" not in _keys(at)
    assert "audit_bulk_count" in _keys(at)


def test_bulk_replay_over_the_limit_is_refused_with_what_to_do(
    seeded_audit: SeededAudit, more_failures: dict[str, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runner.replay, "REPLAY_BATCH_LIMIT", 3)
    at = open_app()

    at.button(key="audit_bulk_count").click().run()

    [refusal] = at.error
    assert "More than 3 failed records match: a bulk replay takes at most 3" in refusal.value
    assert "Narrow the filter" in refusal.value
    assert "audit_bulk_confirm" not in _keys(at)
    at.button(key="audit_bulk_cancel").click().run()
    assert "audit_bulk_count" in _keys(at)
    assert replay_jobs(seeded_audit) == []


def test_bulk_replay_applies_only_to_failed_records(seeded_audit: SeededAudit) -> None:
    at = open_app()

    at.segmented_control(key="audit_outcome").set_value("succeeded").run()

    assert "Bulk replay re-runs failed records" in texts(at)
    assert "audit_bulk_count" not in _keys(at)


def test_replay_filtered_reports_progress_chunk_by_chunk(
    seeded_audit: SeededAudit, more_failures: dict[str, int]
) -> None:
    reports: list[tuple[int, int]] = []

    result = replay_filtered(
        seeded_audit.engine,
        AuditFilter(),
        on_progress=lambda done, total: reports.append((done, total)),
        chunk=1,
    )

    assert reports == [(0, 2), (1, 2), (2, 2)]
    assert (len(result.job_ids), result.selected, result.duplicates, result.superseded, result.refused) == (
        2,
        4,
        1,
        1,
        0,
    )


def _keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}
