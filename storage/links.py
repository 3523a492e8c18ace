"""The link table as the first guard against posting twice (design.md invariant 2).

Before creating a target record, a flow claims the link of its source record. The first claim inserts
the row with a fresh destination idempotency key; a second worker for the same source record finds a
live claim and backs off; a worker retrying after a crash takes the expired claim over and re-sends under
the same key, so the destination also sees the same request twice at most.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from storage.db import session_scope
from storage.models import Link
from storage.types import utcnow

CLAIM_LEASE = 120.0  # seconds a create may take before another worker may take the claim over


class LinkBusy(Exception):
    """Another worker is creating the target of this source record right now."""


@dataclass(frozen=True)
class LinkState:
    link: Link
    linked: bool  # True: target exists (update it); False: we hold the claim to create it


def claim(
    engine: Engine,
    *,
    integration_id: int,
    flow: str,
    source_system: str,
    source_id: str,
    target_system: str,
    worker: str,
    lease: float = CLAIM_LEASE,
) -> LinkState:
    """The link of a source record: linked already, or claimed by `worker` for creating the target."""
    for _ in range(2):
        now = utcnow()
        with session_scope(engine, write=True) as session:
            query = select(Link).where(
                col(Link.integration_id) == integration_id,
                col(Link.flow) == flow,
                col(Link.source_id) == source_id,
            )
            if engine.dialect.name == "postgresql":
                query = query.with_for_update()
            link = session.exec(query).first()
            if link is not None:
                if link.target_id:
                    return LinkState(link, linked=True)
                claim_live = link.claimed_until is not None and link.claimed_until > now
                if claim_live and link.claimed_by != worker:
                    raise LinkBusy(f"{flow} {source_id} is being created by {link.claimed_by}")
                link.claimed_by = worker
                link.claimed_until = now + timedelta(seconds=lease)
                link.updated_at = now
                session.add(link)
                return LinkState(link, linked=False)
        try:
            with session_scope(engine, write=True) as session:
                link = Link(
                    integration_id=integration_id,
                    flow=flow,
                    source_system=source_system,
                    source_id=source_id,
                    target_system=target_system,
                    idempotency_key=uuid.uuid4().hex,
                    claimed_by=worker,
                    claimed_until=now + timedelta(seconds=lease),
                )
                session.add(link)
                session.flush()
                return LinkState(link, linked=False)
        except IntegrityError:
            continue  # another worker inserted it first; read theirs
    raise LinkBusy(f"{flow} {source_id}: link row contended")


def complete(engine: Engine, link: Link, *, target_id: str, payload_hash: str | None) -> None:
    """Record the target of a claimed link and release the claim."""
    # write=True: a read-then-write in a deferred SQLite transaction fails at once ("database is locked")
    # when another connection committed in between; BEGIN IMMEDIATE waits for the lock instead.
    with session_scope(engine, write=True) as session:
        row = session.get(Link, link.id)
        assert row is not None
        row.target_id = target_id
        row.payload_hash = payload_hash
        row.claimed_by = None
        row.claimed_until = None
        row.updated_at = utcnow()
        session.add(row)


def release(engine: Engine, link: Link, *, worker: str, rejected: bool) -> None:
    """Give up a create claim after a failed attempt, so the next job for this record need not wait for
    it to expire.

    After a transient failure the idempotency key stays: a retry re-sends under it, so a create that did
    reach the destination is not made twice. After a rejection (`rejected=True`) nothing was created and
    the destination remembers the refusal under that key, so the next attempt, with a corrected payload,
    gets a new key."""
    with session_scope(engine, write=True) as session:
        row = session.get(Link, link.id)
        if row is not None and row.claimed_by == worker and not row.target_id:
            row.claimed_by = None
            row.claimed_until = None
            if rejected:
                row.idempotency_key = uuid.uuid4().hex
            row.updated_at = utcnow()
            session.add(row)


def touch(engine: Engine, link: Link, *, payload_hash: str | None) -> None:
    """Remember the hash of the payload last written through an existing link."""
    with session_scope(engine, write=True) as session:
        row = session.get(Link, link.id)
        if row is not None:
            row.payload_hash = payload_hash
            row.updated_at = utcnow()
            session.add(row)


def find(engine: Engine, *, integration_id: int, flow: str, source_id: str) -> Link | None:
    with session_scope(engine) as session:
        return session.exec(
            select(Link).where(
                col(Link.integration_id) == integration_id,
                col(Link.flow) == flow,
                col(Link.source_id) == source_id,
            )
        ).first()


def record_targets(
    engine: Engine,
    *,
    integration_id: int,
    flow: str,
    source_system: str,
    target_system: str,
    targets: dict[str, tuple[str, str | None]],
) -> None:
    """Store source id → (target id, payload hash) for many records in one transaction: the links of a
    batch written with a destination-side upsert key (Zoho's NetSuite_Id), which needs no create claim."""
    if not targets:
        return
    now = utcnow()
    with session_scope(engine, write=True) as session:
        existing = {
            link.source_id: link
            for link in session.exec(
                select(Link).where(
                    col(Link.integration_id) == integration_id,
                    col(Link.flow) == flow,
                    col(Link.source_id).in_(list(targets)),
                )
            )
        }
        for source_id, (target_id, payload_hash) in targets.items():
            link = existing.get(source_id) or Link(
                integration_id=integration_id,
                flow=flow,
                source_system=source_system,
                source_id=source_id,
                target_system=target_system,
                idempotency_key=uuid.uuid4().hex,
            )
            link.target_id = target_id
            link.payload_hash = payload_hash
            link.updated_at = now
            session.add(link)


def targets_of(engine: Engine, *, integration_id: int, flow: str, source_ids: list[str]) -> dict[str, str]:
    """Source id → target id for the linked ones among `source_ids`."""
    if not source_ids:
        return {}
    with session_scope(engine) as session:
        rows = session.exec(
            select(Link.source_id, Link.target_id).where(
                col(Link.integration_id) == integration_id,
                col(Link.flow) == flow,
                col(Link.source_id).in_(source_ids),
                col(Link.target_id).is_not(None),
            )
        ).all()
    return {source: str(target) for source, target in rows}
