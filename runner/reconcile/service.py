"""What the reconciliation page calls: request a run, follow it, read its totals and drifts, export them,
and fix each drift (re-sync, link, accept). Every function is synchronous and takes the engine; those
that must talk to Zuora or Zoho also take the vault and settings (to build the connection's client, as
the runner does) and run their few calls in a private event loop.

Fixes go through the normal path: a re-sync or a link queues an ordinary sync job of the flow (the same
link table, destination keys and audit trail as any sync); every decision a person makes is written to
the audit trail as an AuditRecord whose `action` is the choice (update, link, skip, accept, resync) and
whose `response` names who decided and why, and onto the drift row.

Before a re-sync that would create a record (no link with a target id), the target system is searched
for a record carrying the NetSuite id (`existing_target`); when one exists and no choice was given, the
re-sync answers `needs_decision` with what it found, and the person chooses update (link it and sync
onto it), link (link only) or skip (nothing queued).
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy.engine import Engine

from connectors.zoho.client import SearchLimitReached, ZohoClient
from connectors.zuora.client import ZuoraClient
from runner.flows import registry
from runner.flows.invoice import NETSUITE_ID_FIELD
from runner.flows.zoho_records import MATCH_FIELD as ZOHO_MATCH
from runner.services import Services
from storage import audit, crud, links
from storage import reconcile as store
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Integration, JobKind, Outcome
from storage.queue import enqueue
from storage.reconcile import Drift, DriftFilter, DriftKind, DriftStatus, ReconciliationRun
from storage.settings import Settings
from storage.types import utcnow

T = TypeVar("T")

CSV_COLUMNS = (
    "id", "run_id", "integration_id", "flow", "kind", "source_id", "target_id", "label", "field",
    "netsuite", "target", "status", "resolution", "decided_by", "reason",
)  # fmt: skip


class ReconcileRefused(ValueError):
    """The request cannot be done; the message says why and what to do instead."""


class Choice(StrEnum):
    UPDATE = "update"  # link the existing target and sync onto it
    LINK = "link"  # link the existing target, queue nothing
    SKIP = "skip"  # do nothing (recorded)


@dataclass(frozen=True)
class RunProgress:
    """Where a run has got to, for a progress bar: `fraction` is done/total (0 before counting)."""

    run_id: int
    integration_id: int
    status: str
    phase: str
    done: int
    total: int
    requested_by: str
    trigger: str
    error: str | None
    requested_at: Any
    started_at: Any
    finished_at: Any

    @property
    def fraction(self) -> float:
        if self.status == store.RunStatus.SUCCEEDED:
            return 1.0
        return min(1.0, self.done / self.total) if self.total else 0.0


@dataclass(frozen=True)
class TargetMatch:
    """A target record found carrying a NetSuite id: its id, a human name, and how it was found."""

    target_id: str
    label: str
    via: str  # crmId | NetSuite_Id | NetSuiteInvoiceId__c


@dataclass(frozen=True)
class FixResult:
    """What a fix did: `status` is queued (a sync job is queued: `job_id`), linked, skipped, accepted, or
    needs_decision (a target exists; call again with a Choice: see `existing`)."""

    status: str
    drift: Drift | None = None
    job_id: int | None = None
    existing: TargetMatch | None = None
    message: str = ""


# --- runs ------------------------------------------------------------------------------------------
def request_run(engine: Engine, *, integration_id: int, requested_by: str) -> int:
    """Ask for a reconciliation of an integration now; returns the run id (the one already requested or
    running, if any). A runner picks it up within seconds."""
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise ReconcileRefused(f"there is no integration {integration_id}")
    run = store.create_run(engine, integration_id=integration_id, requested_by=requested_by)
    assert run.id is not None
    return run.id


def run_progress(engine: Engine, *, run_id: int) -> RunProgress | None:
    """A run's status and progress (None when there is no such run)."""
    run = store.get_run(engine, run_id=run_id)
    return None if run is None else _progress(run)


def latest_run(engine: Engine, *, integration_id: int, finished: bool = False) -> RunProgress | None:
    """The integration's newest run (`finished=True`: the newest that succeeded), or None."""
    run = store.latest_run(engine, integration_id=integration_id, finished=finished)
    return None if run is None else _progress(run)


def run_totals(engine: Engine, *, run_id: int) -> dict[str, Any]:
    """The side-by-side totals of a finished run:

    `flows`: one row per flow {flow, title, target_system, netsuite, target, matched, missing_in_target,
    missing_in_source, field_mismatch | amount_mismatch + status_mismatch, ...};
    `invoices` (when the invoice flow is enabled): `by_period` rows {period "yyyy-mm", netsuite_count,
    netsuite_amount, target_count, target_amount, agrees} and `by_customer` rows (same, keyed by
    customer_id); amounts are decimal strings. Empty before the run finishes.
    """
    run = store.get_run(engine, run_id=run_id)
    return dict(run.totals or {}) if run is not None else {}


