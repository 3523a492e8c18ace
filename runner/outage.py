"""Pause on outage: hold an integration's jobs while a system it talks to keeps failing, ping that
system on a schedule, and resume by itself when the ping succeeds.

When is it an outage? The newest `AlertSettings.outage_failures` audit records of an integration (within
`outage_window_minutes`, and since it last resumed) all failed with a transient or configuration error
raised by a remote system (429/5xx/timeouts/refused credentials: a connector error, whose message starts
with the system's name), with no success in between. Records postponed for a busy link, mapping errors
and rejected records do not count: they say nothing about the system being down.

Paused means the workers claim none of the integration's jobs (runner.worker skips it, through
`PausedIntegrations`): webhooks are still accepted and their jobs queue, so nothing is lost. A pause by
the runner ("auto") pings the failing systems' connections every `reping_seconds` (connectors.ping, as the
Connections page pings, with the runner's own client; the verdict is stored on the connection); when
every ping succeeds the integration resumes, and jobs waiting out a retry backoff become due at once. A
person can pause and resume by hand (`pause`, `resume`); a person's pause is never resumed by the runner.
Alerts for pauses come from runner.alerts (kind integration_paused), opened while paused, resolved on
resume.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from anyio import to_thread
from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.ping import ping
from connectors.registry import SYSTEMS
from runner.connection_admin import store_ping
from runner.health import system_title
from runner.services import Services
from storage import alerts as store
from storage.alerts import AUTO, AlertSettings
from storage.db import session_scope
from storage.models import AuditRecord, Connection, Integration, Job, JobStatus
from storage.types import utcnow

log = logging.getLogger("ml_connector.outage")

OUTAGE_CLASSES = ("transient", "config")  # error classes that can mean "the system is down"
PAUSED_TTL = 1.0  # seconds the worker pool trusts its list of paused integrations (a DB read each)


# --- detection -------------------------------------------------------------------------------------


def failing_system(record: AuditRecord) -> str | None:
    """The system whose failure `record` shows, when it is an outage-kind failure; else None.

    A connector error's text starts with "<system>: " (connectors.errors.ConnectorError.__str__); a
    postponed job's or a mapping error's does not."""
    if record.outcome == "succeeded" or record.error_class not in OUTAGE_CLASSES:
        return None
    head = (record.error_message or "").split(":", 1)[0]
    return head if head in SYSTEMS and head in (record.source_system, record.target_system) else None


def detect(engine: Engine, cfg: AlertSettings, *, now: datetime | None = None) -> list[int]:
    """Pause every running integration whose newest audit records show an outage; returns their ids."""
    if cfg.outage_failures <= 0:
        return []
    now = now or utcnow()
    window_start = now - timedelta(minutes=cfg.outage_window_minutes)
    pauses = {row.integration_id: row for row in store.list_pauses(engine)}
    with session_scope(engine) as session:
        integrations = session.exec(
            select(Integration.id, Integration.name).where(col(Integration.active))
        ).all()
    paused: list[int] = []
    for integration_id, name in integrations:
        assert integration_id is not None
        pause = pauses.get(integration_id)
        if pause is not None and pause.paused:
            continue
        since = max(window_start, pause.resumed_at) if pause and pause.resumed_at else window_start
        with session_scope(engine) as session:
            records = session.exec(
                select(AuditRecord)
                .where(
                    col(AuditRecord.integration_id) == integration_id, col(AuditRecord.started_at) >= since
                )
                .order_by(col(AuditRecord.started_at).desc(), col(AuditRecord.id).desc())
                .limit(cfg.outage_failures)
            ).all()
        if len(records) < cfg.outage_failures:
            continue
        systems = [failing_system(r) for r in records]
        if any(s is None for s in systems):
            continue
        failing = sorted({s for s in systems if s})
        last = records[0].error_message or ""
        reason = (
            f"{len(records)} calls in a row to {', '.join(failing)} failed "
            f"({', '.join(sorted({r.error_class or '' for r in records}))}); last: {last[:300]}"
        )
        if store.set_paused(
            engine,
            integration_id=integration_id,
            by=AUTO,
            reason=reason,
            systems=failing,
            next_ping_at=now + timedelta(seconds=cfg.reping_seconds),
            only_if_running=True,
        ):
            log.warning("integration %s (%s) paused: %s", integration_id, name, reason)
            paused.append(integration_id)
    return paused


# --- re-ping ---------------------------------------------------------------------------------------


def _connections_of(engine: Engine, integration_id: int, systems: list[str]) -> list[int]:
    with session_scope(engine) as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return []
        ids = [integration.source_connection_id, integration.target_connection_id]
        rows = session.exec(select(Connection.id, Connection.system).where(col(Connection.id).in_(ids))).all()
    return [int(i) for i, system in rows if i is not None and (not systems or system in systems)]


async def reping(services: Services) -> list[int]:
    """Ping the failing connections of every automatic pause that is due a ping; resume those whose
    pings all succeed. Returns the integrations resumed.

    The ping is connectors.ping's (a token and one cheap call, as on the Connections page, whose
    `last_ping_*` it updates), made with the runner's own client of the connection: the client, token
    store and credentials the paused jobs will use, so a success means they can run."""
    engine = services.engine
    cfg = await to_thread.run_sync(store.load_settings, engine)
    resumed: list[int] = []
    for pause in await to_thread.run_sync(store.due_for_ping, engine):
        errors: list[str] = []
        connections = await to_thread.run_sync(
            _connections_of, engine, pause.integration_id, list(pause.systems or [])
        )
        for connection_id in connections:
            try:
                client = await services.client_for(connection_id)
            except LookupError:
                continue  # removed meanwhile: nothing to wait for
            result = await ping(client)
            await to_thread.run_sync(
                partial(store_ping, engine, connection_id=connection_id, result=result, at=utcnow())
            )
            if not result.ok:
                errors.append(f"{system_title(result.system)}: {result.message}")
        if errors:
            await to_thread.run_sync(
                partial(
                    store.record_ping,
                    engine,
                    integration_id=pause.integration_id,
                    error="; ".join(errors)[:2000],
                    next_ping_at=utcnow() + timedelta(seconds=cfg.reping_seconds),
                )
            )
            continue
        if await to_thread.run_sync(partial(_resume_after_ping, engine, pause.integration_id)):
            log.info("integration %s resumed: its connections answer pings again", pause.integration_id)
            resumed.append(pause.integration_id)
    return resumed


def _resume_after_ping(engine: Engine, integration_id: int) -> bool:
    store.record_ping(engine, integration_id=integration_id, error=None, next_ping_at=utcnow())
    if not store.set_resumed(engine, integration_id=integration_id, by=AUTO, only_auto=True):
        return False  # a person took the pause over meanwhile
    _release_backoff(engine, integration_id)
    return True


def _release_backoff(engine: Engine, integration_id: int) -> int:
    """Make the integration's jobs that wait out a retry backoff due now: the system answers again."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        return int(
            session.execute(
                update(Job)
                .where(
                    col(Job.integration_id) == integration_id,
                    col(Job.status) == JobStatus.QUEUED,
                    col(Job.run_after) > now,
                    col(Job.attempts) > 0,
                )
                .values(run_after=now)
            ).rowcount
            or 0
        )


