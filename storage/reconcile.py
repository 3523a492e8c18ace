"""What reconciliation keeps: one row per run (status, progress, totals, lease) and one per drift found.

A run is *requested* (by a person, or by the daily schedule), then *claimed* by one runner under a lease
(`claim_run`), which it renews as it reports progress; a runner that dies mid-run leaves a `running` row
whose lease runs out, and the next runner to look claims it again and starts over. A drift is one thing a
run found wrong for one record: its `fingerprint` (flow, kind, source id, differences) is how a later
run recognises the same drift, so one a person *accepted* is not reported as open again.

Drift statuses: open (found, nothing done) · fixing (a re-sync or link was queued; the next run confirms)
· resolved (gone in a later run, or linked) · accepted (a person said it is fine, with a reason) ·
superseded (a later run found it again and reports it afresh).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, Text, func, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel, col, select

from storage.db import is_sqlite, session_scope
from storage.types import PortableJSON, UTCDateTime, utcnow


class RunStatus(StrEnum):
    REQUESTED = "requested"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunTrigger(StrEnum):
    SCHEDULED = "scheduled"
    MANUAL = "manual"


class DriftKind(StrEnum):
    MISSING_IN_TARGET = "missing_in_target"  # in NetSuite, not in Zuora/Zoho
    MISSING_IN_SOURCE = "missing_in_source"  # in Zuora/Zoho naming a NetSuite record that does not exist
    FIELD_MISMATCH = "field_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    STATUS_MISMATCH = "status_mismatch"


class DriftStatus(StrEnum):
    OPEN = "open"
    FIXING = "fixing"
    RESOLVED = "resolved"
    ACCEPTED = "accepted"
    SUPERSEDED = "superseded"


ACTIVE = (DriftStatus.OPEN, DriftStatus.FIXING)  # statuses that still ask for attention


def _ts(*, nullable: bool = False) -> Any:
    return Field(default_factory=None if nullable else utcnow, sa_type=UTCDateTime, nullable=nullable)


class ReconciliationRun(SQLModel, table=True):
    """One comparison of an integration's systems; `done`/`total` drive the page's progress bar."""

    __table_args__ = (
        Index("ix_reconrun_integration_requested", "integration_id", "requested_at"),
        Index("ix_reconrun_status", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id")
    status: str = Field(default=RunStatus.REQUESTED, max_length=20)
    trigger: str = Field(default=RunTrigger.MANUAL, max_length=20)
    requested_by: str = Field(default="system", max_length=200)
    phase: str = Field(default="", max_length=200)
    done: int = 0
    total: int = 0
    totals: dict[str, Any] = Field(default_factory=dict, sa_column=Column(PortableJSON, nullable=True))
    error: str | None = Field(default=None, sa_type=Text)
    requested_at: datetime = _ts()
    started_at: datetime | None = _ts(nullable=True)
    finished_at: datetime | None = _ts(nullable=True)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_until: datetime | None = _ts(nullable=True)


class Drift(SQLModel, table=True):
    """One disagreement a run found, and what a person decided about it."""

    __table_args__ = (
        Index("ix_drift_run", "run_id", "id"),
        Index("ix_drift_integration_status", "integration_id", "status"),
        Index("ix_drift_fingerprint", "fingerprint"),
    )

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(foreign_key="reconciliationrun.id")
    integration_id: int = Field(foreign_key="integration.id")
    flow: str = Field(max_length=50)
    kind: str = Field(max_length=30)
    source_id: str = Field(default="", max_length=200)
    target_id: str | None = Field(default=None, max_length=200)
    label: str = Field(default="", max_length=300)
    # [{"field": "Phone", "netsuite": "555-0101", "target": "555-9999"}, ...]
    differences: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(PortableJSON, nullable=True)
    )
    fingerprint: str = Field(max_length=64)
    status: str = Field(default=DriftStatus.OPEN, max_length=20)
    resolution: str | None = Field(
        default=None, max_length=50
    )  # resync | update | link | skip | accept | gone
    decided_by: str | None = Field(default=None, max_length=200)
    reason: str | None = Field(default=None, sa_type=Text)
    job_id: int | None = Field(default=None, foreign_key="job.id")
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    decided_at: datetime | None = _ts(nullable=True)


def fingerprint(flow: str, kind: str, source_id: str, differences: Sequence[dict[str, Any]]) -> str:
    """The identity of a drift across runs: the same record wrong in the same way hashes the same."""
    body = json.dumps([flow, kind, source_id, list(differences)], sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True)
class Found:
    """A drift as the comparison reports it, before it is stored."""

    flow: str
    kind: str
    source_id: str
    target_id: str | None = None
    label: str = ""
    differences: tuple[dict[str, Any], ...] = ()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.flow, self.kind, self.source_id, self.differences)


# --- runs ------------------------------------------------------------------------------------------
def create_run(
    engine: Engine, *, integration_id: int, requested_by: str, trigger: str = RunTrigger.MANUAL
) -> ReconciliationRun:
    """A new requested run, unless one of the integration is already requested or running (returned)."""
    with session_scope(engine, write=True) as session:
        busy = session.exec(
            select(ReconciliationRun).where(
                col(ReconciliationRun.integration_id) == integration_id,
                col(ReconciliationRun.status).in_([RunStatus.REQUESTED, RunStatus.RUNNING]),
            )
        ).first()
        if busy is not None:
            return busy
        run = ReconciliationRun(integration_id=integration_id, requested_by=requested_by, trigger=trigger)
        session.add(run)
        session.flush()
        return run


def get_run(engine: Engine, *, run_id: int) -> ReconciliationRun | None:
    with session_scope(engine) as session:
        return session.get(ReconciliationRun, run_id)


def latest_run(engine: Engine, *, integration_id: int, finished: bool = False) -> ReconciliationRun | None:
    """The integration's newest run (`finished`: the newest that succeeded)."""
    query = select(ReconciliationRun).where(col(ReconciliationRun.integration_id) == integration_id)
    if finished:
        query = query.where(col(ReconciliationRun.status) == RunStatus.SUCCEEDED)
    query = query.order_by(col(ReconciliationRun.requested_at).desc(), col(ReconciliationRun.id).desc())
    with session_scope(engine) as session:
        return session.exec(query.limit(1)).first()


