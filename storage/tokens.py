"""Access tokens kept in the database per connection, encrypted, refreshed single-flight.

`StoredTokens` is the `TokenSource` the runner gives its clients. A refresh holds the connection's token
row under lock while it calls the token endpoint: `SELECT … FOR UPDATE` on PostgreSQL, a write
transaction on SQLite. Whoever waited on the lock re-reads the row and uses the token just stored instead
of minting another, so N workers or N runner processes cause one refresh (design.md invariant 5). A
failed refresh sets a cool-down so a broken credential is not hammered (Zoho blocks a refresh token for
the rest of a 10-minute window after 10 token requests).

A token is refreshed ahead of its expiry, when refused, and at least daily (`MAX_TOKEN_AGE`). Every
refresh has a reason: the row's `reason` holds the last, `extra["refresh_log"]` the last `REFRESH_LOG`
(time, reason, outcome) for the Health page, and the token call's audit attempt names it too
(connectors.auth.refreshing). `StoredRefreshBudget` lets the app's own token requests for a saved
connection count against the same budget as the runner's.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from anyio import CapacityLimiter, to_thread
from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine

from connectors.auth import MAX_TOKEN_AGE, REFRESH_MARGIN, TokenFetcher, refreshing
from connectors.errors import ConnectorError, Deferred
from storage.crypto import Vault
from storage.models import Token
from storage.types import utcnow

COOLDOWN_BASE = 15.0  # seconds after the first failed refresh
COOLDOWN_CAP = 600.0  # seconds
REFRESH_LOG = 20  # refreshes (and failed attempts) remembered per connection, newest last
TOKEN = Token.__table__  # type: ignore[attr-defined]


class StoredTokens:
    """Tokens of one connection, cached in the `token` table."""

    def __init__(
        self,
        fetch: TokenFetcher,
        *,
        engine: Engine,
        vault: Vault,
        connection_id: int,
        system: str,
        margin: float = REFRESH_MARGIN,
        max_age: float = MAX_TOKEN_AGE,
        budget: tuple[int, float] | None = None,
    ) -> None:
        """`budget` = (refreshes, window seconds) this connection may make, across every process;
        `max_age` = seconds after which a token is refreshed however long it would still last."""
        self._fetch = fetch
        self._budget = budget
        self._engine = engine
        self._vault = vault
        self._connection_id = connection_id
        self._system = system
        self._margin = margin
        self._max_age = max_age
        self._lock = asyncio.Lock()
        # The refresh holds the token row locked (on SQLite, the database's write lock) while it awaits
        # the token endpoint. Its database calls get a thread limiter of their own, so they never queue
        # behind worker threads that are themselves waiting for that lock (a deadlock until timeouts).
        self._limiter = CapacityLimiter(1)
        self._extra: dict[str, Any] = {}
        self._cached: tuple[str, datetime] | None = None  # (token, good until) last read or minted here
        self.refreshes = 0  # refreshes this process made

    @property
    def extra(self) -> dict[str, Any]:
        return self._extra

    async def get(self, *, stale: str | None = None, reason: str = "") -> str:
        # The token last read or minted here, while it is good: no database read per call. A token
        # another process refreshed meanwhile is only newer; ours stays valid until its own expiry, and a
        # 401 (`stale`) always goes back to the database.
        cached = self._cached
        if cached is not None and cached[0] != stale and cached[1] > utcnow():
            return cached[0]
        token, _why = await to_thread.run_sync(self._usable, stale)
        if token is not None:
            return token
        async with self._lock:
            token, _why = await to_thread.run_sync(self._usable, stale)
            if token is not None:
                return token
            return await self._refresh(stale, reason)

    # --- internals --------------------------------------------------------------------------
    def _usable(self, stale: str | None, connection: Connection | None = None) -> tuple[str | None, str]:
        """The stored token when it may be handed out, else None and why it needs refreshing."""
        if connection is None:
            with self._engine.connect() as conn:
                row = conn.execute(select(TOKEN).where(TOKEN.c.connection_id == self._connection_id)).first()
        else:
            row = connection.execute(
                self._select_for_update().where(TOKEN.c.connection_id == self._connection_id)
            ).first()
        if row is None or not row.access_token_encrypted or row.expires_at is None:
            return None, "no token yet"
        now = utcnow()
        good_until = _aware(row.expires_at) - timedelta(seconds=self._margin)
        if good_until <= now:
            return None, "expiring"
        if row.refreshed_at is not None:  # a row without it predates the daily rule: its expiry decides
            daily = _aware(row.refreshed_at) + timedelta(seconds=self._max_age)
            if daily <= now:
                return None, "older than 24 h (refreshed at least daily)"
            good_until = min(good_until, daily)
        token = self._vault.decrypt(row.access_token_encrypted)
        if token == stale:
            return None, "rejected"
        self._extra = dict(row.extra or {})
        self._cached = (str(token), good_until)
        return str(token), ""

    def _select_for_update(self) -> Any:
        query = select(TOKEN)
        return query.with_for_update() if self._engine.dialect.name == "postgresql" else query

    async def _refresh(self, stale: str | None, reason: str) -> str:
        """Mint a token under the row lock; `reason` (or, when empty, what the locked row shows) is
        recorded."""
        connection = await to_thread.run_sync(self._lock_row, limiter=self._limiter)
        try:
            token, why = await to_thread.run_sync(self._usable, stale, connection, limiter=self._limiter)
            if token is not None:
                await to_thread.run_sync(connection.commit, limiter=self._limiter)
                return token
            reason = reason or why
            cooldown = await to_thread.run_sync(self._cooldown, connection, limiter=self._limiter)
            if cooldown is not None:
                until, last_failure = cooldown
                raise Deferred(
                    f"token refresh is cooling down until {until:%H:%M:%S} UTC after a failure ({last_failure})",
                    system=self._system,
                    retry_after=max(1.0, (until - utcnow()).total_seconds()),
                )
            extra = await to_thread.run_sync(self._row_extra, connection, limiter=self._limiter)
            recent = self._recent_refreshes(extra)
            self._check_budget(recent)
            try:
                with refreshing(reason):
                    grant = await self._fetch()
            except ConnectorError as exc:
                await to_thread.run_sync(
                    self._record_failure,
                    connection,
                    f"{reason}: {exc.message}",
                    recent,
                    extra,
                    limiter=self._limiter,
                )
                raise
            now = utcnow()
            expires_at = now + timedelta(seconds=grant.expires_in)
            values = {
                "access_token_encrypted": self._vault.encrypt(grant.access_token),
                "expires_at": expires_at,
                "refreshed_at": now,
                "reason": reason[:100],
                "failures": 0,
                "cooldown_until": None,
                "extra": {
                    **grant.extra,
                    "refresh_times": [*recent, now.timestamp()],
                    "refresh_log": _logged(extra, now, reason, ok=True),
                },
            }
            await to_thread.run_sync(self._store, connection, values, limiter=self._limiter)
            self._extra = dict(values["extra"])
            good_until = min(
                expires_at - timedelta(seconds=self._margin), now + timedelta(seconds=self._max_age)
            )
            self._cached = (grant.access_token, good_until)
            self.refreshes += 1
            return grant.access_token
        finally:
            await to_thread.run_sync(_close, connection, limiter=self._limiter)

    def _lock_row(self) -> Connection:
        """Open a transaction holding this connection's token row (created empty when missing)."""
        return _lock_row(self._engine, self._connection_id)

    def _cooldown(self, connection: Connection) -> tuple[datetime, str] | None:
        row = connection.execute(
            select(TOKEN.c.cooldown_until, TOKEN.c.reason).where(TOKEN.c.connection_id == self._connection_id)
        ).first()
        if row is None or row.cooldown_until is None:
            return None
        until = _aware(row.cooldown_until)
        return (until, row.reason) if until > utcnow() else None

    def _row_extra(self, connection: Connection) -> dict[str, Any]:
        return _row_extra(connection, self._connection_id)

    def _recent_refreshes(self, extra: dict[str, Any]) -> list[float]:
        """When this connection's tokens were minted within the budget window (epoch seconds)."""
        return _recent(extra, self._budget[1] if self._budget else 0.0)

    def _check_budget(self, recent: list[float]) -> None:
        # Zoho blocks a refresh token for the rest of a 10-minute window after 10 token requests; our
        # budget stays under it so our own refreshes never lock the connection out.
        if self._budget is None or len(recent) < self._budget[0]:
            return
        window = self._budget[1]
        wait = max(1.0, min(recent) + window - utcnow().timestamp())
        raise Deferred(
            f"{len(recent)} token refreshes in the last {window / 60:.0f} minutes; waiting {wait:.0f}s to stay "
            f"under the {self._system} token limit",
            system=self._system,
            retry_after=wait,
        )

    def _record_failure(
        self, connection: Connection, reason: str, recent: list[float], extra: dict[str, Any]
    ) -> None:
        row = connection.execute(
            select(TOKEN.c.failures).where(TOKEN.c.connection_id == self._connection_id)
        ).first()
        failures = (row.failures if row else 0) + 1
        wait = min(COOLDOWN_CAP, COOLDOWN_BASE * 2 ** (failures - 1))
        now = utcnow()
        # A refused token request counts against the system's token limit just like a granted one.
        extra = {
            **extra,
            "refresh_times": [*recent, now.timestamp()],
            "refresh_log": _logged(extra, now, reason, ok=False),
        }
        connection.execute(
            update(TOKEN)
            .where(TOKEN.c.connection_id == self._connection_id)
            .values(
                failures=failures,
                cooldown_until=utcnow() + timedelta(seconds=wait),
                reason=reason[:100],
                extra=extra,
            )
        )
        connection.commit()

    def _store(self, connection: Connection, values: dict[str, Any]) -> None:
        connection.execute(update(TOKEN).where(TOKEN.c.connection_id == self._connection_id).values(**values))
        connection.commit()