# --- what the pages call (sync, engine in) -------------------------------------------------------


@dataclass(frozen=True)
class PauseStatus:
    """Whether an integration runs, and if not, why and what happens next."""

    integration_id: int
    paused: bool
    by: str | None  # "auto" or a person
    reason: str | None
    since: datetime | None
    systems: list[str]
    next_ping_at: datetime | None
    last_ping_at: datetime | None
    last_ping_error: str | None
    queued_jobs: int


def pause(engine: Engine, *, integration_id: int, by: str, reason: str = "") -> bool:
    """Pause an integration by hand (not resumed by the runner); False when it was already paused (the
    pause then becomes a person's). Raises LookupError for an unknown integration."""
    _require(engine, integration_id)
    changed = store.set_paused(engine, integration_id=integration_id, by=by, reason=reason)
    log.info("integration %s paused by %s: %s", integration_id, by, reason)
    return changed


def resume(engine: Engine, *, integration_id: int, by: str) -> bool:
    """Resume an integration (paused by hand or by the runner); False when it was not paused."""
    _require(engine, integration_id)
    if not store.set_resumed(engine, integration_id=integration_id, by=by):
        return False
    _release_backoff(engine, integration_id)
    log.info("integration %s resumed by %s", integration_id, by)
    return True


def status(engine: Engine, *, integration_id: int) -> PauseStatus:
    """One integration's pause state and how many of its jobs wait in the queue."""
    _require(engine, integration_id)
    return _status(engine, integration_id, store.pause_of(engine, integration_id=integration_id))


def overview(engine: Engine) -> list[PauseStatus]:
    """Every integration's pause state, by id."""
    pauses = {row.integration_id: row for row in store.list_pauses(engine)}
    with session_scope(engine) as session:
        ids = [int(i) for i in session.exec(select(Integration.id).order_by(col(Integration.id))).all() if i]
    return [_status(engine, i, pauses.get(i)) for i in ids]


def _status(engine: Engine, integration_id: int, row: store.IntegrationPause | None) -> PauseStatus:
    with session_scope(engine) as session:
        queued = session.exec(
            select(func.count())
            .select_from(Job)
            .where(col(Job.integration_id) == integration_id, col(Job.status) == JobStatus.QUEUED)
        ).one()
    paused = bool(row and row.paused)
    return PauseStatus(
        integration_id=integration_id,
        paused=paused,
        by=row.by if row and paused else None,
        reason=row.reason if row and paused else None,
        since=row.since if row and paused else None,
        systems=list(row.systems or []) if row and paused else [],
        next_ping_at=row.next_ping_at if row and paused else None,
        last_ping_at=row.last_ping_at if row else None,
        last_ping_error=row.last_ping_error if row and paused else None,
        queued_jobs=int(queued),
    )


def _require(engine: Engine, integration_id: int) -> None:
    with session_scope(engine) as session:
        if session.get(Integration, integration_id) is None:
            raise LookupError(f"there is no integration {integration_id}")


# --- for the worker pool -------------------------------------------------------------------------


class PausedIntegrations:
    """The paused integrations, read at most every `ttl` seconds: the worker pool skips their jobs."""

    def __init__(self, engine: Engine, *, ttl: float = PAUSED_TTL) -> None:
        self.engine = engine
        self.ttl = ttl
        self._read_at = float("-inf")
        self._ids: frozenset[int] = frozenset()

    async def current(self) -> frozenset[int]:
        if time.monotonic() - self._read_at >= self.ttl:
            try:
                self._ids = await to_thread.run_sync(store.paused_ids, self.engine)
            except Exception:
                log.exception("reading paused integrations failed; keeping the last list")
            self._read_at = time.monotonic()
        return self._ids
