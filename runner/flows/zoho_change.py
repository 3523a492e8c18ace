"""Zoho change notice → the full Zoho record → the fields that flow back, written to NetSuite.

Trigger: a Zoho notification (runner.intake_zoho queues one job per changed record: module, id,
operation, channel_id, server_time) or, for changes made while a channel was down, the Zoho poll
(runner.zoho_poll). The job's source id is `<Module>/<Zoho id>`, e.g. `Accounts/5725767000000400001`, so a
replay (whose payload carries only the audited source id) still knows the module. The record is fetched
whole by id; the audit snapshot is `{"<Module>": {...the Zoho record...}}`.

Mapping: one flat spec serves the three modules. Sources start with the Zoho module, targets with the
NetSuite record type the module is written to:

    {"target": "customer.phone", "source": "Accounts.Phone", "flows_back": true}

A record of one module fills only its own module's rules (the other modules' sources are absent from its
snapshot), and the executor, replays and the mapping page treat the spec like any other. Only rules marked
`flows_back` are written; other rules only show in the audit payload. Per-module rules should not use
`value`, `default` or `required`, which act whatever the module.

Target: the NetSuite record the Zoho record came from, through the NetSuite → Zoho flow's link (its target
id is the Zoho id), else the record's own `NetSuite_Id` field. A record with neither is skipped ("not
linked"): Zoho never creates NetSuite records.

Echo suppression: our own NetSuite → Zoho upserts come back as change notices too (Zoho has no "exclude
self", shared/api/zoho.md §3e). A flowing-back field whose Zoho value is exactly what our last upsert of
the record sent (the forward flow's newest audited payload) is ours, not a person's, and is not written
back: sending it back could undo a NetSuite edit made since. This is decided per field, not per record,
because a whole-record hash (the link's payload_hash) changes when a person edits any field, and would
then send our own values back along with theirs. What is left is compared with NetSuite's current values
and only differences are PATCHed. A job that writes nothing succeeds with action "skip" and the reason in
the audit response (`{"skipped": "not linked: ..."}`).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, ClassVar, cast

from anyio import to_thread
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.netsuite.client import NetSuiteClient
from connectors.zoho.client import ZohoClient
from runner.flows import FlowContext, Postpone, WriteResult
from runner.mapping import Mapped, MappingError, lookup
from storage import crud
from storage.db import session_scope
from storage.models import AuditRecord, Link, Outcome
from storage.types import utcnow

FLOW = "zoho_change"
MATCH_FIELD = "NetSuite_Id"  # the Zoho field holding the NetSuite internal id (runner.flows.zoho_records)
AUDIT_WAIT = 2.0  # seconds to wait when our own write to the record is not audited yet
AUDIT_GRACE = timedelta(seconds=60)  # after this, a link update without its audit is waited for no longer
REMEMBERED = 256  # fetched records kept for their job's write step (per runner process)


@dataclass(frozen=True)
class Module:
    """Where one Zoho module's records are written back, and which flow made them from NetSuite."""

    record: str  # NetSuite record type
    forward_flow: str  # the NetSuite → Zoho flow whose links and audit name these Zoho records


MODULES: dict[str, Module] = {
    "Accounts": Module("customer", "customer_zoho"),
    "Vendors": Module("vendor", "vendor_zoho"),
    "Contacts": Module("contact", "contact_zoho"),
}

# Reference data a CRM user keeps current: phone numbers, the website, a contact's job title.
DEFAULT_MAPPING: dict[str, Any] = {
    "fields": [
        {"target": "customer.phone", "source": "Accounts.Phone", "transform": "trim", "flows_back": True},
        {"target": "customer.url", "source": "Accounts.Website", "transform": "trim", "flows_back": True},
        {"target": "vendor.phone", "source": "Vendors.Phone", "transform": "trim", "flows_back": True},
        {"target": "contact.phone", "source": "Contacts.Phone", "transform": "trim", "flows_back": True},
        {"target": "contact.title", "source": "Contacts.Title", "transform": "trim", "flows_back": True},
    ]
}


@dataclass(frozen=True)
class _Known:
    """What the database says about one Zoho record: the mapping in force and our last write to it."""

    spec: dict[str, Any]
    link: Link | None  # the forward flow's link whose target is this Zoho record
    written: dict[str, Any] | None  # the payload of the forward flow's newest successful write
    written_at: datetime | None  # when that write's audit record was finished


