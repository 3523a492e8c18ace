"""Replay: run one audited record again, or every record a filter selects, without re-fetching the source
unless asked (design.md invariant 4).

The app calls these functions; they only enqueue. The job carries which audit record it replays and how:
`payload` re-sends the transformed payload stored on the record, `remap` maps the stored source snapshot
with the integration's current mapping, and `refetch=True` reads the source record again first. The job
then goes through the same write path, with the same link table and destination keys, as any sync, and
its own audit record points at the original (`replay_of`).

A bulk replay is counted first (`plan`, what a person confirms), then enqueued (`replay_filtered`):
one job per source record, for its newest failure, and none for a source record that a later success or
a retry in flight has already moved past — re-sending its old data would undo the newer write.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Text, case, cast, insert, or_
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.audit import NEWEST_FIRST, AuditFilter, count_records, latest_for_job
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobKind, Outcome
from storage.queue import enqueue

REPLAY_BATCH_LIMIT = 10_000  # records one bulk replay may enqueue; narrow the filter beyond that
ENQUEUE_CHUNK = 250  # jobs added between two progress reports of a bulk replay
SUPERSEDE_CHUNK = 500  # source ids looked up per query when checking for newer records

ProgressCallback = Callable[[int, int], None]  # (jobs enqueued so far, jobs to enqueue)


class ReplayMode(StrEnum):
    PAYLOAD = "payload"  # re-send exactly what was sent (or was about to be sent)
    REMAP = "remap"  # map the stored source snapshot with the current mapping


class ReplayRefused(ValueError):
    """This record cannot be replayed that way; the message says why and what to do instead."""


@dataclass(frozen=True)
class ReplayPlan:
    """What a bulk replay would do, shown to a person before they confirm."""

    count: int  # failed records the filter selects (at most REPLAY_BATCH_LIMIT)
    flows: dict[str, int]  # the same, by flow
    over_limit: bool  # more than REPLAY_BATCH_LIMIT match: the replay is refused
    sources: int = 0  # distinct source records among them; each is replayed once


@dataclass(frozen=True)
class BulkReplay:
    """What a bulk replay enqueued, and what it left out and why."""

    job_ids: list[int]
    selected: int  # records the filter selected
    duplicates: int  # older failures of a source record whose newest failure is replayed instead
    superseded: int  # source records a later success or a retry in flight has already moved past
    refused: int  # records without what the mode needs (no stored payload, no stored snapshot)


@dataclass(frozen=True)
class ReplayProgress:
    """Where one replay job has got to: its status, and the audit record it wrote (None so far)."""

    job_status: str | None  # None when the job no longer exists
    record: AuditRecord | None


@dataclass(frozen=True)
class _Candidate:
    """What a bulk replay reads of an audit record: a few columns, and whether its payload and source
    snapshot were stored (asked of the database, so no JSON is read back)."""

    id: int
    integration_id: int
    flow: str
    source_id: str
    started_at: datetime
    has_payload: bool
    has_snapshot: bool

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.integration_id, self.flow, self.source_id)


def job_payload(record: AuditRecord, mode: ReplayMode, refetch: bool) -> dict[str, Any]:
    """The job payload of a replay of `record` (refused when the record lacks what `mode` needs)."""
    assert record.id is not None
    return _job_payload(
        record.id,
        record.source_id,
        ReplayMode(mode),
        refetch,
        has_payload=bool(record.payload),
        has_snapshot=bool(record.source_snapshot),
    )


def _job_payload(
    record_id: int, source_id: str, mode: ReplayMode, refetch: bool, *, has_payload: bool, has_snapshot: bool
) -> dict[str, Any]:
    if refetch:
        return {"id": source_id, "replay_of": record_id, "mode": mode, "refetch": True}
    if mode is ReplayMode.PAYLOAD and not has_payload:
        raise ReplayRefused(
            f"record {record_id} has no stored payload (it failed before mapping); replay it with the "
            "current mapping or re-fetch the source"
        )
    if mode is ReplayMode.REMAP and not has_snapshot:
        raise ReplayRefused(
            f"record {record_id} has no stored source snapshot (the fetch failed); re-fetch the source instead"
        )
    return {"id": source_id, "replay_of": record_id, "mode": mode, "refetch": False}


def replay_one(
    engine: Engine, audit_record_id: int, *, mode: ReplayMode = ReplayMode.PAYLOAD, refetch: bool = False
) -> int:
    """Enqueue a replay of one audit record; returns the job id."""
    with session_scope(engine, write=True) as session:
        record = session.get(AuditRecord, audit_record_id)
        if record is None:
            raise ReplayRefused(f"there is no audit record {audit_record_id}")
        job = enqueue(
            session,
            integration_id=record.integration_id,
            flow=record.flow,
            payload=job_payload(record, ReplayMode(mode), refetch),
            kind=JobKind.REPLAY,
        )
        assert job.id is not None
        return job.id


def replay_progress(engine: Engine, job_id: int) -> ReplayProgress:
    """How far the replay job `job_id` has got, for the page that enqueued it."""
    with session_scope(engine) as session:
        job = session.get(Job, job_id)
    return ReplayProgress(
        job_status=None if job is None else job.status, record=latest_for_job(engine, job_id)
    )


def superseded_by(engine: Engine, record: AuditRecord) -> AuditRecord | None:
    """The newest later record of the same source record that did not fail (a success, or a retry in
    flight), or None: replaying `record` after it would re-send older data."""
    query = (
        select(AuditRecord)
        .where(
            *AuditFilter(
                source_id=record.source_id, integration_id=record.integration_id, flow=record.flow
            ).clauses(),
            col(AuditRecord.outcome) != Outcome.FAILED,
            col(AuditRecord.started_at) >= record.started_at,
            col(AuditRecord.id) != record.id,
        )
        .order_by(*NEWEST_FIRST)
        .limit(1)
    )
    with session_scope(engine) as session:
        return session.exec(query).first()


def plan(engine: Engine, filters: AuditFilter) -> ReplayPlan:
    """How many records `filters` selects for a bulk replay, by flow (the count shown before confirming).

    Whether the filter is over the limit is counted from an index alone, stopping one past the limit, so
    even a filter matching a million records answers at once; only a filter within the limit has its
    records' flows and source ids read.
    """
    limit = REPLAY_BATCH_LIMIT  # read at call time: tests lower it
    failures = _failures(filters)
    if count_records(engine, filters=failures, limit=limit + 1) > limit:
        return ReplayPlan(count=limit, flows={}, over_limit=True)
    query = select(AuditRecord.integration_id, AuditRecord.flow, AuditRecord.source_id).where(
        *failures.clauses()
    )
    with session_scope(engine) as session:
        rows = session.exec(query.limit(limit + 1)).all()
    flows = Counter(flow for _, flow, _ in rows)
    return ReplayPlan(
        count=len(rows), flows=dict(sorted(flows.items())), over_limit=False, sources=len(set(rows))
    )


def replay_filtered(
    engine: Engine,
    filters: AuditFilter,
    *,
    mode: ReplayMode = ReplayMode.PAYLOAD,
    refetch: bool = False,
    on_progress: ProgressCallback | None = None,
    chunk: int = ENQUEUE_CHUNK,
) -> BulkReplay:
    """Enqueue replays of the records `filters` selects (failed ones unless the filter says otherwise).

    Only the newest record per source record is replayed, so a record that failed five times is sent
    once; a source record whose newest failure is followed by a success or a retry in flight is left
    alone; records that cannot be replayed in `mode` are skipped. Refused outright when more than
    REPLAY_BATCH_LIMIT records match. The jobs are added in one transaction (all or none), `chunk` at a
    time, calling `on_progress(done, total)` after each chunk so a progress bar can move.
    """
    limit = REPLAY_BATCH_LIMIT
    candidates = _candidates(engine, _failures(filters), limit=limit + 1)
    if len(candidates) > limit:
        raise ReplayRefused(
            f"more than {limit:,} failed records match; narrow the filter (time range, flow, integration, "
            "error class) and replay in parts"
        )
    newest: dict[tuple[int, str, str], _Candidate] = {}
    for candidate in candidates:  # newest first: keep the first seen per source record
        newest.setdefault(candidate.key, candidate)
    moved_past = _moved_past(engine, list(newest.values()))
    payloads, refused = _payloads(
        [c for c in newest.values() if c.key not in moved_past], ReplayMode(mode), refetch
    )
    job_ids = _enqueue_all(engine, payloads, on_progress=on_progress, chunk=max(1, chunk))
    return BulkReplay(
        job_ids=job_ids,
        selected=len(candidates),
        duplicates=len(candidates) - len(newest),
        superseded=len(moved_past),
        refused=refused,
    )


def replay_many(
    engine: Engine, filters: AuditFilter, *, mode: ReplayMode = ReplayMode.PAYLOAD, refetch: bool = False
) -> list[int]:
    """`replay_filtered` without progress reports; returns the job ids."""
    return replay_filtered(engine, filters, mode=mode, refetch=refetch).job_ids


def _failures(filters: AuditFilter) -> AuditFilter:
    return filters if filters.outcome is not None else replace(filters, outcome=Outcome.FAILED)


def _candidates(engine: Engine, filters: AuditFilter, *, limit: int) -> list[_Candidate]:
    query = (
        select(
            AuditRecord.id,
            AuditRecord.integration_id,
            AuditRecord.flow,
            AuditRecord.source_id,
            AuditRecord.started_at,
            _stored(col(AuditRecord.payload)),
            _stored(col(AuditRecord.source_snapshot)),
        )
        .where(*filters.clauses())
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    with session_scope(engine) as session:
        rows = session.exec(query).all()
    return [
        _Candidate(record_id, integration_id, flow, source_id, started_at, bool(payload), bool(snapshot))
        for record_id, integration_id, flow, source_id, started_at, payload, snapshot in rows
    ]


def _stored(column: Any) -> Any:
    """SQL for "this JSON column holds something": not SQL NULL, not JSON null, not an empty object."""
    empty = or_(column.is_(None), cast(column, Text).in_(["null", "{}"]))
    return case((empty, False), else_=True)


def _payloads(
    candidates: Sequence[_Candidate], mode: ReplayMode, refetch: bool
) -> tuple[list[tuple[_Candidate, dict[str, Any]]], int]:
    """The replay job payload of each candidate, and how many were refused for lacking what `mode`
    needs (no stored payload, no stored snapshot)."""
    payloads: list[tuple[_Candidate, dict[str, Any]]] = []
    refused = 0
    for candidate in candidates:
        try:
            payload = _job_payload(
                candidate.id,
                candidate.source_id,
                mode,
                refetch,
                has_payload=candidate.has_payload,
                has_snapshot=candidate.has_snapshot,
            )
        except ReplayRefused:
            refused += 1
        else:
            payloads.append((candidate, payload))
    return payloads, refused


def _moved_past(engine: Engine, candidates: Sequence[_Candidate]) -> set[tuple[int, str, str]]:
    """The keys of candidates that have a later record that did not fail (looked up by source id)."""
    by_key = {c.key: c for c in candidates}
    moved: set[tuple[int, str, str]] = set()
    if not candidates:
        return moved
    source_ids = sorted({c.source_id for c in candidates})
    oldest = min(c.started_at for c in candidates)
    with session_scope(engine) as session:
        for start in range(0, len(source_ids), SUPERSEDE_CHUNK):
            query = select(
                AuditRecord.id,
                AuditRecord.integration_id,
                AuditRecord.flow,
                AuditRecord.source_id,
                AuditRecord.started_at,
            ).where(
                col(AuditRecord.source_id).in_(source_ids[start : start + SUPERSEDE_CHUNK]),
                col(AuditRecord.started_at) >= oldest,
                col(AuditRecord.outcome) != Outcome.FAILED,
            )
            for record_id, integration_id, flow, source_id, started_at in session.exec(query).all():
                candidate = by_key.get((integration_id, flow, source_id))
                if candidate is not None and (started_at, record_id) > (candidate.started_at, candidate.id):
                    moved.add(candidate.key)
    return moved


def _enqueue_all(
    engine: Engine,
    payloads: Sequence[tuple[_Candidate, dict[str, Any]]],
    *,
    on_progress: ProgressCallback | None,
    chunk: int,
) -> list[int]:
    total = len(payloads)
    job_ids: list[int] = []
    if on_progress is not None:
        on_progress(0, total)
    with session_scope(engine, write=True) as session:
        for start in range(0, total, chunk):
            # One multi-row INSERT … RETURNING per chunk instead of one round trip per job.
            rows = [_job_row(candidate, payload) for candidate, payload in payloads[start : start + chunk]]
            job_ids.extend(session.exec(insert(Job).returning(col(Job.id)), params=rows).scalars())
            if on_progress is not None:
                on_progress(len(job_ids), total)
    return job_ids


def _job_row(candidate: _Candidate, payload: dict[str, Any]) -> dict[str, Any]:
    """The row storage.queue.enqueue would add for this replay, with the model's defaults filled in."""
    job = Job(
        integration_id=candidate.integration_id, flow=candidate.flow, kind=JobKind.REPLAY, payload=payload
    )
    return {column.name: getattr(job, column.name) for column in Job.__table__.columns if column.name != "id"}
