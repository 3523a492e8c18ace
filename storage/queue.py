"""The durable job queue: enqueue, claim under a lease, finish, retry with backoff, dead-letter.

Claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL, so runner replicas never block on one another, and a
write transaction (BEGIN IMMEDIATE) on SQLite. A job whose lease has run out (its runner died) is
claimable again; `finish` and `retry_later` only act while the caller still holds the lease, so a
runner that lost its lease cannot overwrite the outcome of the one that took over.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_attribute
from sqlmodel import Session, col
from sqlmodel import select as select_model

from storage.audit import AttemptLike, insert_records
from storage.construct import construct
from storage.db import is_sqlite, session_scope, transaction
from storage.models import AuditRecord, Job, JobKind, JobStatus
from storage.types import utcnow

JOB = Job.__table__  # type: ignore[attr-defined]

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
    job = construct(
        Job,
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
    engine: Engine,
    *,
    worker: str,
    limit: int,
    lease: float,
    skip_integrations: frozenset[int] = frozenset(),
    per_integration_limit: Mapping[int, int] | None = None,
) -> list[Job]:
    """Take up to `limit` runnable jobs for `worker`, oldest first, under a lease of `lease` seconds.

    `skip_integrations` leaves out integrations whose lane is full in this runner, so their backlog
    cannot take every slot while another integration's jobs wait. `per_integration_limit` goes further:
    integration id → at most that many of its jobs in this claim (0 skips it, as `skip_integrations`
    does); integrations it does not name are limited by `limit` alone. A worker passes each lane's free
    slots, so it never claims jobs it would have to hand back; the oldest jobs still come first across
    the lanes.
    """
    if limit <= 0:
        return []
    now = utcnow()
    caps = {integration: max(0, int(cap)) for integration, cap in (per_integration_limit or {}).items()}
    caps.update(dict.fromkeys(skip_integrations, 0))
    if not caps:
        return _take(engine, [_runnable(now)], worker=worker, limit=limit, lease=lease, now=now)
    # One candidate query per capped lane and one for every other integration, each oldest first and
    # LIMITed, in the claim's own write transaction; the oldest `limit` of them are taken.
    branches = [
        ([_runnable(now), JOB.c.integration_id.not_in(sorted(caps))], limit),
        *(
            ([_runnable(now), JOB.c.integration_id == integration], min(cap, limit))
            for integration, cap in sorted(caps.items())
            if cap > 0
        ),
    ]
    with transaction(engine, write=True) as connection:
        candidates: list[tuple[datetime, int]] = []
        for conditions, most in branches:
            rows = connection.execute(_candidates(engine, conditions, most, JOB.c.run_after))
            candidates.extend((run_after, job_id) for run_after, job_id in rows)
        chosen = [job_id for _, job_id in sorted(candidates, key=lambda c: (c[0], c[1]))[:limit]]
        if not chosen:
            return []
        return _lease(connection, JOB.c.id.in_(chosen), worker=worker, lease=lease, now=now)


def claim_batch(
    engine: Engine, *, worker: str, integration_id: int, flow: str, limit: int, lease: float
) -> list[Job]:
    """Take up to `limit` more runnable jobs of one integration's flow: fills a batch (Zoho upserts take
    100 records a call) that the ordinary claim started."""
    if limit <= 0:
        return []
    now = utcnow()
    conditions = [JOB.c.integration_id == integration_id, JOB.c.flow == flow, _runnable(now)]
    return _take(engine, conditions, worker=worker, limit=limit, lease=lease, now=now)


def _runnable(now: datetime) -> Any:
    """Queued and due, or running under a lease that ran out (its runner died)."""
    return or_(
        and_(JOB.c.status == JobStatus.QUEUED, JOB.c.run_after <= now),
        and_(JOB.c.status == JobStatus.RUNNING, JOB.c.lease_until < now),
    )


def _candidates(engine: Engine, conditions: list[Any], limit: int, *columns: Any) -> Any:
    """The ids (and `columns`) of the oldest `limit` jobs matching `conditions`; on PostgreSQL locked
    with SKIP LOCKED, so replicas claiming at once pass over each other's rows instead of waiting."""
    query = select(*columns, JOB.c.id).where(*conditions).order_by(JOB.c.run_after, JOB.c.id).limit(limit)
    return query if is_sqlite(engine) else query.with_for_update(skip_locked=True)


