"""Table models. Secrets live only on table models, encrypted (see storage.crypto); the `*Public`
models are what pages and logs may show.

Timestamps are timezone-aware UTC (storage.types.UTCDateTime). Status values are plain strings from the
`*Status` enums so migrations stay simple and the database stays readable.
"""

from __future__ import annotations

import copy
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from storage.types import PortableJSON, UTCDateTime, utcnow


def _ts(*, nullable: bool = False, index: bool = False) -> Any:
    return Field(
        default_factory=utcnow if not nullable else None,
        sa_type=UTCDateTime,
        nullable=nullable,
        index=index,
    )


def _json(default: Any = None) -> Any:
    def factory() -> Any:
        return copy.deepcopy(default)

    return Field(default_factory=factory, sa_column=Column(PortableJSON, nullable=True))


class System(StrEnum):
    NETSUITE = "netsuite"
    ZUORA = "zuora"
    ZOHO = "zoho"


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    DEAD = "dead"


class JobKind(StrEnum):
    SYNC = "sync"
    REPLAY = "replay"
    BACKFILL = "backfill"
    POLL = "poll"


class Outcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"
    FAILED = "failed"


class Workspace(SQLModel, table=True):
    """One customer of the operator; everything else hangs off a workspace."""

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200, unique=True)
    created_at: datetime = _ts()


class ConnectionBase(SQLModel):
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    system: str = Field(max_length=20)
    name: str = Field(max_length=200)
    # Region or data centre as the system names it (Zuora environment, Zoho DC, NetSuite account id).
    environment: str = Field(default="", max_length=100)
    base_url: str = Field(max_length=500)
    # Non-secret credential fields (client id, certificate id, account id ...), declared per system.
    settings: dict[str, Any] = _json({})


class Connection(ConnectionBase, table=True):
    """Credentials for one system. `secrets_encrypted` holds a Fernet token of a JSON object."""

    id: int | None = Field(default=None, primary_key=True)
    secrets_encrypted: str = Field(default="", sa_type=Text)
    last_ping_at: datetime | None = _ts(nullable=True)
    last_ping_ok: bool | None = None
    last_ping_message: str | None = None
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class ConnectionPublic(ConnectionBase):
    id: int
    last_ping_at: datetime | None
    last_ping_ok: bool | None
    last_ping_message: str | None


class Token(SQLModel, table=True):
    """The cached access token of a connection, encrypted; one row per connection."""

    id: int | None = Field(default=None, primary_key=True)
    connection_id: int = Field(foreign_key="connection.id", unique=True)
    access_token_encrypted: str = Field(default="", sa_type=Text)
    expires_at: datetime | None = _ts(nullable=True)
    refreshed_at: datetime | None = _ts(nullable=True)
    reason: str = Field(default="", max_length=100)
    failures: int = 0
    cooldown_until: datetime | None = _ts(nullable=True)
    # What the token response taught us that is not secret (Zoho's api_domain, for one).
    extra: dict[str, Any] = _json({})


class IntegrationBase(SQLModel):
    workspace_id: int = Field(foreign_key="workspace.id", index=True)
    # The public name in webhook URLs: /webhooks/<system>/<key>.
    key: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    source_connection_id: int = Field(foreign_key="connection.id")
    target_connection_id: int = Field(foreign_key="connection.id")
    flows: list[str] = _json([])
    active: bool = True
    # Non-secret behaviour: {"ip_allowlist": ["203.0.113.0/24"], "secret_grace_seconds": 86400, ...}
    settings: dict[str, Any] = _json({})


class Integration(IntegrationBase, table=True):
    """A pair of connections and the flows enabled between them, with its webhook secrets."""

    id: int | None = Field(default=None, primary_key=True)
    # Fernet token of {"netsuite_secret": ..., "zuora_hmac_secret": ...}.
    webhook_secrets_encrypted: str = Field(default="", sa_type=Text)
    created_at: datetime = _ts()


class IntegrationPublic(IntegrationBase):
    id: int


