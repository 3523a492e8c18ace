"""The job queue's lease semantics, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlmodel import select

from storage import crud, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Job, JobStatus
from storage.types import utcnow


def make_integration(engine: Engine, vault: Vault) -> int:
    workspace = crud.create_workspace(engine, name="Q")
    assert workspace.id is not None
    conn = crud.create_connection(
        engine, vault, workspace_id=workspace.id, system="netsuite", name="n", base_url="http://127.0.0.1"
    )
    integration = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="i",
        source_connection_id=conn.id,
        target_connection_id=conn.id,
        flows=["customer_account"],
    )
    return integration.id


def enqueue(engine: Engine, integration_id: int, n: int, **kwargs: object) -> list[int]:
    with session_scope(engine) as session:
        jobs = [
            queue.enqueue(
                session,
                integration_id=integration_id,
                flow="customer_account",
                payload={"id": str(i)},
                **kwargs,
            )  # type: ignore[arg-type]
            for i in range(n)
        ]
        return [job.id for job in jobs if job.id is not None]


def test_claim_takes_runnable_jobs_oldest_first_under_a_lease(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    ids = enqueue(engine, integration, 3)

    claimed = queue.claim(engine, worker="w1", limit=2, lease=30)

    assert [job.id for job in claimed] == ids[:2]
    assert all(job.status == JobStatus.RUNNING and job.attempts == 1 for job in claimed)
    assert [job.id for job in queue.claim(engine, worker="w2", limit=5, lease=30)] == ids[2:]
    assert queue.claim(engine, worker="w3", limit=5, lease=30) == []


def test_claim_returns_a_job_whose_lease_expired(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    enqueue(engine, integration, 1)
    (first,) = queue.claim(engine, worker="dead-runner", limit=1, lease=30)
    with session_scope(engine) as session:
        row = session.get(Job, first.id)
        assert row is not None
        row.lease_until = utcnow() - timedelta(seconds=1)
        session.add(row)

    (again,) = queue.claim(engine, worker="w2", limit=1, lease=30)

    assert again.id == first.id and again.attempts == 2
    assert queue.finish(engine, first, worker="dead-runner") is False  # the old holder lost it
    assert queue.finish(engine, again, worker="w2") is True


def test_retry_later_backs_off_then_dead_letters(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    enqueue(engine, integration, 1, max_attempts=2)

    (job,) = queue.claim(engine, worker="w", limit=1, lease=30)
    assert queue.retry_later(engine, job, worker="w", error="boom", delay=0) == JobStatus.QUEUED
    (job,) = queue.claim(engine, worker="w", limit=1, lease=30)
    assert queue.retry_later(engine, job, worker="w", error="boom again", delay=0) == JobStatus.DEAD

    assert queue.stats(engine).by_status == {JobStatus.DEAD: 1}


def test_retry_later_honours_the_delay(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    enqueue(engine, integration, 1)
    (job,) = queue.claim(engine, worker="w", limit=1, lease=30)

    queue.retry_later(engine, job, worker="w", error="429", delay=3600)

    assert queue.claim(engine, worker="w", limit=1, lease=30) == []
    assert queue.stats(engine).by_status == {JobStatus.QUEUED: 1}


def test_concurrent_claimers_never_share_a_job(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    ids = enqueue(engine, integration, 60)
    claimed: dict[str, list[int]] = {}

    def claimer(name: str) -> None:
        mine: list[int] = []
        while batch := queue.claim(engine, worker=name, limit=3, lease=30):
            mine.extend(job.id for job in batch if job.id is not None)
        claimed[name] = mine

    threads = [threading.Thread(target=claimer, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    every = [job_id for mine in claimed.values() for job_id in mine]
    assert sorted(every) == ids


def test_finish_many_marks_a_batch_done_and_reports_a_job_another_runner_took(
    engine: Engine, vault: Vault
) -> None:
    enqueue(engine, make_integration(engine, vault), 3)
    jobs = queue.claim(engine, worker="a", limit=3, lease=30)
    with session_scope(engine) as session:  # the third job's lease ran out and runner b took it over
        stolen = session.get(Job, jobs[2].id)
        assert stolen is not None
        stolen.locked_by, stolen.attempts = "b", stolen.attempts + 1
        session.add(stolen)

    lost = queue.finish_many(engine, jobs, worker="a")

    assert [job.id for job in lost] == [jobs[2].id]
    with session_scope(engine) as session:
        statuses = {job.id: job.status for job in session.exec(select(Job))}
    assert statuses == {
        jobs[0].id: JobStatus.SUCCEEDED,
        jobs[1].id: JobStatus.SUCCEEDED,
        jobs[2].id: JobStatus.RUNNING,
    }
