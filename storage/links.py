"""The link table as the first guard against posting twice (design.md invariant 2).

Before creating a target record, a flow claims the link of its source record. The first claim inserts
the row with a fresh destination idempotency key; a second worker for the same source record finds a
live claim and backs off; a worker retrying after a crash takes the expired claim over and re-sends under
the same key, so the destination also sees the same request twice at most.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import Row, and_, bindparam, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import col, select

from storage.construct import construct
from storage.db import session_scope, transaction
from storage.models import Link
from storage.types import utcnow

CLAIM_LEASE = 120.0  # seconds a create may take before another worker may take the claim over
LINK = Link.__table__  # type: ignore[attr-defined]
KEY = ["integration_id", "flow", "source_id"]  # the link's unique constraint, the upserts' conflict target


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
    now = utcnow()
    params = {
        "integration_id": integration_id,
        "flow": flow,
        "source_system": source_system,
        "source_id": source_id,
        "target_system": target_system,
        "idempotency_key": uuid.uuid4().hex,
        "p_worker": worker,
        "p_until": now + timedelta(seconds=lease),
        "p_now": now,
    }
    with transaction(engine, write=True) as connection:
        row = connection.execute(_statements(engine).claim, params).first()
        if row is not None:
            return LinkState(_link(row), linked=False)
        link = _link(connection.execute(_FIND, params).one())
    if link.target_id:
        return LinkState(link, linked=True)
    raise LinkBusy(f"{flow} {source_id} is being created by {link.claimed_by}")


def _link(row: Row[Any]) -> Link:
    """The Link of a row just read, as a detached object (as if a session had loaded it), built without
    the ORM's per-query loading machinery or SQLModel's constructor."""
    link = construct(Link, **row._mapping)
    make_transient_to_detached(link)
    return link


def complete(engine: Engine, link: Link, *, target_id: str, payload_hash: str | None) -> None:
    """Record the target of a claimed link and release the claim."""
    params = {"p_id": link.id, "target_id": target_id, "payload_hash": payload_hash, "updated_at": utcnow()}
    with transaction(engine) as connection:
        result = connection.execute(_COMPLETE, params)
        assert result.rowcount == 1, f"link {link.id} is gone"


def release(engine: Engine, link: Link, *, worker: str, rejected: bool) -> None:
    """Give up a create claim after a failed attempt, so the next job for this record need not wait for
    it to expire.

    After a transient failure the idempotency key stays: a retry re-sends under it, so a create that did
    reach the destination is not made twice. After a rejection (`rejected=True`) nothing was created and
    the destination remembers the refusal under that key, so the next attempt, with a corrected payload,
    gets a new key."""
    params: dict[str, Any] = {"p_id": link.id, "p_worker": worker, "updated_at": utcnow()}
    if rejected:
        params["idempotency_key"] = uuid.uuid4().hex
    with transaction(engine) as connection:
        connection.execute(_RELEASE_REJECTED if rejected else _RELEASE, params)


def touch(engine: Engine, link: Link, *, payload_hash: str | None) -> None:
    """Remember the hash of the payload last written through an existing link."""
    params = {"p_id": link.id, "payload_hash": payload_hash, "updated_at": utcnow()}
    with transaction(engine) as connection:
        connection.execute(_TOUCH, params)


def claim_many(
    engine: Engine,
    *,
    integration_id: int,
    flow: str,
    source_system: str,
    target_system: str,
    claims: dict[str, str],
    lease: float = CLAIM_LEASE,
) -> dict[str, LinkState | LinkBusy]:
    """`claim` for many source records at once (source id → claimant), in one write transaction: each
    answer is the record's LinkState (linked already, or claimed by its claimant for creating the
    target) or the LinkBusy `claim` would have raised, by the same rules record by record.

    One upsert for all of them (each row's claim decided by the database, as in `claim`), then one read
    of the links it did not claim."""
    if not claims:
        return {}
    now = utcnow()
    until = now + timedelta(seconds=lease)
    rows = [
        {
            "integration_id": integration_id,
            "flow": flow,
            "source_system": source_system,
            "source_id": source_id,
            "target_system": target_system,
            "idempotency_key": uuid.uuid4().hex,
            "claimed_by": worker,
            "claimed_until": until,
            "created_at": now,
            "updated_at": now,
        }
        # Sorted: two runners claiming overlapping sets lock the rows in the same order (no deadlock).
        for source_id, worker in sorted(claims.items())
    ]
    answers: dict[str, LinkState | LinkBusy] = {}
    with transaction(engine, write=True) as connection:
        for row in connection.execute(_statements(engine).claim_many, rows):
            answers[row.source_id] = LinkState(_link(row), linked=False)
        rest = [source_id for source_id in claims if source_id not in answers]
        if rest:
            found = connection.execute(
                _FIND_MANY, {"integration_id": integration_id, "flow": flow, "source_ids": rest}
            )
            for row in found:
                link = _link(row)
                answers[link.source_id] = (
                    LinkState(link, linked=True)
                    if link.target_id
                    else LinkBusy(f"{flow} {link.source_id} is being created by {link.claimed_by}")
                )
    return answers


@dataclass(frozen=True)
class LinkWrite:
    """What a finished write stores in its link: the target it made or found (`complete`), or only the
    hash of the payload sent through an existing link (`touch`, when `target_id` is None)."""

    link: Link
    payload_hash: str | None
    target_id: str | None = None


def store_many(engine: Engine, writes: Iterable[LinkWrite]) -> None:
    """`complete` and `touch` for many links in one transaction (two executemany UPDATEs at most).

    A link completed here must still exist (LookupError otherwise, and nothing is stored); a touched
    one that was deleted meanwhile has nothing to remember and is passed over."""
    now = utcnow()
    completes, touches = [], []
    for write in writes:
        params = {"p_id": write.link.id, "payload_hash": write.payload_hash, "updated_at": now}
        if write.target_id is None:
            touches.append(params)
        else:
            completes.append(params | {"target_id": write.target_id})
    if not completes and not touches:
        return
    with transaction(engine, write=True) as connection:
        if completes:
            done = connection.execute(_COMPLETE, completes).rowcount
            if done != len(completes):
                ids = [params["p_id"] for params in completes]
                present = set(connection.execute(_IDS, {"ids": ids}).scalars())
                gone = sorted(set(ids) - present)
                raise LookupError(f"links {gone} vanished before their targets could be stored")
        if touches:
            connection.execute(_TOUCH, touches)


# --- the statements, built once (a statement built per call costs more CPU than running it) ---------

_FIND = sa_select(LINK).where(
    LINK.c.integration_id == bindparam("integration_id"),
    LINK.c.flow == bindparam("flow"),
    LINK.c.source_id == bindparam("source_id"),
)
_FIND_MANY = sa_select(LINK).where(
    LINK.c.integration_id == bindparam("integration_id"),
    LINK.c.flow == bindparam("flow"),
    LINK.c.source_id.in_(bindparam("source_ids", expanding=True)),
)
_IDS = sa_select(LINK.c.id).where(LINK.c.id.in_(bindparam("ids", expanding=True)))
_COMPLETE = (
    update(LINK)
    .where(LINK.c.id == bindparam("p_id"))
    .values(
        target_id=bindparam("target_id"),
        payload_hash=bindparam("payload_hash"),
        claimed_by=None,
        claimed_until=None,
        updated_at=bindparam("updated_at"),
    )
)
_RELEASE = (
    update(LINK)
    .where(
        LINK.c.id == bindparam("p_id"), LINK.c.claimed_by == bindparam("p_worker"), LINK.c.target_id.is_(None)
    )
    .values(claimed_by=None, claimed_until=None, updated_at=bindparam("updated_at"))
)
_RELEASE_REJECTED = _RELEASE.values(idempotency_key=bindparam("idempotency_key"))
_TOUCH = (
    update(LINK)
    .where(LINK.c.id == bindparam("p_id"))
    .values(payload_hash=bindparam("payload_hash"), updated_at=bindparam("updated_at"))
)


@dataclass(frozen=True)
class _Statements:
    """The upserts, which differ by dialect (ON CONFLICT is spelled per dialect in SQLAlchemy)."""

    claim: Any  # returns the claimed link's row (inserted, or taken over), or nothing
    claim_many: Any  # the same for many rows (executemany), each row's claimant in its own values
    record_targets: Any


@cache
def _dialect_statements(dialect: str) -> _Statements:
    insert = (sqlite_insert if dialect == "sqlite" else postgresql_insert)(LINK)
    # One upsert decides a claim: a new row is ours; an existing row without a target is taken over
    # when its claim is ours or has run out, and left alone otherwise. The database evaluates that
    # against the row it holds locked (PostgreSQL) or under the write lock (SQLite), so two workers can
    # never both come away holding the claim; nothing is read first.
    takeable = and_(
        LINK.c.target_id.is_(None),
        or_(
            LINK.c.claimed_until.is_(None),
            LINK.c.claimed_until <= bindparam("p_now"),
            LINK.c.claimed_by == bindparam("p_worker"),
        ),
    )
    claim = (
        insert.values(
            integration_id=bindparam("integration_id"),
            flow=bindparam("flow"),
            source_system=bindparam("source_system"),
            source_id=bindparam("source_id"),
            target_system=bindparam("target_system"),
            target_id=None,
            idempotency_key=bindparam("idempotency_key"),
            payload_hash=None,
            claimed_by=bindparam("p_worker"),
            claimed_until=bindparam("p_until"),
            created_at=bindparam("p_now"),
            updated_at=bindparam("p_now"),
        )
        .on_conflict_do_update(
            index_elements=KEY,
            set_={
                "claimed_by": bindparam("p_worker"),
                "claimed_until": bindparam("p_until"),
                "updated_at": bindparam("p_now"),
            },
            where=takeable,
        )
        .returning(*LINK.columns)
    )
    # A batch's links: new ones inserted, existing ones given the target and hash (a claim they carry is
    # left as it is).
    record_targets = insert.on_conflict_do_update(
        index_elements=KEY,
        set_={
            "target_id": insert.excluded.target_id,
            "payload_hash": insert.excluded.payload_hash,
            "updated_at": insert.excluded.updated_at,
        },
    )
    # `claim` for many rows: the claimant, lease end and time come from each row's own values
    # (`excluded`), so SQLAlchemy can send the rows as one multi-row upsert.
    excluded = insert.excluded
    claim_many = insert.on_conflict_do_update(
        index_elements=KEY,
        set_={
            "claimed_by": excluded.claimed_by,
            "claimed_until": excluded.claimed_until,
            "updated_at": excluded.updated_at,
        },
        where=and_(
            LINK.c.target_id.is_(None),
            or_(
                LINK.c.claimed_until.is_(None),
                LINK.c.claimed_until <= excluded.updated_at,
                LINK.c.claimed_by == excluded.claimed_by,
            ),
        ),
    ).returning(*LINK.columns)
    return _Statements(claim=claim, claim_many=claim_many, record_targets=record_targets)


def _statements(engine: Engine) -> _Statements:
    return _dialect_statements(engine.dialect.name)


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
    batch written with a destination-side upsert key (Zoho's NetSuite_Id), which needs no create claim.

    One upsert statement: new links are inserted, existing ones get the target and hash (a claim they
    carry is left as it is)."""
    if not targets:
        return
    now = utcnow()
    rows = [
        {
            "integration_id": integration_id,
            "flow": flow,
            "source_system": source_system,
            "source_id": source_id,
            "target_system": target_system,
            "target_id": target_id,
            "idempotency_key": uuid.uuid4().hex,
            "payload_hash": payload_hash,
            "claimed_by": None,
            "claimed_until": None,
            "created_at": now,
            "updated_at": now,
        }
        for source_id, (target_id, payload_hash) in targets.items()
    ]
    with transaction(engine, write=True) as connection:
        connection.execute(_statements(engine).record_targets, rows)


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
