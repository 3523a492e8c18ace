"""What the Health page shows, read from the database: the runners' heartbeats, the queue, throughput and
error rate over time, Zoho channels with their renewal history, token status per connection, and the
payments mirror.

Every function here is a read model: it takes an engine (and `now`, so tests need no clock tricks),
runs a bounded number of queries, and returns frozen dataclasses a page can lay out without touching
SQL. Nothing here ever reads a secret: token status comes from the token row's dates and counters, never
from the token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import BigInteger, Integer, cast, func, literal_column
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.registry import SYSTEMS
from storage import queue
from storage.db import is_sqlite, session_scope
from storage.models import (
    AuditRecord,
    Channel,
    ChannelRenewal,
    Connection,
    Heartbeat,
    Integration,
    JobStatus,
    Outcome,
    Payment,
    Token,
)
from storage.types import utcnow

STALE_AFTER_BEATS = 3  # a runner not seen for this many heartbeat intervals is stale
RUNNERS_LIMIT = 50  # runners `runner_heartbeats` returns at most, freshest first
MAX_BUCKETS = 2_000  # most buckets one throughput query may ask for (a day by the minute fits)
TOKEN_EXPIRING = 600.0  # seconds; the runner pre-refreshes tokens this close to expiry (runner.scheduled)
CHANNEL_EXPIRING = timedelta(days=1)  # the runner renews channels this close to expiry (runner.channels)
RENEWALS_PER_CHANNEL = 5  # recent renewals `channel_overview` returns with each channel
RENEWAL_HISTORY_LIMIT = 200  # rows `renewal_history` returns at most
PAYMENTS_PAGE_LIMIT = 500  # the largest payments page a caller may ask for


def describe_duration(seconds: float) -> str:
    """A length of time as a person reads it at a glance: "42 s", "7 min", "3 h 05 min", "6 d 23 h", "1 d"."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {minutes:02d} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


def describe_until(seconds: float | None) -> str:
    """Time left before something lapses: "in 6 d 23 h", "expired 5 min ago", or an em dash."""
    if seconds is None:
        return "—"
    return f"in {describe_duration(seconds)}" if seconds > 0 else f"expired {describe_duration(-seconds)} ago"


def system_title(system: str) -> str:
    """A system's name as people write it ("Zoho CRM"), from its declared spec."""
    entry = SYSTEMS.get(system)
    return entry.spec.title if entry is not None else system


# --- runners ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunnerStatus:
    """One runner's last sign of life. `stale` once it has missed STALE_AFTER_BEATS heartbeats."""

    runner: str
    started_at: datetime
    seen_at: datetime
    age: float  # seconds since the runner was last seen
    stale: bool
    completed: int | None  # jobs this runner finished since it started, as it last reported
    details: dict[str, Any] = field(default_factory=dict)


def runner_heartbeats(
    engine: Engine, *, heartbeat_interval: float, now: datetime | None = None, limit: int = RUNNERS_LIMIT
) -> list[RunnerStatus]:
    """The runners that beat, freshest first (at most `limit`). Empty when no runner has started yet.

    `heartbeat_interval` is the runners' setting (`Settings.heartbeat_interval`, seconds); a runner is
    stale when its last beat is older than STALE_AFTER_BEATS of them (it died, or cannot reach the
    database). Each runner process has a name of its own, so every restart leaves a stale row behind.
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        beats = session.exec(select(Heartbeat).order_by(col(Heartbeat.seen_at).desc()).limit(limit)).all()
    limit = STALE_AFTER_BEATS * heartbeat_interval
    result = []
    for beat in beats:
        age = max(0.0, (now - beat.seen_at).total_seconds())
        details = dict(beat.details or {})
        completed = details.get("completed")
        result.append(
            RunnerStatus(
                runner=beat.runner,
                started_at=beat.started_at,
                seen_at=beat.seen_at,
                age=age,
                stale=age > limit,
                completed=int(completed) if isinstance(completed, int | float) else None,
                details=details,
            )
        )
    return result


# --- queue ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueSummary:
    """Jobs by status and how long the oldest runnable one has waited."""

    queued: int
    running: int
    succeeded: int
    dead: int
    oldest_queued_age: float | None  # seconds; None when nothing is queued

    @property
    def depth(self) -> int:
        """Jobs not settled yet: waiting to run or running."""
        return self.queued + self.running


def queue_summary(engine: Engine) -> QueueSummary:
    """The queue as `storage.queue.stats` counts it (two queries)."""
    stats = queue.stats(engine)
    counts = stats.by_status
    return QueueSummary(
        queued=counts.get(JobStatus.QUEUED, 0),
        running=counts.get(JobStatus.RUNNING, 0),
        succeeded=counts.get(JobStatus.SUCCEEDED, 0),
        dead=counts.get(JobStatus.DEAD, 0),
        oldest_queued_age=stats.oldest_queued_age,
    )


# --- throughput and error rate ----------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """Audit records that started in [start, start + bucket size), by outcome."""

    start: datetime
    succeeded: int = 0
    retrying: int = 0
    failed: int = 0

    @property
    def total(self) -> int:
        return self.succeeded + self.retrying + self.failed

    @property
    def error_rate(self) -> float | None:
        """Share of the bucket's records that did not succeed (0.0-1.0); None for an empty bucket."""
        return None if self.total == 0 else (self.retrying + self.failed) / self.total


