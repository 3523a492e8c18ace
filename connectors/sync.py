"""A small synchronous doorway to the async clients, for the app (Streamlit runs pages in threads
without an event loop). Each call runs its own short event loop with its own HTTP pool.

The app's token requests are budgeted: a person pinging a Zoho connection a dozen times in a row must
not lock its refresh token out for the runner (Zoho allows 10 tokens per refresh token per 10 minutes,
shared/api/zoho.md §1a). By default they spend from the app's own share (`SystemEntry.app_refresh_budget`,
counted per credential in this process); a caller that knows the saved connection may hand in the
runner's database-backed budget instead (storage.tokens.StoredRefreshBudget), so app and runner share
one count.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

import httpx2

from connectors.auth import APP_LEDGER, LedgerBudget, MemoryTokens, RefreshBudget, TokenFetcher, TokenSource
from connectors.errors import ConfigurationError
from connectors.http import DEFAULT_TIMEOUT, ApiClient
from connectors.ping import PingResult, ping
from connectors.registry import SYSTEMS, build_client

T = TypeVar("T")


def run(work: Callable[[httpx2.AsyncClient], Awaitable[T]]) -> T:
    """Run `work(http)` to completion from synchronous code and return its result."""

    async def main() -> T:
        async with httpx2.AsyncClient(timeout=DEFAULT_TIMEOUT) as http:
            return await work(http)

    return asyncio.run(main())


def app_budget(system: str, *, base_url: str, secrets: dict[str, Any]) -> RefreshBudget | None:
    """The app's token budget for one credential of `system` (None when the system needs none): keyed
    by a fingerprint of the base URL and secrets, so a corrected secret is its own credential."""
    entry = SYSTEMS[system]
    if entry.app_refresh_budget is None:
        return None
    material = "\0".join([system, base_url.rstrip("/"), *(f"{k}={secrets[k]}" for k in sorted(secrets))])
    key = f"{system}:{hashlib.sha256(material.encode()).hexdigest()[:32]}"
    limit, window = entry.app_refresh_budget
    return LedgerBudget(APP_LEDGER, key, limit, window, system, entry.spec.title)


def _tokens_from(budget: RefreshBudget | None) -> Callable[[TokenFetcher], TokenSource]:
    return partial(MemoryTokens, budget=budget)


def ping_connection(
    system: str,
    *,
    base_url: str,
    settings: dict[str, Any],
    secrets: dict[str, Any],
    sandbox: bool,
    refresh_budget: RefreshBudget | None = None,
) -> PingResult:
    """Ping a connection as entered (before or after saving); never raises for a bad connection.

    The token exchange spends from `refresh_budget`, or from the app's own budget when none is given;
    a spent budget is a failed ping saying how long to wait."""
    problems = SYSTEMS[system].spec.validate({**settings, **secrets})
    if problems:
        return PingResult(system, False, 0.0, "; ".join(problems.values()), reaction="config")
    try:
        return with_client(
            system,
            base_url=base_url,
            settings=settings,
            secrets=secrets,
            sandbox=sandbox,
            call=ping,
            refresh_budget=refresh_budget,
        )
    except ConfigurationError as exc:  # refused before any call: a host outside the system's list
        return PingResult(system, False, 0.0, exc.message, reaction="config")


def with_client(
    system: str,
    *,
    base_url: str,
    settings: dict[str, Any],
    secrets: dict[str, Any],
    sandbox: bool,
    call: Callable[[ApiClient], Awaitable[T]],
    refresh_budget: RefreshBudget | None = None,
) -> T:
    """Build a throwaway client and run one call with it (the app sets up Zoho channels this way); its
    token requests are budgeted as `ping_connection`'s are."""
    budget = refresh_budget or app_budget(system, base_url=base_url, secrets=secrets)

    async def work(http: httpx2.AsyncClient) -> T:
        client = build_client(
            system,
            base_url=base_url,
            settings=settings,
            secrets=secrets,
            sandbox=sandbox,
            http=http,
            tokens_from=_tokens_from(budget),
        )
        return await call(client)

    return run(work)