def list_drifts(
    engine: Engine,
    *,
    run_id: int | None = None,
    integration_id: int | None = None,
    flow: str | None = None,
    kind: str | None = None,
    status: str | None = None,
    limit: int | None = 500,
    offset: int = 0,
) -> list[Drift]:
    """Drifts under any mix of filters, in the order found. Without `run_id`, pass `integration_id` and
    the integration's newest finished run is used."""
    if run_id is None and integration_id is not None:
        run = store.latest_run(engine, integration_id=integration_id, finished=True)
        if run is None:
            return []
        run_id = run.id
    filters = DriftFilter(run_id=run_id, integration_id=integration_id, flow=flow, kind=kind, status=status)
    return store.list_drifts(engine, filters=filters, limit=limit, offset=offset)


def drift_csv(engine: Engine, **filters: Any) -> str:
    """The drift list (same filters as `list_drifts`, no limit) as CSV text: one line per field
    difference (one line for a drift without field differences), header first."""
    filters.setdefault("limit", None)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for drift in list_drifts(engine, **filters):
        base = [drift.id, drift.run_id, drift.integration_id, drift.flow, drift.kind, drift.source_id,
                drift.target_id or "", drift.label]  # fmt: skip
        tail = [drift.status, drift.resolution or "", drift.decided_by or "", drift.reason or ""]
        for diff in drift.differences or [{}]:
            writer.writerow(
                [*base, diff.get("field", ""), _cell(diff.get("netsuite")), _cell(diff.get("target")), *tail]
            )
    return out.getvalue()


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


# --- fixes -----------------------------------------------------------------------------------------
def accept(engine: Engine, *, drift_id: int, reason: str, by: str) -> Drift:
    """Accept a drift as it is, with a reason (required); later runs report the same drift (same
    fingerprint) as accepted, not open. Audited as action `accept`."""
    if not (reason or "").strip():
        raise ReconcileRefused("reason: say why this difference is acceptable (the reason is required)")
    drift = _drift(engine, drift_id)
    _audit(engine, drift, action="accept", by=by, reason=reason.strip())
    return store.decide(
        engine, drift_id=drift_id, status=DriftStatus.ACCEPTED, resolution="accept", decided_by=by,
        reason=reason.strip(),
    )  # fmt: skip


def link(
    engine: Engine, vault: Vault, settings: Settings, *, drift_id: int, target_id: str, by: str
) -> FixResult:
    """Link a drift's NetSuite record to an existing target record and sync onto it.

    The target must exist; its NetSuite-id field (Zuora `crmId`, Zoho `NetSuite_Id`) is set to the
    NetSuite id so the flow's own guards agree with the link, the link is recorded (storage.links), and
    a sync of the flow is queued (invoices: linked only, a Zuora invoice is never rewritten). Audited as
    action `link`; the drift is `fixing` until the next run confirms.
    """
    drift = _drift(engine, drift_id)
    target_id = (target_id or "").strip()
    if not target_id:
        raise ReconcileRefused("target_id: name the Zuora or Zoho record to link to")
    if drift.kind == DriftKind.MISSING_IN_SOURCE:
        raise ReconcileRefused(
            "there is no NetSuite record to link: accept the drift or fix it in the target"
        )
    integration = _integration(engine, drift.integration_id)
    _run(_services(engine, vault, settings), lambda s: _claim_target(s, integration, drift, target_id))
    return _link_and_queue(engine, drift, target_id, by=by, action="link", sync=drift.flow != "invoice")


