"""The queue's fast paths: per-lane claim limits, settling jobs with their audit records in one
transaction, and the lease guard on every settling function. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from storage import audit, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditAttempt, AuditRecord, Job, JobStatus, Outcome
from storage.types import utcnow
from tests.storage.test_queue import enqueue, make_integration


def second_integration(engine: Engine, vault: Vault, first: int) -> int:
    """Another integration on the same workspace and connection as `first`."""
    from storage import crud

    existing = crud.get_integration(engine, integration_id=first)
    assert existing is not None
    return crud.create_integration(
        engine,
        vault,
        workspace_id=existing.workspace_id,
        name="other",
        source_connection_id=existing.source_connection_id,
        target_connection_id=existing.target_connection_id,
        flows=["customer_account"],
    ).id


def statuses(engine: Engine) -> dict[int | None, str]:
    with session_scope(engine) as session:
        return {job.id: job.status for job in session.exec(select(Job))}


def take_over(engine: Engine, job: Job, worker: str) -> None:
    """Another runner took `job` over after its lease ran out."""
    with session_scope(engine) as session:
        row = session.get(Job, job.id)
        assert row is not None
        row.locked_by, row.attempts = worker, row.attempts + 1
        session.add(row)


def record_for(job: Job, outcome: str = Outcome.SUCCEEDED) -> AuditRecord:
    return AuditRecord(
        job_id=job.id,
        integration_id=job.integration_id,
        flow=job.flow,
        source_system="netsuite",
        source_id=str(job.payload.get("id")),
        target_system="zuora",
        outcome=outcome,
    )


class Attempt:
    def __init__(self, status: int) -> None:
        self.system, self.method, self.url = "zuora", "POST", "https://example.test/v1/accounts"
        self.status, self.duration_ms, self.response_excerpt, self.error = status, 12.34567, "{}", None
        self.at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_claim_per_integration_limit_caps_each_lane_and_keeps_the_oldest_first(
    engine: Engine, vault: Vault
) -> None:
    busy = make_integration(engine, vault)
    quiet = second_integration(engine, vault, busy)
    backlog = enqueue(engine, busy, 6)  # older than the quiet lane's jobs
    waiting = enqueue(engine, quiet, 2)

    claimed = queue.claim(engine, worker="w", limit=5, lease=30, per_integration_limit={busy: 2})

    assert [job.id for job in claimed] == backlog[:2] + waiting
    assert all(job.status == JobStatus.RUNNING and job.locked_by == "w" for job in claimed)
    assert statuses(engine)[backlog[2]] == JobStatus.QUEUED


@pytest.mark.parametrize("how", ["cap of zero", "skip_integrations"])
def test_claim_per_integration_limit_of_zero_skips_the_lane(engine: Engine, vault: Vault, how: str) -> None:
    full = make_integration(engine, vault)
    other = second_integration(engine, vault, full)
    enqueue(engine, full, 3)
    waiting = enqueue(engine, other, 2)
    skip = {"skip_integrations": frozenset({full})} if how == "skip_integrations" else {}
    caps = {"per_integration_limit": {full: 0}} if how == "cap of zero" else {"per_integration_limit": {}}

    claimed = queue.claim(engine, worker="w", limit=5, lease=30, **skip, **caps)  # type: ignore[arg-type]

    assert [job.id for job in claimed] == waiting


def test_claim_per_integration_limit_respects_the_total_limit(engine: Engine, vault: Vault) -> None:
    first = make_integration(engine, vault)
    second = second_integration(engine, vault, first)
    a = enqueue(engine, first, 3)
    b = enqueue(engine, second, 3)

    claimed = queue.claim(engine, worker="w", limit=4, lease=30, per_integration_limit={first: 3, second: 3})

    assert [job.id for job in claimed] == a + b[:1]
    rest = queue.claim(engine, worker="w2", limit=9, lease=30, per_integration_limit={first: 3})
    assert [job.id for job in rest] == b[1:]
    assert sorted(statuses(engine).values()) == [JobStatus.RUNNING] * 6


def test_claim_batch_takes_only_the_named_flow_of_the_integration(engine: Engine, vault: Vault) -> None:
    first = make_integration(engine, vault)
    second = second_integration(engine, vault, first)
    mine = enqueue(engine, first, 3)
    enqueue(engine, second, 2)

    batch = queue.claim_batch(
        engine, worker="w", integration_id=first, flow="customer_account", limit=10, lease=30
    )

    assert [job.id for job in batch] == mine
    assert all(job.attempts == 1 for job in batch)


def test_settle_writes_the_audit_records_and_settles_every_outcome_in_one_go(
    engine: Engine, vault: Vault
) -> None:
    enqueue(engine, make_integration(engine, vault), 5)
    done, retry, later, dead, back = queue.claim(engine, worker="w", limit=5, lease=30)
    records = [record_for(job) for job in (done, retry, later, dead)]

    lost = queue.settle(
        engine,
        [
            queue.succeeded(done),
            queue.retrying(retry, error="503", delay=3600),
            queue.postponed(later, delay=60, reason="link busy"),
            queue.failed(dead, error="rejected"),
            queue.handed_back(back),
        ],
        worker="w",
        audit_records=[(record, [Attempt(201)]) for record in records],
    )

    assert lost == []
    assert statuses(engine) == {
        done.id: JobStatus.SUCCEEDED,
        retry.id: JobStatus.QUEUED,
        later.id: JobStatus.QUEUED,
        dead.id: JobStatus.DEAD,
        back.id: JobStatus.QUEUED,
    }
    assert (done.status, retry.status, dead.status) == (JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.DEAD)
    with session_scope(engine) as session:
        by_id = {job.id: job for job in session.exec(select(Job))}
    assert by_id[retry.id].attempts == 1 and by_id[retry.id].last_error == "503"
    assert by_id[retry.id].run_after > utcnow() + timedelta(seconds=3000)
    assert by_id[later.id].attempts == 0 and by_id[later.id].locked_by is None  # attempt not spent
    assert by_id[back.id].attempts == 0 and by_id[back.id].run_after == back.run_after  # its place kept
    assert all(record.id is not None for record in records)
    assert [audit.get_record(engine, record.id or 0) is not None for record in records] == [True] * 4


def test_settle_leaves_a_job_another_runner_took_but_still_audits_it(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 3)
    mine, stolen, stolen_too = queue.claim(engine, worker="a", limit=3, lease=30)
    take_over(engine, stolen, "b")
    take_over(engine, stolen_too, "b")

    lost = queue.settle(
        engine,
        [queue.succeeded(mine), queue.succeeded(stolen), queue.failed(stolen_too, error="x")],
        worker="a",
        audit_records=[(record_for(job), []) for job in (mine, stolen, stolen_too)],
    )

    assert [job.id for job in lost] == [stolen.id, stolen_too.id]
    assert stolen.status == JobStatus.RUNNING and stolen_too.status == JobStatus.RUNNING  # untouched
    assert statuses(engine) == {
        mine.id: JobStatus.SUCCEEDED,
        stolen.id: JobStatus.RUNNING,
        stolen_too.id: JobStatus.RUNNING,
    }
    assert audit.count_records(engine) == 3


def test_settle_rolls_the_audit_records_back_with_the_jobs_on_error(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 1)
    (job,) = queue.claim(engine, worker="w", limit=1, lease=30)
    broken = record_for(job)
    broken.integration_id = 999_999  # no such integration: the foreign key refuses the record

    with pytest.raises(Exception):  # noqa: B017 - the driver's IntegrityError
        queue.settle(engine, [queue.succeeded(job)], worker="w", audit_records=[(broken, [])])

    assert statuses(engine) == {job.id: JobStatus.RUNNING}
    assert audit.count_records(engine) == 0


def test_retrying_on_the_last_attempt_dead_letters(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 1, max_attempts=1)
    (job,) = queue.claim(engine, worker="w", limit=1, lease=30)

    assert queue.settle(engine, [queue.retrying(job, error="boom")], worker="w") == []

    assert job.status == JobStatus.DEAD and statuses(engine) == {job.id: JobStatus.DEAD}


@pytest.mark.parametrize(
    "settle",
    [
        lambda engine, job: queue.finish(engine, job, worker="a"),
        lambda engine, job: queue.fail(engine, job, worker="a", error="x"),
        lambda engine, job: queue.postpone(engine, job, worker="a", delay=1, reason="x"),
        lambda engine, job: queue.hand_back(engine, job, worker="a"),
    ],
    ids=["finish", "fail", "postpone", "hand_back"],
)
def test_settling_functions_refuse_a_job_whose_lease_was_lost(engine: Engine, vault: Vault, settle) -> None:  # type: ignore[no-untyped-def]
    enqueue(engine, make_integration(engine, vault), 1)
    (job,) = queue.claim(engine, worker="a", limit=1, lease=30)
    take_over(engine, job, "b")

    assert settle(engine, job) is False

    assert statuses(engine) == {job.id: JobStatus.RUNNING}
    assert job.status == JobStatus.RUNNING and job.locked_by == "a"  # the caller's copy is untouched too


def test_retry_later_leaves_a_job_whose_lease_was_lost(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 1)
    (job,) = queue.claim(engine, worker="a", limit=1, lease=30)
    take_over(engine, job, "b")

    queue.retry_later(engine, job, worker="a", error="x", delay=0)

    with session_scope(engine) as session:
        row = session.get(Job, job.id)
        assert row is not None
        assert (row.status, row.locked_by, row.last_error) == (JobStatus.RUNNING, "b", None)


def test_extend_leases_moves_our_leases_and_reports_the_lost(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 2)
    mine, stolen = queue.claim(engine, worker="a", limit=2, lease=5)
    take_over(engine, stolen, "b")
    before = mine.lease_until
    assert before is not None

    lost = queue.extend_leases(engine, [mine, stolen], worker="a", lease=600)

    assert lost == [stolen]
    assert mine.lease_until is not None and mine.lease_until > before + timedelta(seconds=500)
    with session_scope(engine) as session:
        row = session.get(Job, mine.id)
        assert row is not None and row.lease_until == mine.lease_until


def test_finish_many_with_jobs_of_different_attempt_counts(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 2)
    first, second = queue.claim(engine, worker="w", limit=2, lease=30)
    queue.retry_later(engine, second, worker="w", error="x", delay=0)
    (second,) = queue.claim(engine, worker="w", limit=1, lease=30)
    assert (first.attempts, second.attempts) == (1, 2)

    assert queue.finish_many(engine, [first, second], worker="w") == []

    assert set(statuses(engine).values()) == {JobStatus.SUCCEEDED}


def test_write_records_gives_ids_and_keeps_attempts_in_order(engine: Engine, vault: Vault) -> None:
    enqueue(engine, make_integration(engine, vault), 2)
    jobs = queue.claim(engine, worker="w", limit=2, lease=30)
    records = [record_for(job) for job in jobs]
    records[0].payload = {"Name": "Acme", "nested": {"n": 1}}
    records[1].outcome, records[1].error_class = Outcome.FAILED, "remote"

    audit.write_records(engine, [(records[0], [Attempt(429), Attempt(201)]), (records[1], [])])

    assert records[0].id is not None and records[1].id is not None and records[0].id != records[1].id
    found = audit.get_record(engine, records[0].id)
    assert found is not None
    stored, attempts = found
    assert stored.payload == {"Name": "Acme", "nested": {"n": 1}} and stored.source_snapshot is None
    assert stored.started_at == records[0].started_at and stored.job_id == jobs[0].id
    assert [(a.seq, a.status, a.duration_ms) for a in attempts] == [(1, 429, 12.346), (2, 201, 12.346)]
    assert all(isinstance(a, AuditAttempt) and a.at == Attempt(0).at for a in attempts)
    other = audit.get_record(engine, records[1].id)
    assert other is not None and other[0].error_class == "remote" and other[1] == []
