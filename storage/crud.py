"""Create and read workspaces, connections, integrations and mappings (keyword-only functions).

Secrets go in encrypted and come out only through `connection_secrets` / `integration_secrets`;
everything else a page shows uses the `*Public` models.
"""

from __future__ import annotations

import secrets as pysecrets
from typing import Any, TypeVar

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import make_transient_to_detached
from sqlmodel import SQLModel, col, func, select

from storage.construct import construct
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import (
    Connection,
    ConnectionPublic,
    Integration,
    IntegrationPublic,
    Mapping,
    Token,
    Workspace,
)
from storage.types import utcnow

TableModel = TypeVar("TableModel", bound=SQLModel)


def create_workspace(engine: Engine, *, name: str) -> Workspace:
    with session_scope(engine) as session:
        workspace = Workspace(name=name)
        session.add(workspace)
        session.flush()
        return workspace


def get_workspace_by_name(engine: Engine, *, name: str) -> Workspace | None:
    with session_scope(engine) as session:
        return session.exec(select(Workspace).where(col(Workspace.name) == name)).first()


def create_connection(
    engine: Engine,
    vault: Vault,
    *,
    workspace_id: int,
    system: str,
    name: str,
    base_url: str,
    environment: str = "",
    settings: dict[str, Any] | None = None,
    secrets: dict[str, Any] | None = None,
) -> ConnectionPublic:
    """Store a connection; `secrets` are encrypted before they reach the database."""
    with session_scope(engine) as session:
        connection = Connection(
            workspace_id=workspace_id,
            system=system,
            name=name,
            base_url=base_url.rstrip("/"),
            environment=environment,
            settings=dict(settings or {}),
            secrets_encrypted=vault.encrypt(dict(secrets or {})),
        )
        session.add(connection)
        session.flush()
        return ConnectionPublic.model_validate(connection, from_attributes=True)


def get_connection(engine: Engine, *, connection_id: int) -> Connection | None:
    return _first(engine, Connection, _BY_ID[Connection], {"id": connection_id})


def connection_secrets(vault: Vault, connection: Connection) -> dict[str, Any]:
    return dict(vault.decrypt(connection.secrets_encrypted) or {})


def create_integration(
    engine: Engine,
    vault: Vault,
    *,
    workspace_id: int,
    name: str,
    source_connection_id: int,
    target_connection_id: int,
    flows: list[str],
    key: str | None = None,
    webhook_secrets: dict[str, str] | None = None,
) -> IntegrationPublic:
    """Store an integration; webhook secrets are generated when not given."""
    secrets = dict(webhook_secrets or {})
    secrets.setdefault("netsuite_secret", pysecrets.token_urlsafe(32))
    secrets.setdefault("zuora_hmac_secret", pysecrets.token_urlsafe(32))
    with session_scope(engine) as session:
        integration = Integration(
            workspace_id=workspace_id,
            key=key or pysecrets.token_urlsafe(12),
            name=name,
            source_connection_id=source_connection_id,
            target_connection_id=target_connection_id,
            flows=list(flows),
            webhook_secrets_encrypted=vault.encrypt(secrets),
        )
        session.add(integration)
        session.flush()
        return IntegrationPublic.model_validate(integration, from_attributes=True)


def get_integration_by_key(engine: Engine, *, key: str) -> Integration | None:
    with session_scope(engine) as session:
        return session.exec(select(Integration).where(col(Integration.key) == key)).first()


def get_integration(engine: Engine, *, integration_id: int) -> Integration | None:
    return _first(engine, Integration, _BY_ID[Integration], {"id": integration_id})


def integration_secrets(vault: Vault, integration: Integration) -> dict[str, str]:
    return dict(vault.decrypt(integration.webhook_secrets_encrypted) or {})


def list_integrations(engine: Engine) -> list[IntegrationPublic]:
    with session_scope(engine) as session:
        rows = session.exec(select(Integration).order_by(col(Integration.id))).all()
        return [IntegrationPublic.model_validate(row, from_attributes=True) for row in rows]


def save_mapping(
    engine: Engine, *, integration_id: int, flow: str, spec: dict[str, Any], created_by: str = "system"
) -> Mapping:
    """Store `spec` as the next version of the flow's mapping and make it the active one."""
    with session_scope(engine, write=True) as session:
        latest = session.exec(
            select(func.max(Mapping.version)).where(
                col(Mapping.integration_id) == integration_id, col(Mapping.flow) == flow
            )
        ).one()
        for old in session.exec(
            select(Mapping).where(
                col(Mapping.integration_id) == integration_id, col(Mapping.flow) == flow, col(Mapping.active)
            )
        ):
            old.active = False
            session.add(old)
        mapping = Mapping(
            integration_id=integration_id,
            flow=flow,
            version=(latest or 0) + 1,
            spec=spec,
            active=True,
            created_by=created_by,
            created_at=utcnow(),
        )
        session.add(mapping)
        session.flush()
        return mapping


