"""A small synchronous doorway to the async clients, for the app (Streamlit runs pages in threads
without an event loop). Each call runs its own short event loop with its own HTTP pool."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx2

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


def ping_connection(
    system: str, *, base_url: str, settings: dict[str, Any], secrets: dict[str, Any], sandbox: bool
) -> PingResult:
    """Ping a connection as entered (before or after saving); never raises for a bad connection."""
    problems = SYSTEMS[system].spec.validate({**settings, **secrets})
    if problems:
        return PingResult(system, False, 0.0, "; ".join(problems.values()), reaction="config")
    try:

        async def work(http: httpx2.AsyncClient) -> PingResult:
            client = build_client(
                system, base_url=base_url, settings=settings, secrets=secrets, sandbox=sandbox, http=http
            )
            return await ping(client)

        return run(work)
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
) -> T:
    """Build a throwaway client and run one call with it (previews fetch a sample record this way)."""

    async def work(http: httpx2.AsyncClient) -> T:
        client = build_client(
            system, base_url=base_url, settings=settings, secrets=secrets, sandbox=sandbox, http=http
        )
        return await call(client)

    return run(work)
