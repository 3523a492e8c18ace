"""Ping: the real token exchange plus one cheap authenticated call, with a verdict a person can act on.

Each client implements `probe()` (what a successful ping learns: account and company, tenant, org and
api_domain) and `explain(error)` (what to fix, in words a finance-ops user understands). `ping()` times
the whole exchange and never raises for a remote failure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from connectors.errors import ConnectorError, Deferred, TransientError
from connectors.http import ApiClient


@dataclass(frozen=True)
class PingResult:
    system: str
    ok: bool
    latency_ms: float
    message: str
    learned: dict[str, str] = field(default_factory=dict)
    reaction: str | None = None  # config | transient | remote, when it failed


def unreachable_hint(error: ConnectorError) -> str | None:
    """The message for a host we could not reach at all, shared by every system. A request we held back
    ourselves (Deferred: a token budget, a cool-down) reached nothing either, but was never sent."""
    if isinstance(error, TransientError) and not isinstance(error, Deferred) and error.status is None:
        host = error.url.split("/")[2] if error.url.count("/") >= 2 else error.url
        return (
            f"Could not reach {host or 'the server'}. Check the account id, region or data centre (they decide "
            "the address) and that this server can make outbound HTTPS connections."
        )
    return None


async def ping(client: ApiClient) -> PingResult:
    """Exchange credentials for a token, make one cheap call, and say how it went."""
    started = time.perf_counter()
    try:
        learned = await client.probe()
    except ConnectorError as exc:
        elapsed = (time.perf_counter() - started) * 1000
        message = unreachable_hint(exc) or client.explain(exc)
        return PingResult(client.system, False, elapsed, message, reaction=exc.reaction)
    elapsed = (time.perf_counter() - started) * 1000
    summary = ", ".join(f"{k}: {v}" for k, v in learned.items() if v)
    return PingResult(
        client.system, True, elapsed, f"Connected ({summary})" if summary else "Connected", learned
    )