class Mapping(SQLModel, table=True):
    """A versioned field mapping for one flow of one integration."""

    __table_args__ = (UniqueConstraint("integration_id", "flow", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id")
    flow: str = Field(max_length=50)
    version: int = 1
    spec: dict[str, Any] = _json({})
    active: bool = True
    created_at: datetime = _ts()
    created_by: str = Field(default="system", max_length=200)


class InboundEvent(SQLModel, table=True):
    """A webhook exactly as received, committed before we answer."""

    __table_args__ = (UniqueConstraint("integration_id", "system", "delivery_key"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id")
    system: str = Field(max_length=20)
    delivery_key: str = Field(max_length=200)
    headers: dict[str, Any] = _json({})
    body: str = Field(sa_type=Text)
    remote_addr: str = Field(default="", max_length=100)
    received_at: datetime = _ts()


class Job(SQLModel, table=True):
    """A unit of work claimed by one runner at a time under a lease."""

    __table_args__ = (Index("ix_job_claim", "status", "run_after"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id", index=True)
    flow: str = Field(max_length=50)
    kind: str = Field(default=JobKind.SYNC, max_length=20)
    status: str = Field(default=JobStatus.QUEUED, max_length=20)
    payload: dict[str, Any] = _json({})
    event_id: int | None = Field(default=None, foreign_key="inboundevent.id")
    attempts: int = 0
    max_attempts: int = 8
    run_after: datetime = _ts()
    lease_until: datetime | None = _ts(nullable=True)
    locked_by: str | None = Field(default=None, max_length=200)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class AuditRecord(SQLModel, table=True):
    """One execution of a flow for one record: what we read, what we sent, what came of it.

    The audit page lists records newest first under any mix of filters, over millions of rows: each
    column it filters on by equality has an index that continues with (started_at, id), so a filter's
    count and its newest-first page are both read off one index range (target_id, nearly unique, keeps
    its own index; the system filter reads the time index). See storage.audit.
    """

    __table_args__ = (
        Index("ix_audit_started", "started_at"),
        Index("ix_audit_outcome_started", "outcome", "started_at", "id"),
        Index("ix_audit_flow_started", "flow", "started_at", "id"),
        Index("ix_audit_integration_started", "integration_id", "started_at", "id"),
        Index("ix_audit_error_class_started", "error_class", "started_at", "id"),
        # A source record's history in order; also how a bulk replay finds later records of a source.
        Index("ix_audit_source_started", "source_id", "started_at", "id"),
        Index("ix_audit_replay_of", "replay_of"),
    )

    id: int | None = Field(default=None, primary_key=True)
    job_id: int | None = Field(default=None, foreign_key="job.id", index=True)
    integration_id: int = Field(foreign_key="integration.id")
    flow: str = Field(max_length=50)
    source_system: str = Field(max_length=20)
    source_id: str = Field(max_length=200)
    target_system: str = Field(max_length=20)
    target_id: str | None = Field(default=None, max_length=200, index=True)
    action: str | None = Field(default=None, max_length=20)
    mapping_version: int | None = None
    source_snapshot: dict[str, Any] | None = _json(None)
    payload: dict[str, Any] | None = _json(None)
    response: dict[str, Any] | None = _json(None)
    outcome: str = Field(default=Outcome.FAILED, max_length=20)
    error_class: str | None = Field(default=None, max_length=20)
    error_message: str | None = Field(default=None, sa_type=Text)
    replay_of: int | None = Field(default=None, foreign_key="auditrecord.id")
    started_at: datetime = _ts()
    finished_at: datetime | None = _ts(nullable=True)


class AuditAttempt(SQLModel, table=True):
    """One HTTP exchange made on behalf of an audit record (secrets never stored)."""

    id: int | None = Field(default=None, primary_key=True)
    audit_record_id: int = Field(foreign_key="auditrecord.id", index=True)
    seq: int
    system: str = Field(max_length=20)
    method: str = Field(max_length=10)
    url: str = Field(max_length=2000)
    status: int | None = None
    duration_ms: float = 0.0
    response_excerpt: str | None = Field(default=None, sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)
    at: datetime = _ts()


class Link(SQLModel, table=True):
    """Source record ↔ target record for one flow; also the guard against creating a target twice.

    A row is inserted (target_id empty, `claimed_until` set, `idempotency_key` fixed) before the first
    create is sent, so a second worker for the same source record waits instead of creating again, and a
    retry after a crash re-sends under the same destination idempotency key.
    """

    __table_args__ = (UniqueConstraint("integration_id", "flow", "source_id"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id")
    flow: str = Field(max_length=50)
    source_system: str = Field(max_length=20)
    source_id: str = Field(max_length=200)
    target_system: str = Field(max_length=20)
    target_id: str | None = Field(default=None, max_length=200)
    idempotency_key: str = Field(max_length=255)
    payload_hash: str | None = Field(default=None, max_length=64)
    claimed_until: datetime | None = _ts(nullable=True)
    claimed_by: str | None = Field(default=None, max_length=200)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class Channel(SQLModel, table=True):
    """A Zoho notification channel we keep alive for one integration."""

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id", index=True)
    channel_id: str = Field(max_length=50, unique=True)  # Zoho's numeric channel id, ours to choose
    token_encrypted: str = Field(default="", sa_type=Text)
    events: list[str] = _json([])
    notify_url: str = Field(default="", max_length=1000)
    status: str = Field(default="active", max_length=20)  # active | lapsed | failed | disabled
    expires_at: datetime | None = _ts(nullable=True)
    renewed_at: datetime | None = _ts(nullable=True)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = _ts()


class Watermark(SQLModel, table=True):
    """A poll cursor (e.g. the last lastmodifieddate seen for NetSuite customers) per integration."""

    __table_args__ = (UniqueConstraint("integration_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id")
    name: str = Field(max_length=100)
    value: str = Field(default="", max_length=200)
    updated_at: datetime = _ts()


class Lease(SQLModel, table=True):
    """A named lease so singleton scheduled work runs on one runner at a time."""

    name: str = Field(primary_key=True, max_length=100)
    holder: str = Field(max_length=200)
    expires_at: datetime = _ts()


class Heartbeat(SQLModel, table=True):
    """Each runner's sign of life, read by the app's health page."""

    runner: str = Field(primary_key=True, max_length=200)
    started_at: datetime = _ts()
    seen_at: datetime = _ts(index=True)
    details: dict[str, Any] = _json({})


class Payment(SQLModel, table=True):
    """A read-only mirror of Zuora payments (NetSuite owns AR; nothing is written back)."""

    __table_args__ = (UniqueConstraint("integration_id", "zuora_id"),)

    id: int | None = Field(default=None, primary_key=True)
    integration_id: int = Field(foreign_key="integration.id", index=True)
    zuora_id: str = Field(max_length=64)
    number: str = Field(default="", max_length=64)
    account_id: str = Field(default="", max_length=64, index=True)
    amount: float = 0.0
    currency: str = Field(default="", max_length=3)
    status: str = Field(default="", max_length=30)
    effective_date: str = Field(default="", max_length=10)
    updated_date: str = Field(default="", max_length=40)
    raw: dict[str, Any] = _json({})
    synced_at: datetime = _ts()


class AppUser(SQLModel, table=True):
    """A person who may sign in to the app. The first start asks for the admin's password; only its
    hash is kept. Failed sign-ins are counted to slow guessing down."""

    id: int | None = Field(default=None, primary_key=True)
    username: str = Field(max_length=200, unique=True)
    password_hash: str = Field(default="", sa_type=Text)
    is_admin: bool = False
    failed_logins: int = 0
    locked_until: datetime | None = _ts(nullable=True)
    last_login_at: datetime | None = _ts(nullable=True)
    created_at: datetime = _ts()


class ChannelRenewal(SQLModel, table=True):
    """One keep-alive action on a Zoho channel (renewed, re-provisioned, failed): the renewal history
    the health page shows."""

    id: int | None = Field(default=None, primary_key=True)
    channel_id: int = Field(foreign_key="channel.id", index=True)
    action: str = Field(max_length=20)
    expires_at: datetime | None = _ts(nullable=True)
    detail: str | None = Field(default=None, sa_type=Text)
    at: datetime = _ts(index=True)


from storage.alerts import AlertDelivery, AlertSettings, Incident, IntegrationPause  # noqa: E402, F401 - tables
from storage.reconcile import Drift, ReconciliationRun  # noqa: E402, F401 - their tables on the metadata
from storage.triage import PayloadEdit, TriageGroup  # noqa: E402, F401 - their tables on the metadata
