"""What the mapping page does, as functions pytest reaches without a browser.

- **Flows**: an integration's flows with the mapping in force (a stored version, or the flow's built-in
  default, shown as version 0).
- **Editing**: rules ↔ table rows (runner.mapping_rows), a `Draft` with every problem (cells that
  cannot be read, then `runner.mapping.validate_spec` against the flow's required fields and the
  integration's lookup tables), and `save` as the next version. A saved version changes the next sync
  only: audit records keep the payload they sent and the mapping version that made it.
- **History**: the versions of a flow, a diff between two (unified diff over canonical JSON, plus the
  targets added, removed and changed), and `rollback`, which saves an old version as the newest.
- **Lookup tables**: the tables a mapping sees (starter tables and stored versions) as key/value rows,
  saved as a new version through storage.lookups.
- **Samples and preview**: a source record fetched live by id through the flow's own `fetch` (read
  only: a write the fetch would make is refused before it is sent), the newest source snapshot in the
  audit log, or JSON a person pasted; `preview` maps it with the draft.
"""

from __future__ import annotations

import copy
import difflib
import json
import uuid
from collections.abc import Mapping as MappingABC
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx2
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors import sync
from connectors.errors import ConnectorError
from connectors.http import ApiClient, Attempt, RetryPolicy
from runner import mapping_rows
from runner.executor import flow_context
from runner.flows import Flow, registry
from runner.mapping import MappingError, Preview, preview, validate_spec
from runner.mapping_rows import format_constant, parse_constant, rows_to_rules, rules_to_rows, semantic
from runner.mapping_transforms import show, steps
from runner.services import Services, current_trail
from storage import crud, lookups
from storage.audit import AuditFilter, list_records
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Mapping
from storage.settings import Settings

DEFAULT_VERSION = 0  # how the built-in default mapping is numbered in history and audit records
SNAPSHOT_SCAN = 50  # newest audit records of a flow searched for a stored source snapshot
# A person waits for a live sample: fewer and shorter retries than a job gets.
PREVIEW_RETRY = RetryPolicy(max_tries=2, cap=2.0, max_retry_after=5.0)
READ_METHODS = frozenset({"GET", "HEAD"})
WRITE_STATEMENTS = frozenset({"INSERT", "UPDATE", "DELETE", "MERGE", "UPSERT", "REPLACE"})


class InvalidMapping(ValueError):
    """A mapping or lookup table that cannot be saved; `problems` says why, one line each."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


class SampleUnavailable(Exception):
    """No sample record could be had (not found, connection refused, bad JSON...); the message says why."""


class WouldWrite(Exception):
    """A preview's fetch tried to change something in a remote system; it was not sent."""


# --- flows -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class FlowMapping:
    """One flow of an integration and the mapping in force for it."""

    flow: Flow
    version: int  # DEFAULT_VERSION: no stored version, the flow's built-in default applies
    spec: dict[str, Any]
    created_by: str | None = None
    created_at: datetime | None = None

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def label(self) -> str:
        return version_label(self.version)


def version_label(version: int) -> str:
    return "default (built in)" if version == DEFAULT_VERSION else f"version {version}"


def flows_of(engine: Engine, *, integration_id: int) -> list[FlowMapping]:
    """The integration's enabled flows that exist, in its order, each with its active mapping."""
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        return []
    known = registry()
    names = [name for name in dict.fromkeys(integration.flows) if name in known]
    return [flow_mapping(engine, integration_id=integration_id, flow=name) for name in names]


def flow_mapping(engine: Engine, *, integration_id: int, flow: str) -> FlowMapping:
    """The mapping in force for one flow: the active stored version, else the built-in default."""
    found = registry()[flow]
    active = crud.active_mapping(engine, integration_id=integration_id, flow=flow)
    if active is None:
        return FlowMapping(found, DEFAULT_VERSION, copy.deepcopy(found.default_mapping))
    return FlowMapping(
        found, active.version, copy.deepcopy(active.spec), active.created_by, active.created_at
    )


# --- editing -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Draft:
    """An edited mapping: the spec the rows make, every problem with it, and whether it differs from
    the version it was edited from."""

    spec: dict[str, Any]
    problems: list[str]
    changed: bool

    @property
    def valid(self) -> bool:
        return not self.problems


def rows_of(spec: MappingABC[str, Any]) -> list[dict[str, Any]]:
    """The table rows of a spec's rules (see runner.mapping_rows for the columns)."""
    rules = spec.get("fields")
    return rules_to_rows(rules if isinstance(rules, list) else [])