class StoredRefreshBudget:
    """A saved connection's refresh budget (the one `StoredTokens` keeps), spent by the app's own token
    requests (a ping, setting up a Zoho channel): app and runner count in the same `refresh_times`, so
    together they stay under the system's limit. A `connectors.auth.RefreshBudget`."""

    def __init__(self, *, engine: Engine, connection_id: int, system: str, budget: tuple[int, float]) -> None:
        self._engine = engine
        self._connection_id = connection_id
        self._system = system
        self._budget = budget

    async def spend(self) -> None:
        spent = await to_thread.run_sync(self._take)
        if spent is None:
            return
        made, wait = spent
        raise Deferred(
            f"{made} token requests for this connection in the last {self._budget[1] / 60:.0f} minutes (the "
            f"runner's and the app's together), as many as stays under the {self._system} token limit",
            system=self._system,
            retry_after=wait,
        )

    def _take(self) -> tuple[int, float] | None:
        limit, window = self._budget
        connection = _lock_row(self._engine, self._connection_id)
        try:
            if self._engine.dialect.name == "postgresql":  # SQLite's BEGIN IMMEDIATE already holds it
                query = select(TOKEN.c.id).where(TOKEN.c.connection_id == self._connection_id)
                connection.execute(query.with_for_update())
            extra = _row_extra(connection, self._connection_id)
            recent = _recent(extra, window)
            if len(recent) >= limit:
                return len(recent), max(1.0, min(recent) + window - utcnow().timestamp())
            connection.execute(
                update(TOKEN)
                .where(TOKEN.c.connection_id == self._connection_id)
                .values(extra={**extra, "refresh_times": [*recent, utcnow().timestamp()]})
            )
            connection.commit()
            return None
        finally:
            _close(connection)


