"""What the runner shares between jobs: the engine, the vault, one HTTP pool, one client per connection.

Clients are built once per connection (and rebuilt when the connection is edited) so their token source
and concurrency cap are shared by every job that talks to that system. HTTP attempts are reported to the
audit trail of whichever job is running in the current asyncio task (a context variable), which is how
a shared client writes into the right job's audit record.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import httpx2
from anyio import to_thread
from sqlalchemy.engine import Engine

from connectors.http import DEFAULT_TIMEOUT, ApiClient, Attempt, RetryPolicy
from connectors.registry import SYSTEMS, build_client
from storage import crud
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Connection, Integration
from storage.settings import Settings
from storage.tokens import StoredTokens

current_trail: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar(
    "current_trail", default=None
)

DEFAULT_CONCURRENCY = {"netsuite": 5, "zuora": 40, "zoho": 10}  # in-flight calls per connection
DEFAULT_LANE_LIMIT = 10  # jobs of one integration running at once, when its target names no cap
LANE_LIMIT_TTL = 60.0  # seconds a lane limit is cached


def record_attempt(attempt: Attempt) -> None:
    """The attempt hook of every runner client: append to the running job's trail, if any."""
    trail = current_trail.get()
    if trail is not None:
        trail.append(attempt)


@dataclass
class Services:
    engine: Engine
    vault: Vault
    settings: Settings
    http: httpx2.AsyncClient = field(
        default_factory=lambda: httpx2.AsyncClient(
            timeout=DEFAULT_TIMEOUT, limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50)
        )
    )
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Observers for metrics: every remote call, and every finished job (flow, outcome, seconds).
    on_call: Callable[[Attempt], None] | None = None
    on_job: Callable[[str, str, float], None] | None = None
    _clients: dict[int, tuple[datetime, ApiClient]] = field(default_factory=dict)
    _lane_limits: dict[int, tuple[float, int]] = field(default_factory=dict)

    async def client_for(self, connection_id: int) -> ApiClient:
        """The shared client of a connection, rebuilt when the connection changed."""
        connection = await to_thread.run_sync(
            partial(crud.get_connection, self.engine, connection_id=connection_id)
        )
        if connection is None:
            raise LookupError(f"connection {connection_id} no longer exists")
        cached = self._clients.get(connection_id)
        if cached is not None and cached[0] == connection.updated_at:
            return cached[1]
        client = self._build(connection)
        self._clients[connection_id] = (connection.updated_at, client)
        return client

    def _build(self, connection: Connection) -> ApiClient:
        assert connection.id is not None
        connection_id, system = connection.id, connection.system

        def tokens_from(fetch):  # type: ignore[no-untyped-def]
            return StoredTokens(
                fetch,
                engine=self.engine,
                vault=self.vault,
                connection_id=connection_id,
                system=system,
                budget=SYSTEMS[system].refresh_budget,
            )

        limit = int(connection.settings.get("max_concurrency") or DEFAULT_CONCURRENCY.get(system, 10))
        return build_client(
            system,
            base_url=connection.base_url,
            settings=connection.settings,
            secrets=crud.connection_secrets(self.vault, connection),
            sandbox=self.settings.sandbox,
            http=self.http,
            tokens_from=tokens_from,
            on_attempt=self._attempted,
            retry=self.retry,
            max_concurrency=limit,
        )

    def _attempted(self, attempt: Attempt) -> None:
        record_attempt(attempt)
        if self.on_call is not None:
            self.on_call(attempt)

    def lane_limit(self, integration_id: int) -> int:
        """How many of an integration's jobs may run at once: its target connection's concurrency cap
        (read from the database at most once a minute per integration)."""
        cached = self._lane_limits.get(integration_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < LANE_LIMIT_TTL:
            return cached[1]
        limit = DEFAULT_LANE_LIMIT
        with session_scope(self.engine) as session:
            integration = session.get(Integration, integration_id)
            target = session.get(Connection, integration.target_connection_id) if integration else None
            if target is not None:
                limit = int(
                    target.settings.get("max_concurrency") or DEFAULT_CONCURRENCY.get(target.system, limit)
                )
        self._lane_limits[integration_id] = (now, limit)
        return limit

    async def integration(self, integration_id: int) -> Integration | None:
        return await to_thread.run_sync(
            partial(crud.get_integration, self.engine, integration_id=integration_id)
        )

    async def aclose(self) -> None:
        await self.http.aclose()
