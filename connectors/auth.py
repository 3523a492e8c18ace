"""Access tokens as the clients see them: a grant from a token endpoint and a source that caches it.

A client only ever asks its `TokenSource` for a token; where the token is kept (memory for a ping,
the database for the runner, see storage.tokens) is the source's business. Every source refreshes a
token ahead of its expiry, when it was refused (a 401), and at least daily (`MAX_TOKEN_AGE`), and names
the reason while it fetches (`refresh_reason()`), so the token call's audit attempt records why.

A `RefreshBudget` caps how many token requests a source may make: Zoho blocks a refresh token for the
rest of a 10-minute window after 10 (shared/api/zoho.md §1a). The runner's budget is kept in the
database (storage.tokens); app-side calls (pings, grant exchanges) spend from `APP_LEDGER`, kept in the
app's process.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from connectors.errors import Deferred

REFRESH_MARGIN = 300.0  # seconds before expiry at which a token counts as stale (Zuora's own sample)
MAX_TOKEN_AGE = 86400.0  # seconds: a token is refreshed at least daily, however long it would last

_REFRESH_REASON: ContextVar[str | None] = ContextVar("refresh_reason", default=None)


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint gave us."""

    access_token: str
    expires_in: float  # seconds
    extra: dict[str, Any] = field(default_factory=dict)  # non-secret facts (Zoho's api_domain)


TokenFetcher = Callable[[], Awaitable[TokenGrant]]


@contextmanager
def refreshing(reason: str) -> Iterator[None]:
    """Name why the token request made inside this block is made (the client puts it on the attempt)."""
    token = _REFRESH_REASON.set(reason)
    try:
        yield
    finally:
        _REFRESH_REASON.reset(token)


def refresh_reason() -> str | None:
    """Why the token request being made now is made, when a token source said so."""
    return _REFRESH_REASON.get()


class TokenSource(Protocol):
    """Hands out a valid access token, refreshing it when asked or when it is about to expire."""

    async def get(self, *, stale: str | None = None, reason: str = "") -> str:
        """A token; with `stale`, one that is not `stale` (the caller saw it rejected)."""
        ...

    @property
    def extra(self) -> dict[str, Any]:
        """Non-secret facts from the last grant."""
        ...


class RefreshBudget(Protocol):
    """How many token requests a source may still make."""

    async def spend(self) -> None:
        """Count one token request about to be made, or raise Deferred (with `retry_after`) when the
        budget is spent."""
        ...


class RefreshLedger:
    """When token requests were made, per credential, in this process (thread-safe: Streamlit runs each
    page in a thread of its own, each with its own event loop)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._times: dict[str, list[float]] = {}

    def take(self, key: str, limit: int, window: float) -> tuple[int, float] | None:
        """Count one request for `key` and return None, or, when `limit` were made within the last `window`
        seconds, count nothing and return (requests made, seconds until the oldest leaves the window)."""
        now = self._clock()
        with self._lock:
            recent = [t for t in self._times.get(key, []) if t > now - window]
            if len(recent) >= limit:
                self._times[key] = recent
                return len(recent), max(1.0, min(recent) + window - now)
            self._times[key] = [*recent, now]
            return None

    def clear(self) -> None:
        with self._lock:
            self._times.clear()


# Token requests made by app-side calls (pings, previews, grant exchanges) in this process.
APP_LEDGER = RefreshLedger()


@dataclass(frozen=True)
class LedgerBudget:
    """A `RefreshBudget` of `limit` token requests per `window` seconds for one credential, in a ledger."""

    ledger: RefreshLedger
    key: str  # a fingerprint of the credential the limit applies to (never the credential itself)
    limit: int
    window: float  # seconds
    system: str
    title: str  # the system's name, for the message

    async def spend(self) -> None:
        spent = self.ledger.take(self.key, self.limit, self.window)
        if spent is None:
            return
        made, wait = spent
        raise Deferred(
            f"{made} sign-ins to {self.title} from the app in the last {self.window / 60:.0f} minutes: as many "
            f"as {self.title} allows beside the runner's, which keeps the connection from being locked out",
            system=self.system,
            retry_after=wait,
        )


def minutes(seconds: float) -> str:
    """`seconds` as whole minutes a person waits ("1 minute", "7 minutes"), rounded up."""
    count = max(1, math.ceil(seconds / 60))
    return f"{count} minute{'s' if count != 1 else ''}"


class MemoryTokens:
    """A token source that keeps the grant in memory: for pings, previews and tests.

    `budget`, when given, is spent before every token request; `clock` (epoch seconds) is injectable so
    tests move time instead of waiting.
    """

    def __init__(
        self,
        fetch: TokenFetcher,
        *,
        margin: float = REFRESH_MARGIN,
        max_age: float = MAX_TOKEN_AGE,
        budget: RefreshBudget | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._margin = margin
        self._max_age = max_age
        self._budget = budget
        self._clock = clock
        self._token: str | None = None
        self._expires_at = 0.0
        self._fetched_at = 0.0
        self._extra: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.refreshes = 0
        self.reasons: list[str] = []  # why each refresh was made, oldest first

    @property
    def extra(self) -> dict[str, Any]:
        return self._extra

    def needs_refresh(self, stale: str | None = None) -> str | None:
        """Why the token held now cannot be handed out, or None when it can."""
        now = self._clock()
        if self._token is None:
            return "no token yet"
        if self._token == stale:
            return "rejected"
        if now >= self._expires_at - self._margin:
            return "expiring"
        if now - self._fetched_at >= self._max_age:
            return "older than 24 h (refreshed at least daily)"
        return None

    async def get(self, *, stale: str | None = None, reason: str = "") -> str:
        async with self._lock:
            why = self.needs_refresh(stale)
            if why is None:
                return self._token  # type: ignore[return-value]
            why = reason or why
            if self._budget is not None:
                await self._budget.spend()
            with refreshing(why):
                grant = await self._fetch()
            now = self._clock()
            self._token = grant.access_token
            self._expires_at = now + grant.expires_in
            self._fetched_at = now
            self._extra = dict(grant.extra)
            self.refreshes += 1
            self.reasons.append(why)
            return self._token
