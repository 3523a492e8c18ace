"""Error triage and edit-before-replay: what the Error triage page does, as functions pytest can reach.

Failures are grouped by integration, flow, error class and normalised message (storage.triage explains
the grouping and when a group resolves or reopens on its own). A group can be acknowledged, assigned to
a named person with a note, resolved, or replayed as a group: one replay job per failing source record,
from its newest failure, through runner.replay's own steps, so a group replay is exactly a bulk replay
of those records.

One failed record's payload can be corrected in the app and replayed (`edit_and_replay`): the edit is
checked against the flow's required fields, kept as a `PayloadEdit` (who, when, what changed), and sent
by a replay job whose payload names the edit (`edit_id`); the executor sends the edited payload in place
of the stored one, through the same link table and destination keys as any sync, so an edited replay
cannot post a record twice. Like every replay, these functions only enqueue: the runner does the work.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from runner.flows import registry
from runner.mapping import lookup
from runner.mapping_transforms import is_empty
from runner.replay import (
    BulkReplay,
    ReplayMode,
    _Candidate,
    _enqueue_all,
    _payloads,
    _stored,
    job_payload,
    superseded_by,
)
from storage.audit import NEWEST_FIRST
from storage.db import session_scope
from storage.models import AuditRecord, JobKind, Outcome
from storage.queue import enqueue
from storage.triage import (
    GroupState,
    GroupStatus,
    PayloadEdit,
    TriageGroup,
    decide,
    get_group,
    payload_diff,
    sync_groups,
    touch,
)

UNRESOLVED = (GroupStatus.OPEN, GroupStatus.ACKNOWLEDGED, GroupStatus.ASSIGNED)


class TriageRefused(ValueError):
    """The action cannot be done as asked; the message says why and what to do instead."""


class EditRefused(TriageRefused):
    """An edited payload was not accepted; `fields` names the fields at fault, when there are some."""

    def __init__(self, message: str, *, fields: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.fields = list(fields)


@dataclass(frozen=True)
class GroupFilter:
    """Which groups the page lists; every field optional. Resolved groups only when asked."""

    integration_id: int | None = None
    flow: str | None = None
    error_class: str | None = None
    include_resolved: bool = False


@dataclass(frozen=True)
class FailedRecord:
    """One failing source record of a group: its newest failure."""

    record_id: int
    source_id: str
    started_at: datetime
    message: str


@dataclass(frozen=True)
class GroupView:
    """A group as the page shows it: what people decided, and what the audit trail says now."""

    id: int
    integration_id: int
    flow: str
    error_class: str
    pattern: str
    status: str
    assignee: str | None
    note: str | None
    updated_by: str
    updated_at: datetime
    resolution: str | None
    records: list[FailedRecord] = field(default_factory=list)  # failing source records, newest first
    failures: int = 0  # failed records with this key, every attempt counted
    in_flight: int = 0  # source records a retry is running for
    synced: int = 0  # source records synced since they failed this way
    oldest: datetime | None = None
    newest: datetime | None = None
    sample_message: str = ""

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def source_ids(self) -> list[str]:
        return [r.source_id for r in self.records]


@dataclass(frozen=True)
class Triage:
    """The page's whole view: the groups (most recent failure first) and whether the scan saw it all."""

    groups: list[GroupView]
    complete: bool
    scanned: int


def list_groups(engine: Engine, filters: GroupFilter | None = None) -> Triage:
    """The failure groups, most recently failing first, after bringing the stored groups in line with the
    audit trail (new groups added, resolved ones reopened, emptied ones resolved)."""
    filters = filters or GroupFilter()
    synced = sync_groups(engine, integration_id=filters.integration_id)
    views = []
    for key, state in synced.scan.groups.items():
        row = synced.groups.get(key)
        if row is None or not _wanted(row, filters):
            continue
        views.append(_view(row, state))
    views.sort(key=lambda v: (v.status == GroupStatus.RESOLVED, -(v.newest or v.updated_at).timestamp()))
    return Triage(groups=views, complete=synced.scan.complete, scanned=synced.scan.scanned)


def find_group(engine: Engine, group_id: int) -> GroupView | None:
    """One group with its current records, or None when there is no such group."""
    row = get_group(engine, group_id)
    if row is None:
        return None
    synced = sync_groups(engine, integration_id=row.integration_id)
    state = synced.scan.groups.get(row.key)
    stored = synced.groups.get(row.key, row)
    if state is None:
        return _view(stored, GroupState(row.key, row.integration_id, row.flow, row.error_class, row.pattern))
    return _view(stored, state)


def auto_resolve_synced(engine: Engine) -> int:
    """Resolve (`auto_synced`) every group none of whose source records is failing or in flight any more
    — its failures were synced since, or were duplicates of records already synced — and reopen those
    that failed again; returns how many groups were resolved. For the runner's scheduled work and the
    page's load."""
    return sync_groups(engine).auto_resolved


