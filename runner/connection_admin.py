"""What the Connections page does: list connections with their ping and token status, ping one again,
rotate an integration's webhook secrets, and say which flows a backfill can start for.

The page calls these functions and nothing else, so `pytest` reaches every action without a browser.
A re-ping is the same exchange onboarding makes (connectors.sync.ping_connection: the real token
exchange plus one cheap call), and its verdict is stored on the connection (`last_ping_*`). Secrets go
in and out of the vault here only: the overview reports whether a webhook secret is set and until when
the previous one is still accepted, never a value; `rotate_secret` returns the new value once, for the
page to show once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.ping import PingResult
from connectors.sync import ping_connection
from runner.flows import registry
from runner.health import TokenStatus, system_title, token_overview
from storage import crud, webhook_secrets
from storage.crypto import SecretsUnreadable, Vault
from storage.db import session_scope
from storage.models import Connection, Integration, Workspace
from storage.types import utcnow

# The webhook secrets an integration has, declared as data: which system sends with it, what a person
# calls it, and where the new value must be entered after a rotation.
WEBHOOK_SECRETS: dict[str, tuple[str, str, str]] = {
    "netsuite_secret": (
        "netsuite",
        "NetSuite shared secret",
        "Enter it as the script parameter custscript_ml_connector_secret of the ml-connector User Event "
        "script in NetSuite (connectors/netsuite/suitescript/INSTALL.md).",
    ),
    "zuora_hmac_secret": (
        "zuora",
        "Zuora callout HMAC secret",
        "Enter it as the HMAC key of the callout template in Zuora (Notifications > callout templates).",
    ),
}


# --- connections ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectionStatus:
    """One connection as the Connections page lists it: no secret, only how it is doing."""

    id: int
    workspace: str
    name: str
    system: str
    system_title: str
    environment: str
    base_url: str
    last_ping_at: datetime | None
    last_ping_ok: bool | None
    last_ping_message: str | None
    token: TokenStatus | None
    integrations: list[str]

    @property
    def ping_state(self) -> str:
        """ok | failed | never."""
        if self.last_ping_at is None or self.last_ping_ok is None:
            return "never"
        return "ok" if self.last_ping_ok else "failed"


def connection_overview(engine: Engine, *, now: datetime | None = None) -> list[ConnectionStatus]:
    """Every connection with its last ping, token status and the integrations using it (three queries)."""
    tokens = {t.connection_id: t for t in token_overview(engine, now=now)}
    with session_scope(engine) as session:
        rows = session.exec(
            select(Connection, Workspace.name)
            .join(Workspace, col(Workspace.id) == col(Connection.workspace_id))
            .order_by(col(Workspace.name), col(Connection.id))
        ).all()
        pairs = session.exec(
            select(Integration.name, Integration.source_connection_id, Integration.target_connection_id)
        ).all()
    used: dict[int, list[str]] = {}
    for name, source, target in pairs:
        for connection_id in {source, target}:
            used.setdefault(connection_id, []).append(name)
    return [
        ConnectionStatus(
            id=connection.id or 0,
            workspace=workspace,
            name=connection.name,
            system=connection.system,
            system_title=system_title(connection.system),
            environment=connection.environment,
            base_url=connection.base_url,
            last_ping_at=connection.last_ping_at,
            last_ping_ok=connection.last_ping_ok,
            last_ping_message=connection.last_ping_message,
            token=tokens.get(connection.id or 0),
            integrations=sorted(used.get(connection.id or 0, [])),
        )
        for connection, workspace in rows
    ]


def reping(
    engine: Engine, vault: Vault, *, connection_id: int, sandbox: bool, now: datetime | None = None
) -> PingResult:
    """Ping a saved connection again and store the verdict on it (`last_ping_at/ok/message`).

    Never raises for a connection that does not answer or refuses the credentials: that is a failed
    ping with a message saying what to fix. Raises LookupError when there is no such connection.
    `sandbox` lets the connection point at emulators on loopback (Settings.sandbox).
    """
    connection = crud.get_connection(engine, connection_id=connection_id)
    if connection is None:
        raise LookupError(f"there is no connection {connection_id}")
    try:
        secrets = crud.connection_secrets(vault, connection)
    except SecretsUnreadable as exc:
        result = PingResult(connection.system, False, 0.0, str(exc), reaction="config")
    else:
        result = ping_connection(
            connection.system,
            base_url=connection.base_url,
            settings=dict(connection.settings or {}),
            secrets=secrets,
            sandbox=sandbox,
        )
    store_ping(engine, connection_id=connection_id, result=result, at=now or utcnow())
    return result


def store_ping(engine: Engine, *, connection_id: int, result: PingResult, at: datetime) -> None:
    """Keep a ping's verdict on the connection. `updated_at` stays: a ping changes no credential, so the
    runner's clients of this connection need no rebuilding."""
    with session_scope(engine) as session:
        session.execute(
            update(Connection)
            .where(col(Connection.id) == connection_id)
            .values(last_ping_at=at, last_ping_ok=result.ok, last_ping_message=result.message)
        )


# --- integrations: webhook secrets and backfills ----------------------------------------------