def resync(
    engine: Engine,
    vault: Vault,
    settings: Settings,
    *,
    drift_id: int,
    by: str,
    choice: Choice | str | None = None,
) -> FixResult:
    """Re-sync a drift's NetSuite record through the flow (a queued sync job, audited like any sync).

    When the record has no link with a target id (a sync would create), the target is first searched for
    a record carrying the NetSuite id: if one exists and `choice` is None, nothing is done and the answer
    is `needs_decision` with the record found; `choice` update links it and queues the sync, link links
    only, skip does nothing. Every choice is audited (action = the choice) and kept on the drift.
    Refused for drifts a sync cannot fix (missing in NetSuite; an invoice already in Zuora).
    """
    drift = _drift(engine, drift_id)
    if drift.kind == DriftKind.MISSING_IN_SOURCE:
        raise ReconcileRefused(
            "the record is not in NetSuite, so there is nothing to sync from: accept the drift with a reason, "
            "or correct the record in the target system"
        )
    current = links.find(
        engine, integration_id=drift.integration_id, flow=drift.flow, source_id=drift.source_id
    )
    if drift.flow == "invoice" and current is not None and current.target_id:
        raise ReconcileRefused(
            "a Zuora invoice is made once and never rewritten, so a re-sync would change nothing: correct the "
            "invoice in Zuora (or NetSuite), or accept the drift with a reason"
        )
    try:
        chosen = Choice(choice) if choice else None
    except ValueError:
        raise ReconcileRefused(f"choice: expected update, link or skip (got {choice!r})") from None
    if current is not None and current.target_id:
        if drift.kind == DriftKind.MISSING_IN_TARGET and current.target_id == drift.target_id:
            raise ReconcileRefused(
                f"the record is linked to {current.target_id}, which the target system no longer has: link it "
                "to the record it should update instead (link), or accept the drift with a reason"
            )
        return _queue(engine, drift, by=by, action="resync")
    integration = _integration(engine, drift.integration_id)
    existing = _run(
        _services(engine, vault, settings),
        lambda s: existing_target(
            s, integration_id=integration.id or 0, flow=drift.flow, source_id=drift.source_id
        ),
    )
    if existing is None:
        return _queue(engine, drift, by=by, action="resync")
    if chosen is None:
        return FixResult(
            "needs_decision", drift, existing=existing,
            message=f"{existing.label or existing.target_id} already carries NetSuite id {drift.source_id}: "
            "update it, link it, or skip",
        )  # fmt: skip
    if chosen is Choice.SKIP:
        _audit(engine, drift, action="skip", by=by, target_id=existing.target_id)
        kept = store.decide(
            engine, drift_id=drift.id or 0, status=drift.status, resolution="skip", decided_by=by,
        )  # fmt: skip
        return FixResult("skipped", kept, existing=existing)
    sync = chosen is Choice.UPDATE and drift.flow != "invoice"
    return _link_and_queue(engine, drift, existing.target_id, by=by, action=chosen.value, sync=sync)


async def existing_target(
    services: Services, *, integration_id: int, flow: str, source_id: str
) -> TargetMatch | None:
    """The target record already carrying this NetSuite id, or None: what to look up before anything
    that would create one (a re-sync here, a replay on the audit page).

    customer_account: the Zuora account whose crmId is the id (Object Query); invoice: the Zuora invoice
    whose NetSuiteInvoiceId__c is the id (ZOQL); customer/vendor/contact_zoho: the Zoho record whose
    NetSuite_Id is the id, by one search `(NetSuite_Id:equals:<id>)` rather than reading the whole module.
    Zoho's `equals` behaves like contains, so only an exact NetSuite_Id counts. Its search index can lag
    a few seconds behind writes; a record made that recently may be missed here (no question is asked),
    but no duplicate follows: the sync this guards upserts on NetSuite_Id, so it updates that record.
    Should more than 2,000 records contain the id (a short id, contains-matching), the module is read
    page by page instead. Flows this does not know answer None.
    """
    integration = await services.integration(integration_id)
    if integration is None:
        return None
    clients = [
        await services.client_for(c)
        for c in (integration.source_connection_id, integration.target_connection_id)
    ]
    zuora = next((c for c in clients if isinstance(c, ZuoraClient)), None)
    zoho = next((c for c in clients if isinstance(c, ZohoClient)), None)
    if flow == "customer_account" and zuora is not None:
        found = await zuora.find_account_by_crm_id(source_id)
        if found is None:
            return None
        return TargetMatch(str(found.get("id") or found.get("Id")), str(found.get("name") or ""), "crmId")
    if flow == "invoice" and zuora is not None:
        safe = source_id.replace("'", "")
        query = f"select Id, InvoiceNumber from Invoice where {NETSUITE_ID_FIELD} = '{safe}'"
        async for row in zuora.query(query):
            return TargetMatch(str(row["Id"]), str(row.get("InvoiceNumber") or ""), NETSUITE_ID_FIELD)
        return None
    module = getattr(registry().get(flow), "module", "")
    if module and zoho is not None:
        name = {"Accounts": "Account_Name", "Vendors": "Vendor_Name", "Contacts": "Last_Name"}[module]
        if not source_id.strip():
            return None
        fields = [ZOHO_MATCH, name]
        try:
            found = await zoho.search_records(module, {ZOHO_MATCH: source_id}, fields=fields)
        except SearchLimitReached:
            found = [record async for record in zoho.list_records(module, fields=fields)]
        for record in found:
            if str(record.get(ZOHO_MATCH) or "") == source_id:
                return TargetMatch(str(record["id"]), str(record.get(name) or ""), ZOHO_MATCH)
    return None


def find_existing_target(
    engine: Engine, vault: Vault, settings: Settings, *, integration_id: int, flow: str, source_id: str
) -> TargetMatch | None:
    """`existing_target` for synchronous callers (the audit page's replay)."""
    return _run(
        _services(engine, vault, settings),
        lambda s: existing_target(s, integration_id=integration_id, flow=flow, source_id=source_id),
    )