def acknowledge(engine: Engine, group_id: int, *, by: str) -> TriageGroup:
    """Someone has seen the group and is on it (an assignee stays as it was)."""
    return decide(engine, group_id, by=by, status=GroupStatus.ACKNOWLEDGED)


def assign(engine: Engine, group_id: int, *, assignee: str, note: str = "", by: str) -> TriageGroup:
    """Hand the group to a named person, with a note for them."""
    name = assignee.strip()
    if not name:
        raise TriageRefused("name the person the group is assigned to")
    return decide(engine, group_id, by=by, status=GroupStatus.ASSIGNED, assignee=name, note=note.strip())


def resolve(engine: Engine, group_id: int, *, by: str, note: str = "") -> TriageGroup:
    """Close the group (a failure after this reopens it); the note says why."""
    return decide(engine, group_id, by=by, status=GroupStatus.RESOLVED, note=note.strip() or None)


def replay_group(
    engine: Engine, group_id: int, *, by: str, mode: ReplayMode = ReplayMode.PAYLOAD
) -> BulkReplay:
    """Replay every failing source record of the group, once each, from its newest failure (what
    runner.replay.replay_filtered does for a filter). Records without what `mode` needs are skipped and
    counted; the group is marked acknowledged by `by` if it was open."""
    view = find_group(engine, group_id)
    if view is None:
        raise TriageRefused(f"there is no triage group {group_id}")
    if not view.records:
        raise TriageRefused("no record of this group is failing any more: nothing to replay")
    candidates = _candidates(engine, [r.record_id for r in view.records])
    payloads, refused = _payloads(candidates, ReplayMode(mode), False)
    job_ids = _enqueue_all(engine, payloads, on_progress=None, chunk=250)
    status = GroupStatus.ACKNOWLEDGED if view.status == GroupStatus.OPEN else None
    touch(engine, group_id, by=by, status=status)
    return BulkReplay(job_ids=job_ids, selected=len(candidates), duplicates=0, superseded=0, refused=refused)


@dataclass(frozen=True)
class ReplayTally:
    """Where the jobs of a group replay have got to."""

    total: int
    outcomes: dict[str, int]  # audit outcome of each job's newest record → jobs

    @property
    def waiting(self) -> int:
        return self.total - sum(self.outcomes.values())


def replay_tally(engine: Engine, job_ids: Sequence[int]) -> ReplayTally:
    """How the replay jobs `job_ids` came out so far, by each job's newest audit record."""
    newest: dict[int, tuple[datetime, int, str]] = {}
    with session_scope(engine) as session:
        for start in range(0, len(job_ids), 500):
            query = select(
                AuditRecord.job_id, AuditRecord.started_at, AuditRecord.id, AuditRecord.outcome
            ).where(col(AuditRecord.job_id).in_(list(job_ids[start : start + 500])))
            for job_id, started_at, record_id, outcome in session.exec(query).all():
                assert job_id is not None
                if job_id not in newest or (started_at, record_id) > newest[job_id][:2]:
                    newest[job_id] = (started_at, record_id, outcome)
    outcomes: dict[str, int] = {}
    for _, _, outcome in newest.values():
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return ReplayTally(total=len(job_ids), outcomes=outcomes)


# --- edit before replay --------------------------------------------------------------------------------


