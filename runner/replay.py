"""Replay: run one audited record again, or every record a filter selects, without re-fetching the source
unless asked (design.md invariant 4).

The app calls these functions; they only enqueue. The job carries which audit record it replays and how:
`payload` re-sends the transformed payload stored on the record, `remap` maps the stored source snapshot
with the integration's current mapping, and `refetch=True` reads the source record again first. The job
then goes through the same write path, with the same link table and destination keys, as any sync, and
its own audit record points at the original (`replay_of`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.audit import AuditFilter
from storage.db import session_scope
from storage.models import AuditRecord, JobKind, Outcome
from storage.queue import enqueue

REPLAY_BATCH_LIMIT = 10_000  # records one bulk replay may enqueue; narrow the filter beyond that


class ReplayMode(StrEnum):
    PAYLOAD = "payload"  # re-send exactly what was sent (or was about to be sent)
    REMAP = "remap"  # map the stored source snapshot with the current mapping


class ReplayRefused(ValueError):
    """This record cannot be replayed that way; the message says why and what to do instead."""


@dataclass(frozen=True)
class ReplayPlan:
    """What a bulk replay would do, shown to a person before they confirm."""

    count: int
    flows: dict[str, int]
    over_limit: bool


def job_payload(record: AuditRecord, mode: ReplayMode, refetch: bool) -> dict[str, Any]:
    """The job payload of a replay of `record` (refused when the record lacks what `mode` needs)."""
    if refetch:
        return {"id": record.source_id, "replay_of": record.id, "mode": mode, "refetch": True}
    if mode is ReplayMode.PAYLOAD and not record.payload:
        raise ReplayRefused(
            f"record {record.id} has no stored payload (it failed before mapping); replay it with the "
            "current mapping or re-fetch the source"
        )
    if mode is ReplayMode.REMAP and not record.source_snapshot:
        raise ReplayRefused(
            f"record {record.id} has no stored source snapshot (the fetch failed); re-fetch the source instead"
        )
    return {"id": record.source_id, "replay_of": record.id, "mode": mode, "refetch": False}


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
            payload=job_payload(record, mode, refetch),
            kind=JobKind.REPLAY,
        )
        assert job.id is not None
        return job.id


def plan(engine: Engine, filters: AuditFilter) -> ReplayPlan:
    """How many records `filters` selects for a bulk replay, by flow (the count shown before confirming)."""
    rows = _selected(engine, filters, limit=REPLAY_BATCH_LIMIT + 1)
    flows: dict[str, int] = {}
    for row in rows[:REPLAY_BATCH_LIMIT]:
        flows[row.flow] = flows.get(row.flow, 0) + 1
    return ReplayPlan(min(len(rows), REPLAY_BATCH_LIMIT), flows, over_limit=len(rows) > REPLAY_BATCH_LIMIT)


def replay_many(
    engine: Engine, filters: AuditFilter, *, mode: ReplayMode = ReplayMode.PAYLOAD, refetch: bool = False
) -> list[int]:
    """Enqueue replays of the records `filters` selects (failed ones unless the filter says otherwise).

    Only the newest record per source record is replayed, so a record that failed five times is sent
    once. Records that cannot be replayed in `mode` are skipped. Returns the job ids.
    """
    rows = _selected(engine, filters, limit=REPLAY_BATCH_LIMIT)
    newest: dict[tuple[int, str, str], AuditRecord] = {}
    for row in rows:  # newest first: keep the first seen per (integration, flow, source)
        newest.setdefault((row.integration_id, row.flow, row.source_id), row)
    job_ids: list[int] = []
    with session_scope(engine, write=True) as session:
        for record in newest.values():
            try:
                payload = job_payload(record, mode, refetch)
            except ReplayRefused:
                continue
            job = enqueue(
                session,
                integration_id=record.integration_id,
                flow=record.flow,
                payload=payload,
                kind=JobKind.REPLAY,
            )
            assert job.id is not None
            job_ids.append(job.id)
    return job_ids


def _selected(engine: Engine, filters: AuditFilter, *, limit: int) -> list[AuditRecord]:
    if filters.outcome is None:
        filters = AuditFilter(**{**filters.__dict__, "outcome": Outcome.FAILED})
    query = (
        select(AuditRecord)
        .where(*filters.clauses())
        .order_by(col(AuditRecord.started_at).desc(), col(AuditRecord.id).desc())
        .limit(limit)
    )
    with session_scope(engine) as session:
        return list(session.exec(query).all())
