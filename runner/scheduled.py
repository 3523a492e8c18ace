"""The runner's periodic work, run by APScheduler in the runner's event loop.

Per-runner work (job pickup, heartbeat) runs everywhere; singleton work (token pre-refresh, payments
pull, retention) runs under a database lease, so N runner replicas do it once between them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime, timedelta
from functools import partial

from anyio import to_thread
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy import delete, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.errors import ConnectorError
from connectors.netsuite.client import NetSuiteClient
from connectors.zuora.client import ZuoraClient
from runner import alerts, channels, outage, triage, zoho_poll
from runner.flows import netsuite_table, registry
from runner.reconcile.run import Reconciler, schedule_due
from runner.services import Services
from runner.worker import WorkerPool
from storage import leases, queue
from storage.db import session_scope
from storage.models import (
    AuditRecord,
    Connection,
    InboundEvent,
    Integration,
    Job,
    JobKind,
    JobStatus,
    Payment,
    Token,
    Watermark,
)
from storage.types import utcnow

log = logging.getLogger("ml_connector.scheduled")

POLL_OVERLAP = 300.0  # seconds each NetSuite poll re-reads before its watermark
PREREFRESH_WINDOW = 600.0  # seconds: tokens expiring sooner than this are refreshed ahead of use
RECONCILE_CHECK = 600.0  # seconds between looks for integrations due their scheduled reconciliation
TRIAGE_CHECK = 300.0  # seconds between sweeps resolving failure groups whose records synced since


class ScheduledWork:
    def __init__(self, services: Services, pool: WorkerPool) -> None:
        self.services = services
        self.pool = pool
        self.settings = services.settings
        self.engine: Engine = services.engine
        self.reconciler = Reconciler(services, worker=pool.name, lease=services.settings.reconcile_lease)
        self.alert_every = 0.0  # seconds between alert sweeps: AlertSettings.check_seconds (install reads it)
        self._scheduler: AsyncIOScheduler | None = None

    def install(self, scheduler: AsyncIOScheduler) -> None:
        """Add every periodic job to `scheduler`."""
        s = self.settings
        scheduler.add_job(self.pool.wake, "interval", seconds=s.poll_interval, id="pickup", max_instances=1)
        scheduler.add_job(
            self.heartbeat, "interval", seconds=s.heartbeat_interval, id="heartbeat", max_instances=1
        )
        scheduler.add_job(
            self.reconciler.pickup,
            "interval",
            seconds=s.poll_interval,
            id="reconcile-pickup",
            max_instances=1,
        )
        for name, work, every in (
            ("token-prerefresh", self.prerefresh_tokens, s.token_check_interval),
            ("payments-pull", self.pull_payments, s.payments_interval),
            ("netsuite-poll", self.poll_netsuite, s.netsuite_poll_interval),
            ("zoho-channels", self.keep_channels_alive, s.channel_check_interval),
            ("zoho-poll", partial(zoho_poll.poll, self.services), s.netsuite_poll_interval),
            ("retention", self.retention, 3600.0),
            ("reconcile-schedule", self.schedule_reconciliations, RECONCILE_CHECK),
            ("triage-resolve", self.resolve_synced_failures, TRIAGE_CHECK),
        ):
            scheduler.add_job(
                partial(self.singleton, name, work, every),
                "interval",
                seconds=every,
                id=name,
                max_instances=1,
            )
        # Alerts and pause on outage run at the cadence set in the app (AlertSettings.check_seconds);
        # each sweep re-reads it and reschedules both when it changed, so no restart is needed.
        self._scheduler = scheduler
        self.alert_every = alerts.check_seconds(self.engine)
        for name, work in (("alerts", self.sweep_alerts), ("outage-reping", self.reping_paused)):
            scheduler.add_job(work, "interval", seconds=self.alert_every, id=name, max_instances=1)

    async def singleton(self, name: str, work: object, every: float) -> None:
        """Run `work` only on the runner holding lease `name` (held for two intervals from each run's
        start, renewed while a run outlasts an interval; a run whose lease is lost is stopped)."""
        ttl = 2 * every
        asked = time.monotonic()
        held = await to_thread.run_sync(
            partial(leases.acquire, self.engine, name, holder=self.pool.name, ttl=ttl)
        )
        if not held:
            return
        expires = asked + ttl
        run = asyncio.ensure_future(work())  # type: ignore[operator]
        lost = False
        try:
            # A run that outlasts its lease (a throttled NetSuite making a poll slow) must not let another
            # runner start the same work: every half interval, a lease with an interval or less left is
            # renewed, so it never has less than half an interval left. A run shorter than an interval
            # (nearly all) never renews: the lease's holder changes hands only at run starts.
            while not run.done():
                await asyncio.wait({run}, timeout=every / 2)
                if run.done():
                    break
                if expires - time.monotonic() > every:
                    continue
                asked = time.monotonic()
                renewed = await to_thread.run_sync(
                    partial(leases.acquire, self.engine, name, holder=self.pool.name, ttl=ttl)
                )
                expires = asked + ttl
                if not renewed:
                    log.warning("scheduled %s: lease lost to another runner; stopping this run", name)
                    lost = True
                    run.cancel()
                    break
            await run
        except asyncio.CancelledError:
            if lost:
                return
            run.cancel()  # the runner is shutting down
            raise
        except Exception:
            log.exception("scheduled %s failed; it runs again in %.0fs", name, every)

    async def sweep_alerts(self) -> None:
        """Singleton: pause integrations in an outage, open and resolve incidents, send their notices."""

        async def sweep() -> None:
            cfg = await to_thread.run_sync(alerts.current_settings, self.engine)
            self._follow_cadence(cfg.check_seconds)
            await alerts.sweep(self.engine, self.services.vault, cfg=cfg)

        await self.singleton("alerts", sweep, self.alert_every)

    async def reping_paused(self) -> None:
        """Singleton: ping the connections of integrations the runner paused; resume those that answer."""
        await self.singleton("outage-reping", partial(outage.reping, self.services), self.alert_every)

    def _follow_cadence(self, every: float) -> None:
        if every == self.alert_every or self._scheduler is None:
            return
        self.alert_every = every
        for name in ("alerts", "outage-reping"):
            self._scheduler.reschedule_job(name, trigger="interval", seconds=every)

    async def schedule_reconciliations(self) -> None:
        """Request the daily reconciliation of each integration that is due one (runner.reconcile.run)."""
        await to_thread.run_sync(
            partial(schedule_due, self.engine, default_interval=self.settings.reconcile_interval)
        )

    async def resolve_synced_failures(self) -> None:
        """Resolve failure groups whose records synced since, reopen those that failed again (runner.triage)."""
        resolved = await to_thread.run_sync(triage.auto_resolve_synced, self.engine)
        if resolved:
            log.info("triage: resolved %d failure groups whose records synced since", resolved)

    async def keep_channels_alive(self) -> None:
        """Renew Zoho channels well before expiry; re-provision any Zoho refuses (runner.channels)."""
        await channels.keep_alive(self.services)

    async def heartbeat(self) -> None:
        stats = await to_thread.run_sync(partial(queue.stats, self.engine))
        details = {
            "completed": self.pool.completed,
            "jobs": stats.by_status,
            "oldest": stats.oldest_queued_age,
        }
        await to_thread.run_sync(partial(leases.beat, self.engine, self.pool.name, details=details))

    async def prerefresh_tokens(self) -> None:
        """Refresh tokens about to expire, so no job waits on a token exchange (design.md invariant 5)."""
        horizon = utcnow() + timedelta(seconds=PREREFRESH_WINDOW)

        def due() -> list[int]:
            with session_scope(self.engine) as session:
                rows = session.exec(select(Token.connection_id).where(col(Token.expires_at) < horizon)).all()
                return list(rows)

        for connection_id in await to_thread.run_sync(due):
            try:
                client = await self.services.client_for(connection_id)
                current = await client.tokens.get()
                await client.tokens.get(stale=current, reason="pre-refresh before expiry")
            except (ConnectorError, LookupError) as exc:
                log.warning("connection %s: pre-refresh failed: %s", connection_id, exc)

    async def pull_payments(self) -> None:
        """Mirror Zuora payments updated since the last pull into the read-only `payment` table."""
        for integration_id, connection_id in await to_thread.run_sync(self._zuora_targets):
            await self.pull_payments_for(integration_id, connection_id)

    async def pull_payments_for(self, integration_id: int, connection_id: int) -> int:
        """One integration's pull; returns how many payments were stored or updated."""
        client = await self.services.client_for(connection_id)
        assert isinstance(client, ZuoraClient)
        since = await to_thread.run_sync(self._watermark, integration_id, "zuora-payments")
        # GET /v1/payments filters by equality only, so read newest-updated first (`+` = descending in
        # Zuora's sort syntax) and stop at the watermark; equal timestamps are read again (no gap).
        batch: list[dict[str, object]] = []
        async for payment in client.payments(sort="+updatedDate"):
            if since and _instant(str(payment.get("updatedDate") or "")) < _instant(since):
                break
            batch.append(payment)
        newest = max((str(p.get("updatedDate") or "") for p in batch), key=_instant, default=since)
        await to_thread.run_sync(self._store_payments, integration_id, batch, newest)
        return len(batch)

    async def poll_netsuite(self) -> None:
        """The safety net for missed webhooks: records modified since the last poll become sync jobs."""
        for integration_id, connection_id, flows in await to_thread.run_sync(self._netsuite_sources):
            for table, fed in polled_tables(flows).items():
                await self.poll_netsuite_table(integration_id, connection_id, fed, table)

    async def poll_netsuite_table(
        self, integration_id: int, connection_id: int, flows: list[str], table: str
    ) -> int:
        """Enqueue a job per flow for each row of `table` modified since the watermark; returns how many.

        The first poll only sets the watermark (a backfill, not the poll, syncs what already exists).
        Each poll re-reads an overlap window, because NetSuite does not say which time zone
        lastmodifieddate comparisons use (shared/api/netsuite.md §4); ids already queued are skipped.
        """
        name = f"netsuite-{table}"
        since = await to_thread.run_sync(self._watermark, integration_id, name)
        if not since:
            start = utcnow().strftime("%Y-%m-%d %H:%M:%S")
            await to_thread.run_sync(self._set_watermark, integration_id, name, start)
            return 0
        client = await self.services.client_for(connection_id)
        assert isinstance(client, NetSuiteClient)
        lower = (_instant(since) - timedelta(seconds=POLL_OVERLAP)).strftime("%Y-%m-%d %H:%M:%S")
        sql_table, condition = netsuite_table(table)
        where = f"lastmodifieddate >= TO_TIMESTAMP('{lower}', 'YYYY-MM-DD HH24:MI:SS')"
        if condition:
            where = f"{condition} AND {where}"
        columns = "id, TO_CHAR(lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS modified"
        rows = [row async for row in client.scan(columns, sql_table, where=where)]
        newest = max((str(r.get("modified") or "") for r in rows), key=_instant, default=since)
        return await to_thread.run_sync(
            self._enqueue_polled, integration_id, flows, name, rows, max(newest, since)
        )

    async def retention(self) -> None:
        """Forget old raw payloads: webhook bodies of finished work and audit snapshots past retention."""
        cutoff = utcnow() - timedelta(days=self.settings.retention_days)

        def purge() -> tuple[int, int]:
            with session_scope(self.engine) as session:
                busy = select(Job.event_id).where(
                    col(Job.event_id).is_not(None), col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING])
                )
                session.execute(update(Job).where(col(Job.event_id).in_(
                    select(InboundEvent.id).where(col(InboundEvent.received_at) < cutoff, col(InboundEvent.id).not_in(busy))
                )).values(event_id=None))  # fmt: skip
                events = session.execute(
                    delete(InboundEvent).where(
                        col(InboundEvent.received_at) < cutoff, col(InboundEvent.id).not_in(busy)
                    )
                ).rowcount
                records = session.execute(
                    update(AuditRecord)
                    .where(
                        col(AuditRecord.started_at) < cutoff, col(AuditRecord.source_snapshot).is_not(None)
                    )
                    .values(source_snapshot=None, payload=None, response=None)
                ).rowcount
            return events, records

        events, records = await to_thread.run_sync(purge)
        if events or records:
            log.info(
                "retention: removed %d webhook bodies, cleared payloads of %d audit records", events, records
            )

    # --- storage helpers ------------------------------------------------------------------------
    def _netsuite_sources(self) -> list[tuple[int, int, list[str]]]:
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Integration.id, Integration.source_connection_id, Integration.flows)
                .join(Connection, col(Connection.id) == col(Integration.source_connection_id))
                .where(col(Connection.system) == "netsuite", col(Integration.active))
            ).all()
            return [(int(i), int(c), list(f or [])) for i, c, f in rows if i is not None]

    def _set_watermark(self, integration_id: int, name: str, value: str) -> None:
        with session_scope(self.engine, write=True) as session:
            mark = session.exec(
                select(Watermark).where(
                    col(Watermark.integration_id) == integration_id, col(Watermark.name) == name
                )
            ).first() or Watermark(integration_id=integration_id, name=name)
            mark.value = value
            mark.updated_at = utcnow()
            session.add(mark)

    def _enqueue_polled(
        self, integration_id: int, flows: list[str], name: str, rows: list[dict[str, object]], newest: str
    ) -> int:
        with session_scope(self.engine, write=True) as session:
            waiting = session.exec(
                select(Job.flow, Job.payload).where(
                    col(Job.integration_id) == integration_id,
                    col(Job.flow).in_(flows),
                    col(Job.status) == JobStatus.QUEUED,
                )
            ).all()
            queued = {(flow, str((payload or {}).get("id"))) for flow, payload in waiting}
            added = 0
            for row in rows:
                record_id = str(row.get("id"))
                for flow in flows:
                    if (flow, record_id) in queued:
                        continue
                    queue.enqueue(
                        session,
                        integration_id=integration_id,
                        flow=flow,
                        payload={"id": record_id},
                        kind=JobKind.POLL,
                    )
                    queued.add((flow, record_id))
                    added += 1
            mark = session.exec(
                select(Watermark).where(
                    col(Watermark.integration_id) == integration_id, col(Watermark.name) == name
                )
            ).first() or Watermark(integration_id=integration_id, name=name)
            mark.value = newest
            mark.updated_at = utcnow()
            session.add(mark)
        if added:
            log.info(
                "integration %s: the %s poll queued %d jobs (%s)",
                integration_id,
                name,
                added,
                ", ".join(flows),
            )
        return added

    def _zuora_targets(self) -> list[tuple[int, int]]:
        with session_scope(self.engine) as session:
            rows = session.exec(
                select(Integration.id, Integration.target_connection_id)
                .join(Connection, col(Connection.id) == col(Integration.target_connection_id))
                .where(col(Connection.system) == "zuora", col(Integration.active))
            ).all()
            return [(int(i), int(c)) for i, c in rows if i is not None]

    def _watermark(self, integration_id: int, name: str) -> str:
        with session_scope(self.engine) as session:
            row = session.exec(
                select(Watermark).where(
                    col(Watermark.integration_id) == integration_id, col(Watermark.name) == name
                )
            ).first()
            return row.value if row else ""

    def _store_payments(self, integration_id: int, batch: list[dict[str, object]], newest: str) -> None:
        with session_scope(self.engine, write=True) as session:
            for item in batch:
                zuora_id = str(item.get("id"))
                row = session.exec(
                    select(Payment).where(
                        col(Payment.integration_id) == integration_id, col(Payment.zuora_id) == zuora_id
                    )
                ).first() or Payment(integration_id=integration_id, zuora_id=zuora_id)
                row.number = str(item.get("number") or "")
                row.account_id = str(item.get("accountId") or "")
                row.amount = float(item.get("amount") or 0)  # type: ignore[arg-type]
                row.currency = str(item.get("currency") or "")[:3]
                row.status = str(item.get("status") or "")
                row.effective_date = str(item.get("effectiveDate") or "")[:10]
                row.updated_date = str(item.get("updatedDate") or "")
                row.raw = dict(item)
                row.synced_at = utcnow()
                session.add(row)
            mark = session.exec(
                select(Watermark).where(
                    col(Watermark.integration_id) == integration_id, col(Watermark.name) == "zuora-payments"
                )
            ).first() or Watermark(integration_id=integration_id, name="zuora-payments")
            if newest:
                mark.value = newest
            mark.updated_at = utcnow()
            session.add(mark)


def polled_tables(enabled: list[str]) -> dict[str, list[str]]:
    """NetSuite table → the enabled flows its changes feed (from each flow's declared source record)."""
    flows = registry()
    tables: dict[str, list[str]] = {}
    for name in enabled:
        flow = flows.get(name)
        if flow is not None and flow.source_system == "netsuite" and flow.source_record:
            tables.setdefault(flow.source_record, []).append(name)
    return tables


def _instant(text: str) -> datetime:
    """Zuora timestamps ("2026-11-21 05:38:18" or ISO 8601 with an offset) as comparable UTC instants."""
    if not text:
        return datetime.min.replace(tzinfo=UTC)
    value = datetime.fromisoformat(text.replace(" ", "T").replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)
