"""What alerting keeps: incidents, the deliveries of their notices, the alert settings, and which
integrations are paused.

An *incident* is one problem for as long as it lasts: "customer→account jobs are dying on Demo", "the
Zuora token cannot be refreshed". It is keyed by (kind, subject): while one is open, seeing the same
problem again only touches it (`last_seen_at`, `count`), so a person gets one alert per incident, not
one per failure, and one resolved notice when it clears. `open_key` holds "kind|subject" while the
incident is open and NULL once resolved: a plain unique column (many NULLs allowed on SQLite and
PostgreSQL alike) is what makes "one open incident per key" hold across runners.

Notices go out through an outbox: opening or resolving an incident adds one `AlertDelivery` row per
configured channel (email, webhook) in the same transaction, and the runner sends pending rows
(runner.alerts). A crash between the two never loses a notice; a failed send is tried again.

`AlertSettings` is one global row: SMTP and outgoing-webhook settings (the SMTP password and the
webhook signing secret encrypted with the vault, like connection secrets) and the thresholds the
detectors use. `IntegrationPause` says whether an integration's jobs are held back (by the runner after
an outage, or by a person) and when the runner next pings its connections. Both are tables of their own
so alerting needs no change to the core models.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, Text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel, col, select

from storage.crypto import Vault
from storage.db import session_scope
from storage.types import PortableJSON, UTCDateTime, utcnow

SETTINGS_ID = 1  # the one global settings row
INCIDENTS_LIMIT = 500  # incidents `list_incidents` returns at most
QUIET_KEY = re.compile(r"^\d+/(netsuite|zuora|zoho)$")  # "<integration id>/<system>"


class IncidentKind(StrEnum):
    JOB_DEAD = "job_dead"
    TOKEN_REFRESH_FAILED = "token_refresh_failed"
    CHANNEL_LAPSED = "channel_lapsed"
    SOURCE_QUIET = "source_quiet"
    ERROR_RATE = "error_rate"
    INTEGRATION_PAUSED = "integration_paused"


class IncidentStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class AlertEvent(StrEnum):
    OPENED = "opened"
    RESOLVED = "resolved"


class AlertChannel(StrEnum):
    EMAIL = "email"
    WEBHOOK = "webhook"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


def _ts(*, nullable: bool = False) -> Any:
    return Field(default_factory=None if nullable else utcnow, sa_type=UTCDateTime, nullable=nullable)


def _json(default: Any) -> Any:
    return Field(
        default_factory=lambda: copy.deepcopy(default), sa_column=Column(PortableJSON, nullable=True)
    )


class Incident(SQLModel, table=True):
    """One problem from the moment a detector saw it until it cleared."""

    __table_args__ = (
        Index("ix_incident_opened", "opened_at"),
        Index("ix_incident_status_opened", "status", "opened_at"),
        Index("ix_incident_integration_opened", "integration_id", "opened_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int | None = Field(default=None, foreign_key="integration.id")
    kind: str = Field(max_length=30)
    # What it is about: "connection:3", "channel:<Zoho id>", "integration:1:customer_account" …
    subject: str = Field(max_length=200)
    # "kind|subject" while open, NULL once resolved: at most one open incident per key.
    open_key: str | None = Field(default=None, max_length=240, unique=True)
    status: str = Field(default=IncidentStatus.OPEN, max_length=20)
    opened_at: datetime = _ts()
    last_seen_at: datetime = _ts()
    resolved_at: datetime | None = _ts(nullable=True)
    count: int = 1  # occurrences seen while open (dead jobs, failed refreshes, sweeps that saw it)
    summary: str = Field(default="", sa_type=Text)
    details: dict[str, Any] = _json({})


class AlertDelivery(SQLModel, table=True):
    """One notice (an incident opened or resolved) on one channel, and how sending it went."""

    __table_args__ = (Index("ix_alertdelivery_status", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    incident_id: int = Field(foreign_key="incident.id", index=True)
    event: str = Field(max_length=20)
    channel: str = Field(max_length=20)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=20)
    attempts: int = 0
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts()
    at: datetime | None = _ts(nullable=True)  # the last attempt


class AlertSettingsBase(SQLModel):
    """Where alerts go and when detectors fire. Minutes are floats, so tests can use seconds."""

    smtp_host: str = Field(default="", max_length=255)
    smtp_port: int = 587
    smtp_user: str = Field(default="", max_length=255)
    smtp_from: str = Field(default="", max_length=255)
    smtp_to: list[str] = _json([])
    smtp_starttls: bool = True
    webhook_url: str = Field(default="", max_length=1000)
    check_seconds: float = 15.0  # how often the runner looks for incidents and sends notices
    dead_window_minutes: float = 15.0  # a "jobs dying" incident resolves after this long without one
    error_rate_threshold: float = 0.5  # share of failed audit records (0..1) that opens an incident
    error_rate_window_minutes: float = 15.0
    error_rate_min_records: int = 10  # fewer records than this in the window: no verdict
    # "<integration id>/<system>" → minutes without a webhook from that system before it is "quiet".
    quiet_minutes: dict[str, float] = _json({})
    outage_failures: int = 5  # consecutive transient/config failures that pause an integration; 0: never
    outage_window_minutes: float = 10.0  # only failures this recent count
    reping_seconds: float = 60.0  # how often a paused integration's failing connections are pinged


class AlertSettings(AlertSettingsBase, table=True):
    """The one global row (id 1); secrets encrypted, read in clear only by `smtp_password` and
    `webhook_secret`."""

    id: int | None = Field(default=None, primary_key=True)
    smtp_password_encrypted: str = Field(default="", sa_type=Text)
    webhook_secret_encrypted: str = Field(default="", sa_type=Text)
    updated_at: datetime = _ts()
    updated_by: str = Field(default="system", max_length=200)


class AlertSettingsPublic(AlertSettingsBase):
    """What a page may show: whether each secret is set, never its value."""

    smtp_password_set: bool
    webhook_secret_set: bool
    updated_at: datetime
    updated_by: str


class IntegrationPause(SQLModel, table=True):
    """Whether an integration's jobs are held back. `by` is "auto" (the runner, after an outage; resumed
    by itself once a ping succeeds) or the person who paused it (resumed only by a person)."""

    integration_id: int = Field(primary_key=True, foreign_key="integration.id")
    paused: bool = False
    reason: str = Field(default="", sa_type=Text)
    by: str = Field(default="", max_length=200)
    since: datetime | None = _ts(nullable=True)
    systems: list[str] = _json([])  # the systems whose failures paused it: the connections re-pinged
    next_ping_at: datetime | None = _ts(nullable=True)
    last_ping_at: datetime | None = _ts(nullable=True)
    last_ping_error: str | None = Field(default=None, sa_type=Text)
    resumed_at: datetime | None = _ts(nullable=True)
    resumed_by: str | None = Field(default=None, max_length=200)


AUTO = "auto"  # `IntegrationPause.by` when the runner paused it


# --- incidents -------------------------------------------------------------------------------------


def _open_key(kind: str, subject: str) -> str:
    return f"{kind}|{subject}"[:240]


def open_or_touch(
    engine: Engine,
    *,
    kind: str,
    subject: str,
    integration_id: int | None = None,
    summary: str = "",
    details: dict[str, Any] | None = None,
    count: int | None = None,
    now: datetime | None = None,
) -> tuple[Incident, bool]:
    """The open incident for (kind, subject), touched, or a new one; returns (incident, is_new).

    Touching sets `last_seen_at`, the summary and details, and `count` (given: set to it; not given:
    one more). A new incident queues its "opened" notice on every configured channel in the same
    transaction. Safe under concurrent callers: the loser of a race on `open_key` touches the winner's.
    """
    now = now or utcnow()
    for _ in range(2):
        try:
            with session_scope(engine, write=True) as session:
                key = _open_key(kind, subject)
                found = session.exec(select(Incident).where(col(Incident.open_key) == key)).first()
                if found is not None:
                    found.last_seen_at = now
                    found.count = count if count is not None else found.count + 1
                    if summary:
                        found.summary = summary
                    if details is not None:
                        found.details = dict(details)
                    session.add(found)
                    return found, False
                incident = Incident(
                    integration_id=integration_id,
                    kind=kind,
                    subject=subject,
                    open_key=key,
                    opened_at=now,
                    last_seen_at=now,
                    count=count if count is not None else 1,
                    summary=summary,
                    details=dict(details or {}),
                )
                session.add(incident)
                session.flush()
                _queue_notices(session, incident, AlertEvent.OPENED)
                return incident, True
        except IntegrityError:
            continue  # another runner opened it between our read and our insert: touch theirs
    raise RuntimeError(f"could not open or touch incident {kind} {subject}")


def resolve(
    engine: Engine, *, kind: str, subject: str, summary: str = "", now: datetime | None = None
) -> Incident | None:
    """Resolve the open incident for (kind, subject) and queue its resolved notice; None when none is
    open. `summary`, when given, says how it cleared (kept in `details["resolution"]`)."""
    now = now or utcnow()
    with session_scope(engine, write=True) as session:
        found = session.exec(
            select(Incident).where(col(Incident.open_key) == _open_key(kind, subject))
        ).first()
        if found is None:
            return None
        found.status = IncidentStatus.RESOLVED
        found.open_key = None
        found.resolved_at = now
        if summary:
            found.details = {**(found.details or {}), "resolution": summary}
        session.add(found)
        session.flush()
        _queue_notices(session, found, AlertEvent.RESOLVED)
        return found


def open_incidents(engine: Engine, *, kinds: Sequence[str] | None = None) -> list[Incident]:
    """Every open incident (of `kinds`, when given), oldest first."""
    with session_scope(engine) as session:
        query = select(Incident).where(col(Incident.status) == IncidentStatus.OPEN)
        if kinds is not None:
            query = query.where(col(Incident.kind).in_(list(kinds)))
        return list(session.exec(query.order_by(col(Incident.id))).all())


@dataclass(frozen=True)
class IncidentFilter:
    """What the alerts page filters on; None means any."""

    status: str | None = None
    kind: str | None = None
    integration_id: int | None = None
    since: datetime | None = None  # opened at or after


def list_incidents(
    engine: Engine, *, filters: IncidentFilter | None = None, limit: int = 100
) -> list[Incident]:
    """Incidents newest first under `filters`, at most `limit` (capped at INCIDENTS_LIMIT)."""
    filters = filters or IncidentFilter()
    query = select(Incident)
    if filters.status is not None:
        query = query.where(col(Incident.status) == filters.status)
    if filters.kind is not None:
        query = query.where(col(Incident.kind) == filters.kind)
    if filters.integration_id is not None:
        query = query.where(col(Incident.integration_id) == filters.integration_id)
    if filters.since is not None:
        query = query.where(col(Incident.opened_at) >= filters.since)
    query = query.order_by(col(Incident.opened_at).desc(), col(Incident.id).desc())
    with session_scope(engine) as session:
        return list(session.exec(query.limit(max(1, min(limit, INCIDENTS_LIMIT)))).all())


def deliveries_of(engine: Engine, *, incident_id: int) -> list[AlertDelivery]:
    """The notices of one incident and how each was delivered, in order."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(AlertDelivery)
                .where(col(AlertDelivery.incident_id) == incident_id)
                .order_by(col(AlertDelivery.id))
            ).all()
        )