# --- helpers ---------------------------------------------------------------------------------------
def _progress(run: ReconciliationRun) -> RunProgress:
    return RunProgress(
        run_id=run.id or 0, integration_id=run.integration_id, status=run.status, phase=run.phase,
        done=run.done, total=run.total, requested_by=run.requested_by, trigger=run.trigger, error=run.error,
        requested_at=run.requested_at, started_at=run.started_at, finished_at=run.finished_at,
    )  # fmt: skip


def _drift(engine: Engine, drift_id: int) -> Drift:
    drift = store.get_drift(engine, drift_id=drift_id)
    if drift is None:
        raise ReconcileRefused(f"there is no drift {drift_id}")
    return drift


def _integration(engine: Engine, integration_id: int) -> Integration:
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise ReconcileRefused(f"integration {integration_id} no longer exists")
    return integration


def _services(engine: Engine, vault: Vault, settings: Settings) -> Services:
    return Services(engine=engine, vault=vault, settings=settings)


def _run(services: Services, work: Callable[[Services], Awaitable[T]]) -> T:
    async def main() -> T:
        try:
            return await work(services)
        finally:
            await services.aclose()

    return asyncio.run(main())


async def _claim_target(services: Services, integration: Integration, drift: Drift, target_id: str) -> None:
    """Check the target exists and write the NetSuite id onto it (the flow's destination-side key)."""
    flow = registry().get(drift.flow)
    target = None
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        client = await services.client_for(connection_id)
        if flow is not None and client.system == flow.target_system:
            target = client
    if isinstance(target, ZuoraClient) and drift.flow == "customer_account":
        await target.get_account(target_id)  # a missing account is refused (RemoteError)
        await target.update_account(target_id, {"crmId": drift.source_id})
    elif isinstance(target, ZuoraClient):
        await target.get_invoice(target_id)
    elif isinstance(target, ZohoClient):
        module = getattr(flow, "module", "")
        if await target.get_record(module, target_id) is None:
            raise ReconcileRefused(f"Zoho has no {module} record {target_id}")
        await target.update_record(module, target_id, {ZOHO_MATCH: drift.source_id})
    else:
        raise ReconcileRefused(f"flow {drift.flow} cannot be linked here")


def _link_and_queue(
    engine: Engine, drift: Drift, target_id: str, *, by: str, action: str, sync: bool
) -> FixResult:
    flow = registry()[drift.flow]
    links.record_targets(
        engine, integration_id=drift.integration_id, flow=drift.flow, source_system=flow.source_system,
        target_system=flow.target_system, targets={drift.source_id: (target_id, None)},
    )  # fmt: skip
    if sync:
        return _queue(engine, drift, by=by, action=action, target_id=target_id)
    _audit(engine, drift, action=action, by=by, target_id=target_id)
    kept = store.decide(
        engine, drift_id=drift.id or 0, status=DriftStatus.FIXING, resolution=action, decided_by=by,
        target_id=target_id,
    )  # fmt: skip
    return FixResult("linked", kept)


def _queue(engine: Engine, drift: Drift, *, by: str, action: str, target_id: str | None = None) -> FixResult:
    with session_scope(engine, write=True) as session:
        job = enqueue(
            session, integration_id=drift.integration_id, flow=drift.flow,
            payload={"id": drift.source_id, "reconcile_drift": drift.id}, kind=JobKind.SYNC,
        )  # fmt: skip
        job_id = job.id
    _audit(engine, drift, action=action, by=by, target_id=target_id, job_id=job_id)
    kept = store.decide(
        engine, drift_id=drift.id or 0, status=DriftStatus.FIXING, resolution=action, decided_by=by,
        target_id=target_id, job_id=job_id,
    )  # fmt: skip
    return FixResult("queued", kept, job_id=job_id)


def _audit(
    engine: Engine, drift: Drift, *, action: str, by: str, reason: str | None = None,
    target_id: str | None = None, job_id: int | None = None,
) -> None:  # fmt: skip
    """A person's decision in the audit trail: `action` is the choice, `response` who and why."""
    flow = registry().get(drift.flow)
    now = utcnow()
    decision = {"decided_by": by, "drift_id": drift.id, "kind": drift.kind, "reason": reason,
                "differences": drift.differences, "queued_job": job_id}  # fmt: skip
    record = AuditRecord(
        integration_id=drift.integration_id,
        flow=drift.flow,
        source_system=flow.source_system if flow else "netsuite",
        source_id=drift.source_id,
        target_system=flow.target_system if flow else "",
        target_id=target_id or drift.target_id,
        action=action,
        response=decision,
        outcome=Outcome.SUCCEEDED,
        error_message=f"reconciliation: {action} by {by}" + (f": {reason}" if reason else ""),
        started_at=now,
        finished_at=now,
    )
    audit.write_record(engine, record, [])
