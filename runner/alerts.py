"""Alerts: find incidents, open and resolve them, and deliver their notices by email and webhook.

Detection is level-triggered. Each sweep (scheduled singleton work, every `AlertSettings.check_seconds`)
asks every detector which problems exist *now*; a problem with no open incident opens one (and queues
its "opened" notice), one already open is only touched, and an open incident its detector no longer
reports is resolved (and queues its "resolved" notice). So there is one alert per incident however often
the failure repeats, and one resolved notice when it clears. What each kind means:

    job_dead              jobs of one integration's flow went dead (a rejected record, a mapping error,
                          attempts spent) within `dead_window_minutes`; resolves once that long passes
                          with no new dead job of that flow. Subject "integration:<id>:<flow>".
    token_refresh_failed  a connection's last token refresh failed (`token.failures` > 0); resolves when a
                          refresh succeeds (which zeroes the counter) or the connection is saved again
                          (its token row goes with the old credentials). Subject "connection:<id>".
    channel_lapsed        a Zoho channel is failed or lapsed, or past its expiry; resolves when renewed.
                          Subject "channel:<Zoho channel id>".
    source_quiet          no webhook from a watched source (`quiet_minutes["<integration>/<system>"]`) for
                          longer than configured; resolves when one arrives. Subject
                          "source:<integration id>:<system>".
    error_rate            over `error_rate_window_minutes`, more than `error_rate_threshold` of an
                          integration's audit records did not succeed (given at least
                          `error_rate_min_records`); resolves when the share falls back to the threshold
                          or below. Subject "integration:<id>".
    integration_paused    the integration is paused (runner.outage: by the runner after an outage, or by
                          a person); resolves when it resumes. Subject "integration:<id>".

Delivery goes through the outbox in storage.alerts: each sweep sends the pending notices, with a few
bounded retries per sweep (tenacity) and again on later sweeps until `MAX_ATTEMPTS`.

The outgoing webhook is a Slack-style JSON POST, `{"text", "event", "incident"}`, signed so a receiver
can check it came from us and was not replayed later:

    X-ML-Timestamp: <unix seconds when it was sent>
    X-ML-Signature: sha256=<hex HMAC-SHA256, keyed with the webhook secret, of "<timestamp>." + raw body>

A receiver recomputes the HMAC over the timestamp header, a dot and the exact bytes received, compares in
constant time, and refuses timestamps more than a few minutes old (`verify_signature` does all three).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from functools import partial
from typing import Any

import httpx2
from anyio import to_thread
from sqlalchemy import case, func
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from tenacity import AsyncRetrying, Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from runner import outage
from runner.flows import registry
from runner.health import system_title
from storage import alerts as store
from storage.alerts import AlertChannel, AlertSettings, Incident, IncidentKind
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import (
    AuditRecord,
    Channel,
    Connection,
    InboundEvent,
    Integration,
    Job,
    JobStatus,
    Outcome,
    Token,
)
from storage.types import utcnow

log = logging.getLogger("ml_connector.alerts")

SIGNATURE_HEADER = "X-ML-Signature"
TIMESTAMP_HEADER = "X-ML-Timestamp"
SIGNATURE_TOLERANCE = 300.0  # seconds a receiver should accept a timestamp from the past (or future)
MAX_ATTEMPTS = 9  # sends of one notice across sweeps before it is left failed
SEND_TIMEOUT = 15.0  # seconds for one webhook POST or SMTP conversation
TITLES = {
    IncidentKind.JOB_DEAD: "Jobs are dying",
    IncidentKind.TOKEN_REFRESH_FAILED: "Token refresh failed",
    IncidentKind.CHANNEL_LAPSED: "Zoho channel lapsed",
    IncidentKind.SOURCE_QUIET: "Webhook source is quiet",
    IncidentKind.ERROR_RATE: "Error rate is high",
    IncidentKind.INTEGRATION_PAUSED: "Integration paused",
}


# --- signing -----------------------------------------------------------------------------------


def sign(secret: str, body: bytes, timestamp: str) -> str:
    """The `X-ML-Signature` value for `body` sent at `timestamp` (unix seconds, as sent)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    header: str,
    *,
    tolerance: float = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether `header` (X-ML-Signature) signs `body` with `secret` at `timestamp` (X-ML-Timestamp), and
    the timestamp is within `tolerance` seconds of `now`: what a receiver of our webhooks checks."""
    try:
        sent = float(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, body, timestamp), header.strip())


# --- rendering ---------------------------------------------------------------------------------


def render(
    incident: Incident, event: str, *, integration: str | None = None
) -> tuple[str, str, dict[str, Any]]:
    """(subject line, text, webhook JSON) of one notice."""
    title = TITLES.get(incident.kind, "Test notice")  # type: ignore[call-overload]
    where = f" · {integration}" if integration else ""
    if event == store.AlertEvent.RESOLVED:
        resolution = str((incident.details or {}).get("resolution") or "the condition cleared")
        subject = f"[ml-connector] Resolved: {title}{where}"
        text = f"Resolved: {title}{where}. {resolution}. (It was: {incident.summary})"
    else:
        subject = f"[ml-connector] {title}{where}"
        text = f"{title}{where}: {incident.summary}"
    payload = {
        "text": text,
        "event": event,
        "incident": {
            "id": incident.id,
            "kind": incident.kind,
            "subject": incident.subject,
            "integration_id": incident.integration_id,
            "integration": integration,
            "status": incident.status,
            "opened_at": incident.opened_at.isoformat(),
            "last_seen_at": incident.last_seen_at.isoformat(),
            "resolved_at": incident.resolved_at.isoformat() if incident.resolved_at else None,
            "count": incident.count,
            "summary": incident.summary,
            "details": incident.details or {},
        },
    }
    return subject, text, payload


# --- delivery ----------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    def __init__(self, message: str, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class _Retryable(Exception):
    """A send worth trying again: network trouble, a 5xx or a 429 from the receiver."""


@dataclass(frozen=True)
class DeliveryPolicy:
    """Bounded retries of one send within one sweep: exponential waits from `base` up to `cap` (a test
    passes base 0 and never waits)."""

    tries: int = 3
    base: float = 0.5  # seconds
    cap: float = 5.0  # seconds


async def send_webhook(
    http: httpx2.AsyncClient, *, url: str, secret: str, payload: dict[str, Any], policy: DeliveryPolicy
) -> int:
    """POST `payload` signed to `url`; returns the tries it took, raises DeliveryFailed."""
    body = json.dumps(payload, separators=(",", ":"), default=str).encode()
    tries = 0
    try:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(policy.tries),
            wait=wait_exponential(multiplier=policy.base, max=policy.cap),
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        ):
            with attempt:
                tries = attempt.retry_state.attempt_number
                timestamp = str(int(time.time()))
                headers = {
                    "Content-Type": "application/json",
                    TIMESTAMP_HEADER: timestamp,
                    SIGNATURE_HEADER: sign(secret, body, timestamp),
                    "User-Agent": "ml-connector-alerts",
                }
                try:
                    response = await http.post(url, content=body, headers=headers, timeout=SEND_TIMEOUT)
                except httpx2.HTTPError as exc:
                    raise _Retryable(f"{type(exc).__name__}: {exc}") from exc
                if response.status_code >= 500 or response.status_code == 429:
                    raise _Retryable(f"the receiver answered {response.status_code}")
                if response.status_code >= 400:
                    raise DeliveryFailed(f"the receiver refused it with {response.status_code}", tries)
    except _Retryable as exc:
        raise DeliveryFailed(str(exc), tries) from exc
    return tries


def send_email(row: AlertSettings, *, password: str, subject: str, text: str, policy: DeliveryPolicy) -> int:
    """Send one notice to every `smtp_to` (blocking: run it in a thread); returns the tries it took,
    raises DeliveryFailed. STARTTLS when `smtp_starttls`; a login when a user is set."""
    message = EmailMessage()
    message["From"] = row.smtp_from
    message["To"] = ", ".join(row.smtp_to)
    message["Subject"] = subject
    message.set_content(text)
    tries = 0
    try:
        for attempt in Retrying(
            stop=stop_after_attempt(policy.tries),
            wait=wait_exponential(multiplier=policy.base, max=policy.cap),
            retry=retry_if_exception_type(
                (OSError, smtplib.SMTPServerDisconnected, smtplib.SMTPResponseException)
            ),
            reraise=True,
        ):
            with attempt:
                tries = attempt.retry_state.attempt_number
                with smtplib.SMTP(row.smtp_host, row.smtp_port, timeout=SEND_TIMEOUT) as smtp:
                    if row.smtp_starttls:
                        smtp.starttls(context=ssl.create_default_context())
                    if row.smtp_user:
                        smtp.login(row.smtp_user, password)
                    smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as exc:
        raise DeliveryFailed(f"{type(exc).__name__}: {exc}", tries) from exc
    return tries


@dataclass(frozen=True)
class SendResult:
    channel: str
    ok: bool
    attempts: int
    error: str | None = None


async def deliver_one(
    row: AlertSettings,
    vault: Vault,
    http: httpx2.AsyncClient,
    *,
    channel: str,
    subject: str,
    text: str,
    payload: dict[str, Any],
    policy: DeliveryPolicy,
) -> SendResult:
    """Send one notice on one channel; never raises for a failed send."""
    try:
        if channel == AlertChannel.WEBHOOK:
            attempts = await send_webhook(
                http,
                url=row.webhook_url,
                secret=store.webhook_secret(vault, row),
                payload=payload,
                policy=policy,
            )
        else:
            attempts = await to_thread.run_sync(
                partial(
                    send_email,
                    row,
                    password=store.smtp_password(vault, row),
                    subject=subject,
                    text=text,
                    policy=policy,
                )
            )
    except DeliveryFailed as exc:
        return SendResult(channel, False, max(1, exc.attempts), str(exc))
    return SendResult(channel, True, attempts)


async def deliver_pending(engine: Engine, vault: Vault, *, policy: DeliveryPolicy | None = None) -> int:
    """Send every notice still due (outbox order); returns how many went out."""
    policy = policy or DeliveryPolicy()
    due = await to_thread.run_sync(partial(store.due_deliveries, engine, max_attempts=MAX_ATTEMPTS))
    if not due:
        return 0
    row = await to_thread.run_sync(store.load_settings, engine)
    names = await to_thread.run_sync(_integration_names, engine)
    sent = 0
    async with httpx2.AsyncClient(timeout=SEND_TIMEOUT) as http:
        for delivery, incident in due:
            subject, text, payload = render(
                incident, delivery.event, integration=names.get(incident.integration_id or 0)
            )
            result = await deliver_one(
                row,
                vault,
                http,
                channel=delivery.channel,
                subject=subject,
                text=text,
                payload=payload,
                policy=policy,
            )
            if not result.ok:
                log.warning(
                    "alert %s (%s) not delivered by %s: %s",
                    incident.id,
                    delivery.event,
                    delivery.channel,
                    result.error,
                )
            sent += result.ok
            assert delivery.id is not None
            await to_thread.run_sync(
                partial(
                    store.record_delivery,
                    engine,
                    delivery_id=delivery.id,
                    ok=result.ok,
                    attempts=result.attempts,
                    error=result.error,
                )
            )
    return sent


def send_test(engine: Engine, vault: Vault, *, policy: DeliveryPolicy | None = None) -> list[SendResult]:
    """Send a test notice on every configured channel now (the settings page's "Send a test" button);
    one result per channel. Nothing is stored."""
    row = store.load_settings(engine)
    incident = Incident(
        id=0,
        kind="test",
        subject="test",
        summary="This is a test notice from ml-connector: alerts reach you here.",
        opened_at=utcnow(),
        last_seen_at=utcnow(),
    )
    subject, text, payload = render(incident, store.AlertEvent.OPENED)

    async def run() -> list[SendResult]:
        async with httpx2.AsyncClient(timeout=SEND_TIMEOUT) as http:
            return [
                await deliver_one(
                    row,
                    vault,
                    http,
                    channel=c,
                    subject=subject,
                    text=text,
                    payload=payload,
                    policy=policy or DeliveryPolicy(),
                )
                for c in store.configured_channels(row)
            ]

    return asyncio.run(run())


# --- what the alerts page shows --------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeView:
    """One notice of an incident on one channel, and how sending it went."""

    event: str  # opened | resolved
    channel: str  # email | webhook
    status: str  # pending | sent | failed
    attempts: int
    error: str | None
    at: datetime | None


@dataclass(frozen=True)
class IncidentView:
    """An incident as the alerts page lists it: what, where, since when, and where its notices went."""

    id: int
    kind: str
    title: str
    subject: str
    integration_id: int | None
    integration: str | None
    status: str
    opened_at: datetime
    last_seen_at: datetime
    resolved_at: datetime | None
    count: int
    summary: str
    details: dict[str, Any]
    notices: list[NoticeView]


def incident_overview(
    engine: Engine, *, filters: store.IncidentFilter | None = None, limit: int = 100
) -> list[IncidentView]:
    """Incidents newest first under `filters`, each with its integration's name and its notices (three
    queries)."""
    incidents = store.list_incidents(engine, filters=filters, limit=limit)
    ids = [i.id for i in incidents if i.id is not None]
    notices: dict[int, list[NoticeView]] = {}
    with session_scope(engine) as session:
        rows = session.exec(
            select(store.AlertDelivery)
            .where(col(store.AlertDelivery.incident_id).in_(ids))
            .order_by(col(store.AlertDelivery.id))
        ).all()
    for row in rows:
        notices.setdefault(row.incident_id, []).append(
            NoticeView(row.event, row.channel, row.status, row.attempts, row.error, row.at)
        )
    names = _integration_names(engine)
    return [
        IncidentView(
            id=i.id or 0,
            kind=i.kind,
            title=TITLES.get(i.kind, i.kind),  # type: ignore[call-overload]
            subject=i.subject,
            integration_id=i.integration_id,
            integration=names.get(i.integration_id) if i.integration_id is not None else None,
            status=i.status,
            opened_at=i.opened_at,
            last_seen_at=i.last_seen_at,
            resolved_at=i.resolved_at,
            count=i.count,
            summary=i.summary,
            details=dict(i.details or {}),
            notices=notices.get(i.id or 0, []),
        )
        for i in incidents
    ]


# --- detection ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """A problem a detector sees now."""

    integration_id: int | None
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    count: int | None = None


Key = tuple[str, str]  # (kind, subject)
Detector = Callable[[Engine, AlertSettings, datetime, dict[Key, Incident]], dict[Key, Condition]]


def detect_dead_jobs(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Jobs that went dead within the window, per integration and flow (counted since the first)."""
    window = timedelta(minutes=cfg.dead_window_minutes)
    firsts = {
        key: datetime.fromisoformat(str(i.details.get("first_dead_at")))
        for key, i in open_.items()
        if key[0] == IncidentKind.JOB_DEAD and i.details.get("first_dead_at")
    }
    horizon = min([now - window, *firsts.values()])
    with session_scope(engine) as session:
        rows = session.exec(
            select(Job.integration_id, Job.flow, Job.finished_at, Job.last_error)
            .where(col(Job.status) == JobStatus.DEAD, col(Job.finished_at) >= horizon)
            .order_by(col(Job.finished_at))
        ).all()
    names = _integration_names(engine)
    groups: dict[tuple[int, str], list[tuple[datetime, str | None]]] = {}
    for integration_id, flow, finished_at, last_error in rows:
        groups.setdefault((integration_id, flow), []).append((finished_at, last_error))
    found: dict[Key, Condition] = {}
    flows = registry()
    for (integration_id, flow), dead in groups.items():
        if dead[-1][0] < now - window:
            continue  # none died recently: the incident (if any) clears
        key = (IncidentKind.JOB_DEAD.value, f"integration:{integration_id}:{flow}")
        first = firsts.get(key) or min(at for at, _ in dead if at >= now - window)
        since = [d for d in dead if d[0] >= first]
        title = getattr(flows.get(flow), "title", flow)
        found[key] = Condition(
            integration_id,
            f"{len(since)} {title} job(s) of {names.get(integration_id, integration_id)} failed for good since "
            f"{first:%Y-%m-%d %H:%M} UTC; last error: {(since[-1][1] or '?')[:500]}. Fix the cause, then replay "
            "them from the audit page.",
            {"flow": flow, "first_dead_at": first.isoformat(), "dead_jobs": len(since)},
            count=len(since),
        )
    return found