# --- the outbox ------------------------------------------------------------------------------------


def _queue_notices(session: Any, incident: Incident, event: str) -> None:
    row = session.get(AlertSettings, SETTINGS_ID)
    for channel in configured_channels(row):
        session.add(AlertDelivery(incident_id=incident.id, event=event, channel=channel))


def configured_channels(row: AlertSettings | None) -> list[str]:
    """The channels notices go to: email when SMTP has a host, a sender and a recipient; the webhook
    when it has a URL."""
    if row is None:
        return []
    channels = []
    if row.smtp_host and row.smtp_from and row.smtp_to:
        channels.append(AlertChannel.EMAIL)
    if row.webhook_url:
        channels.append(AlertChannel.WEBHOOK)
    return channels


def due_deliveries(
    engine: Engine, *, max_attempts: int, limit: int = 100
) -> list[tuple[AlertDelivery, Incident]]:
    """Notices still to send (pending, or failed with attempts left), oldest first, with their incident."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(AlertDelivery, Incident)
            .join(Incident, col(Incident.id) == col(AlertDelivery.incident_id))
            .where(
                (col(AlertDelivery.status) == DeliveryStatus.PENDING)
                | (
                    (col(AlertDelivery.status) == DeliveryStatus.FAILED)
                    & (col(AlertDelivery.attempts) < max_attempts)
                )
            )
            .order_by(col(AlertDelivery.id))
            .limit(limit)
        ).all()
        return [(delivery, incident) for delivery, incident in rows]


def record_delivery(engine: Engine, *, delivery_id: int, ok: bool, attempts: int, error: str | None) -> None:
    """Keep how one send went: sent, or failed with the error (attempts add up across rounds)."""
    with session_scope(engine, write=True) as session:
        row = session.get(AlertDelivery, delivery_id)
        if row is None:
            return
        row.status = DeliveryStatus.SENT if ok else DeliveryStatus.FAILED
        row.attempts += attempts
        row.error = None if ok else (error or "")[:2000]
        row.at = utcnow()
        session.add(row)


# --- settings --------------------------------------------------------------------------------------


def load_settings(engine: Engine) -> AlertSettings:
    """The alert settings row, or the defaults (not stored) when none was saved yet."""
    with session_scope(engine) as session:
        return session.get(AlertSettings, SETTINGS_ID) or AlertSettings(id=SETTINGS_ID)


def public_settings(engine: Engine) -> AlertSettingsPublic:
    """The settings as a page shows them: no secret, only whether each is set."""
    row = load_settings(engine)
    return AlertSettingsPublic(
        **row.model_dump(include=set(AlertSettingsBase.model_fields)),
        smtp_password_set=bool(row.smtp_password_encrypted),
        webhook_secret_set=bool(row.webhook_secret_encrypted),
        updated_at=row.updated_at,
        updated_by=row.updated_by,
    )


def save_settings(
    engine: Engine,
    vault: Vault,
    *,
    by: str,
    changes: dict[str, Any] | None = None,
    smtp_password: str | None = None,
    webhook_secret: str | None = None,
) -> AlertSettingsPublic:
    """Change the settings named in `changes` (AlertSettingsBase fields) and, when given, the SMTP
    password and webhook secret (None keeps the stored one, "" clears it). Raises ValueError, naming
    the field, for a value that cannot work (a webhook URL without a signing secret, too); nothing is
    saved then."""
    changes = dict(changes or {})
    unknown = set(changes) - set(AlertSettingsBase.model_fields)
    if unknown:
        raise ValueError(f"unknown alert settings: {', '.join(sorted(unknown))}")
    with session_scope(engine, write=True) as session:
        row = session.get(AlertSettings, SETTINGS_ID) or AlertSettings(id=SETTINGS_ID)
        merged = AlertSettingsBase.model_validate(
            {**row.model_dump(include=set(AlertSettingsBase.model_fields)), **changes}
        )
        _validate(merged)
        for name in AlertSettingsBase.model_fields:
            setattr(row, name, copy.deepcopy(getattr(merged, name)))
        if smtp_password is not None:
            row.smtp_password_encrypted = vault.encrypt(smtp_password) if smtp_password else ""
        if webhook_secret is not None:
            row.webhook_secret_encrypted = vault.encrypt(webhook_secret) if webhook_secret else ""
        if row.webhook_url and not row.webhook_secret_encrypted:
            # Receivers must be able to tell our notices from anyone's: no unsigned webhooks.
            raise ValueError("webhook_secret: an outgoing webhook needs a signing secret")
        row.updated_at = utcnow()
        row.updated_by = by[:200]
        session.add(row)
    return public_settings(engine)


def smtp_password(vault: Vault, row: AlertSettings) -> str:
    return str(vault.decrypt(row.smtp_password_encrypted) or "")


def webhook_secret(vault: Vault, row: AlertSettings) -> str:
    return str(vault.decrypt(row.webhook_secret_encrypted) or "")


def _validate(s: AlertSettingsBase) -> None:
    problems: list[str] = []
    if s.webhook_url and not s.webhook_url.startswith(("https://", "http://")):
        problems.append("webhook_url must start with https:// (or http:// for a receiver on your network)")
    if not 1 <= s.smtp_port <= 65535:
        problems.append("smtp_port must be between 1 and 65535")
    if s.smtp_to and not all("@" in address for address in s.smtp_to):
        problems.append("smtp_to must be email addresses")
    if not 0.0 < s.error_rate_threshold <= 1.0:
        problems.append("error_rate_threshold is a share above 0 and at most 1 (0.2 = 20 %)")
    for name in (
        "check_seconds",
        "dead_window_minutes",
        "error_rate_window_minutes",
        "outage_window_minutes",
        "reping_seconds",
    ):
        if getattr(s, name) <= 0:
            problems.append(f"{name} must be above 0")
    if s.error_rate_min_records < 1:
        problems.append("error_rate_min_records must be at least 1")
    if s.outage_failures < 0:
        problems.append("outage_failures must be 0 (never pause) or more")
    for key, minutes in s.quiet_minutes.items():
        if not QUIET_KEY.match(key) or float(minutes) <= 0:
            problems.append(f"quiet_minutes needs '<integration id>/<system>' → minutes above 0; got {key!r}")
    if problems:
        raise ValueError("; ".join(problems))


# --- pauses ----------------------------------------------------------------------------------------


def pause_of(engine: Engine, *, integration_id: int) -> IntegrationPause | None:
    with session_scope(engine) as session:
        return session.get(IntegrationPause, integration_id)


def paused_ids(engine: Engine) -> frozenset[int]:
    """The integrations whose jobs are held back now."""
    with session_scope(engine) as session:
        rows = session.exec(select(IntegrationPause.integration_id).where(col(IntegrationPause.paused))).all()
        return frozenset(int(i) for i in rows)


def list_pauses(engine: Engine) -> list[IntegrationPause]:
    """Every pause row (paused now or resumed earlier), by integration."""
    with session_scope(engine) as session:
        return list(
            session.exec(select(IntegrationPause).order_by(col(IntegrationPause.integration_id))).all()
        )


def set_paused(
    engine: Engine,
    *,
    integration_id: int,
    by: str,
    reason: str,
    systems: Sequence[str] = (),
    next_ping_at: datetime | None = None,
    only_if_running: bool = False,
) -> bool:
    """Pause an integration; False when it already was (`only_if_running`: then nothing changes, so an
    automatic pause never overrides a person's)."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        row = session.get(IntegrationPause, integration_id) or IntegrationPause(integration_id=integration_id)
        if row.paused and only_if_running:
            return False
        was = row.paused
        row.paused = True
        row.by = by[:200]
        row.reason = reason
        row.since = row.since if was else now
        row.systems = list(systems)
        row.next_ping_at = next_ping_at
        row.last_ping_error = None
        session.add(row)
        return not was


def set_resumed(engine: Engine, *, integration_id: int, by: str, only_auto: bool = False) -> bool:
    """Resume an integration; False when it was not paused (or, with `only_auto`, paused by a person)."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        row = session.get(IntegrationPause, integration_id)
        if row is None or not row.paused or (only_auto and row.by != AUTO):
            return False
        row.paused = False
        row.resumed_at = now
        row.resumed_by = by[:200]
        row.next_ping_at = None
        session.add(row)
        return True


def record_ping(engine: Engine, *, integration_id: int, error: str | None, next_ping_at: datetime) -> None:
    """Keep a re-ping's verdict on the pause and when the next one is due."""
    with session_scope(engine, write=True) as session:
        row = session.get(IntegrationPause, integration_id)
        if row is None:
            return
        row.last_ping_at = utcnow()
        row.last_ping_error = error
        row.next_ping_at = next_ping_at
        session.add(row)


def due_for_ping(engine: Engine, *, now: datetime | None = None) -> list[IntegrationPause]:
    """Automatic pauses whose next ping is due."""
    now = now or utcnow()
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(IntegrationPause).where(
                    col(IntegrationPause.paused),
                    col(IntegrationPause.by) == AUTO,
                    (col(IntegrationPause.next_ping_at).is_(None))
                    | (col(IntegrationPause.next_ping_at) <= now),
                )
            ).all()
        )
