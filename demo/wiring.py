"""Wire a demo workspace to the sandbox emulators: connections and two integrations (NetSuite ↔ Zuora,
NetSuite ↔ Zoho CRM).

Idempotent: a restart finds the workspace and refreshes connection URLs and credentials (the sandbox
mints new ones each start) instead of adding duplicates.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.sandbox import SandboxCredentials
from runner.flows import flows_between
from storage import crud
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Connection, Integration, Token
from storage.types import utcnow

WORKSPACE = "Demo"
INTEGRATION_KEY = "demo"
ZOHO_INTEGRATION_KEY = "demo-zoho"


@dataclass(frozen=True)
class DemoWiring:
    integration_id: int  # NetSuite ↔ Zuora
    integration_key: str
    netsuite_secret: str
    zoho_integration_id: int  # NetSuite ↔ Zoho CRM
    zoho_integration_key: str
    zoho_netsuite_secret: str


def wire(engine: Engine, vault: Vault, creds: SandboxCredentials) -> DemoWiring:
    """Create or refresh the demo workspace against the sandbox described by `creds`."""
    workspace = crud.get_workspace_by_name(engine, name=WORKSPACE) or crud.create_workspace(
        engine, name=WORKSPACE
    )
    assert workspace.id is not None
    netsuite = _upsert_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="netsuite",
        name="NetSuite (emulator)",
        base_url=creds.netsuite_url,
        environment=creds.netsuite_account_id,
        settings={
            "account_id": creds.netsuite_account_id,
            "client_id": creds.netsuite_client_id,
            "certificate_id": creds.netsuite_certificate_id,
        },
        secrets={"private_key": creds.netsuite_private_key},
    )
    zuora = _upsert_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="zuora",
        name="Zuora (emulator)",
        base_url=creds.zuora_url,
        environment="emulator",
        # The declared environment (a ping checks the form is complete); base_url sends calls to the emulator.
        settings={"client_id": creds.zuora_client_id, "environment": "US API Sandbox (Cloud 2)"},
        secrets={"client_secret": creds.zuora_client_secret},
    )
    zoho = _upsert_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="zoho",
        name="Zoho CRM (emulator)",
        base_url=creds.zoho_url,
        environment="emulator",
        settings={"client_id": creds.zoho_client_id, "data_centre": "com"},  # base_url: the emulator
        secrets={"client_secret": creds.zoho_client_secret, "refresh_token": creds.zoho_refresh_token},
    )
    zuora_id = _upsert_integration(
        engine, vault, workspace_id=workspace.id, key=INTEGRATION_KEY, name="NetSuite ↔ Zuora (demo)",
        source=netsuite, target=zuora, flows=flows_between({"netsuite", "zuora"}),
    )  # fmt: skip
    zoho_id = _upsert_integration(
        engine, vault, workspace_id=workspace.id, key=ZOHO_INTEGRATION_KEY, name="NetSuite ↔ Zoho CRM (demo)",
        source=netsuite, target=zoho, flows=flows_between({"netsuite", "zoho"}),
    )  # fmt: skip
    return DemoWiring(
        integration_id=zuora_id,
        integration_key=INTEGRATION_KEY,
        netsuite_secret=_netsuite_secret(engine, vault, INTEGRATION_KEY),
        zoho_integration_id=zoho_id,
        zoho_integration_key=ZOHO_INTEGRATION_KEY,
        zoho_netsuite_secret=_netsuite_secret(engine, vault, ZOHO_INTEGRATION_KEY),
    )


def _upsert_integration(
    engine: Engine, vault: Vault, *, workspace_id: int, key: str, name: str, source: int, target: int,
    flows: list[str],
) -> int:  # fmt: skip
    """Create the integration, or refresh its flows to every flow the pair supports (new flows that
    landed since the demo database was made get enabled on the next start)."""
    with session_scope(engine, write=True) as session:
        existing = session.exec(select(Integration).where(col(Integration.key) == key)).first()
        if existing is not None:
            existing.flows = flows
            session.add(existing)
            session.flush()
            assert existing.id is not None
            return existing.id
    created = crud.create_integration(
        engine, vault, workspace_id=workspace_id, name=name, source_connection_id=source,
        target_connection_id=target, flows=flows, key=key,
    )  # fmt: skip
    return created.id


def _netsuite_secret(engine: Engine, vault: Vault, key: str) -> str:
    integration = crud.get_integration_by_key(engine, key=key)
    assert integration is not None
    return crud.integration_secrets(vault, integration)["netsuite_secret"]


def _upsert_connection(
    engine: Engine,
    vault: Vault,
    *,
    workspace_id: int,
    system: str,
    name: str,
    base_url: str,
    environment: str,
    settings: dict[str, str],
    secrets: dict[str, str],
) -> int:
    with session_scope(engine, write=True) as session:
        existing = session.exec(
            select(Connection).where(
                col(Connection.workspace_id) == workspace_id, col(Connection.name) == name
            )
        ).first()
        if existing is not None:
            existing.base_url = base_url
            existing.environment = environment
            existing.settings = settings
            existing.secrets_encrypted = vault.encrypt(secrets)
            existing.updated_at = utcnow()
            session.add(existing)
            session.flush()
            assert existing.id is not None
            _forget_token(session, existing.id)
            return existing.id
    created = crud.create_connection(
        engine,
        vault,
        workspace_id=workspace_id,
        system=system,
        name=name,
        base_url=base_url,
        environment=environment,
        settings=settings,
        secrets=secrets,
    )
    return created.id


def _forget_token(session: Session, connection_id: int) -> None:
    # A token minted by the previous sandbox run is meaningless to the new one.
    for token in session.exec(select(Token).where(col(Token.connection_id) == connection_id)):
        session.delete(token)
