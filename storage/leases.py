"""Named leases in the database, so singleton scheduled work (channel renewal, polls, retention) runs on
one runner at a time however many replicas share the database (design.md §5).

`acquire` takes or renews a lease atomically: it succeeds when the lease is free, expired, or already
ours. A runner that dies simply stops renewing, and another takes over after `ttl` seconds.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import and_, or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from storage.models import Heartbeat, Lease
from storage.types import utcnow

LEASE = Lease.__table__  # type: ignore[attr-defined]
HEARTBEAT = Heartbeat.__table__  # type: ignore[attr-defined]


def _insert(engine: Engine):  # type: ignore[no-untyped-def]
    return postgresql_insert if engine.dialect.name == "postgresql" else sqlite_insert


def acquire(engine: Engine, name: str, *, holder: str, ttl: float) -> bool:
    """Take or renew lease `name` for `ttl` seconds; False while another live holder has it."""
    now = utcnow()
    expires = now + timedelta(seconds=ttl)
    with engine.begin() as connection:
        connection.execute(
            _insert(engine)(LEASE)
            .values(name=name, holder=holder, expires_at=now - timedelta(seconds=1))
            .on_conflict_do_nothing(index_elements=["name"])
        )
        taken = connection.execute(
            update(LEASE)
            .where(and_(LEASE.c.name == name, or_(LEASE.c.holder == holder, LEASE.c.expires_at < now)))
            .values(holder=holder, expires_at=expires)
        )
        return taken.rowcount == 1


def release(engine: Engine, name: str, *, holder: str) -> None:
    """Give a lease up early (on shutdown) so another runner need not wait for it to expire."""
    with engine.begin() as connection:
        connection.execute(
            update(LEASE)
            .where(and_(LEASE.c.name == name, LEASE.c.holder == holder))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )


def beat(engine: Engine, runner: str, *, details: dict[str, object]) -> None:
    """Record that `runner` is alive, with what it wants the health page to show."""
    now = utcnow()
    statement = _insert(engine)(HEARTBEAT).values(runner=runner, started_at=now, seen_at=now, details=details)
    statement = statement.on_conflict_do_update(
        index_elements=["runner"], set_={"seen_at": now, "details": details}
    )
    with engine.begin() as connection:
        connection.execute(statement)
