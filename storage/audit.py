"""The audit trail: writing one record with its HTTP attempts, and reading it back for the app.

Reads are built for a table of millions of rows. Every filter of `AuditFilter` is an equality or a time
bound that an index of `AuditRecord` serves together with the newest-first order (started_at, id), so a
page of records is an index range walk, however deep the table. Counting is the expensive part of a
listing: `count_records(limit=...)` stops after `limit` matching rows, so the page can say "10,000+"
instead of walking a million index entries on every rerun.

SQLite plans without statistics (nobody runs ANALYZE on the app's file) and so takes an equality on a
column of three values to be as selective as one on a source id; a count of one source record's
failures could then walk every failed record. `Likely` tells it, per filter column, roughly how many
rows an equality keeps, so it reaches for the selective index. PostgreSQL keeps statistics and gets
the plain comparison.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar, Protocol

from sqlalchemy import func, inspect, literal_column, or_
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_attribute
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.sqltypes import NullType
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import col, select
from sqlmodel.sql.expression import Select, SelectOfScalar

from storage.db import session_scope, transaction
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
    pending = list(items)
    # Several records on SQLite take their ids under the write lock (see insert_records); one does not.
    with transaction(engine, write=len(pending) > 1) as connection:
        insert_records(connection, pending)


AUDIT_RECORD = AuditRecord.__table__  # type: ignore[attr-defined]
AUDIT_ATTEMPT = AuditAttempt.__table__  # type: ignore[attr-defined]
_RECORD_COLUMNS = tuple(column.key for column in AUDIT_RECORD.columns if column.key != "id")
# Rows come back in the order they were sent (SQLAlchemy's insertmanyvalues sorts them), so each record
# learns its own id from one multi-row INSERT … RETURNING.
_INSERT_RECORDS = AUDIT_RECORD.insert().returning(AUDIT_RECORD.c.id, sort_by_parameter_order=True)
_LAST_RECORD_ID = select(func.max(AUDIT_RECORD.c.id))


def insert_records(
    connection: Connection, items: Iterable[tuple[AuditRecord, Iterable[AttemptLike]]]
) -> None:
    """Insert records and their attempts on `connection`, in the caller's transaction, and give each
    record its id. On SQLite the transaction must hold the write lock (`transaction(write=True)`).

    Plain Core INSERTs with the values the records already hold: no unit of work, and no model built per
    attempt (validating objects we built ourselves bought nothing). A record leaves as if loaded from
    the database and detached (`make_transient_to_detached`), as the ORM used to leave it.
    """
    pending = [(record, list(attempts)) for record, attempts in items]
    if not pending:
        return
    fresh = [(record, attempts) for record, attempts in pending if record.id is None]
    if len(fresh) < len(pending):  # a record that brings its own id keeps it
        connection.execute(
            AUDIT_RECORD.insert(),
            [_record_row(record) | {"id": record.id} for record, _ in pending if record.id is not None],
        )
    if len(fresh) > 1 and connection.dialect.name == "sqlite":
        # SQLite cannot return the ids of a multi-row INSERT in a known order, so SQLAlchemy would send
        # one INSERT per record. Under the write lock (the caller's BEGIN IMMEDIATE) nobody else inserts,
        # so the ids after the current largest are ours to hand out, and one executemany inserts them
        # all. Were the lock not held, a writer taking the same ids would make this fail on the primary
        # key, never mix records up.
        last = connection.execute(_LAST_RECORD_ID).scalar() or 0
        for offset, (record, _) in enumerate(fresh, start=1):
            set_attribute(record, "id", last + offset)
        connection.execute(
            AUDIT_RECORD.insert(), [_record_row(record) | {"id": record.id} for record, _ in fresh]
        )
    elif fresh:
        ids = connection.execute(_INSERT_RECORDS, [_record_row(record) for record, _ in fresh]).scalars()
        for (record, _), record_id in zip(fresh, ids, strict=True):
            set_attribute(record, "id", record_id)
    rows = [
        {
            "audit_record_id": record.id,
            "seq": seq,
            "system": attempt.system,
            "method": attempt.method,
            "url": attempt.url,
            "status": attempt.status,
            "duration_ms": round(attempt.duration_ms, 3),
            "response_excerpt": attempt.response_excerpt,
            "error": attempt.error,
            "at": attempt.at,
        }
        for record, attempts in pending
        for seq, attempt in enumerate(attempts, start=1)
    ]
    if rows:
        connection.execute(AUDIT_ATTEMPT.insert(), rows)
    for record, _ in pending:
        if inspect(record).transient:
            make_transient_to_detached(record)


def _record_row(record: AuditRecord) -> dict[str, Any]:
    values = record.__dict__
    return {name: values[name] if name in values else getattr(record, name) for name in _RECORD_COLUMNS}


# Roughly how many records an equality on each filter column keeps: low-cardinality columns keep many,
# the ids few. Only their order matters to the planner: the smallest wins when several are filtered on.
SHARE_KEPT: dict[str, float] = {
    "integration_id": 0.5,
    "outcome": 0.3,
    "flow": 0.2,
    "error_class": 0.05,
}


class Likely(ColumnElement[bool]):
    """A condition with the share of rows it is expected to keep, for SQLite's planner: rendered as
    `likelihood(condition, share)` on SQLite (which still uses the condition for an index), as the bare
    condition elsewhere."""

    type = NullType()  # not Boolean: SQLite would get `likelihood(…) = 1`, which no index serves
    inherit_cache = True
    _traverse_internals: ClassVar[list[tuple[str, InternalTraversal]]] = [
        ("condition", InternalTraversal.dp_clauseelement),
        ("share", InternalTraversal.dp_plain_obj),
    ]

    def __init__(self, condition: ColumnElement[bool], share: float) -> None:
        self.condition = condition
        self.share = share


@compiles(Likely)
def _likely(element: Likely, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.condition, **kw)


@compiles(Likely, "sqlite")
def _likely_sqlite(element: Likely, compiler: SQLCompiler, **kw: Any) -> str:
    return f"likelihood({compiler.process(element.condition, **kw)}, {float(element.share)!r})"


@dataclass(frozen=True)
class AuditFilter:
    """What the audit page filters on; every field optional, all given fields must hold.

    `system` matches a record whose source or target is that system; `since` is inclusive and `until`
    exclusive, both on `started_at`.
    """

    outcome: str | None = None
    flow: str | None = None
    integration_id: int | None = None
    source_id: str | None = None
    target_id: str | None = None
    error_class: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    system: str | None = None

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        for name in ("outcome", "flow", "integration_id", "source_id", "target_id", "error_class"):
            value = getattr(self, name)
            if value not in (None, ""):
                condition = col(getattr(AuditRecord, name)) == value
                clauses.append(Likely(condition, SHARE_KEPT[name]) if name in SHARE_KEPT else condition)
        if self.system:
            clauses.append(
                or_(
                    col(AuditRecord.source_system) == self.system,
                    col(AuditRecord.target_system) == self.system,
                )
            )
        if self.since is not None:
            clauses.append(col(AuditRecord.started_at) >= self.since)
        if self.until is not None:
            clauses.append(col(AuditRecord.started_at) < self.until)
        return clauses


NEWEST_FIRST = (col(AuditRecord.started_at).desc(), col(AuditRecord.id).desc())


def list_query(
    filters: AuditFilter | None = None, *, limit: int = 50, offset: int = 0
) -> SelectOfScalar[AuditRecord]:
    """The SELECT behind `list_records` (exposed so tests can ask the database how it runs it)."""
    query = select(AuditRecord).where(*(filters or AuditFilter()).clauses()).order_by(*NEWEST_FIRST)
    return query.offset(offset).limit(limit)


def count_query(filters: AuditFilter | None = None, *, limit: int | None = None) -> Select[Any]:
    """The SELECT behind `count_records`.

    With a `limit` the rows are counted inside a LIMITed subquery of constants, so the database stops
    after `limit` matches and never reads a table row it can skip (an index-only count).
    """
    clauses = (filters or AuditFilter()).clauses()
    if limit is None:
        return select(func.count()).select_from(AuditRecord).where(*clauses)
    matches = select(literal_column("1").label("one")).select_from(AuditRecord).where(*clauses).limit(limit)
    return select(func.count()).select_from(matches.subquery())


def list_records(
    engine: Engine, *, filters: AuditFilter | None = None, limit: int = 50, offset: int = 0
) -> Sequence[AuditRecord]:
    """Audit records, newest first, filtered and paginated in the database."""
    with session_scope(engine) as session:
        return session.exec(list_query(filters, limit=limit, offset=offset)).all()


def count_records(engine: Engine, *, filters: AuditFilter | None = None, limit: int | None = None) -> int:
    """How many records `filters` selects, or `limit` when at least that many do.

    Ask for `limit=n + 1` to learn whether there are more than `n`.
    """
    with session_scope(engine) as session:
        return int(session.exec(count_query(filters, limit=limit)).one())


def has_records(engine: Engine) -> bool:
    """Whether the audit trail holds anything at all (one index probe, not a count)."""
    with session_scope(engine) as session:
        return session.exec(select(AuditRecord.id).limit(1)).first() is not None


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


def replays_of(engine: Engine, record_id: int, *, limit: int = 10) -> list[AuditRecord]:
    """The newest `limit` records that replayed `record_id`, newest first."""
    query = (
        select(AuditRecord)
        .where(col(AuditRecord.replay_of) == record_id)
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def latest_for_job(engine: Engine, job_id: int) -> AuditRecord | None:
    """The newest record a job wrote (a job that retried writes one per try), or None so far."""
    query = select(AuditRecord).where(col(AuditRecord.job_id) == job_id).order_by(*NEWEST_FIRST).limit(1)
    with session_scope(engine) as session:
        return session.exec(query).first()
