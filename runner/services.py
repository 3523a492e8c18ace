"""What the runner shares between jobs: the engine, the vault, one client per connection, each with an
HTTP pool of its own.

Clients are built once per connection (and rebuilt when the connection is edited) so their token source
and concurrency cap are shared by every job that talks to that system. Each connection gets its own
connection pool, sized to that cap: httpcore checks every idle keep-alive connection of a pool on each
request it assigns, so one big pool shared by every system made each call pay for the idle sockets of
all the others (milliseconds of CPU a call). HTTP attempts are reported to the audit trail of whichever
job is running in the current asyncio task (a context variable), which is how a shared client writes
into the right job's audit record.

Per job, the executor reads the integration, its connections' edit stamps and its active mapping rows
in one transaction (storage.hot.job_state); `client_at` and `mappings_in_force` then reuse what was
built from those same rows.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

import httpx2
from anyio import to_thread
from sqlalchemy.engine import Engine

from connectors import network
from connectors.http import DEFAULT_TIMEOUT, ApiClient, Attempt, RetryPolicy
from connectors.registry import SYSTEMS, build_client
from storage import crud, hot
from storage.crypto import Vault
from storage.db import session_scope
from storage.hot import JobState
from storage.lookups import DEFAULT_LOOKUPS
from storage.lookups import PREFIX as LOOKUP_PREFIX
from storage.models import Connection, Integration, Mapping
from storage.settings import Settings
from storage.tokens import StoredTokens

current_trail: contextvars.ContextVar[list[Attempt] | None] = contextvars.ContextVar(
    "current_trail", default=None
)

DEFAULT_CONCURRENCY = {"netsuite": 5, "zuora": 40, "zoho": 10}  # in-flight calls per connection
DEFAULT_LANE_LIMIT = 10  # jobs of one integration running at once, when its target names no cap
LANE_LIMIT_TTL = 60.0  # seconds a lane limit is cached
SPECS_KEPT = 500  # mapping rows (and lookup table sets) remembered before the cache starts afresh


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
    # A pool to share between every connection (tests, previews); None: each connection gets its own.
    http: httpx2.AsyncClient | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # Observers for metrics: every remote call, and every finished job (flow, outcome, seconds).
    on_call: Callable[[Attempt], None] | None = None
    on_job: Callable[[str, str, float], None] | None = None
    _clients: dict[int, tuple[datetime, ApiClient]] = field(default_factory=dict)
    _pools: dict[int, tuple[int, httpx2.AsyncClient]] = field(default_factory=dict)  # id → (size, pool)
    _retired: list[httpx2.AsyncClient] = field(default_factory=list)
    _lane_limits: dict[int, tuple[float, int]] = field(default_factory=dict)
    _specs: dict[int, dict[str, Any]] = field(default_factory=dict)  # mapping row id → spec
    _tables: dict[tuple[int, ...], dict[str, dict[str, Any]]] = field(default_factory=dict)
    _mappings: dict[int, Mapping] = field(default_factory=dict)  # mapping row id → the row, as read

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

    async def client_at(self, connection_id: int, updated_at: datetime | None) -> ApiClient:
        """The shared client of a connection the caller just saw last edited at `updated_at`: the cached
        one while it was built from that edit, without reading the connection again."""
        cached = self._clients.get(connection_id)
        if cached is not None and updated_at is not None and cached[0] == updated_at:
            return cached[1]
        return await self.client_for(connection_id)

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
            http=self.http or self._pool(connection_id, limit),
            tokens_from=tokens_from,
            on_attempt=self._attempted,
            retry=self.retry,
            max_concurrency=limit,
        )

    def _pool(self, connection_id: int, size: int) -> httpx2.AsyncClient:
        """The connection's own HTTP pool, `size` connections (its concurrency cap, which the client's
        semaphore enforces, token requests included). Kept across edits of the connection unless the
        cap changed; a replaced pool is closed with the services, after the calls still using it."""
        found = self._pools.get(connection_id)
        if found is not None and found[0] == size:
            return found[1]
        if found is not None:
            self._retired.append(found[1])
        pool = network.async_client(timeout=DEFAULT_TIMEOUT, max_connections=size)
        self._pools[connection_id] = (size, pool)
        return pool

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

    async def mappings_in_force(self, state: JobState) -> tuple[dict[str, dict[str, Any]], Mapping | None]:
        """The lookup tables and the flow's mapping that `state` names as active. Mapping rows never
        change once written, so specs are read once by row id, and the tables built from the same rows
        are one shared object (mappings only read them)."""
        wanted = [row.id for row in state.lookups]
        if state.flow_mapping is not None:
            wanted.append(state.flow_mapping.id)
        unknown = [row_id for row_id in wanted if row_id not in self._specs]
        if unknown:
            if len(self._specs) + len(unknown) > SPECS_KEPT:
                self._specs.clear()
                self._tables.clear()
                unknown = wanted
            self._specs.update(await to_thread.run_sync(partial(hot.mapping_specs, self.engine, unknown)))
        key = tuple(row.id for row in state.lookups)
        tables = self._tables.get(key)
        if tables is None:
            tables = {name: dict(rows) for name, rows in DEFAULT_LOOKUPS.items()}
            for row in state.lookups:  # by row id: a table saved twice active keeps its newest rows
                spec = self._specs.get(row.id) or {}
                tables[row.flow.removeprefix(LOOKUP_PREFIX)] = dict(spec.get("rows") or {})
            if len(self._tables) >= SPECS_KEPT:
                self._tables.clear()
            self._tables[key] = tables
        mapping = None
        if state.flow_mapping is not None:
            row = state.flow_mapping
            mapping = self._mappings.get(row.id)
            if mapping is None:
                spec = self._specs.get(row.id) or {}
                mapping = Mapping(id=row.id, flow=row.flow, version=row.version, spec=spec)
                if len(self._mappings) >= SPECS_KEPT:
                    self._mappings.clear()
                self._mappings[row.id] = mapping
        return tables, mapping

    async def integration(self, integration_id: int) -> Integration | None:
        return await to_thread.run_sync(
            partial(crud.get_integration, self.engine, integration_id=integration_id)
        )

    async def aclose(self) -> None:
        """Close the HTTP pools: each connection's own, and a shared one handed in (closed here as before)."""
        pools = [*self._retired, *(pool for _, pool in self._pools.values())]
        if self.http is not None:
            pools.append(self.http)
        self._pools.clear()
        self._retired.clear()
        for pool in pools:
            await pool.aclose()