class ZohoChange:
    name: ClassVar[str] = FLOW
    title: ClassVar[str] = "Zoho change → NetSuite write-back"
    source_system: ClassVar[str] = "zoho"
    target_system: ClassVar[str] = "netsuite"
    source_record: ClassVar[str] = ""
    default_mapping: ClassVar[dict[str, Any]] = DEFAULT_MAPPING
    required_fields: ClassVar[tuple[str, ...]] = ()
    batch_size: ClassVar[int] = 1

    def __init__(self) -> None:
        # fetch → write hand-over of the full record, by job (ctx.worker is "job:<id>"): the write step
        # gets only the mapped payload, and echo suppression and the NetSuite_Id fallback need the record.
        self._fetched: OrderedDict[tuple[str, str], dict[str, Any] | None] = OrderedDict()

    def source_id(self, job_payload: dict[str, Any]) -> str:
        return source_id_of(job_payload)

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        module, record_id = split_source_id(source_id)
        if module not in MODULES:
            return {module: {}}  # write says why nothing is written
        record = await cast(ZohoClient, ctx.source).get_record(module, record_id)
        self._fetched[(ctx.worker, source_id)] = record
        while len(self._fetched) > REMEMBERED:
            self._fetched.popitem(last=False)
        return {module: record or {}}

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        module_name, record_id = split_source_id(source_id)
        module = MODULES.get(module_name)
        if module is None:
            return _skip(
                "", f"not written back: Zoho module {module_name!r} is not one of {', '.join(MODULES)}"
            )
        fetched = (ctx.worker, source_id) in self._fetched
        record = self._fetched.pop((ctx.worker, source_id), None)
        if fetched and record is None:
            return _skip(
                "", f"gone: {module_name} {record_id} no longer exists in Zoho (deleted since the notice)"
            )
        hint = str((record or {}).get(MATCH_FIELD) or "").strip()
        known = await to_thread.run_sync(_known, ctx.engine, ctx.integration.id or 0, module, record_id, hint)
        # Targets → the Zoho field each reads; the mapped payload's own flows_back (a replayed payload's
        # mapping version) adds targets the current spec no longer has, with no field to check echoes by.
        own = {t: None for t in mapped.flows_back if t.startswith(f"{module.record}.")}
        sources: dict[str, str | None] = own | _flowing_rules(known.spec, module_name, module)
        values = {t: v for t in sources if not _empty(v := lookup(mapped.payload, t))}
        if not values:
            reason = (
                f"nothing flows back: no field of this {module_name} record marked flows_back has a value"
            )
            return _skip("", reason)
        netsuite_id, found_by = _netsuite_id(known.link, record)
        if not netsuite_id:
            return _skip(
                "",
                f"not linked: {module_name} {record_id} has no NetSuite {module.record} (no {module.forward_flow} "
                f"link and no {MATCH_FIELD}); records are never created in NetSuite from Zoho",
            )
        echoed: list[str] = []
        if record is not None:  # a replay re-sends what was asked, whoever wrote it
            _wait_for_own_audit(known)
            echoed = sorted(t for t in values if _is_echo(record, known.written, sources[t]))
        mine = {t: v for t, v in values.items() if t not in echoed}
        if not mine:
            return _skip(
                netsuite_id,
                f"echo: {', '.join(_field(t) for t in echoed)} hold what our last {module.forward_flow} write "
                "sent to Zoho; nothing a person changed flows back",
                echo=echoed,
            )
        netsuite = cast(NetSuiteClient, ctx.target)
        current = await netsuite.get_record(module.record, netsuite_id)
        changes = {_field(t): v for t, v in mine.items() if not _same(lookup(current, _field(t)), v)}
        if not changes:
            return _skip(
                netsuite_id,
                f"unchanged: NetSuite {module.record} {netsuite_id} already has {', '.join(_field(t) for t in mine)}",
                echo=echoed,
            )
        body = _nested(changes)
        await netsuite.update_record(module.record, netsuite_id, body)
        response = {"record_type": module.record, "patched": body, "found_by": found_by, "echo": echoed}
        return WriteResult(netsuite_id, "update", response)


def source_id_of(job_payload: dict[str, Any]) -> str:
    """A job's source id, `<Module>/<Zoho id>`: built from a notice's or the poll's module and id, or
    taken as it is from a replay, which carries the audited source id."""
    record_id = str(job_payload["id"])
    module = job_payload.get("module")
    return f"{module}/{record_id}" if module else record_id


def split_source_id(source_id: str) -> tuple[str, str]:
    """`Accounts/5725767000000400001` → ("Accounts", "5725767000000400001")."""
    module, _, record_id = source_id.partition("/")
    if not module or not record_id:
        raise MappingError(
            "source_id", f"{source_id!r} does not name its Zoho module: expected <Module>/<id>"
        )
    return module, record_id