def _take(
    engine: Engine, conditions: list[Any], *, worker: str, limit: int, lease: float, now: datetime
) -> list[Job]:
    """Lease the oldest `limit` jobs matching `conditions` to `worker`, in one write transaction and one
    statement: UPDATE … WHERE id IN (the oldest, SKIP LOCKED) RETURNING the claimed rows."""
    picked = _candidates(engine, conditions, limit)
    if is_sqlite(engine):
        # BEGIN IMMEDIATE already serialises claimers; the subquery is evaluated once.
        chosen = JOB.c.id.in_(picked.scalar_subquery())
    else:
        # A MATERIALIZED CTE: PostgreSQL runs the locking SELECT exactly once, so the UPDATE cannot
        # take more than `limit` rows (an IN-subquery could be re-scanned under some plans).
        cte = picked.cte("picked").prefix_with("MATERIALIZED")
        chosen = JOB.c.id.in_(select(cte.c.id))
    with transaction(engine, write=True) as connection:
        return _lease(connection, chosen, worker=worker, lease=lease, now=now)


def _lease(connection: Connection, chosen: Any, *, worker: str, lease: float, now: datetime) -> list[Job]:
    """Lease the `chosen` jobs to `worker`; returns them, oldest first, as detached Job objects (built
    from the RETURNING rows without the ORM's loading machinery)."""
    statement = (
        update(JOB)
        .where(chosen)
        .values(
            status=JobStatus.RUNNING,
            lease_until=now + timedelta(seconds=lease),
            locked_by=worker,
            attempts=JOB.c.attempts + 1,
            updated_at=now,
        )
        .returning(*JOB.columns)
    )
    jobs = []
    for row in connection.execute(statement):
        job = construct(Job, **row._mapping)
        make_transient_to_detached(job)
        jobs.append(job)
    jobs.sort(key=lambda job: (job.run_after, job.id or 0))
    return jobs


def extend_leases(engine: Engine, jobs: list[Job], *, worker: str, lease: float) -> list[Job]:
    """Push the leases of a batch's jobs forward in one statement; returns the jobs no longer ours."""
    if not jobs:
        return []
    until = utcnow() + timedelta(seconds=lease)
    params = {"p_ids": [job.id for job in jobs], "p_worker": worker, "lease_until": until}
    with transaction(engine) as connection:
        ours = set(connection.execute(_EXTEND, params).scalars())
    for job in jobs:
        if job.id in ours:
            set_attribute(job, "lease_until", until)
    return [job for job in jobs if job.id not in ours]


def finish(engine: Engine, job: Job, *, worker: str) -> bool:
    """Mark a job succeeded; False when the lease was lost to another runner."""
    return _update_if_ours(engine, job, worker, _values(succeeded(job), utcnow()))


def finish_many(engine: Engine, jobs: list[Job], *, worker: str) -> list[Job]:
    """Mark a batch's succeeded jobs done in one statement; returns those whose lease was lost."""
    if not jobs:
        return []
    now = utcnow()
    with transaction(engine) as connection:
        done = _finish_all(connection, jobs, worker=worker, now=now, running_only=True)
    return [job for job in jobs if job.id not in done]


def retry_later(engine: Engine, job: Job, *, worker: str, error: str, delay: float | None = None) -> str:
    """Put a failed job back with backoff, or dead-letter it after its last attempt.

    Returns the new status. `delay` overrides the backoff (a remote system's Retry-After).
    """
    values = _values(retrying(job, error=error, delay=delay), utcnow())
    _update_if_ours(engine, job, worker, values)
    return str(values["status"])


def postpone(engine: Engine, job: Job, *, worker: str, delay: float, reason: str) -> bool:
    """Put a job back for `delay` seconds without spending one of its attempts: it never got to try
    (another job held the record), so it must not drift towards dead-lettering."""
    return _update_if_ours(engine, job, worker, _values(postponed(job, delay=delay, reason=reason), utcnow()))


def hand_back(engine: Engine, job: Job, *, worker: str) -> bool:
    """Return a claimed job that never started, keeping its place in the queue and its attempt."""
    return _update_if_ours(engine, job, worker, _values(handed_back(job), utcnow()))


def fail(engine: Engine, job: Job, *, worker: str, error: str) -> bool:
    """Dead-letter a job at once: retrying cannot help (bad configuration, a rejected record)."""
    return _update_if_ours(engine, job, worker, _values(failed(job, error=error), utcnow()))