def refresh_log(extra: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The refreshes a token row remembers, oldest first: {"at": ISO time, "reason": ..., "ok": bool}."""
    return list((extra or {}).get("refresh_log") or [])


def _logged(extra: dict[str, Any], at: datetime, reason: str, *, ok: bool) -> list[dict[str, Any]]:
    entry = {"at": at.isoformat(timespec="seconds"), "reason": reason[:200], "ok": ok}
    return [*refresh_log(extra), entry][-REFRESH_LOG:]


def _recent(extra: dict[str, Any], window: float) -> list[float]:
    """The refresh times in `extra` within the last `window` seconds (epoch seconds)."""
    horizon = utcnow().timestamp() - window
    return [float(t) for t in (extra.get("refresh_times") or []) if float(t) > horizon]


def _row_extra(connection: Connection, connection_id: int) -> dict[str, Any]:
    row = connection.execute(select(TOKEN.c.extra).where(TOKEN.c.connection_id == connection_id)).first()
    return dict((row.extra if row else None) or {})


def _lock_row(engine: Engine, connection_id: int) -> Connection:
    """Open a transaction holding a connection's token row (created empty when missing)."""
    _ensure_row(engine, connection_id)
    connection = engine.connect()
    if engine.dialect.name == "sqlite":
        connection.info["sqlite_begin"] = "BEGIN IMMEDIATE"
    connection.begin()
    return connection


def _ensure_row(engine: Engine, connection_id: int) -> None:
    with engine.connect() as connection:
        exists = connection.execute(select(TOKEN.c.id).where(TOKEN.c.connection_id == connection_id)).first()
        if exists:
            return
    # Insert-or-ignore: the first statement of its transaction is the write, so SQLite never has to
    # upgrade a read lock (which fails at once when another process wrote meanwhile).
    values = {
        "connection_id": connection_id,
        "access_token_encrypted": "",
        "reason": "",
        "failures": 0,
        "extra": {},
    }
    statement = (
        postgresql_insert(TOKEN).values(**values).on_conflict_do_nothing(index_elements=["connection_id"])
        if engine.dialect.name == "postgresql"
        else sqlite_insert(TOKEN).values(**values).on_conflict_do_nothing(index_elements=["connection_id"])
    )
    with engine.begin() as connection:
        connection.execute(statement)


def _close(connection: Connection) -> None:
    if connection.in_transaction():
        connection.rollback()
    connection.close()


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
