"""The Zoho poll: the safety net under Zoho's notification channels.

Zoho drops a lapsed channel silently and documents no redelivery (shared/api/zoho.md §3, §3e), so a
change made while a channel is down would never reach the write-back. Every interval, for each active
integration that runs the zoho_change flow and has a Zoho connection, `poll`:

1. checks the integration's active channels against Zoho's own list (GET /crm/v8/actions/watch): one
   Zoho no longer lists as live is marked lapsed and re-provisioned at once (runner.channels.keep_alive),
   so a lapse is repaired within one poll interval, not when the channel falls due for renewal;
2. lists each module's records modified since that module's watermark (GET /crm/v8/{module} with
   If-Modified-Since, §2d), re-reading an overlap window for clock differences and for changes landing
   while a listing pages, and queues a zoho_change job for each record, unless one is queued already or
   a finished job already read that version (its audit snapshot's Modified_Time is as new);
3. moves the watermark (`zoho-<Module>`) to the newest Modified_Time seen.

The first poll only sets the watermarks: what changed before the integration existed is not a change to
write back. The scheduler runs `poll` as a singleton under a database lease (runner.scheduled).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from anyio import to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.errors import ConnectorError
from connectors.zoho.client import ZohoClient
from runner import channels
from runner.flows.zoho_change import FLOW, MODULES, source_id_of
from runner.services import Services
from storage import channels as channel_store
from storage import queue
from storage.db import session_scope
from storage.models import (
    AuditRecord,
    Channel,
    Connection,
    Integration,
    Job,
    JobKind,
    JobStatus,
    Outcome,
    Watermark,
)
from storage.types import utcnow

log = logging.getLogger("ml_connector.zoho_poll")

POLL_OVERLAP = timedelta(seconds=300)  # each poll re-reads this far before its watermark
SEEN_LOOKBACK = timedelta(hours=1)  # audit records older than the listing window minus this are not read
ID_CHUNK = 500  # source ids per IN (...) query
EARLIEST = datetime.min.replace(tzinfo=UTC)
LATEST = datetime.max.replace(tzinfo=UTC)


@dataclass(frozen=True)
class ZohoSide:
    """An integration to poll, and its Zoho connection."""

    integration_id: int
    connection_id: int


async def poll(services: Services, *, now: datetime | None = None) -> dict[str, int]:
    """Poll every integration that writes Zoho changes back; returns `<integration>/<Module>` → jobs
    queued. `now` is when channel expiry is judged (tests move it; watermarks always use the clock)."""
    now = now or utcnow()
    queued: dict[str, int] = {}
    for side in await to_thread.run_sync(zoho_sides, services.engine):
        try:
            client = await services.client_for(side.connection_id)
        except LookupError:
            continue  # the connection was removed since the query
        if not isinstance(client, ZohoClient):
            continue
        try:
            await check_channels(services, side.integration_id, client, now=now)
        except ConnectorError as exc:
            log.warning("integration %s: checking Zoho channels failed: %s", side.integration_id, exc)
        for module in MODULES:
            try:
                added = await poll_module(services, side.integration_id, client, module)
            except ConnectorError as exc:
                log.warning("integration %s: polling Zoho %s failed: %s", side.integration_id, module, exc)
                continue
            queued[f"{side.integration_id}/{module}"] = added
    return queued


async def check_channels(
    services: Services, integration_id: int, client: ZohoClient, *, now: datetime
) -> list[str]:
    """Mark lapsed, and re-provision, the integration's active channels Zoho does not list as live for
    every module they watch; returns their ids."""
    ours = await to_thread.run_sync(_active_channels, services.engine, integration_id)
    if not ours:
        return []
    live = {
        (str(entry.get("channel_id")), str(entry.get("resource_name")))
        for entry in await client.list_watches()
        if _expiry(entry) > now
    }
    lapsed = [c for c in ours if any((c.channel_id, m) not in live for m in _modules(c.events))]
    for channel in lapsed:
        await to_thread.run_sync(
            lambda c=channel: channel_store.set_status(
                services.engine,
                channel_id=c.channel_id,
                status="lapsed",
                last_error="Zoho no longer lists this channel as live (it lapsed or was removed); re-provisioning",
            )
        )
        log.warning("channel %s lapsed in Zoho; re-provisioning it", channel.channel_id)
    if lapsed:
        await channels.keep_alive(services, now=now)
    return [c.channel_id for c in lapsed]


async def poll_module(services: Services, integration_id: int, client: ZohoClient, module: str) -> int:
    """Queue a zoho_change job for each record of `module` changed since the watermark; returns how many."""
    name = f"zoho-{module}"
    mark = await to_thread.run_sync(_watermark, services.engine, integration_id, name)
    if not mark:
        start = utcnow().isoformat(timespec="seconds")
        await to_thread.run_sync(_enqueue, services.engine, integration_id, module, [], start)
        return 0
    since = _instant(mark) - POLL_OVERLAP
    changed = [
        (str(record["id"]), str(record.get("Modified_Time") or ""))
        async for record in client.modified_since(module, since, fields=["Modified_Time"])
    ]
    newest = max([mark, *(modified for _, modified in changed if modified)], key=_instant)
    return await to_thread.run_sync(_enqueue, services.engine, integration_id, module, changed, newest, since)


def zoho_sides(engine: Engine) -> list[ZohoSide]:
    """Active integrations with the zoho_change flow enabled, and the Zoho connection each pairs."""
    with session_scope(engine) as session:
        integrations = session.exec(select(Integration).where(col(Integration.active))).all()
        systems = dict(session.exec(select(Connection.id, Connection.system)).all())
    sides = []
    for integration in integrations:
        if FLOW not in (integration.flows or []) or integration.id is None:
            continue
        pair = (integration.target_connection_id, integration.source_connection_id)
        zoho = next((c for c in pair if systems.get(c) == "zoho"), None)
        if zoho is not None:
            sides.append(ZohoSide(integration.id, zoho))
    return sides


def _enqueue(
    engine: Engine,
    integration_id: int,
    module: str,
    changed: list[tuple[str, str]],
    newest: str,
    since: datetime | None = None,
) -> int:
    """Queue jobs for `changed` (record id, Modified_Time) and move the watermark, in one transaction."""
    added = 0
    with session_scope(engine, write=True) as session:
        if changed:
            pending = session.exec(
                select(Job.payload).where(
                    col(Job.integration_id) == integration_id,
                    col(Job.flow) == FLOW,
                    col(Job.status) == JobStatus.QUEUED,
                )
            ).all()
            waiting = {source_id_of(p) for p in pending if p and p.get("id")}
            source_ids = [f"{module}/{record_id}" for record_id, _ in changed]
            seen = _seen(session, integration_id, module, source_ids, since or utcnow())
            for record_id, modified in changed:
                source_id = f"{module}/{record_id}"
                if source_id in waiting:
                    continue
                if modified and source_id in seen and _instant(seen[source_id]) >= _instant(modified):
                    continue  # a finished job already read this version
                payload = {"module": module, "id": record_id, "modified_time": modified}
                queue.enqueue(
                    session, integration_id=integration_id, flow=FLOW, payload=payload, kind=JobKind.POLL
                )
                waiting.add(source_id)
                added += 1
        name = f"zoho-{module}"
        mark = session.exec(
            select(Watermark).where(
                col(Watermark.integration_id) == integration_id, col(Watermark.name) == name
            )
        ).first() or Watermark(integration_id=integration_id, name=name)
        mark.value = newest
        mark.updated_at = utcnow()
        session.add(mark)
    if added:
        log.info("integration %s: the Zoho %s poll queued %d %s jobs", integration_id, module, added, FLOW)
    return added


def _seen(
    session: Session, integration_id: int, module: str, source_ids: list[str], since: datetime
) -> dict[str, str]:
    """Source id → the newest Modified_Time a successful zoho_change job read of that record."""
    seen: dict[str, str] = {}
    for start in range(0, len(source_ids), ID_CHUNK):
        rows = session.exec(
            select(AuditRecord.source_id, AuditRecord.source_snapshot).where(
                col(AuditRecord.integration_id) == integration_id,
                col(AuditRecord.flow) == FLOW,
                col(AuditRecord.outcome) == Outcome.SUCCEEDED,
                col(AuditRecord.source_id).in_(source_ids[start : start + ID_CHUNK]),
                col(AuditRecord.started_at) >= since - SEEN_LOOKBACK,
            )
        ).all()
        for source_id, snapshot in rows:
            read = str(((snapshot or {}).get(module) or {}).get("Modified_Time") or "")
            if read and (source_id not in seen or _instant(read) > _instant(seen[source_id])):
                seen[source_id] = read
    return seen


def _active_channels(engine: Engine, integration_id: int) -> list[Channel]:
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Channel).where(
                    col(Channel.integration_id) == integration_id, col(Channel.status) == "active"
                )
            ).all()
        )


def _watermark(engine: Engine, integration_id: int, name: str) -> str:
    with session_scope(engine) as session:
        row = session.exec(
            select(Watermark).where(
                col(Watermark.integration_id) == integration_id, col(Watermark.name) == name
            )
        ).first()
        return row.value if row else ""


def _modules(events: list[str]) -> set[str]:
    """`["Accounts.all", "Contacts.edit"]` → {"Accounts", "Contacts"}."""
    return {event.split(".", 1)[0] for event in events}


def _expiry(entry: dict[str, object]) -> datetime:
    """A listed channel's expiry; one without a readable expiry counts as live."""
    try:
        return _instant(str(entry.get("channel_expiry") or ""), missing=LATEST)
    except ValueError:
        return LATEST


def _instant(text: str, *, missing: datetime = EARLIEST) -> datetime:
    """Zoho's ISO 8601 times (with an offset) as comparable UTC instants."""
    if not text:
        return missing
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