def parse_payload(text: str) -> dict[str, Any]:
    """The JSON object typed into the editor; EditRefused says where malformed JSON goes wrong."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise EditRefused(
            f"the payload is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None
    if not isinstance(value, dict):
        raise EditRefused("the payload must be a JSON object ({ ... }), as the stored one is")
    return value


def missing_required(payload: dict[str, Any], required: Sequence[str]) -> list[str]:
    """The required fields `payload` lacks or leaves empty, named as the payload has them.

    A name is a dotted path (`billToContact.lastName`); `items[].amount` asks it of every element of the
    list `items` (a missing one is reported as `items[2].amount`).
    """
    missing: list[str] = []
    for name in required:
        if "[]." not in name:
            if is_empty(lookup(payload, name)):
                missing.append(name)
            continue
        head, rest = name.split("[].", 1)
        items = lookup(payload, head)
        if not isinstance(items, list):
            continue  # the list itself is its own required field (or optional)
        for index, item in enumerate(items):
            if is_empty(lookup(item, rest) if isinstance(item, dict) else None):
                missing.append(f"{head}[{index}].{rest}")
    return missing


def validate_edit(flow_name: str, payload: dict[str, Any]) -> None:
    """Refuse a payload that lacks a field the flow requires, naming every such field."""
    flow = registry().get(flow_name)
    if flow is None:
        raise EditRefused(f"unknown flow {flow_name!r}: this record cannot be replayed")
    missing = missing_required(payload, flow.required_fields)
    if missing:
        names = ", ".join(missing)
        noun = "field" if len(missing) == 1 else "fields"
        raise EditRefused(
            f"required {noun} missing or empty: {names} ({flow.title} cannot send a record without it)",
            fields=missing,
        )


@dataclass(frozen=True)
class EditedReplay:
    """What `edit_and_replay` stored and enqueued."""

    edit_id: int
    job_id: int
    diff: list[dict[str, Any]]


def edit_and_replay(
    engine: Engine, audit_record_id: int, payload: dict[str, Any], *, by: str
) -> EditedReplay:
    """Replay a failed record with a corrected payload.

    The payload is checked against the flow's required fields; it must differ from the stored one. The
    edit (payload, what changed, who, when) and its replay job are stored in one transaction; the job
    re-sends the edited payload (mode `payload`) through the same write path as any sync. Refused for a
    record that did not fail, has no stored payload, or that a later record of its source has moved past.
    """
    with session_scope(engine) as session:
        record = session.get(AuditRecord, audit_record_id)
    if record is None:
        raise EditRefused(f"there is no audit record {audit_record_id}")
    if record.outcome != Outcome.FAILED:
        raise EditRefused(
            f"record {audit_record_id} did not fail ({record.outcome}): only failures are edited"
        )
    if not record.payload:
        raise EditRefused(
            f"record {audit_record_id} has no stored payload (it failed before mapping): fix the mapping "
            "and replay it with the current mapping instead"
        )
    newer = superseded_by(engine, record)
    if newer is not None:
        raise EditRefused(
            f"record #{newer.id} of the same source record is newer ({newer.outcome}): edit that one, so "
            "older data is not sent over newer"
        )
    validate_edit(record.flow, payload)
    diff = payload_diff(record.payload, payload)
    if not diff:
        raise EditRefused("the payload is unchanged: change a field first, or replay the record as it is")
    with session_scope(engine, write=True) as session:
        edit = PayloadEdit(audit_record_id=audit_record_id, payload=payload, diff=diff, edited_by=by)
        session.add(edit)
        session.flush()
        assert edit.id is not None
        job = enqueue(
            session,
            integration_id=record.integration_id,
            flow=record.flow,
            payload={**job_payload(record, ReplayMode.PAYLOAD, False), "edit_id": edit.id},
            kind=JobKind.REPLAY,
        )
        edit.job_id = job.id
        session.add(edit)
        assert job.id is not None
        return EditedReplay(edit_id=edit.id, job_id=job.id, diff=diff)


def failed_record(engine: Engine, audit_record_id: int) -> AuditRecord | None:
    """One audit record, for the editor."""
    with session_scope(engine) as session:
        return session.get(AuditRecord, audit_record_id)


def required_fields(flow_name: str) -> tuple[str, ...]:
    """The fields a flow cannot send a record without (shown beside the editor)."""
    flow = registry().get(flow_name)
    return tuple(flow.required_fields) if flow is not None else ()


def flow_title(flow_name: str) -> str:
    flow = registry().get(flow_name)
    return flow.title if flow is not None else flow_name


# --- helpers -------------------------------------------------------------------------------------------


def _wanted(row: TriageGroup, filters: GroupFilter) -> bool:
    if not filters.include_resolved and row.status == GroupStatus.RESOLVED:
        return False
    if filters.flow and row.flow != filters.flow:
        return False
    return not (filters.error_class and row.error_class != filters.error_class)


def _view(row: TriageGroup, state: GroupState) -> GroupView:
    assert row.id is not None
    records = sorted(state.open, key=lambda f: (f.started_at, f.record_id), reverse=True)
    return GroupView(
        id=row.id,
        integration_id=row.integration_id,
        flow=row.flow,
        error_class=row.error_class,
        pattern=row.pattern,
        status=row.status,
        assignee=row.assignee,
        note=row.note,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        resolution=row.resolution,
        records=[FailedRecord(f.record_id, f.source_id, f.started_at, f.message) for f in records],
        failures=state.failures,
        in_flight=len(state.in_flight),
        synced=len(state.synced),
        oldest=state.oldest,
        newest=state.newest,
        sample_message=records[0].message if records else "",
    )


def _candidates(engine: Engine, record_ids: Sequence[int]) -> list[_Candidate]:
    """What runner.replay reads of each record to replay it: a few columns, and whether a payload and a
    source snapshot were kept (asked of the database, so no JSON is read back)."""
    rows: list[Any] = []
    with session_scope(engine) as session:
        for start in range(0, len(record_ids), 500):
            query = select(
                AuditRecord.id,
                AuditRecord.integration_id,
                AuditRecord.flow,
                AuditRecord.source_id,
                AuditRecord.started_at,
                _stored(col(AuditRecord.payload)),
                _stored(col(AuditRecord.source_snapshot)),
            ).where(col(AuditRecord.id).in_(list(record_ids[start : start + 500])))
            rows.extend(session.exec(query.order_by(*NEWEST_FIRST)).all())
    return [
        _Candidate(record_id, integration_id, flow, source_id, started_at, bool(payload), bool(snapshot))
        for record_id, integration_id, flow, source_id, started_at, payload, snapshot in rows
    ]