def active_mapping(engine: Engine, *, integration_id: int, flow: str) -> Mapping | None:
    return _first(engine, Mapping, _ACTIVE_MAPPING, {"integration_id": integration_id, "flow": flow})


def mapping_version(engine: Engine, *, integration_id: int, flow: str, version: int) -> Mapping | None:
    """One stored version of a flow's mapping (None for version 0, the flow's built-in default)."""
    with session_scope(engine) as session:
        return session.exec(
            select(Mapping).where(
                col(Mapping.integration_id) == integration_id,
                col(Mapping.flow) == flow,
                col(Mapping.version) == version,
            )
        ).first()


def list_workspaces(engine: Engine) -> list[Workspace]:
    """Every workspace, by name."""
    with session_scope(engine) as session:
        return list(session.exec(select(Workspace).order_by(col(Workspace.name))).all())


def get_workspace(engine: Engine, *, workspace_id: int) -> Workspace | None:
    with session_scope(engine) as session:
        return session.get(Workspace, workspace_id)


def rename_workspace(engine: Engine, *, workspace_id: int, name: str) -> Workspace | None:
    """Give a workspace a new name; None when there is no such workspace (names are unique: a taken one
    raises IntegrityError)."""
    with session_scope(engine, write=True) as session:
        workspace = session.get(Workspace, workspace_id)
        if workspace is None:
            return None
        workspace.name = name
        session.add(workspace)
        session.flush()
        return workspace


def list_connections(engine: Engine, *, workspace_id: int | None = None) -> list[ConnectionPublic]:
    """The connections of one workspace (or of all), oldest first, without their secrets."""
    query = select(Connection).order_by(col(Connection.id))
    if workspace_id is not None:
        query = query.where(col(Connection.workspace_id) == workspace_id)
    with session_scope(engine) as session:
        return [ConnectionPublic.model_validate(row, from_attributes=True) for row in session.exec(query)]


def update_connection(
    engine: Engine,
    vault: Vault,
    *,
    connection_id: int,
    name: str,
    base_url: str,
    environment: str,
    settings: dict[str, Any],
    secrets: dict[str, Any],
) -> ConnectionPublic | None:
    """Replace a connection's fields and secrets in one transaction; None when there is no such connection.

    The cached access token and the last ping go too: both belong to the old credentials (or another
    host), and the runner rebuilds its client when `updated_at` moves.
    """
    with session_scope(engine, write=True) as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            return None
        connection.name = name
        connection.base_url = base_url.rstrip("/")
        connection.environment = environment
        connection.settings = dict(settings)
        connection.secrets_encrypted = vault.encrypt(dict(secrets))
        connection.updated_at = utcnow()
        # The last ping spoke for the old credentials.
        connection.last_ping_at = connection.last_ping_ok = connection.last_ping_message = None
        session.add(connection)
        for token in session.exec(select(Token).where(col(Token.connection_id) == connection_id)):
            session.delete(token)
        session.flush()
        return ConnectionPublic.model_validate(connection, from_attributes=True)


def record_ping(engine: Engine, *, connection_id: int, ok: bool, message: str) -> bool:
    """Remember the outcome of the latest ping of a connection; False when there is no such connection."""
    with session_scope(engine, write=True) as session:
        connection = session.get(Connection, connection_id)
        if connection is None:
            return False
        connection.last_ping_at = utcnow()
        connection.last_ping_ok = ok
        connection.last_ping_message = message
        session.add(connection)
        return True


def set_integration_active(engine: Engine, *, integration_id: int, active: bool) -> bool:
    """Activate or pause an integration (paused ones are left out of polls and scheduled pulls); False
    when there is no such integration."""
    with session_scope(engine, write=True) as session:
        integration = session.get(Integration, integration_id)
        if integration is None:
            return False
        integration.active = active
        session.add(integration)
        return True


# --- the runner's per-job reads: one Core SELECT each, statements built once -------------------------

_BY_ID = {
    model: sa_select(model.__table__).where(model.__table__.c.id == bindparam("id"))  # type: ignore[attr-defined]
    for model in (Connection, Integration)
}
_MAPPING = Mapping.__table__  # type: ignore[attr-defined]
_ACTIVE_MAPPING = (
    sa_select(_MAPPING)
    .where(
        _MAPPING.c.integration_id == bindparam("integration_id"),
        _MAPPING.c.flow == bindparam("flow"),
        _MAPPING.c.active.is_(True),
    )
    .order_by(_MAPPING.c.id)
    .limit(1)
)


def _first(
    engine: Engine, model: type[TableModel], statement: Any, params: dict[str, Any]
) -> TableModel | None:
    """The first row of `statement` as a detached `model` object (as a session would have returned it
    after closing), without a Session or the ORM's loading machinery: these reads run per job."""
    with engine.connect() as connection:
        row = connection.execute(statement, params).first()
        connection.rollback()  # nothing was written: end the read transaction
    if row is None:
        return None
    found = construct(model, **row._mapping)
    make_transient_to_detached(found)
    return found