def list_runs(
    engine: Engine, *, integration_id: int | None = None, limit: int = 20
) -> list[ReconciliationRun]:
    query = select(ReconciliationRun)
    if integration_id is not None:
        query = query.where(col(ReconciliationRun.integration_id) == integration_id)
    query = query.order_by(col(ReconciliationRun.id).desc()).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def claim_run(engine: Engine, *, worker: str, lease: float) -> ReconciliationRun | None:
    """Take the oldest requested run, or a running one whose lease ran out (its runner died), for
    `worker` under a lease of `lease` seconds; None when there is nothing to do."""
    now = utcnow()
    query = (
        select(ReconciliationRun)
        .where(
            (col(ReconciliationRun.status) == RunStatus.REQUESTED)
            | (
                (col(ReconciliationRun.status) == RunStatus.RUNNING)
                & (col(ReconciliationRun.lease_until) < now)
            )
        )
        .order_by(col(ReconciliationRun.id))
        .limit(1)
    )
    # Every runner asks every few seconds: a plain read first, so an idle pickup never takes SQLite's
    # write lock (or a row lock) away from the job queue.
    with session_scope(engine) as session:
        if session.exec(query).first() is None:
            return None
    if not is_sqlite(engine):
        query = query.with_for_update(skip_locked=True)
    with session_scope(engine, write=True) as session:
        run = session.exec(query).first()
        if run is None:
            return None
        run.status = RunStatus.RUNNING
        run.lease_owner = worker
        run.lease_until = now + timedelta(seconds=lease)
        run.started_at = now
        run.phase, run.done, run.total, run.error = "starting", 0, 0, None
        session.add(run)
        return run


def progress(
    engine: Engine,
    *,
    run_id: int,
    worker: str,
    lease: float,
    phase: str | None = None,
    done: int | None = None,
    total: int | None = None,
) -> bool:
    """Report progress and renew the lease; False when `worker` no longer holds the run (stop then)."""
    values: dict[str, Any] = {"lease_until": utcnow() + timedelta(seconds=lease)}
    if phase is not None:
        values["phase"] = phase[:200]
    if done is not None:
        values["done"] = done
    if total is not None:
        values["total"] = total
    with session_scope(engine) as session:
        result = session.execute(
            update(ReconciliationRun)
            .where(
                col(ReconciliationRun.id) == run_id,
                col(ReconciliationRun.lease_owner) == worker,
                col(ReconciliationRun.status) == RunStatus.RUNNING,
            )
            .values(**values)
        )
        return result.rowcount == 1


