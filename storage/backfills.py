"""What a backfill keeps: its state lives in the payload of its driver job, its progress in the jobs it queued.

A backfill of one flow is one job of kind `backfill` (the *driver*). Its payload is the whole state:

    {"after_id": "1999", "total": 2503, "queued": 1000, "skipped": 0, "pages": 1, "last_job_id": 1001,
     "requested_by": "ann"}

`after_id` is the keyset cursor (the last NetSuite internal id read), `total` the row count taken once
at the start (None until then), `queued` the per-record jobs this backfill enqueued and `skipped` the
ids it found already waiting in the queue (a webhook or the poll got there first). Each per-record job
carries `{"id": <record id>, "backfill": <driver job id>}`, so progress is one grouped count over them,
kept to job ids between the driver's and `last_job_id`. A failed backfill started again is resumed
(`resumed_by` notes who asked).

`record_page` is the heart of resumability: the page's jobs, the new cursor and the driver's next state
commit in one transaction, and only while the caller still holds the driver's lease. A runner that dies
before the commit leaves nothing behind (the page is read again by whoever claims the job next); one that
dies after it leaves the driver queued at the new cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage.db import is_sqlite, session_scope
from storage.models import Integration, Job, JobKind, JobStatus
from storage.types import utcnow

RECORD_JOB_KIND = JobKind.POLL  # see runner/backfill.py: found by reading NetSuite, like a poll hit
PENDING = (JobStatus.QUEUED, JobStatus.RUNNING)
LIST_LIMIT = 50  # backfills `list_backfills` returns, newest first
RECORD_JOB_MAX_ATTEMPTS = Job.model_fields["max_attempts"].default  # a per-record job's, as enqueue's
_JOBS = Job.__table__  # type: ignore[attr-defined]
_INSERT_JOBS = _JOBS.insert().returning(_JOBS.c.id)


class BackfillRefused(ValueError):
    """A backfill cannot start (or go on); the message says why and what to do instead."""


@dataclass(frozen=True)
class BackfillProgress:
    """Where one backfill stands, for a progress bar.

    `total` is the row count of the source table (None until the first page; once paging ends it is the
    number of rows actually read). `queued` counts the per-record jobs the backfill enqueued, `skipped`
    the ids that were already waiting in the queue; `done` and `failed` count its own jobs that
    succeeded or were dead-lettered (replayable from the audit page), `pending` those still to run.
    `status` is `running` until paging has ended and every job it queued has settled, then `finished`
    (even with failures: see `failed`); `failed` when the driver itself gave up (see `note`).
    """

    job_id: int
    integration_id: int
    flow: str
    status: str  # running | finished | failed
    total: int | None
    queued: int
    skipped: int
    done: int
    failed: int
    pending: int
    paging_done: bool
    after_id: str
    requested_by: str
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    note: str | None  # why the driver waits (throttled, retrying) or what stopped it

    @property
    def fraction(self) -> float:
        """Share of the source rows that are through (0.0-1.0): synced, failed, or left to a job that
        was already queued. 1.0 exactly when `status` is `finished`."""
        if self.status == "finished":
            return 1.0
        settled = self.done + self.failed + self.skipped
        denominator = max(self.total or 0, self.queued + self.skipped)
        return 0.0 if denominator == 0 else min(0.999, settled / denominator)


@dataclass(frozen=True)
class PageResult:
    """What one page did: jobs enqueued, ids left to jobs already waiting, and whether it was the last."""

    queued: int
    skipped: int
    last: bool


def initial_payload(requested_by: str) -> dict[str, Any]:
    return {"after_id": "0", "total": None, "queued": 0, "requested_by": requested_by}


def create(
    engine: Engine, *, integration_id: int, flow: str, requested_by: str, from_start: bool = False
) -> Job:
    """Enqueue the driver job of a backfill; refused while one of the same flow is queued or running.

    When the flow's latest backfill failed (its driver was dead-lettered: NetSuite down for longer than
    its retries, the flow disabled meanwhile), that backfill is resumed from its cursor and returned,
    unless `from_start`. The check and the write share one write transaction (BEGIN IMMEDIATE on SQLite,
    the integration's row locked on PostgreSQL), so two people pressing the button at once start one.
    """
    with session_scope(engine, write=True) as session:
        query = select(Integration).where(col(Integration.id) == integration_id)
        if not is_sqlite(engine):
            query = query.with_for_update()
        if session.exec(query).first() is None:
            raise BackfillRefused(f"there is no integration {integration_id}")
        latest = session.exec(_drivers(integration_id, flow).order_by(col(Job.id).desc())).first()
        if latest is not None and latest.status in PENDING:
            raise BackfillRefused(
                f"a backfill of {flow} is already {latest.status} on this integration (job {latest.id}, "
                f"{(latest.payload or {}).get('queued', 0)} records queued so far); wait for it to finish "
                "before starting another"
            )
        if latest is not None and latest.status == JobStatus.DEAD and not from_start:
            now = utcnow()
            latest.payload = {**(latest.payload or {}), "resumed_by": requested_by}
            latest.status, latest.attempts, latest.run_after, latest.updated_at = (
                JobStatus.QUEUED,
                0,
                now,
                now,
            )
            latest.lease_until = latest.locked_by = latest.finished_at = latest.last_error = None
            session.add(latest)
            return latest
        job = Job(
            integration_id=integration_id,
            flow=flow,
            kind=JobKind.BACKFILL,
            payload=initial_payload(requested_by),
        )
        session.add(job)
        session.flush()
        return job


def waiting_jobs(engine: Engine, *, integration_id: int, flow: str) -> int:
    """Per-record jobs of a flow still waiting to run (any origin): the backfill's throttle reads it."""
    with session_scope(engine) as session:
        count = session.exec(
            select(func.count())
            .select_from(Job)
            .where(
                col(Job.status) == JobStatus.QUEUED,
                col(Job.integration_id) == integration_id,
                col(Job.flow) == flow,
                col(Job.kind) != JobKind.BACKFILL,
            )
        ).one()
    return int(count)


def record_page(
    engine: Engine,
    driver: Job,
    *,
    worker: str,
    ids: Sequence[str],
    after_id: str,
    total: int | None,
    last: bool,
) -> PageResult | None:
    """Queue one page of ids and move the driver on, atomically; None when the lease is no longer ours.

    Ids with a job of the flow already queued or running (a webhook, the poll, or this backfill before a
    crash) get no second job. The driver goes back to the queue at once with its failure count cleared
    (a page that went through is progress, so `max_attempts` bounds consecutive failures), or, after the
    last page, is marked succeeded.
    """
    now = utcnow()
    with session_scope(engine, write=True) as session:
        query = select(Job).where(
            col(Job.id) == driver.id, col(Job.locked_by) == worker, col(Job.attempts) == driver.attempts
        )
        if not is_sqlite(engine):
            query = query.with_for_update()
        current = session.exec(query).first()
        if current is None or current.status != JobStatus.RUNNING:
            return None
        busy = _already_queued(session, current, ids)
        fresh = list(dict.fromkeys(i for i in ids if i not in busy))
        # One multi-row Core INSERT … RETURNING id for the page: no model built and validated per job,
        # no unit of work (storage.queue.enqueue's way costs a flush per job).
        page = [
            {
                "integration_id": current.integration_id,
                "flow": current.flow,
                "kind": RECORD_JOB_KIND,
                "status": JobStatus.QUEUED,
                "payload": {"id": record_id, "backfill": current.id},
                "event_id": None,
                "attempts": 0,
                "max_attempts": RECORD_JOB_MAX_ATTEMPTS,
                "run_after": now,
                "lease_until": None,
                "locked_by": None,
                "last_error": None,
                "created_at": now,
                "updated_at": now,
                "finished_at": None,
            }
            for record_id in fresh
        ]
        page_ids = list(session.execute(_INSERT_JOBS, page).scalars()) if page else []
        state = dict(current.payload or {})
        queued = int(state.get("queued") or 0) + len(fresh)
        skipped = int(state.get("skipped") or 0) + len(ids) - len(fresh)
        state.update(
            after_id=after_id, queued=queued, skipped=skipped, pages=int(state.get("pages") or 0) + 1
        )
        if page_ids:  # the newest job it queued: progress counts over ids up to here only
            state["last_job_id"] = max(page_ids)
        # Once paging ends, the total is what was actually read (rows added or removed meanwhile count).
        state["total"] = queued + skipped if last else total
        values: dict[str, Any] = {
            "payload": state,
            "updated_at": now,
            "lease_until": None,
            "last_error": None,
        }
        if last:
            values.update(status=JobStatus.SUCCEEDED, finished_at=now)
        else:
            values.update(status=JobStatus.QUEUED, run_after=now, locked_by=None, attempts=0)
        for name, value in values.items():
            setattr(current, name, value)
        session.add(current)
    for name, value in values.items():
        setattr(driver, name, value)
    return PageResult(queued=len(fresh), skipped=len(ids) - len(fresh), last=last)


def backfill_progress(engine: Engine, *, integration_id: int, flow: str) -> BackfillProgress | None:
    """The latest backfill of `flow` on an integration, or None if it never had one (two queries)."""
    with session_scope(engine) as session:
        driver = session.exec(_drivers(integration_id, flow).order_by(col(Job.id).desc())).first()
        return _progress(session, driver) if driver is not None else None


def list_backfills(engine: Engine, *, integration_id: int) -> list[BackfillProgress]:
    """Every backfill of an integration, newest first (at most LIST_LIMIT)."""
    with session_scope(engine) as session:
        drivers = session.exec(
            select(Job)
            .where(col(Job.integration_id) == integration_id, col(Job.kind) == JobKind.BACKFILL)
            .order_by(col(Job.id).desc())
            .limit(LIST_LIMIT)
        ).all()
        return [_progress(session, driver) for driver in drivers]


def _drivers(integration_id: int, flow: str) -> Any:
    return select(Job).where(
        col(Job.integration_id) == integration_id, col(Job.flow) == flow, col(Job.kind) == JobKind.BACKFILL
    )


def _own_jobs(driver: Job) -> list[ColumnElement[bool]]:
    """The per-record jobs a driver queued. Their ids lie between the driver's and the newest one it
    queued (`last_job_id`), so the JSON test runs on that primary-key range only, not the whole table."""
    assert driver.id is not None
    clauses = [
        col(Job.id) > driver.id,
        col(Job.integration_id) == driver.integration_id,
        col(Job.flow) == driver.flow,
        col(Job.payload)["backfill"].as_integer() == driver.id,
    ]
    last = (driver.payload or {}).get("last_job_id")
    if last is not None:
        clauses.append(col(Job.id) <= int(last))
    return clauses


def _already_queued(session: Session, driver: Job, ids: Sequence[str]) -> set[str]:
    """Which of `ids` already have a job of the driver's flow waiting (any origin; found through the
    claim index on status), or one this backfill queued before (any status: a page read twice, after a
    crash, queues nothing twice)."""
    if not ids:
        return set()
    record_id = col(Job.payload)["id"].as_string()
    waiting = select(record_id).where(
        col(Job.status).in_(PENDING),
        col(Job.integration_id) == driver.integration_id,
        col(Job.flow) == driver.flow,
        col(Job.kind) != JobKind.BACKFILL,
        record_id.in_(list(ids)),
    )
    own = select(record_id).where(*_own_jobs(driver), record_id.in_(list(ids)))
    found = set(session.exec(waiting).all()) | set(session.exec(own).all())
    return {str(value) for value in found}


def _progress(session: Session, driver: Job) -> BackfillProgress:
    assert driver.id is not None
    rows = session.exec(
        select(col(Job.status), func.count(), func.max(col(Job.updated_at)))
        .where(*_own_jobs(driver))
        .group_by(col(Job.status))
    ).all()
    counts = {status: int(count) for status, count, _ in rows}
    latest = max([driver.updated_at, *(at for _, _, at in rows if at is not None)])
    state = driver.payload or {}
    pending = counts.get(JobStatus.QUEUED, 0) + counts.get(JobStatus.RUNNING, 0)
    paging_done = driver.status == JobStatus.SUCCEEDED
    if driver.status == JobStatus.DEAD:
        status = "failed"
    elif paging_done and pending == 0:
        status = "finished"
    else:
        status = "running"
    total = state.get("total")
    return BackfillProgress(
        job_id=driver.id,
        integration_id=driver.integration_id,
        flow=driver.flow,
        status=status,
        total=int(total) if total is not None else None,
        queued=int(state.get("queued") or 0),
        skipped=int(state.get("skipped") or 0),
        done=counts.get(JobStatus.SUCCEEDED, 0),
        failed=counts.get(JobStatus.DEAD, 0),
        pending=pending,
        paging_done=paging_done,
        after_id=str(state.get("after_id") or "0"),
        requested_by=str(state.get("requested_by") or ""),
        started_at=driver.created_at,
        updated_at=latest,
        finished_at=driver.finished_at,
        note=driver.last_error if driver.status != JobStatus.SUCCEEDED else None,
    )