def draft(
    rows: Sequence[MappingABC[str, Any]],
    *,
    base: MappingABC[str, Any],
    flow: Flow,
    tables: MappingABC[str, Any],
) -> Draft:
    """The spec the edited `rows` describe (unchanged cells keep `base`'s form) and its problems:
    cells that cannot be read first, then what `validate_spec` finds."""
    base_rules = base.get("fields")
    rules, problems = rows_to_rules(rows, base=base_rules if isinstance(base_rules, list) else None)
    spec = {**copy.deepcopy(dict(base)), "fields": rules}
    problems = [*problems, *check(spec, flow=flow, tables=tables)]
    return Draft(spec=spec, problems=problems, changed=spec != dict(base))


def check(spec: MappingABC[str, Any], *, flow: Flow, tables: MappingABC[str, Any]) -> list[str]:
    """What is wrong with `spec` for `flow` given the lookup tables that exist ("field: problem")."""
    return validate_spec(spec, required=flow.required_fields, lookups=tables)


def save(engine: Engine, *, integration_id: int, flow: str, spec: dict[str, Any], created_by: str) -> Mapping:
    """Store `spec` as the flow's next version and make it active; raises InvalidMapping (saving
    nothing) when it does not validate against the flow and the integration's lookup tables."""
    problems = check(
        spec, flow=registry()[flow], tables=lookups.lookups_for(engine, integration_id=integration_id)
    )
    if problems:
        raise InvalidMapping(problems)
    return crud.save_mapping(
        engine, integration_id=integration_id, flow=flow, spec=copy.deepcopy(spec), created_by=created_by
    )


# --- history -----------------------------------------------------------------------------------------
def history(engine: Engine, *, integration_id: int, flow: str | None = None) -> list[Mapping]:
    """Stored mapping versions, newest first: one flow's, or every flow's (never lookup tables)."""
    query = select(Mapping).where(
        col(Mapping.integration_id) == integration_id, ~col(Mapping.flow).startswith(lookups.PREFIX)
    )
    if flow is not None:
        query = query.where(col(Mapping.flow) == flow)
    with session_scope(engine) as session:
        return list(session.exec(query.order_by(col(Mapping.flow), col(Mapping.version).desc())).all())


def spec_at(engine: Engine, *, integration_id: int, flow: str, version: int) -> dict[str, Any]:
    """The spec of one version (DEFAULT_VERSION: the built-in default); LookupError when there is none."""
    if version == DEFAULT_VERSION:
        return copy.deepcopy(registry()[flow].default_mapping)
    found = crud.mapping_version(engine, integration_id=integration_id, flow=flow, version=version)
    if found is None:
        raise LookupError(f"{flow} has no version {version}")
    return copy.deepcopy(found.spec)


def diff(old: MappingABC[str, Any], new: MappingABC[str, Any], *, old_label: str, new_label: str) -> str:
    """A unified diff of two specs as canonical JSON (keys in rule order, two-space indent); empty
    when they are the same."""
    lines = difflib.unified_diff(
        canonical_json(old).splitlines(),
        canonical_json(new).splitlines(),
        fromfile=old_label,
        tofile=new_label,
        lineterm="",
    )
    return "\n".join(lines)


