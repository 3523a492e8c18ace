"""What webhook intake reads and writes: the integration a URL names, and the event with its jobs.

Intake is the hot path of the runner (every webhook of every tenant), so this module keeps it to one
read per integration now and then and one short write transaction per delivery, in SQLAlchemy Core:

    read_integration   one SELECT: the integration under a URL key, its webhook secrets decrypted
    IntegrationCache   those reads kept in memory for a while (see "Staleness" below)
    store_delivery     one transaction: INSERT the event (a duplicate delivery key inserts nothing),
                       check the integration row is still the one the delivery was judged against,
                       INSERT its jobs; committed before the caller answers (design.md invariant 1)

Staleness. A cached integration may lag behind what the app just saved (a rotated or revoked secret,
a tightened IP allowlist, other flows, a deleted integration). None of that lag is acceptable for a
decision about a delivery, and none reaches one:

* an accepted delivery is stored only if the integration row, re-read inside the storing transaction
  after the event's INSERT, is exactly the row the cached copy was read from (`IntegrationChanged`
  otherwise, and the transaction rolls back); a deleted integration fails the event's foreign key
  the same way. The caller then reads the integration afresh and judges the delivery again.
* a refusal decided on a cached copy is decided again on a fresh read before it is answered (the
  runner.intake side), so a sender who already switched to the new secret is not turned away.

So the cache saves the lookup transaction and the decryption, never a check. Its TTL only bounds how
long decrypted secrets of an integration that stopped sending stay in memory; grace periods are
computed per delivery from the cached rotation time, so they end on time, cache or not.
"""

from __future__ import annotations

import contextlib
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Executable

from storage import webhook_secrets
from storage.crypto import Vault
from storage.models import InboundEvent, Integration, Job, JobKind, JobStatus
from storage.types import utcnow

CACHE_TTL = 60.0  # seconds a cached integration is used before it is read again (see the docstring)
CACHE_SIZE = 1024  # integrations kept at most; past it the cache starts over
MAX_JOB_ATTEMPTS = 8  # as storage.queue.enqueue's default

INTEGRATION: Table = Integration.__table__  # type: ignore[attr-defined]
EVENT: Table = InboundEvent.__table__  # type: ignore[attr-defined]
JOB: Table = Job.__table__  # type: ignore[attr-defined]
# What a delivery is judged on; the storing transaction compares these columns with the cached copy.
STAMP_COLUMNS = (
    INTEGRATION.c.key,
    INTEGRATION.c.flows,
    INTEGRATION.c.settings,
    INTEGRATION.c.webhook_secrets_encrypted,
)


class IntegrationChanged(Exception):
    """The integration was changed or deleted after the copy a delivery was judged on was read:
    nothing was stored, judge the delivery again on a fresh read."""


@dataclass(frozen=True, eq=False)
class IntakeIntegration:
    """An integration as intake sees it: id, key, flows, settings and webhook secrets (decrypted)."""

    id: int
    key: str
    flows: list[str]
    settings: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)  # never printed: see design.md invariant 6
    stamp: tuple[Any, ...] = field(repr=False)  # STAMP_COLUMNS as read
    _flows_for: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def accepted_secrets(self, name: str, now: datetime | None = None) -> list[str]:
        """The values of webhook secret `name` a delivery may carry now (storage.webhook_secrets)."""
        return webhook_secrets.accepted_values(self.secrets, self.settings, name, now)

    def flows_for(self, what: str, compute: Callable[[list[str]], list[str]]) -> list[str]:
        """`compute(self.flows)`, remembered under `what` (e.g. "netsuite:customer") while this copy
        lives: the flows an event feeds depend only on the integration's flows and the event's kind."""
        found = self._flows_for.get(what)
        if found is None:
            found = self._flows_for[what] = compute(list(self.flows))
        return found


def read_integration(engine: Engine, vault: Vault, key: str) -> IntakeIntegration | None:
    """The integration under webhook key `key`, or None."""
    with engine.connect() as connection:
        row = connection.execute(_statements(engine.dialect.name).integration, {"key": key}).first()
    if row is None:
        return None
    integration_id, *stamp = row
    _key, flows, settings, encrypted = stamp
    return IntakeIntegration(
        id=integration_id,
        key=_key,
        flows=list(flows or []),
        settings=dict(settings or {}),
        secrets=dict(vault.decrypt(encrypted) or {}) if encrypted else {},
        stamp=tuple(stamp),
    )


class IntegrationCache:
    """Integrations by webhook key, each used for CACHE_TTL seconds after it was read.

    Safe to share between intake threads: a lookup and a store are single dict operations. Nothing
    about a missing key is remembered, so a new integration is served at once.
    """

    def __init__(self, engine: Engine, vault: Vault, *, ttl: float = CACHE_TTL) -> None:
        self.engine, self.vault, self.ttl = engine, vault, ttl
        self._entries: dict[str, tuple[float, IntakeIntegration]] = {}

    def cached(self, key: str) -> IntakeIntegration | None:
        """The copy read less than `ttl` seconds ago, if any; no database access."""
        entry = self._entries.get(key)
        if entry is None or time.monotonic() - entry[0] >= self.ttl:
            return None
        return entry[1]

    def fresh(self, key: str) -> IntakeIntegration | None:
        """Read the integration now, and keep it (or forget the key when there is none)."""
        integration = read_integration(self.engine, self.vault, key)
        if integration is None:
            self._entries.pop(key, None)
            return None
        if len(self._entries) >= CACHE_SIZE:
            self._entries.clear()
        self._entries[key] = (time.monotonic(), integration)
        return integration

    def forget(self, key: str | None = None) -> None:
        """Drop one key's copy (all when None): the next delivery reads the database."""
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


