"""The durable job queue: enqueue, claim under a lease, finish, retry with backoff, dead-letter.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so runner replicas never block on one another, and a
write transaction (BEGIN IMMEDIATE) on SQLite. A job whose lease has run out (its runner died) is
claimable again; `finish` and `retry_later` only act while the caller still holds the lease, so a
runner that lost its lease cannot overwrite the outcome of the one that took over.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, tuple_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage.db import is_sqlite, session_scope
from storage.models import Job, JobKind, JobStatus
from storage.types import utcnow

BACKOFF_BASE = 2.0  # seconds; the n-th retry waits up to BASE * 2**(n-1)
BACKOFF_CAP = 300.0  # seconds


def enqueue(
    session: Session,
    *,
    integration_id: int,
    flow: str,
    payload: dict[str, Any],
    kind: str = JobKind.SYNC,
    event_id: int | None = None,
    max_attempts: int = 8,
    run_after: datetime | None = None,
) -> Job:
    """Add a job in the caller's transaction (so an event and its job commit together)."""
    job = Job(
        integration_id=integration_id,
        flow=flow,
        kind=kind,
        payload=payload,
        event_id=event_id,
        max_attempts=max_attempts,
        run_after=run_after or utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def claim(
    engine: Engine, *, worker: str, limit: int, lease: float, skip_integrations: frozenset[int] = frozenset()
) -> list[Job]:
    """Take up to `limit` runnable jobs for `worker`, oldest first, under a lease of `lease` seconds.

    `skip_integrations` leaves out integrations whose lane is full in this runner, so their backlog
    cannot take every slot while another integration's jobs wait.
    """
    now = utcnow()
    query = select(Job).where(_runnable(now))
    if skip_integrations:
        query = query.where(col(Job.integration_id).not_in(sorted(skip_integrations)))
    return _take(engine, query, worker=worker, limit=limit, lease=lease, now=now)


def claim_batch(
    engine: Engine, *, worker: str, integration_id: int, flow: str, limit: int, lease: float
) -> list[Job]:
    """Take up to `limit` more runnable jobs of one integration's flow: fills a batch (Zoho upserts take
    100 records a call) that the ordinary claim started."""
    if limit <= 0:
        return []
    now = utcnow()
    query = select(Job).where(
        col(Job.integration_id) == integration_id, col(Job.flow) == flow, _runnable(now)
    )
    return _take(engine, query, worker=worker, limit=limit, lease=lease, now=now)


def _runnable(now: datetime) -> Any:
    """Queued and due, or running under a lease that ran out (its runner died)."""
    return or_(
        and_(col(Job.status) == JobStatus.QUEUED, col(Job.run_after) <= now),
        and_(col(Job.status) == JobStatus.RUNNING, col(Job.lease_until) < now),
    )


def _take(engine: Engine, query: Any, *, worker: str, limit: int, lease: float, now: datetime) -> list[Job]:
    """Lease the oldest `limit` jobs `query` selects to `worker`, in one write transaction."""
    query = query.order_by(col(Job.run_after), col(Job.id)).limit(limit)
    if not is_sqlite(engine):
        query = query.with_for_update(skip_locked=True)
    with session_scope(engine, write=True) as session:
        jobs = list(session.exec(query))
        for job in jobs:
            job.status = JobStatus.RUNNING
            job.lease_until = now + timedelta(seconds=lease)
            job.locked_by = worker
            job.attempts += 1
            job.updated_at = now
            session.add(job)
    return jobs


def extend_leases(engine: Engine, jobs: list[Job], *, worker: str, lease: float) -> list[Job]:
    """Push the leases of a batch's jobs forward in one statement; returns the jobs no longer ours."""
    until = utcnow() + timedelta(seconds=lease)
    with session_scope(engine) as session:
        ours = set(
            session.exec(
                select(Job.id).where(col(Job.id).in_([job.id for job in jobs]), col(Job.locked_by) == worker)
            ).all()
        )
        if ours:
            session.execute(
                update(Job)
                .where(col(Job.id).in_(ours), col(Job.locked_by) == worker)
                .values(lease_until=until)
            )
    for job in jobs:
        if job.id in ours:
            job.lease_until = until
    return [job for job in jobs if job.id not in ours]


def finish(engine: Engine, job: Job, *, worker: str) -> bool:
    """Mark a job succeeded; False when the lease was lost to another runner."""
    now = utcnow()
    return _update_if_ours(
        engine, job, worker, status=JobStatus.SUCCEEDED, finished_at=now, lease_until=None, last_error=None
    )


def finish_many(engine: Engine, jobs: list[Job], *, worker: str) -> list[Job]:
    """Mark a batch's succeeded jobs done in one statement; returns those whose lease was lost."""
    if not jobs:
        return []
    now = utcnow()
    ours = [tuple_(col(Job.id), col(Job.attempts)) == (job.id, job.attempts) for job in jobs]
    mine = and_(col(Job.locked_by) == worker, or_(*ours))
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(mine, col(Job.status) == JobStatus.RUNNING)
            .values(
                status=JobStatus.SUCCEEDED, finished_at=now, lease_until=None, last_error=None, updated_at=now
            )
        )
        if result.rowcount == len(jobs):
            done = {job.id for job in jobs}
        else:  # a lease was lost: the jobs still ours are the ones now marked succeeded
            done = set(session.exec(select(Job.id).where(mine, col(Job.status) == JobStatus.SUCCEEDED)).all())
    for job in jobs:
        if job.id in done:
            job.status, job.finished_at, job.lease_until, job.last_error = (
                JobStatus.SUCCEEDED,
                now,
                None,
                None,
            )
    return [job for job in jobs if job.id not in done]