# --- settling many jobs, with their audit records, in one transaction --------------------------------


@dataclass(frozen=True)
class Settlement:
    """What becomes of one claimed job; made by `succeeded`, `retrying`, `postponed`, `failed` or
    `handed_back`, applied by `settle` (each means what the function of the same verb does)."""

    job: Job
    action: str  # "finish" | "retry" | "postpone" | "fail" | "hand_back"
    error: str | None = None
    delay: float | None = None  # seconds: Retry-After for "retry" (None: backoff), the wait for "postpone"


def succeeded(job: Job) -> Settlement:
    """The job is done (`finish`)."""
    return Settlement(job, "finish")


def retrying(job: Job, *, error: str, delay: float | None = None) -> Settlement:
    """Back to the queue after a backoff (or `delay`), dead once its attempts are spent (`retry_later`)."""
    return Settlement(job, "retry", error=error, delay=delay)


def postponed(job: Job, *, delay: float, reason: str) -> Settlement:
    """Back to the queue for `delay` seconds, attempt not spent (`postpone`)."""
    return Settlement(job, "postpone", error=reason, delay=delay)


def failed(job: Job, *, error: str) -> Settlement:
    """Dead-lettered at once (`fail`)."""
    return Settlement(job, "fail", error=error)


def handed_back(job: Job) -> Settlement:
    """Back to the queue in its old place, attempt not spent (`hand_back`)."""
    return Settlement(job, "hand_back")


def settle(
    engine: Engine,
    settlements: Iterable[Settlement],
    *,
    worker: str,
    audit_records: Iterable[tuple[AuditRecord, Iterable[AttemptLike]]] = (),
) -> list[Job]:
    """Write `audit_records` (with their attempts) and settle every job, in one transaction.

    The audit trail and the jobs' new states commit together: a crash can no longer fall between them,
    and it is one commit instead of one per record and one per job. Each job changes only while
    `worker` still holds its lease (same holder, same attempt), like `finish` and friends; the audit
    records are written either way (the attempt happened). Successes go in one statement, every other
    outcome in one statement each. Returns the jobs whose lease was lost (left as they were); the others
    are updated in place (`job.status` tells a retry from a dead letter).
    """
    pending = list(settlements)
    now = utcnow()
    with transaction(engine, write=True) as connection:
        insert_records(connection, audit_records)
        finishing = [s.job for s in pending if s.action == "finish"]
        settled = _finish_all(connection, finishing, worker=worker, now=now, running_only=False)
        for settlement in pending:
            if settlement.action == "finish":
                continue
            values = _values(settlement, now)
            if _apply_if_ours(connection, settlement.job, worker, values):
                settled.add(settlement.job.id)
    return [s.job for s in pending if s.job.id not in settled]


def _values(settlement: Settlement, now: datetime) -> dict[str, Any]:
    """The column values `settlement` gives its job (the guard, lease and attempt, is the caller's)."""
    job, action = settlement.job, settlement.action
    values: dict[str, Any]
    if action == "finish":
        values = {"status": JobStatus.SUCCEEDED, "finished_at": now, "lease_until": None, "last_error": None}
    elif action == "fail" or (action == "retry" and job.attempts >= job.max_attempts):
        values = {
            "status": JobStatus.DEAD,
            "finished_at": now,
            "lease_until": None,
            "last_error": settlement.error,
        }
    elif action == "retry":
        wait = settlement.delay if settlement.delay is not None else backoff(job.attempts)
        values = {
            "status": JobStatus.QUEUED,
            "run_after": now + timedelta(seconds=wait),
            "lease_until": None,
            "locked_by": None,
            "last_error": settlement.error,
        }
    elif action == "postpone":
        values = {
            "status": JobStatus.QUEUED,
            "run_after": now + timedelta(seconds=settlement.delay or 0.0),
            "lease_until": None,
            "locked_by": None,
            "attempts": max(0, job.attempts - 1),
            "last_error": settlement.error,
        }
    elif action == "hand_back":
        values = {
            "status": JobStatus.QUEUED,
            "lease_until": None,
            "locked_by": None,
            "attempts": max(0, job.attempts - 1),
        }
    else:
        raise ValueError(f"unknown settlement {action!r}")
    values["updated_at"] = now
    return values