@dataclass(frozen=True)
class Stored:
    """The event row a delivery is stored as and its jobs' rows; `duplicate`: the delivery key was
    stored before, `event_id` is that first copy's and nothing new was kept."""

    event_id: int
    job_ids: list[int]
    duplicate: bool = False


def store_delivery(
    engine: Engine,
    integration: IntakeIntegration,
    *,
    system: str,
    delivery_key: str,
    body: str,
    headers: Mapping[str, str],
    remote_addr: str,
    jobs: Sequence[tuple[str, dict[str, Any]]],
) -> Stored:
    """Commit the event and its jobs (flow, payload) in one transaction, once per delivery key.

    A delivery key already stored for this integration and system is a redelivery: nothing is added
    and the first copy is reported. The event's INSERT ... ON CONFLICT DO NOTHING settles two copies
    arriving at once without an error. Raises IntegrationChanged, having stored nothing, when the
    integration row no longer matches `integration` (or is gone).
    """
    statements = _statements(engine.dialect.name)
    now = utcnow()
    event = {
        "integration_id": integration.id,
        "system": system,
        "delivery_key": delivery_key,
        "headers": dict(headers),
        "body": body,
        "remote_addr": remote_addr[:100],
        "received_at": now,
    }
    # The columns storage.queue.enqueue sets; the others take their column defaults, as there.
    rows = [
        {
            "integration_id": integration.id,
            "flow": flow,
            "kind": JobKind.SYNC,
            "status": JobStatus.QUEUED,
            "payload": payload,
            "event_id": None,  # known once the event is inserted
            "max_attempts": MAX_JOB_ATTEMPTS,
            "run_after": now,
        }
        for flow, payload in jobs
    ]
    try:
        # Everything that can be done before the transaction is: on SQLite it holds the write lock.
        with engine.connect() as connection, _writer_turn(engine), connection.begin():
            # The INSERT comes first: on SQLite it takes the write lock before anything is read, so the
            # check below reads the latest row and no other writer can slip in between.
            event_id = connection.execute(statements.event, event).scalar()
            stamp = connection.execute(statements.stamp, {"id": integration.id}).first()
            if stamp is None or tuple(stamp) != integration.stamp:
                raise IntegrationChanged(f"integration {integration.id} changed")
            if event_id is None:
                first = connection.execute(
                    statements.existing,
                    {"integration_id": integration.id, "system": system, "delivery_key": delivery_key},
                ).scalar_one()
                return Stored(event_id=first, job_ids=[], duplicate=True)
            for row in rows:
                row["event_id"] = event_id
            if not rows:
                job_ids = []
            elif len(rows) == 1:
                job_ids = [connection.execute(statements.job, rows[0]).scalar_one()]
            else:
                job_ids = list(connection.scalars(statements.job, rows))
            return Stored(event_id=event_id, job_ids=job_ids)
    except IntegrityError as exc:
        # The delivery key cannot conflict (ON CONFLICT DO NOTHING): the integration's foreign key
        # failed, because the integration was deleted since it was read.
        raise IntegrationChanged(f"integration {integration.id} is gone") from exc


# SQLite lets one transaction write at a time; a writer that finds the lock taken polls for it, sleeping
# 1, 2, 5, 10... ms between tries (its busy handler), so under load most of an intake thread's life
# would be spent asleep while the lock is free. Intake threads of one process take turns on a mutex
# instead, woken the moment the previous one commits; other processes still meet SQLite's own lock.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[Engine, threading.Lock] = weakref.WeakKeyDictionary()
_NO_TURN = contextlib.nullcontext()


def _writer_turn(engine: Engine) -> contextlib.AbstractContextManager[Any]:
    """The mutex an intake transaction holds on SQLite; nothing on PostgreSQL (row locks suffice)."""
    if engine.dialect.name != "sqlite":
        return _NO_TURN
    lock = _SQLITE_WRITERS.get(engine)
    if lock is None:
        lock = _SQLITE_WRITERS.setdefault(engine, threading.Lock())
    return lock


@dataclass(frozen=True)
class _Statements:
    integration: Executable
    stamp: Executable
    event: Executable
    existing: Executable
    job: Executable


@cache
def _statements(dialect: str) -> _Statements:
    """The intake's statements for one dialect, built once (SQLAlchemy caches their compiled form)."""
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    return _Statements(
        integration=select(INTEGRATION.c.id, *STAMP_COLUMNS).where(INTEGRATION.c.key == bindparam("key")),
        stamp=select(*STAMP_COLUMNS).where(INTEGRATION.c.id == bindparam("id")),
        event=insert(EVENT)
        .on_conflict_do_nothing(index_elements=["integration_id", "system", "delivery_key"])
        .returning(EVENT.c.id),
        existing=select(EVENT.c.id).where(
            EVENT.c.integration_id == bindparam("integration_id"),
            EVENT.c.system == bindparam("system"),
            EVENT.c.delivery_key == bindparam("delivery_key"),
        ),
        job=JOB.insert().returning(JOB.c.id, sort_by_parameter_order=True),
    )