def finish_run(
    engine: Engine, *, run_id: int, worker: str, totals: dict[str, Any], found: Iterable[Found]
) -> bool:
    """Store a run's totals and drifts in one transaction, and settle earlier drifts of the integration.

    A found drift whose fingerprint a person accepted before is stored as accepted (with that reason), not
    open. Earlier open or fixing drifts found again are marked superseded (this run reports them), and
    those not found again are resolved (`resolution` "gone" unless a fix already named one). Returns False
    (and stores nothing) when `worker` lost the run to another runner.
    """
    now = utcnow()
    with session_scope(engine, write=True) as session:
        run = session.get(ReconciliationRun, run_id)
        if run is None or run.lease_owner != worker or run.status != RunStatus.RUNNING:
            return False
        integration_id = run.integration_id
        accepted = {
            d.fingerprint: d
            for d in session.exec(
                select(Drift).where(
                    col(Drift.integration_id) == integration_id, col(Drift.status) == DriftStatus.ACCEPTED
                )
            )
        }
        seen: set[str] = set()
        for item in found:
            mark = item.fingerprint
            seen.add(mark)
            earlier = accepted.get(mark)
            drift = Drift(
                run_id=run_id,
                integration_id=integration_id,
                flow=item.flow,
                kind=item.kind,
                source_id=item.source_id,
                target_id=item.target_id,
                label=item.label[:300],
                differences=list(item.differences),
                fingerprint=mark,
            )
            if earlier is not None:
                drift.status, drift.resolution = DriftStatus.ACCEPTED, "accept"
                drift.decided_by, drift.reason, drift.decided_at = earlier.decided_by, earlier.reason, now
            session.add(drift)
        for drift in session.exec(
            select(Drift).where(
                col(Drift.integration_id) == integration_id,
                col(Drift.run_id) != run_id,
                col(Drift.status).in_(list(ACTIVE)),
            )
        ):
            if drift.fingerprint in seen:
                drift.status = DriftStatus.SUPERSEDED
            else:
                drift.status = DriftStatus.RESOLVED
                drift.resolution = drift.resolution or "gone"
            drift.updated_at = now
            session.add(drift)
        run.status, run.totals, run.finished_at = RunStatus.SUCCEEDED, totals, now
        run.phase, run.lease_until = "finished", None
        run.done = max(run.done, run.total)
        session.add(run)
    return True


def fail_run(engine: Engine, *, run_id: int, worker: str, error: str) -> bool:
    """Mark a run failed with the reason a person can act on; False when the lease was lost."""
    with session_scope(engine) as session:
        result = session.execute(
            update(ReconciliationRun)
            .where(col(ReconciliationRun.id) == run_id, col(ReconciliationRun.lease_owner) == worker)
            .values(status=RunStatus.FAILED, error=error, finished_at=utcnow(), lease_until=None)
        )
        return result.rowcount == 1


def last_requested(engine: Engine) -> dict[int, datetime]:
    """Integration id → when its newest run was requested (what the daily schedule reads)."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(ReconciliationRun.integration_id, func.max(ReconciliationRun.requested_at)).group_by(
                col(ReconciliationRun.integration_id)
            )
        ).all()
    return {int(i): at for i, at in rows if at is not None}


# --- drifts ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DriftFilter:
    """What the drift list filters on; every field optional, all given must hold."""

    run_id: int | None = None
    integration_id: int | None = None
    flow: str | None = None
    kind: str | None = None
    status: str | None = None

    def clauses(self) -> list[Any]:
        return [
            col(getattr(Drift, name)) == getattr(self, name)
            for name in ("run_id", "integration_id", "flow", "kind", "status")
            if getattr(self, name) not in (None, "")
        ]


def list_drifts(
    engine: Engine, *, filters: DriftFilter | None = None, limit: int | None = 500, offset: int = 0
) -> list[Drift]:
    """Drifts in the order found (flow, then record), filtered and paginated in the database."""
    query = select(Drift).where(*(filters or DriftFilter()).clauses()).order_by(col(Drift.id))
    if limit is not None:
        query = query.offset(offset).limit(limit)
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def count_drifts(engine: Engine, *, filters: DriftFilter | None = None) -> dict[str, int]:
    """Drift counts by status under `filters`."""
    query = (
        select(Drift.status, func.count())
        .where(*(filters or DriftFilter()).clauses())
        .group_by(col(Drift.status))
    )
    with session_scope(engine) as session:
        return {status: int(n) for status, n in session.exec(query).all()}


def get_drift(engine: Engine, *, drift_id: int) -> Drift | None:
    with session_scope(engine) as session:
        return session.get(Drift, drift_id)


def decide(
    engine: Engine,
    *,
    drift_id: int,
    status: str,
    resolution: str,
    decided_by: str,
    reason: str | None = None,
    target_id: str | None = None,
    job_id: int | None = None,
) -> Drift:
    """Record what a person decided about a drift (and the job it queued, if any)."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        drift = session.get(Drift, drift_id)
        if drift is None:
            raise LookupError(f"there is no drift {drift_id}")
        drift.status, drift.resolution, drift.decided_by = status, resolution, decided_by
        drift.reason = reason
        drift.decided_at = drift.updated_at = now
        if target_id:
            drift.target_id = target_id
        if job_id is not None:
            drift.job_id = job_id
        session.add(drift)
        session.flush()
        return drift
