"""What error triage keeps: failure groups and what people decided about them, and payload edits.

A *failure group* gathers the open failures of one integration and flow that failed the same way: the
same error class and the same normalised message (`normalise`). A failure is *open* while it is the
newest record of its source record: a later success, or a retry in flight, has moved the source past it.
A source record whose newest failure was a duplicate ("already exists", Zoho's DUPLICATE_DATA) while the
link table already holds its target is synced already: that failure is not open either.

Groups are computed from the audit trail on every `sync_groups` (the triage page's load and the runner's
scheduled work) and kept as `TriageGroup` rows, so what people decide survives: acknowledged, assigned
to a named person with a note, resolved. A group is resolved on its own (`auto_synced`) once none of its
source records is failing or in flight any more, and opened again when a failure newer than its
resolution arrives. Only the newest `SCAN_LIMIT` failures are read on each sync, so a sync costs the
same however long the audit trail grows.

`PayloadEdit` keeps each payload a person corrected in the app before replaying it: the original audit
record, the edited payload, the difference, who and when, and the replay job that sends it.

This module holds no import of storage.models at load time: storage.models imports it to register its
tables, so the audit and link tables are read inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, SQLModel, col, select

from storage.db import session_scope, transaction
from storage.types import PortableJSON, UTCDateTime, utcnow

SCAN_LIMIT = 20_000  # newest failures one sync reads; older ones are left out of triage
SOURCE_CHUNK = 500  # source ids looked up per query for later records and links
PATTERN_LIMIT = 500  # characters of a normalised message kept as the group's pattern
SYSTEM_USER = "ml-connector"  # `updated_by` of what the product decided on its own


class GroupStatus(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    ASSIGNED = "assigned"
    RESOLVED = "resolved"


class Resolution(StrEnum):
    MANUAL = "manual"  # a person resolved the group
    AUTO_SYNCED = "auto_synced"  # every source record of the group synced since (or was synced already)


def _ts(*, nullable: bool = False) -> Any:
    return Field(default_factory=None if nullable else utcnow, sa_type=UTCDateTime, nullable=nullable)


class TriageGroup(SQLModel, table=True):
    """One way a flow of an integration fails, and what people decided about it."""

    __table_args__ = (
        UniqueConstraint("key"),
        Index("ix_triagegroup_integration_status", "integration_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=64)  # group_key(integration_id, flow, error_class, pattern)
    integration_id: int = Field(foreign_key="integration.id")
    flow: str = Field(max_length=50)
    error_class: str = Field(default="", max_length=20)
    pattern: str = Field(default="", sa_type=Text)
    status: str = Field(default=GroupStatus.OPEN, max_length=20)
    assignee: str | None = Field(default=None, max_length=200)
    note: str | None = Field(default=None, sa_type=Text)
    updated_by: str = Field(default=SYSTEM_USER, max_length=200)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
    resolution: str | None = Field(default=None, max_length=20)


class PayloadEdit(SQLModel, table=True):
    """A payload a person corrected before replaying a failed record."""

    id: int | None = Field(default=None, primary_key=True)
    audit_record_id: int = Field(foreign_key="auditrecord.id", index=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(PortableJSON, nullable=True))
    # [{"field": "currency", "before": "XXX", "after": "USD"}, ...]; a missing side is absent.
    diff: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(PortableJSON, nullable=True))
    edited_by: str = Field(max_length=200)
    edited_at: datetime = _ts()
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)


# --- grouping ----------------------------------------------------------------------------------------

# Applied in this order; each replaces what identifies one record, so its failures group with others.
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://[^\s'\"<>()\[\]]+", re.IGNORECASE)
_QUOTED = re.compile(r"(?<!\w)(?:'[^'\n]*'|\"[^\"\n]*\"|`[^`\n]*`)(?!\w)")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_NUMBER = re.compile(r"(?<![\w<])[-+]?\d(?:[\d.,:/_-]*\d)?(?![\w>])")
_WORD_WITH_DIGIT = re.compile(r"(?<![\w<])[A-Za-z_-]*\d[\w-]*(?![\w>])")
_SPACE = re.compile(r"\s+")
_DUPLICATE = re.compile(r"duplicate|already exists|already been (?:created|used)", re.IGNORECASE)


def normalise(message: str | None) -> str:
    """The error message with what names one record taken out, so that failures of many records for one
    reason read alike.

    URLs become `<url>`; quoted values ('x', "x", `x`) and e-mail addresses `<value>`; numbers (with their
    separators: amounts, dates, codes, list positions) `<n>`; a word made mostly of digits, or with three
    or more (record ids such as A00000042, 8ad0887e91f3, INV-0042), `<id>`, while a name with a digit or
    two (custentity5) stays; runs of white space one space. So

        customer 123 rejected: email 'x@y.test' invalid   and
        customer 456 rejected: email 'z' invalid

    both read `customer <n> rejected: email <value> invalid`. Words without digits stay: they carry the
    reason. The result is cut to PATTERN_LIMIT characters.
    """
    text = _URL.sub("<url>", message or "")
    text = _QUOTED.sub("<value>", text)
    text = _EMAIL.sub("<value>", text)
    text = _NUMBER.sub("<n>", text)
    text = _WORD_WITH_DIGIT.sub(_id_or_name, text)
    return _SPACE.sub(" ", text).strip()[:PATTERN_LIMIT]


def _id_or_name(match: re.Match[str]) -> str:
    """A word with digits is an id when digits make up much of it (A00000042, 8ad0887e91f3, INV-0042);
    a name with a digit or two (custentity5, address2) stays: it names the field at fault."""
    word = match.group()
    digits = sum(c.isdigit() for c in word)
    return "<id>" if digits >= 3 or digits * 2 >= len(word) else word


def is_duplicate(message: str | None) -> bool:
    """Whether a failure says the record is there already (Zuora's "already exists", Zoho DUPLICATE_DATA)."""
    return bool(message) and _DUPLICATE.search(message or "") is not None


def group_key(integration_id: int, flow: str, error_class: str | None, pattern: str) -> str:
    """The stable identity of a failure group (a SHA-256, hex)."""
    raw = json.dumps([integration_id, flow, error_class or "", pattern], ensure_ascii=False)
    return hashlib.sha256(raw.encode()).hexdigest()


@dataclass(frozen=True)
class Failure:
    """A failed audit record as triage reads it (a few columns, never the payloads)."""

    record_id: int
    integration_id: int
    flow: str
    source_id: str
    error_class: str
    message: str
    started_at: datetime
    finished_at: datetime | None

    @property
    def source(self) -> tuple[int, str, str]:
        return (self.integration_id, self.flow, self.source_id)

    @property
    def at(self) -> datetime:
        return self.finished_at or self.started_at


@dataclass
class GroupState:
    """One failure group as the audit trail has it now."""

    key: str
    integration_id: int
    flow: str
    error_class: str
    pattern: str
    open: list[Failure] = field(default_factory=list)  # each open source record's newest failure
    in_flight: list[Failure] = field(default_factory=list)  # failures a retry is running for
    synced: list[Failure] = field(default_factory=list)  # failures of source records synced since
    failures: int = 0  # failed records in the scan with this group's key, every attempt counted

    @property
    def newest(self) -> datetime | None:
        return max((f.at for f in self.open), default=None)

    @property
    def oldest(self) -> datetime | None:
        return min((f.started_at for f in self.open), default=None)


@dataclass(frozen=True)
class Scan:
    """The groups of the newest failures; `complete` is False when SCAN_LIMIT cut older ones off."""

    groups: dict[str, GroupState]
    scanned: int
    complete: bool


def scan(engine: Engine, *, integration_id: int | None = None, limit: int | None = None) -> Scan:
    """Read the newest failures, find which are open, and group them (nothing is written)."""
    limit = SCAN_LIMIT if limit is None else limit
    failures = _failures(engine, integration_id=integration_id, limit=limit + 1)
    complete = len(failures) <= limit
    failures = failures[:limit]
    newest: dict[tuple[int, str, str], Failure] = {}
    for failure in failures:  # newest first: the first seen per source is its newest failure
        newest.setdefault(failure.source, failure)
    later = _later_outcomes(engine, list(newest.values()))
    synced_duplicates = _synced_duplicates(
        engine, [f for f in newest.values() if f.source not in later and is_duplicate(f.message)]
    )
    groups: dict[str, GroupState] = {}
    for failure in failures:
        pattern = normalise(failure.message)
        key = group_key(failure.integration_id, failure.flow, failure.error_class, pattern)
        group = groups.get(key)
        if group is None:
            group = groups[key] = GroupState(
                key, failure.integration_id, failure.flow, failure.error_class, pattern
            )
        group.failures += 1
        if newest[failure.source] is not failure:
            continue
        outcome = later.get(failure.source)
        if outcome == "succeeded" or failure.source in synced_duplicates:
            group.synced.append(failure)
        elif outcome is not None:
            group.in_flight.append(failure)
        else:
            group.open.append(failure)
    return Scan(groups=groups, scanned=len(failures), complete=complete)


def _failures(engine: Engine, *, integration_id: int | None, limit: int) -> list[Failure]:
    from storage.audit import NEWEST_FIRST, AuditFilter
    from storage.models import AuditRecord, Outcome

    query = (
        select(
            AuditRecord.id,
            AuditRecord.integration_id,
            AuditRecord.flow,
            AuditRecord.source_id,
            AuditRecord.error_class,
            AuditRecord.error_message,
            AuditRecord.started_at,
            AuditRecord.finished_at,
        )
        .where(*AuditFilter(outcome=Outcome.FAILED, integration_id=integration_id).clauses())
        .order_by(*NEWEST_FIRST)
        .limit(limit)
    )
    with session_scope(engine) as session:
        rows = session.exec(query).all()
    return [
        Failure(record_id, integration, flow, source, error_class or "", message or "", started, finished)
        for record_id, integration, flow, source, error_class, message, started, finished in rows
    ]


def _later_outcomes(engine: Engine, newest: Sequence[Failure]) -> dict[tuple[int, str, str], str]:
    """Source → outcome of its newest record after its newest failure, for sources that have one (a later
    record did not fail, else it would be the newest failure)."""
    from storage.models import AuditRecord, Outcome

    by_source = {f.source: f for f in newest}
    found: dict[tuple[int, str, str], tuple[datetime, int, str]] = {}
    if not newest:
        return {}
    source_ids = sorted({f.source_id for f in newest})
    oldest = min(f.started_at for f in newest)
    with session_scope(engine) as session:
        for start in range(0, len(source_ids), SOURCE_CHUNK):
            query = select(
                AuditRecord.id,
                AuditRecord.integration_id,
                AuditRecord.flow,
                AuditRecord.source_id,
                AuditRecord.started_at,
                AuditRecord.outcome,
            ).where(
                col(AuditRecord.source_id).in_(source_ids[start : start + SOURCE_CHUNK]),
                col(AuditRecord.started_at) >= oldest,
                col(AuditRecord.outcome) != Outcome.FAILED,
            )
            for record_id, integration_id, flow, source_id, started_at, outcome in session.exec(query).all():
                key = (integration_id, flow, source_id)
                failure = by_source.get(key)
                if failure is None or (started_at, record_id) <= (failure.started_at, failure.record_id):
                    continue
                if key not in found or (started_at, record_id) > found[key][:2]:
                    found[key] = (started_at, record_id, outcome)
    return {key: outcome for key, (_, _, outcome) in found.items()}


def _synced_duplicates(engine: Engine, failures: Sequence[Failure]) -> set[tuple[int, str, str]]:
    """The sources among `failures` (duplicate errors) that the link table already holds a target for."""
    from storage.models import Link

    synced: set[tuple[int, str, str]] = set()
    pairs = sorted({(f.integration_id, f.flow) for f in failures})
    with session_scope(engine) as session:
        for integration_id, flow in pairs:
            ids = sorted(
                {f.source_id for f in failures if (f.integration_id, f.flow) == (integration_id, flow)}
            )
            for start in range(0, len(ids), SOURCE_CHUNK):
                query = select(Link.source_id).where(
                    col(Link.integration_id) == integration_id,
                    col(Link.flow) == flow,
                    col(Link.source_id).in_(ids[start : start + SOURCE_CHUNK]),
                    col(Link.target_id).is_not(None),
                    col(Link.target_id) != "",
                )
                synced.update((integration_id, flow, source_id) for source_id in session.exec(query).all())
    return synced


# --- keeping the groups ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SyncResult:
    """What one sync found and changed."""

    scan: Scan
    groups: dict[str, TriageGroup]  # stored groups by key, for every group the scan found
    created: int = 0
    reopened: int = 0
    auto_resolved: int = 0


def sync_groups(engine: Engine, *, integration_id: int | None = None) -> SyncResult:
    """Bring the stored groups in line with the audit trail: add groups that have open failures, reopen
    resolved ones that failed again since, and resolve (`auto_synced`) those with nothing failing or in
    flight any more. Safe to run from several processes at once: every change is a guarded statement."""
    found = scan(engine, integration_id=integration_id)
    keys = list(found.groups)
    stored = _stored(engine, keys)
    now = utcnow()
    reopened = resolved = 0
    new = [g for key, g in found.groups.items() if key not in stored and g.open]
    if new:
        _insert_groups(engine, new, now)
    with transaction(engine, write=True) as connection:
        for key, group in found.groups.items():
            row = stored.get(key)
            if row is None:
                continue
            if row.status == GroupStatus.RESOLVED:
                since = row.resolved_at or row.updated_at
                if any(f.at > since for f in group.open):
                    reopened += _guarded(
                        connection,
                        row,
                        GroupStatus.RESOLVED,
                        status=GroupStatus.OPEN,
                        resolution=None,
                        resolved_at=None,
                        updated_by=SYSTEM_USER,
                        updated_at=now,
                    )
            elif not group.open and not group.in_flight:
                resolved += _guarded(
                    connection,
                    row,
                    row.status,
                    status=GroupStatus.RESOLVED,
                    resolution=Resolution.AUTO_SYNCED,
                    resolved_at=now,
                    updated_by=SYSTEM_USER,
                    updated_at=now,
                )
    groups = _stored(engine, keys) if (new or reopened or resolved) else stored
    created = sum(1 for g in new if g.key in groups and groups[g.key].created_at == now)
    return SyncResult(found, groups, created=created, reopened=reopened, auto_resolved=resolved)


def _stored(engine: Engine, keys: Sequence[str]) -> dict[str, TriageGroup]:
    rows: dict[str, TriageGroup] = {}
    with session_scope(engine) as session:
        for start in range(0, len(keys), SOURCE_CHUNK):
            query = select(TriageGroup).where(col(TriageGroup.key).in_(keys[start : start + SOURCE_CHUNK]))
            rows.update((row.key, row) for row in session.exec(query).all())
    return rows


def _insert_groups(engine: Engine, groups: Iterable[GroupState], now: datetime) -> None:
    rows = [
        {
            "key": g.key,
            "integration_id": g.integration_id,
            "flow": g.flow,
            "error_class": g.error_class,
            "pattern": g.pattern,
            "status": GroupStatus.OPEN.value,
            "updated_by": SYSTEM_USER,
            "created_at": now,
            "updated_at": now,
        }
        for g in groups
    ]
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    # Another process may add the same group at the same moment: the key is unique, the loser skips it.
    statement = dialect.insert(TriageGroup).on_conflict_do_nothing(index_elements=["key"])
    with transaction(engine, write=True) as connection:
        connection.execute(statement, rows)


def _guarded(connection: Connection, row: TriageGroup, expected: str, **values: Any) -> int:
    """UPDATE the row only if its status is still `expected` (another process may have moved it)."""
    result = connection.execute(
        update(TriageGroup)
        .where(col(TriageGroup.id) == row.id, col(TriageGroup.status) == expected)
        .values(**values)
    )
    return int(result.rowcount)


# --- decisions -----------------------------------------------------------------------------------------


class GroupGone(LookupError):
    """There is no such group (it was never stored, or the id is wrong)."""


def get_group(engine: Engine, group_id: int) -> TriageGroup | None:
    with session_scope(engine) as session:
        return session.get(TriageGroup, group_id)


def decide(
    engine: Engine,
    group_id: int,
    *,
    by: str,
    status: GroupStatus,
    assignee: str | None = None,
    note: str | None = None,
    keep_assignee: bool = True,
) -> TriageGroup:
    """Set a group's status as a person decided, with who and when; resolving records the time and
    `manual`, any other status clears a resolution. Returns the group as stored."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        row = session.get(TriageGroup, group_id)
        if row is None:
            raise GroupGone(f"there is no triage group {group_id}")
        row.status = status
        row.updated_by = by
        row.updated_at = now
        if assignee is not None or not keep_assignee:
            row.assignee = assignee
        if note is not None:
            row.note = note
        if status == GroupStatus.RESOLVED:
            row.resolved_at, row.resolution = now, Resolution.MANUAL
        else:
            row.resolved_at, row.resolution = None, None
        session.add(row)
        session.flush()
        session.refresh(row)
        return row


def touch(engine: Engine, group_id: int, *, by: str, status: GroupStatus | None = None) -> None:
    """Note that `by` acted on the group (a replay), moving it to `status` when given."""
    values: dict[str, Any] = {"updated_by": by, "updated_at": utcnow()}
    if status is not None:
        values["status"] = status
    with transaction(engine, write=True) as connection:
        connection.execute(update(TriageGroup).where(col(TriageGroup.id) == group_id).values(**values))


# --- payload edits -------------------------------------------------------------------------------------


def payload_diff(before: Any, after: Any, prefix: str = "") -> list[dict[str, Any]]:
    """What changed between two payloads, field by field (dotted paths; list elements as `[i]`)."""
    if isinstance(before, dict) and isinstance(after, dict):
        changes: list[dict[str, Any]] = []
        for name in sorted(set(before) | set(after), key=str):
            path = f"{prefix}.{name}" if prefix else str(name)
            if name not in after:
                changes.append({"field": path, "before": before[name]})
            elif name not in before:
                changes.append({"field": path, "after": after[name]})
            else:
                changes.extend(payload_diff(before[name], after[name], path))
        return changes
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [
            change
            for index, (old, new) in enumerate(zip(before, after, strict=True))
            for change in payload_diff(old, new, f"{prefix}[{index}]")
        ]
    return [] if before == after else [{"field": prefix or "(payload)", "before": before, "after": after}]


def edits_of(engine: Engine, audit_record_id: int) -> list[PayloadEdit]:
    """The edits made to one record's payload, newest first."""
    query = (
        select(PayloadEdit)
        .where(col(PayloadEdit.audit_record_id) == audit_record_id)
        .order_by(col(PayloadEdit.edited_at).desc(), col(PayloadEdit.id).desc())
    )
    with session_scope(engine) as session:
        return list(session.exec(query).all())


def edit_for_job(engine: Engine, job_id: int) -> PayloadEdit | None:
    """The edit a replay job sends, or None for a replay of a stored payload."""
    with session_scope(engine) as session:
        return session.exec(select(PayloadEdit).where(col(PayloadEdit.job_id) == job_id)).first()


def edited_payload(engine: Engine, edit_id: int) -> dict[str, Any]:
    """The payload of edit `edit_id` (what its replay job sends); LookupError when it is gone."""
    with session_scope(engine) as session:
        edit = session.get(PayloadEdit, edit_id)
    if edit is None:
        raise LookupError(f"payload edit {edit_id} no longer exists")
    return dict(edit.payload or {})