def detect_token_failures(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Connections whose last token refresh failed."""
    with session_scope(engine) as session:
        rows = session.exec(
            select(Token.connection_id, Token.failures, Token.reason, Connection.name, Connection.system)
            .join(Connection, col(Connection.id) == col(Token.connection_id))
            .where(col(Token.failures) > 0)
        ).all()
    return {
        (IncidentKind.TOKEN_REFRESH_FAILED.value, f"connection:{connection_id}"): Condition(
            None,
            f"The {system_title(system)} connection {name!r} cannot refresh its access token "
            f"({failures} failed attempt(s)): {reason}. Check its credentials on the Connections page.",
            {"connection_id": connection_id, "system": system, "failures": failures},
            count=failures,
        )
        for connection_id, failures, reason, name, system in rows
    }


def detect_lapsed_channels(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Zoho channels failed, lapsed or past their expiry (disabled ones are a person's choice)."""
    with session_scope(engine) as session:
        rows = session.exec(select(Channel).where(col(Channel.status) != "disabled")).all()
    found: dict[Key, Condition] = {}
    for channel in rows:
        expired = channel.expires_at is not None and channel.expires_at <= now
        if channel.status == "active" and not expired:
            continue
        state = "expired" if channel.status == "active" else channel.status
        found[(IncidentKind.CHANNEL_LAPSED.value, f"channel:{channel.channel_id}")] = Condition(
            channel.integration_id,
            f"Zoho notification channel {channel.channel_id} is {state}"
            + (f": {channel.last_error[:500]}" if channel.last_error else "")
            + ". Changes in Zoho reach us only through the polls until it is renewed.",
            {"channel_id": channel.channel_id, "status": channel.status},
        )
    return found


def detect_quiet_sources(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Watched webhook sources silent for longer than their `quiet_minutes`."""
    found: dict[Key, Condition] = {}
    for key, minutes in (cfg.quiet_minutes or {}).items():
        integration_id, system = int(key.split("/")[0]), key.split("/")[1]
        with session_scope(engine) as session:
            integration = session.get(Integration, integration_id)
            if integration is None or not integration.active:
                continue
            # Newest first by id: the scan stops at the first event of this source, at once when busy.
            last = session.exec(
                select(InboundEvent.received_at)
                .where(col(InboundEvent.integration_id) == integration_id, col(InboundEvent.system) == system)
                .order_by(col(InboundEvent.id).desc())
                .limit(1)
            ).first()
        reference = last or integration.created_at
        if now - reference <= timedelta(minutes=float(minutes)):
            continue
        heard = f"the last one arrived {reference:%Y-%m-%d %H:%M} UTC" if last else "none has arrived yet"
        found[(IncidentKind.SOURCE_QUIET.value, f"source:{integration_id}:{system}")] = Condition(
            integration_id,
            f"No {system_title(system)} webhook reached {integration.name} for over {float(minutes):g} minute(s); "
            f"{heard}. Check the sender's webhook settings (polls still catch changes where a flow has one).",
            {"system": system, "last_event_at": last.isoformat() if last else None},
        )
    return found


def detect_error_rates(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Integrations whose share of unsuccessful audit records in the window is above the threshold."""
    cutoff = now - timedelta(minutes=cfg.error_rate_window_minutes)
    failed = func.sum(case((col(AuditRecord.outcome) != Outcome.SUCCEEDED, 1), else_=0))
    with session_scope(engine) as session:
        rows = session.exec(
            select(AuditRecord.integration_id, func.count(), failed)
            .where(col(AuditRecord.started_at) >= cutoff)
            .group_by(col(AuditRecord.integration_id))
        ).all()
    names = _integration_names(engine)
    found: dict[Key, Condition] = {}
    for integration_id, total, bad in rows:
        bad = int(bad or 0)
        if total < cfg.error_rate_min_records or bad / total <= cfg.error_rate_threshold:
            continue
        found[(IncidentKind.ERROR_RATE.value, f"integration:{integration_id}")] = Condition(
            integration_id,
            f"{bad} of the last {total} records of {names.get(integration_id, integration_id)} failed "
            f"({bad / total:.0%}, above {cfg.error_rate_threshold:.0%}) in {cfg.error_rate_window_minutes:g} minute(s).",
            {"failed": bad, "total": total, "rate": round(bad / total, 4)},
        )
    return found


def detect_pauses(
    engine: Engine, cfg: AlertSettings, now: datetime, open_: dict[Key, Incident]
) -> dict[Key, Condition]:
    """Paused integrations, with who paused them and what happens next."""
    names = _integration_names(engine)
    found: dict[Key, Condition] = {}
    for row in store.list_pauses(engine):
        if not row.paused:
            continue
        name = names.get(row.integration_id, row.integration_id)
        if row.by == store.AUTO:
            how = (
                f"paused by the runner: {row.reason}. Jobs keep queueing and nothing is lost; the runner pings "
                f"{', '.join(system_title(s) for s in row.systems) or 'its connections'} every "
                f"{cfg.reping_seconds:g} s and resumes it when the ping succeeds."
            )
        else:
            how = f"paused by {row.by}: {row.reason or 'no reason given'}. Jobs keep queueing; resume it by hand."
        found[(IncidentKind.INTEGRATION_PAUSED.value, f"integration:{row.integration_id}")] = Condition(
            row.integration_id, f"{name} is {how}", {"by": row.by, "systems": list(row.systems or [])}
        )
    return found


DETECTORS: dict[str, Detector] = {
    IncidentKind.JOB_DEAD: detect_dead_jobs,
    IncidentKind.TOKEN_REFRESH_FAILED: detect_token_failures,
    IncidentKind.CHANNEL_LAPSED: detect_lapsed_channels,
    IncidentKind.SOURCE_QUIET: detect_quiet_sources,
    IncidentKind.ERROR_RATE: detect_error_rates,
    IncidentKind.INTEGRATION_PAUSED: detect_pauses,
}
RESOLUTIONS = {
    IncidentKind.JOB_DEAD: "No job of this flow died for the whole window",
    IncidentKind.TOKEN_REFRESH_FAILED: "The token was refreshed (or the connection's credentials were replaced)",
    IncidentKind.CHANNEL_LAPSED: "The channel was renewed (or disabled)",
    IncidentKind.SOURCE_QUIET: "Webhooks arrive again (or the source is no longer watched)",
    IncidentKind.ERROR_RATE: "The error rate is back at or under the threshold",
    IncidentKind.INTEGRATION_PAUSED: "The integration was resumed",
}


@dataclass(frozen=True)
class SweepResult:
    opened: list[int]
    resolved: list[int]
    paused: list[int]
    sent: int


def reconcile(
    engine: Engine, cfg: AlertSettings, *, now: datetime | None = None
) -> tuple[list[int], list[int]]:
    """Run every detector and open, touch or resolve incidents to match; returns (opened, resolved) ids.
    A detector that fails is logged and its incidents are left as they are (none resolved by mistake)."""
    now = now or utcnow()
    open_ = {(i.kind, i.subject): i for i in store.open_incidents(engine, kinds=list(DETECTORS))}
    opened: list[int] = []
    resolved: list[int] = []
    for kind, detector in DETECTORS.items():
        try:
            seen = detector(engine, cfg, now, open_)
        except Exception:
            log.exception("alert detector %s failed; its incidents stay as they are", kind)
            continue
        for (k, subject), condition in seen.items():
            incident, new = store.open_or_touch(
                engine,
                kind=k,
                subject=subject,
                integration_id=condition.integration_id,
                summary=condition.summary,
                details=condition.details,
                count=condition.count,
                now=now,
            )
            if new and incident.id is not None:
                opened.append(incident.id)
                log.warning("alert opened: %s %s: %s", k, subject, condition.summary)
        for k, subject in open_:
            if k == kind and (k, subject) not in seen:
                done = store.resolve(
                    engine, kind=k, subject=subject, summary=RESOLUTIONS[IncidentKind(k)], now=now
                )
                if done is not None and done.id is not None:
                    resolved.append(done.id)
                    log.info("alert resolved: %s %s", k, subject)
    return opened, resolved


async def sweep(
    engine: Engine, vault: Vault, *, cfg: AlertSettings | None = None, policy: DeliveryPolicy | None = None
) -> SweepResult:
    """One round of the alerting work: pause integrations in an outage, reconcile incidents, send notices.
    `cfg`: the alert settings just read (read here when not given)."""
    cfg = cfg or await to_thread.run_sync(store.load_settings, engine)
    paused = await to_thread.run_sync(partial(outage.detect, engine, cfg))
    opened, resolved = await to_thread.run_sync(partial(reconcile, engine, cfg))
    sent = await deliver_pending(engine, vault, policy=policy)
    return SweepResult(opened, resolved, paused, sent)


def current_settings(engine: Engine) -> AlertSettings:
    """The alert settings as saved in the app (defaults until saved)."""
    return store.load_settings(engine)


def check_seconds(engine: Engine) -> float:
    """How often the sweep runs, as set on the alert settings."""
    return float(current_settings(engine).check_seconds)


# --- helpers -----------------------------------------------------------------------------------


def _integration_names(engine: Engine) -> dict[int, str]:
    with session_scope(engine) as session:
        return {
            int(i): n
            for i, n in session.exec(select(Integration.id, Integration.name)).all()
            if i is not None
        }
