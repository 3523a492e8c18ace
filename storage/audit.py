"""The audit trail: writing one record with its HTTP attempts, and reading it back for the app."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import session_scope
from storage.models import AuditAttempt, AuditRecord


class AttemptLike(Protocol):
    system: str
    method: str
    url: str
    status: int | None
    duration_ms: float
    response_excerpt: str | None
    error: str | None
    at: datetime


def write_record(engine: Engine, record: AuditRecord, attempts: Iterable[AttemptLike]) -> AuditRecord:
    """Insert `record` and its attempts in one transaction; returns the record with its id."""
    write_records(engine, [(record, attempts)])
    return record


def write_records(engine: Engine, items: Iterable[tuple[AuditRecord, Iterable[AttemptLike]]]) -> None:
    """Insert several records with their attempts in one transaction (a batch's per-record outcomes)."""
    with session_scope(engine) as session:
        pending = []
        for record, attempts in items:
            session.add(record)
            pending.append((record, attempts))
        session.flush()
        for record, attempts in pending:
            assert record.id is not None
            for seq, attempt in enumerate(attempts, start=1):
                session.add(
                    AuditAttempt(
                        audit_record_id=record.id,
                        seq=seq,
                        system=attempt.system,
                        method=attempt.method,
                        url=attempt.url,
                        status=attempt.status,
                        duration_ms=round(attempt.duration_ms, 3),
                        response_excerpt=attempt.response_excerpt,
                        error=attempt.error,
                        at=attempt.at,
                    )
                )


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page filters on; every field optional."""

    outcome: str | None = None
    flow: str | None = None
    integration_id: int | None = None
    source_id: str | None = None
    target_id: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        for name in ("outcome", "flow", "integration_id", "source_id", "target_id", "error_class"):
            value = getattr(self, name)
            if value not in (None, ""):
                clauses.append(col(getattr(AuditRecord, name)) == value)
        if self.since is not None:
            clauses.append(col(AuditRecord.started_at) >= self.since)
        if self.until is not None:
            clauses.append(col(AuditRecord.started_at) < self.until)
        return clauses


def list_records(
    engine: Engine, *, filters: AuditFilter | None = None, limit: int = 50, offset: int = 0
) -> Sequence[AuditRecord]:
    """Audit records, newest first, filtered and paginated in the database."""
    query = select(AuditRecord).where(*(filters or AuditFilter()).clauses())
    query = query.order_by(col(AuditRecord.started_at).desc(), col(AuditRecord.id).desc())
    with session_scope(engine) as session:
        return session.exec(query.offset(offset).limit(limit)).all()


def count_records(engine: Engine, *, filters: AuditFilter | None = None) -> int:
    query = select(func.count()).select_from(AuditRecord).where(*(filters or AuditFilter()).clauses())
    with session_scope(engine) as session:
        return int(session.exec(query).one())


def get_record(engine: Engine, record_id: int) -> tuple[AuditRecord, list[AuditAttempt]] | None:
    """One record and its attempts in order, or None."""
    with session_scope(engine) as session:
        record = session.get(AuditRecord, record_id)
        if record is None:
            return None
        attempts = session.exec(
            select(AuditAttempt)
            .where(col(AuditAttempt.audit_record_id) == record_id)
            .order_by(col(AuditAttempt.seq))
        ).all()
        return record, list(attempts)