def _known(
    engine: Engine, integration_id: int, module: Module, zoho_id: str, netsuite_id: str = ""
) -> _Known:
    """`netsuite_id`: the record's own NetSuite_Id. A record our forward flow is creating right now has a
    link with no target yet (it is set when the create returns): found by its source id instead, so the
    notice Zoho sends for our own create waits for that create's audit rather than racing it."""
    mapping = crud.active_mapping(engine, integration_id=integration_id, flow=FLOW)
    spec = mapping.spec if mapping is not None else DEFAULT_MAPPING
    forward = (col(Link.integration_id) == integration_id, col(Link.flow) == module.forward_flow)
    with session_scope(engine) as session:
        link = session.exec(
            select(Link).where(*forward, col(Link.target_id) == zoho_id).order_by(col(Link.updated_at).desc())
        ).first()
        if link is None and netsuite_id:
            link = session.exec(
                select(Link).where(
                    *forward,
                    col(Link.source_id) == netsuite_id,
                    col(Link.target_id).is_(None),
                    col(Link.claimed_until) > utcnow(),  # being created now, not a create that failed
                )
            ).first()
        last = session.exec(
            select(AuditRecord)
            .where(
                col(AuditRecord.integration_id) == integration_id,
                col(AuditRecord.flow) == module.forward_flow,
                col(AuditRecord.target_id) == zoho_id,
                col(AuditRecord.outcome) == Outcome.SUCCEEDED,
                col(AuditRecord.payload).is_not(None),
            )
            .order_by(col(AuditRecord.id).desc())
        ).first()
    return _Known(spec, link, last.payload if last else None, last.finished_at if last else None)


def _flowing_rules(spec: dict[str, Any], module_name: str, module: Module) -> dict[str, str | None]:
    """Target path → the Zoho field it is read from, for this module's rules that flow back."""
    rules: dict[str, str | None] = {}
    for rule in spec.get("fields") or []:
        target = str(rule.get("target") or "")
        if not rule.get("flows_back") or not target.startswith(f"{module.record}."):
            continue
        sources = rule.get("source") or []
        sources = [sources] if isinstance(sources, str) else list(sources)
        prefix = f"{module_name.lower()}."
        fields = [s[len(prefix) :] for s in sources if isinstance(s, str) and s.lower().startswith(prefix)]
        rules[target] = fields[0] if fields else None
    return rules


def _netsuite_id(link: Link | None, record: dict[str, Any] | None) -> tuple[str, str]:
    """The NetSuite internal id and how it was found: the forward flow's link, else `NetSuite_Id`."""
    if link is not None and link.source_id:
        return link.source_id, "link"
    value = str((record or {}).get(MATCH_FIELD) or "").strip()
    return (value, MATCH_FIELD) if value.isdigit() else ("", "")


def _wait_for_own_audit(known: _Known) -> None:
    """Postpone while our own write to this record is linked but not audited yet: its payload is what tells
    our values from a person's. The forward flow links first and audits right after, so this is short."""
    link = known.link
    if link is None or utcnow() - link.updated_at > AUDIT_GRACE:
        return
    if known.written_at is None or known.written_at < link.updated_at:
        raise Postpone(
            "our own write to this Zoho record is not audited yet; checking for its echo soon", AUDIT_WAIT
        )


def _is_echo(record: dict[str, Any], written: dict[str, Any] | None, zoho_field: str | None) -> bool:
    """The Zoho field still holds exactly what our last write sent."""
    if written is None or zoho_field is None:
        return False
    sent = next((v for k, v in written.items() if k.lower() == zoho_field.lower()), None)
    return sent is not None and _same(lookup(record, zoho_field), sent)


def _skip(target_id: str, reason: str, *, echo: list[str] | None = None) -> WriteResult:
    response: dict[str, Any] = {"skipped": reason}
    if echo:
        response["echo"] = echo
    return WriteResult(target_id, "skip", response)


def _field(target: str) -> str:
    """`customer.phone` → `phone`: the NetSuite field, without the record type the target starts with."""
    return target.split(".", 1)[1]


def _nested(changes: dict[str, Any]) -> dict[str, Any]:
    """Dotted NetSuite field paths → the nested body PATCH takes."""
    body: dict[str, Any] = {}
    for path, value in changes.items():
        parts = path.split(".")
        node = body
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return body


def _plain(value: Any) -> str:
    """A value as compared across systems: references by id, booleans lower case, strings trimmed."""
    if isinstance(value, dict):
        value = value.get("id")
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).strip()


def _same(left: Any, right: Any) -> bool:
    return _plain(left) == _plain(right)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


FLOWS = [ZohoChange()]