def retry_later(engine: Engine, job: Job, *, worker: str, error: str, delay: float | None = None) -> str:
    """Put a failed job back with backoff, or dead-letter it after its last attempt.

    Returns the new status. `delay` overrides the backoff (a remote system's Retry-After).
    """
    now = utcnow()
    if job.attempts >= job.max_attempts:
        _update_if_ours(
            engine, job, worker, status=JobStatus.DEAD, finished_at=now, lease_until=None, last_error=error
        )
        return JobStatus.DEAD
    wait = delay if delay is not None else backoff(job.attempts)
    _update_if_ours(
        engine,
        job,
        worker,
        status=JobStatus.QUEUED,
        run_after=now + timedelta(seconds=wait),
        lease_until=None,
        locked_by=None,
        last_error=error,
    )
    return JobStatus.QUEUED


def postpone(engine: Engine, job: Job, *, worker: str, delay: float, reason: str) -> bool:
    """Put a job back for `delay` seconds without spending one of its attempts: it never got to try
    (another job held the record), so it must not drift towards dead-lettering."""
    return _update_if_ours(
        engine,
        job,
        worker,
        status=JobStatus.QUEUED,
        run_after=utcnow() + timedelta(seconds=delay),
        lease_until=None,
        locked_by=None,
        attempts=max(0, job.attempts - 1),
        last_error=reason,
    )


def hand_back(engine: Engine, job: Job, *, worker: str) -> bool:
    """Return a claimed job that never started, keeping its place in the queue and its attempt."""
    return _update_if_ours(
        engine,
        job,
        worker,
        status=JobStatus.QUEUED,
        lease_until=None,
        locked_by=None,
        attempts=max(0, job.attempts - 1),
    )


def fail(engine: Engine, job: Job, *, worker: str, error: str) -> bool:
    """Dead-letter a job at once: retrying cannot help (bad configuration, a rejected record)."""
    return _update_if_ours(
        engine, job, worker, status=JobStatus.DEAD, finished_at=utcnow(), lease_until=None, last_error=error
    )


def backoff(attempt: int) -> float:
    """Full-jitter exponential backoff for the given attempt number (1-based)."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class QueueStats:
    by_status: dict[str, int]
    oldest_queued_age: float | None  # seconds


def stats(engine: Engine) -> QueueStats:
    """Counts by status and the age of the oldest runnable job."""
    with session_scope(engine) as session:
        rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
        oldest = session.exec(
            select(func.min(Job.run_after)).where(col(Job.status) == JobStatus.QUEUED)
        ).one()
    # min() keeps the column's type, so `oldest` comes back as an aware UTC datetime.
    age = None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
    return QueueStats(by_status={status: count for status, count in rows}, oldest_queued_age=age)


def _update_if_ours(engine: Engine, job: Job, worker: str, **values: Any) -> bool:
    values["updated_at"] = utcnow()
    with session_scope(engine) as session:
        result = session.execute(
            update(Job)
            .where(col(Job.id) == job.id, col(Job.locked_by) == worker, col(Job.attempts) == job.attempts)
            .values(**values)
        )
        updated = result.rowcount == 1
    if updated:
        for name, value in values.items():
            setattr(job, name, value)
    return updated