def _finish_all(
    connection: Connection, jobs: list[Job], *, worker: str, now: datetime, running_only: bool
) -> set[int | None]:
    """Mark the jobs still ours succeeded in one UPDATE; returns the ids it marked."""
    if not jobs:
        return set()
    by_attempts: dict[int, list[int | None]] = {}
    for job in jobs:
        by_attempts.setdefault(job.attempts, []).append(job.id)
    values = _values(Settlement(jobs[0], "finish"), now)
    params: dict[str, Any] = {f"v_{name}": value for name, value in values.items()}
    params["p_worker"] = worker
    if len(by_attempts) == 1:  # a claim gives a batch one attempt count: nearly always one IN list
        ((params["p_attempts"], params["p_ids"]),) = by_attempts.items()
        statement = _FINISH_RUNNING if running_only else _FINISH
    else:  # (attempts = a AND id IN (...)) per attempt count
        ours = or_(*(and_(JOB.c.attempts == n, JOB.c.id.in_(ids)) for n, ids in by_attempts.items()))
        conditions = [JOB.c.locked_by == bindparam("p_worker"), ours]
        if running_only:
            conditions.append(JOB.c.status == JobStatus.RUNNING)
        statement = update(JOB).where(*conditions).values(_FINISH_VALUES).returning(JOB.c.id)
    done: set[int | None] = set(connection.execute(statement, params).scalars())
    for job in jobs:
        if job.id in done:
            _set(job, values)
    return done


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
        rows = session.exec(select_model(Job.status, func.count()).group_by(Job.status)).all()
        oldest = session.exec(
            select_model(func.min(Job.run_after)).where(col(Job.status) == JobStatus.QUEUED)
        ).one()
    # min() keeps the column's type, so `oldest` comes back as an aware UTC datetime.
    age = None if oldest is None else max(0.0, (utcnow() - oldest).total_seconds())
    return QueueStats(by_status={status: count for status, count in rows}, oldest_queued_age=age)


def _update_if_ours(engine: Engine, job: Job, worker: str, values: dict[str, Any]) -> bool:
    with transaction(engine) as connection:
        return _apply_if_ours(connection, job, worker, values)


def _apply_if_ours(connection: Connection, job: Job, worker: str, values: dict[str, Any]) -> bool:
    """UPDATE the job WHERE it is still ours (same holder, same attempt); on success, mirror the values
    onto `job`. One statement, no read first."""
    params = {f"v_{name}": value for name, value in values.items()}
    params.update(p_id=job.id, p_worker=worker, p_attempts=job.attempts)
    result = connection.execute(_update_ours(tuple(values)), params)
    if result.rowcount != 1:
        return False
    _set(job, values)
    return True


@cache
def _update_ours(columns: tuple[str, ...]) -> Any:
    """UPDATE job SET <columns> WHERE it is still ours, built once per set of columns (a statement
    built per call costs more CPU than running it)."""
    return (
        update(JOB)
        .where(
            JOB.c.id == bindparam("p_id"),
            JOB.c.locked_by == bindparam("p_worker"),
            JOB.c.attempts == bindparam("p_attempts"),
        )
        .values({name: bindparam(f"v_{name}") for name in columns})
    )


_FINISH_VALUES = {
    name: bindparam(f"v_{name}")
    for name in ("status", "finished_at", "lease_until", "last_error", "updated_at")
}
_FINISH = (
    update(JOB)
    .where(
        JOB.c.locked_by == bindparam("p_worker"),
        JOB.c.attempts == bindparam("p_attempts"),
        JOB.c.id.in_(bindparam("p_ids", expanding=True)),
    )
    .values(_FINISH_VALUES)
    .returning(JOB.c.id)
)
_FINISH_RUNNING = _FINISH.where(JOB.c.status == JobStatus.RUNNING)
_EXTEND = (
    update(JOB)
    .where(JOB.c.id.in_(bindparam("p_ids", expanding=True)), JOB.c.locked_by == bindparam("p_worker"))
    .values(lease_until=bindparam("lease_until"))
    .returning(JOB.c.id)
)


def _set(job: Job, values: dict[str, Any]) -> None:
    """Mirror `values` onto the caller's copy of the job (through SQLAlchemy's attribute setter, which
    records the change as usual; SQLModel's `__setattr__` would run pydantic's on top, for nothing)."""
    for name, value in values.items():
        set_attribute(job, name, value)