def canonical_json(spec: Any) -> str:
    """A spec as JSON a diff reads well: each rule's keys in the order rules are written."""
    return json.dumps(_ordered(spec), indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Changes:
    """What one version changed against another, target by target (rules compared by meaning)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def summary(self) -> str:
        parts = [
            f"{what}: {', '.join(targets)}"
            for what, targets in (("added", self.added), ("removed", self.removed), ("changed", self.changed))
            if targets
        ]
        return "; ".join(parts) or "no change in what the rules do"


def changes(old: MappingABC[str, Any], new: MappingABC[str, Any]) -> Changes:
    """The targets `new` adds, removes and maps differently compared with `old`."""
    before, after = _by_target(old), _by_target(new)
    return Changes(
        added=[t for t in after if t not in before],
        removed=[t for t in before if t not in after],
        changed=[t for t in after if t in before and semantic([after[t]]) != semantic([before[t]])],
    )


def tables_used(spec: MappingABC[str, Any]) -> dict[str, list[str]]:
    """The lookup tables a spec's steps name, each with the fields that read it (`lines[].code`)."""
    used: dict[str, list[str]] = {}

    def walk(rules: Any, prefix: str) -> None:
        for rule in rules if isinstance(rules, list) else []:
            if not isinstance(rule, MappingABC) or not isinstance(rule.get("target"), str):
                continue
            target = prefix + rule["target"]
            for step in steps(rule.get("transform")):
                if (
                    isinstance(step, MappingABC)
                    and step.get("name") == "lookup"
                    and isinstance(step.get("table"), str)
                ):
                    used.setdefault(step["table"], []).append(target)
            walk(rule.get("fields"), f"{target}[].")

    walk(spec.get("fields"), "")
    return used


def rollback(engine: Engine, *, integration_id: int, flow: str, version: int, created_by: str) -> Mapping:
    """Save version `version`'s spec as the newest version (history is never rewritten); raises
    InvalidMapping when it no longer validates (a lookup table it names is gone)."""
    spec = spec_at(engine, integration_id=integration_id, flow=flow, version=version)
    return save(engine, integration_id=integration_id, flow=flow, spec=spec, created_by=created_by)


# --- lookup tables -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class LookupTable:
    """A table a mapping's `lookup` step can name, as the integration sees it now."""

    name: str
    rows: dict[str, Any]
    description: str
    version: int  # DEFAULT_VERSION: the starter table, never saved for this integration
    created_by: str | None = None
    created_at: datetime | None = None


def lookup_tables(engine: Engine, *, integration_id: int) -> list[LookupTable]:
    """Every table the integration's mappings see, by name: stored active versions over the starters."""
    tables = {
        name: LookupTable(name, dict(rows), lookups.DEFAULT_DESCRIPTIONS.get(name, ""), DEFAULT_VERSION)
        for name, rows in lookups.DEFAULT_LOOKUPS.items()
    }
    with session_scope(engine) as session:
        stored = session.exec(
            select(Mapping).where(
                col(Mapping.integration_id) == integration_id,
                col(Mapping.flow).startswith(lookups.PREFIX),
                col(Mapping.active),
            )
        ).all()
    for row in stored:
        name = row.flow.removeprefix(lookups.PREFIX)
        spec = row.spec or {}
        tables[name] = LookupTable(
            name,
            dict(spec.get("rows") or {}),
            str(spec.get("description") or ""),
            row.version,
            row.created_by,
            row.created_at,
        )
    return [tables[name] for name in sorted(tables)]


def lookup_rows(rows: MappingABC[str, Any]) -> list[dict[str, str]]:
    """A table's rows for a two-column editor: key, and value (text, or JSON when it is not text)."""
    return [{"key": str(key), "value": format_constant(value)} for key, value in rows.items()]


def rows_to_lookup(rows: Sequence[MappingABC[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The table the editor rows describe, and a problem per row that cannot be kept."""
    table: dict[str, Any] = {}
    problems: list[str] = []
    for index, raw in enumerate(rows, start=1):
        key = _cell(raw.get("key"))
        value = _cell(raw.get("value"))
        if not key.strip() and not value.strip():
            continue  # a row added and left empty
        if not key.strip():
            problems.append(f"row {index}: give the key (the value the mapping looks up)")
        elif not value.strip():
            problems.append(f"row {index} · {key}: give the value {key!r} stands for")
        elif key in table:
            problems.append(f"row {index} · {key}: the key is listed twice")
        else:
            table[key] = parse_constant(value.strip())
    return table, problems


def save_lookup_table(
    engine: Engine,
    *,
    integration_id: int,
    name: str,
    rows: dict[str, Any],
    description: str,
    created_by: str,
) -> Mapping:
    """Store the table as its next version (raises InvalidMapping for a bad name or no rows)."""
    if not rows:
        raise InvalidMapping([f"lookup table {name!r} needs at least one row"])
    try:
        return lookups.save_lookup(
            engine,
            integration_id=integration_id,
            name=name,
            rows=rows,
            description=description,
            created_by=created_by,
        )
    except ValueError as exc:
        raise InvalidMapping([str(exc)]) from exc


# --- samples and preview -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    """A source record to preview a mapping on, and where it came from."""

    record: dict[str, Any]
    origin: str
    attempts: list[Attempt] = field(default_factory=list)  # the HTTP calls a live fetch made


def stored_sample(engine: Engine, *, integration_id: int, flow: str) -> Sample | None:
    """The newest source snapshot the audit log keeps for this flow, or None."""
    records = list_records(
        engine, filters=AuditFilter(flow=flow, integration_id=integration_id), limit=SNAPSHOT_SCAN
    )
    for record in records:
        if isinstance(record.source_snapshot, dict) and record.source_snapshot:
            when = record.started_at.strftime("%Y-%m-%d %H:%M:%S UTC")
            origin = f"audit record #{record.id}: {record.source_system} {record.source_id}, read {when}"
            return Sample(copy.deepcopy(record.source_snapshot), origin)
    return None


def parse_sample(text: str) -> Sample:
    """A pasted source record; SampleUnavailable unless it is a JSON object."""
    try:
        record = json.loads(text)
    except ValueError as exc:
        raise SampleUnavailable(f"the pasted text is not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise SampleUnavailable("paste one source record: a JSON object {...}")
    return Sample(record, "pasted JSON")


def fetch_sample(
    engine: Engine, vault: Vault, settings: Settings, *, integration_id: int, flow: str, source_id: str
) -> Sample:
    """Fetch one source record by id the way the flow's jobs do (its own `fetch`, the integration's
    connections and stored tokens), for a preview.

    Read only: any request but GET or HEAD is refused before it is sent, and so is any write the flow
    makes to the database through its context (an invoice whose customer has no Zuora account yet would
    otherwise sync the customer first). Tokens are still fetched and stored as the runner's are.
    Failures raise SampleUnavailable.
    """
    found = registry()[flow]
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise SampleUnavailable(f"integration {integration_id} no longer exists")
    source_id = source_id.strip()
    if not source_id:
        raise SampleUnavailable("give the id of the record to fetch")

    async def work(http: httpx2.AsyncClient) -> Sample:
        services = Services(engine=engine, vault=vault, settings=settings, http=http, retry=PREVIEW_RETRY)
        trail: list[Attempt] = []
        token = current_trail.set(trail)
        try:
            ctx = await flow_context(services, integration, found, worker=f"preview:{uuid.uuid4().hex[:8]}")
            for client in (ctx.source, ctx.target):
                _read_only(client)
            ctx.engine = _read_only_engine(engine)  # the flow's own tables (links) too; tokens still refresh
            record = await found.fetch(ctx, source_id)
        finally:
            current_trail.reset(token)
        origin = f"{found.source_system} {found.source_record or 'record'} {source_id}, fetched live"
        return Sample(record, origin, trail)

    try:
        return sync.run(work)
    except WouldWrite as exc:
        raise SampleUnavailable(
            f"fetching this record would first change something ({exc}; for an invoice: its customer "
            "is not synced yet), and a preview only reads: let the runner sync it, then preview its "
            "stored snapshot"
        ) from exc
    except (ConnectorError, MappingError, LookupError) as exc:
        raise SampleUnavailable(str(exc)) from exc


def try_mapping(
    spec: MappingABC[str, Any], sample: Sample, *, flow: Flow, tables: MappingABC[str, Any]
) -> Preview:
    """The mapping tried on the sample: payload, a note per field, every error (never raises)."""
    return preview(spec, sample.record, lookups=tables, required=flow.required_fields)


def note_rows(result: Preview) -> list[dict[str, str]]:
    """A table row per field note: target, where the value came from, the value, what happened."""
    return [
        {
            "target": note.target,
            "source": note.source,
            "value": "" if note.value is None else show(note.value),
            "note": note.note,
            "error": note.error or "",
        }
        for note in result.notes
    ]


# --- helpers -----------------------------------------------------------------------------------------
def _read_only(client: ApiClient) -> None:
    """Make `client` refuse every request that could change the remote system (token requests go
    through `send`, not `request`, and still work)."""
    request = client.request

    async def guarded(method: str, path: str, **kwargs: Any) -> httpx2.Response:
        if method.upper() not in READ_METHODS:
            raise WouldWrite(f"{client.system}: {method.upper()} {path}")
        return await request(method, path, **kwargs)

    client.request = guarded  # type: ignore[method-assign]


def _read_only_engine(engine: Engine) -> Engine:
    """A view of `engine` whose connections refuse to change data (the listener is local to the view)."""
    guarded = engine.execution_options()

    @event.listens_for(guarded, "before_cursor_execute")
    def refuse(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        if verb in WRITE_STATEMENTS:
            raise WouldWrite(f"database: {' '.join(statement.split()[:3])}")

    return guarded


def _ordered(value: Any) -> Any:
    if isinstance(value, list):
        return [_ordered(item) for item in value]
    if isinstance(value, dict):
        order = ("name", *mapping_rows.KEY_ORDER)  # a step's name first, then a rule's keys in order
        keys = sorted(value, key=lambda k: (order.index(k) if k in order else len(order), str(k)))
        return {key: _ordered(value[key]) for key in keys}
    return value


def _by_target(spec: MappingABC[str, Any]) -> dict[str, Any]:
    rules = spec.get("fields") if isinstance(spec, MappingABC) else None
    return {
        rule["target"]: rule
        for rule in rules or []
        if isinstance(rule, MappingABC) and isinstance(rule.get("target"), str)
    }


def _cell(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)
