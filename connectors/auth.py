"""Access tokens as the clients see them: a grant from a token endpoint and a source that caches it.

A client only ever asks its `TokenSource` for a token; where the token is kept (memory for a ping,
the database for the runner, see storage.tokens) is the source's business.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

REFRESH_MARGIN = 300.0  # seconds before expiry at which a token counts as stale (Zuora's own sample)


@dataclass(frozen=True)
class TokenGrant:
    """What a token endpoint gave us."""

    access_token: str
    expires_in: float  # seconds
    extra: dict[str, Any] = field(default_factory=dict)  # non-secret facts (Zoho's api_domain)


TokenFetcher = Callable[[], Awaitable[TokenGrant]]


class TokenSource(Protocol):
    """Hands out a valid access token, refreshing it when asked or when it is about to expire."""

    async def get(self, *, stale: str | None = None, reason: str = "") -> str:
        """A token; with `stale`, one that is not `stale` (the caller saw it rejected)."""
        ...

    @property
    def extra(self) -> dict[str, Any]:
        """Non-secret facts from the last grant."""
        ...


class MemoryTokens:
    """A token source that keeps the grant in memory: for pings, previews and tests."""

    def __init__(self, fetch: TokenFetcher, *, margin: float = REFRESH_MARGIN) -> None:
        self._fetch = fetch
        self._margin = margin
        self._token: str | None = None
        self._expires_at = 0.0
        self._extra: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self.refreshes = 0

    @property
    def extra(self) -> dict[str, Any]:
        return self._extra

    async def get(self, *, stale: str | None = None, reason: str = "") -> str:
        async with self._lock:
            fresh = self._token is not None and time.time() < self._expires_at - self._margin
            if fresh and self._token != stale:
                return self._token  # type: ignore[return-value]
            grant = await self._fetch()
            self._token = grant.access_token
            self._expires_at = time.time() + grant.expires_in
            self._extra = dict(grant.extra)
            self.refreshes += 1
            return self._token