@dataclass(frozen=True)
class SecretStatus:
    """Whether one webhook secret is set, and how its last rotation stands (no value, ever)."""

    name: str
    title: str
    where: str  # where a new value must be entered
    is_set: bool
    rotated_at: datetime | None
    previous_valid_until: datetime | None  # None: no previous secret is accepted any more


@dataclass(frozen=True)
class IntegrationAdmin:
    """An integration with what the Connections page can do to it."""

    id: int
    name: str
    key: str
    workspace_id: int
    source_connection_id: int
    target_connection_id: int
    systems: tuple[str, str]  # source, target
    flows: list[str]
    active: bool
    secrets: list[SecretStatus]
    default_grace: float  # seconds the previous secret stays accepted after a rotation without a grace
    backfillable: dict[str, str]  # flow name → title, for the flows a backfill can start for


@dataclass(frozen=True)
class RotatedSecret:
    """A secret just rotated: the new value, to show once, and how long the old one keeps working."""

    name: str
    title: str
    where: str
    secret: str
    previous_valid_until: datetime | None  # None when there was no previous value, or no grace


def integration_overview(
    engine: Engine, vault: Vault, *, now: datetime | None = None
) -> list[IntegrationAdmin]:
    """Every integration with its webhook secrets' status and backfillable flows (one query).

    An integration whose secrets cannot be decrypted (a key was removed) is listed with its secrets
    as not set, rather than failing the whole page.
    """
    now = now or utcnow()
    with session_scope(engine) as session:
        source = select(Connection.system).where(col(Connection.id) == col(Integration.source_connection_id))
        target = select(Connection.system).where(col(Connection.id) == col(Integration.target_connection_id))
        rows = session.exec(
            select(
                Integration,
                source.scalar_subquery().label("source_system"),
                target.scalar_subquery().label("target_system"),
            ).order_by(col(Integration.id))
        ).all()
    return [
        IntegrationAdmin(
            id=integration.id or 0,
            name=integration.name,
            key=integration.key,
            workspace_id=integration.workspace_id,
            source_connection_id=integration.source_connection_id,
            target_connection_id=integration.target_connection_id,
            systems=(str(source_system), str(target_system)),
            flows=list(integration.flows or []),
            active=integration.active,
            secrets=secret_statuses(vault, integration, {str(source_system), str(target_system)}, now=now),
            default_grace=webhook_secrets._grace(None, integration.settings or {}),
            backfillable=backfillable_flows(list(integration.flows or [])),
        )
        for integration, source_system, target_system in rows
    ]


def secret_statuses(
    vault: Vault, integration: Integration, systems: set[str], *, now: datetime
) -> list[SecretStatus]:
    """The status of the webhook secrets a sender among `systems` uses on this integration."""
    try:
        values = crud.integration_secrets(vault, integration)
    except SecretsUnreadable:
        values = {}
    result = []
    for name, (system, title, where) in WEBHOOK_SECRETS.items():
        if system not in systems:
            continue
        rotated_at = _parse_time(values.get(f"{name}.rotated_at"))
        until = None
        if values.get(f"{name}.previous") and rotated_at is not None:
            until = rotated_at + timedelta(seconds=_grace(values, name, integration))
            until = until if until > now else None
        result.append(
            SecretStatus(
                name=name,
                title=title,
                where=where,
                is_set=bool(values.get(name)),
                rotated_at=rotated_at,
                previous_valid_until=until,
            )
        )
    return result


def rotate_secret(
    engine: Engine,
    vault: Vault,
    *,
    integration_id: int,
    name: str,
    grace_seconds: float | None = None,
    now: datetime | None = None,
) -> RotatedSecret:
    """Replace webhook secret `name` with a freshly generated one (storage.webhook_secrets.rotate).

    The old value stays accepted for the grace period: `grace_seconds` when given (0 revokes it at once,
    for a leaked secret), else the integration's setting, else 24 hours. Raises ValueError for a name
    that is not a webhook secret or a negative grace, LookupError for an unknown integration.
    """
    if name not in WEBHOOK_SECRETS:
        raise ValueError(f"unknown webhook secret {name!r}; expected one of {', '.join(WEBHOOK_SECRETS)}")
    now = now or utcnow()
    secret = webhook_secrets.rotate(
        engine, vault, integration_id=integration_id, name=name, grace_seconds=grace_seconds, now=now
    )
    integration = crud.get_integration(engine, integration_id=integration_id)
    assert integration is not None  # rotate() found it a moment ago; integrations are never deleted
    values = crud.integration_secrets(vault, integration)
    until = None
    if values.get(f"{name}.previous"):
        until = now + timedelta(seconds=_grace(values, name, integration))
        until = until if until > now else None
    _system, title, where = WEBHOOK_SECRETS[name]
    return RotatedSecret(name=name, title=title, where=where, secret=secret, previous_valid_until=until)


def backfillable_flows(enabled: list[str]) -> dict[str, str]:
    """The enabled flows a backfill can start for (fed by a NetSuite table), name → title, in order."""
    flows = registry()
    return {
        name: flows[name].title
        for name in enabled
        if name in flows and flows[name].source_system == "netsuite" and flows[name].source_record
    }


def _grace(values: dict[str, str], name: str, integration: Integration) -> float:
    # The receiver's own rule (storage.webhook_secrets), so the page never promises a grace it won't keep.
    return webhook_secrets._grace(values.get(f"{name}.grace_seconds"), integration.settings or {})


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None