def throughput(
    engine: Engine, *, window: timedelta, bucket: timedelta, now: datetime | None = None
) -> list[Bucket]:
    """Records per outcome in consecutive buckets covering the last `window`, oldest first.

    One GROUP BY query over the started_at index; buckets are whole multiples of `bucket` since the
    Unix epoch (so a minute bucket starts on the minute), and buckets without records are filled in
    with zeros, so a chart shows quiet periods as zero rather than skipping them. Raises ValueError for
    a bucket under a second or more than MAX_BUCKETS buckets.
    """
    size = int(bucket.total_seconds())
    if size < 1:
        raise ValueError("a throughput bucket is at least one second")
    now = now or utcnow()
    first = _floor(now - window, size)
    last = _floor(now, size)
    count = (last - first) // size + 1
    if count > MAX_BUCKETS:
        raise ValueError(
            f"{count} buckets of {size}s asked for; at most {MAX_BUCKETS}: use a larger bucket or a "
            "shorter window"
        )
    start_column = col(AuditRecord.started_at)
    # The bucket as epoch seconds, floored. The size is our own integer, inlined as a literal so the
    # GROUP BY expression is textually the same as the selected one (PostgreSQL insists on that).
    size_sql = literal_column(str(size), Integer)
    if is_sqlite(engine):  # naive UTC text: strftime('%s') reads it as UTC, truncating fractions
        epoch = cast(func.strftime("%s", start_column), BigInteger)
    else:  # timestamptz: epoch is UTC; floor before the cast, which would round
        epoch = cast(func.floor(func.extract("epoch", start_column)), BigInteger)
    bucket_sql = ((epoch // size_sql) * size_sql).label("bucket")
    with session_scope(engine) as session:
        rows = session.exec(
            select(bucket_sql, col(AuditRecord.outcome), func.count())
            .where(
                start_column >= datetime.fromtimestamp(first, UTC),
                start_column < datetime.fromtimestamp(last + size, UTC),
            )
            .group_by(bucket_sql, col(AuditRecord.outcome))
        ).all()
    counts: dict[int, dict[str, int]] = {}
    for start, outcome, n in rows:
        counts.setdefault(int(start), {})[str(outcome)] = int(n)
    return [
        Bucket(
            start=datetime.fromtimestamp(at, UTC),
            succeeded=counts.get(at, {}).get(Outcome.SUCCEEDED, 0),
            retrying=counts.get(at, {}).get(Outcome.RETRYING, 0),
            failed=counts.get(at, {}).get(Outcome.FAILED, 0),
        )
        for at in range(first, last + size, size)
    ]


def _floor(moment: datetime, size: int) -> int:
    """`moment` as epoch seconds, rounded down to a multiple of `size`."""
    epoch = int(moment.timestamp())
    return epoch - epoch % size


# --- Zoho channels ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Renewal:
    """One keep-alive action on a channel (runner.channels writes them)."""

    channel: str  # Zoho's channel id
    action: str  # renewed | re-provisioned | failed
    at: datetime
    expires_at: datetime | None
    detail: str | None


@dataclass(frozen=True)
class ChannelStatus:
    """A Zoho notification channel: how long until it lapses, and what the runner last did to it."""

    id: int
    channel: str  # Zoho's channel id
    integration_id: int
    integration: str
    status: str  # active | lapsed | failed | disabled
    events: list[str]
    expires_at: datetime | None
    time_to_expiry: float | None  # seconds; negative once expired, None when never enabled
    renewed_at: datetime | None
    last_error: str | None
    recent: list[Renewal]  # newest first, at most RENEWALS_PER_CHANNEL

    @property
    def health(self) -> str:
        """ok | expiring | problem: how worried the person reading should be."""
        if self.status == "disabled":
            return "disabled"
        if self.status != "active" or self.time_to_expiry is None or self.time_to_expiry <= 0:
            return "problem"
        if self.time_to_expiry < CHANNEL_EXPIRING.total_seconds():
            return "expiring"
        return "ok"


def channel_overview(engine: Engine, *, now: datetime | None = None) -> list[ChannelStatus]:
    """Every channel, soonest to expire first, with its latest renewals (two queries)."""
    now = now or utcnow()
    with session_scope(engine) as session:
        rows = session.exec(
            select(Channel, Integration.name).join(
                Integration, col(Integration.id) == col(Channel.integration_id)
            )
        ).all()
        ids = [channel.id for channel, _ in rows]
        rank = (
            func.row_number()
            .over(
                partition_by=col(ChannelRenewal.channel_id),
                order_by=(col(ChannelRenewal.at).desc(), col(ChannelRenewal.id).desc()),
            )
            .label("rank")
        )
        ranked = select(ChannelRenewal.id, rank).where(col(ChannelRenewal.channel_id).in_(ids)).subquery()
        renewals = (
            session.exec(
                select(ChannelRenewal)
                .join(ranked, ranked.c.id == col(ChannelRenewal.id))
                .where(ranked.c.rank <= RENEWALS_PER_CHANNEL)
                .order_by(col(ChannelRenewal.at).desc(), col(ChannelRenewal.id).desc())
            ).all()
            if ids
            else []
        )
    names = {channel.id: channel.channel_id for channel, _ in rows}
    recent: dict[int, list[Renewal]] = {}
    for row in renewals:
        recent.setdefault(row.channel_id, []).append(_renewal(row, names[row.channel_id]))
    result = [
        ChannelStatus(
            id=channel.id or 0,
            channel=channel.channel_id,
            integration_id=channel.integration_id,
            integration=name,
            status=channel.status,
            events=list(channel.events or []),
            expires_at=channel.expires_at,
            time_to_expiry=None if channel.expires_at is None else (channel.expires_at - now).total_seconds(),
            renewed_at=channel.renewed_at,
            last_error=channel.last_error,
            recent=recent.get(channel.id or 0, []),
        )
        for channel, name in rows
    ]
    never = float("inf")  # channels never enabled sort last
    return sorted(result, key=lambda c: (c.time_to_expiry if c.time_to_expiry is not None else never, c.id))


def renewal_history(engine: Engine, *, channel_id: int | None = None, limit: int = 50) -> list[Renewal]:
    """Keep-alive actions newest first: of one channel (our row id) or of every channel."""
    limit = max(1, min(limit, RENEWAL_HISTORY_LIMIT))
    query = (
        select(ChannelRenewal, Channel.channel_id)
        .join(Channel, col(Channel.id) == col(ChannelRenewal.channel_id))
        .order_by(col(ChannelRenewal.at).desc(), col(ChannelRenewal.id).desc())
        .limit(limit)
    )
    if channel_id is not None:
        query = query.where(col(ChannelRenewal.channel_id) == channel_id)
    with session_scope(engine) as session:
        rows = session.exec(query).all()
    return [_renewal(row, zoho_id) for row, zoho_id in rows]


def _renewal(row: ChannelRenewal, channel: str) -> Renewal:
    return Renewal(
        channel=channel, action=row.action, at=row.at, expires_at=row.expires_at, detail=row.detail
    )


# --- tokens -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenStatus:
    """A connection's cached access token, described without the token itself.

    `state` is one of: none (no token yet: minted on first use), cooling down (the last refresh failed;
    no new attempt before `cooldown_until`), failing (the last refresh failed), expired (refreshed on
    next use), expiring (the runner refreshes it ahead of use soon) or valid.
    """

    connection_id: int
    connection: str
    system: str
    state: str
    expires_at: datetime | None
    time_to_expiry: float | None  # seconds; negative once expired
    refreshed_at: datetime | None
    reason: str
    failures: int
    cooldown_until: datetime | None


def token_overview(engine: Engine, *, now: datetime | None = None) -> list[TokenStatus]:
    """Token status for every connection, in connection order (one query; the token column is never
    selected)."""
    now = now or utcnow()
    with session_scope(engine) as session:
        rows = session.exec(
            select(
                Connection.id,
                Connection.name,
                Connection.system,
                Token.expires_at,
                Token.refreshed_at,
                Token.reason,
                Token.failures,
                Token.cooldown_until,
                Token.access_token_encrypted != "",  # whether there is one, not what it is
            )
            .outerjoin(Token, col(Token.connection_id) == col(Connection.id))
            .order_by(col(Connection.id))
        ).all()
    result = []
    for connection_id, name, system, expires_at, refreshed_at, reason, failures, cooldown, held in rows:
        result.append(
            TokenStatus(
                connection_id=int(connection_id),
                connection=name,
                system=system,
                state=token_state(
                    held=bool(held),
                    expires_at=expires_at,
                    failures=failures or 0,
                    cooldown_until=cooldown,
                    now=now,
                ),
                expires_at=expires_at,
                time_to_expiry=None if expires_at is None else (expires_at - now).total_seconds(),
                refreshed_at=refreshed_at,
                reason=reason or "",
                failures=int(failures or 0),
                cooldown_until=cooldown,
            )
        )
    return result


def token_state(
    *, held: bool, expires_at: datetime | None, failures: int, cooldown_until: datetime | None, now: datetime
) -> str:
    """One word for a token's condition; see TokenStatus."""
    if cooldown_until is not None and cooldown_until > now:
        return "cooling down"
    if failures > 0:
        return "failing"
    if not held or expires_at is None:
        return "none"
    if expires_at <= now:
        return "expired"
    if (expires_at - now).total_seconds() < TOKEN_EXPIRING:
        return "expiring"
    return "valid"


# --- payments ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentRow:
    """A mirrored Zuora payment as the page lists it (the raw Zuora object stays in the database)."""

    id: int
    integration_id: int
    zuora_id: str
    number: str
    account_id: str
    amount: float
    currency: str
    status: str
    effective_date: str
    updated_date: str
    synced_at: datetime


@dataclass(frozen=True)
class PaymentPage:
    rows: list[PaymentRow]
    total: int  # payments matching, over every page


def payments_page(
    engine: Engine, *, integration_id: int | None = None, limit: int = 50, offset: int = 0
) -> PaymentPage:
    """One page of the payments mirror, latest effective date first (two queries)."""
    limit = max(1, min(limit, PAYMENTS_PAGE_LIMIT))
    where = [] if integration_id is None else [col(Payment.integration_id) == integration_id]
    with session_scope(engine) as session:
        total = session.exec(select(func.count()).select_from(Payment).where(*where)).one()
        rows = session.exec(
            select(Payment)
            .where(*where)
            .order_by(col(Payment.effective_date).desc(), col(Payment.id).desc())
            .limit(limit)
            .offset(max(0, offset))
        ).all()
    return PaymentPage(
        rows=[
            PaymentRow(
                id=row.id or 0,
                integration_id=row.integration_id,
                zuora_id=row.zuora_id,
                number=row.number,
                account_id=row.account_id,
                amount=row.amount,
                currency=row.currency,
                status=row.status,
                effective_date=row.effective_date,
                updated_date=row.updated_date,
                synced_at=row.synced_at,
            )
            for row in rows
        ],
        total=int(total),
    )
