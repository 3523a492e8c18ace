"""The webhook doors the bad-input tests knock on: two integrations and two Zoho channels in a database,
and the credentials that open each door (tests/reliability/test_bad_input.py, test_schemathesis.py).

Connections point at a closed loopback port: these tests run the runner without workers, so nothing
ever calls out; accepted events and their jobs stay in the database to be counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from runner.flows import flows_between
from storage import channels, crud
from storage.crypto import Vault
from storage.models import InboundEvent, Job

KEY, ZOHO_KEY = "fuzz", "fuzz-zoho"  # NetSuite ↔ Zuora (NetSuite and Zuora webhooks), NetSuite ↔ Zoho CRM
ACTIVE_CHANNEL, DISABLED_CHANNEL = "1000000000000001", "1000000000000002"  # both on ZOHO_KEY
TOKEN = "fuzz-channel-token-7f3a"  # both channels'
NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing listens


@dataclass(frozen=True)
class Doors:
    """The database behind the doors and the secrets that open them."""

    engine: Engine
    netsuite_secret: str  # KEY's shared NetSuite secret
    zuora_secret: str  # KEY's Zuora HMAC secret

    @property
    def secrets(self) -> list[str]:
        """Every credential a webhook sender holds: none may ever come back in an answer."""
        return [self.netsuite_secret, self.zuora_secret, TOKEN]

    def stored(self) -> tuple[int, int]:
        """(inbound events, jobs) in the database."""
        with Session(self.engine) as session:
            events = session.exec(select(func.count()).select_from(InboundEvent)).one()
            jobs = session.exec(select(func.count()).select_from(Job)).one()
        return int(events), int(jobs)


def build_doors(engine: Engine, vault: Vault) -> Doors:
    """Create the workspace, connections, integrations and channels in a migrated, empty database."""
    workspace = crud.create_workspace(engine, name="Doors")
    connections = {
        system: crud.create_connection(
            engine, vault, workspace_id=workspace.id, system=system, name=system, base_url=NOWHERE,
            secrets={"client_secret": f"{system}-client-secret"},
        ).id
        for system in ("netsuite", "zuora", "zoho")
    }  # fmt: skip
    for key, target in ((KEY, "zuora"), (ZOHO_KEY, "zoho")):
        crud.create_integration(
            engine, vault, workspace_id=workspace.id, name=key, key=key,
            source_connection_id=connections["netsuite"], target_connection_id=connections[target],
            flows=flows_between({"netsuite", target}),
        )  # fmt: skip
    zoho = crud.get_integration_by_key(engine, key=ZOHO_KEY)
    assert zoho is not None and zoho.id is not None
    for channel_id in (ACTIVE_CHANNEL, DISABLED_CHANNEL):
        channels.create_channel(
            engine, vault, integration_id=zoho.id, channel_id=channel_id, token=TOKEN,
            events=["Accounts.all"], notify_url=f"http://127.0.0.1/webhooks/zoho/{ZOHO_KEY}",
        )  # fmt: skip
    channels.set_status(engine, channel_id=DISABLED_CHANNEL, status="disabled")
    integration = crud.get_integration_by_key(engine, key=KEY)
    assert integration is not None
    secrets = crud.integration_secrets(vault, integration)
    return Doors(engine, secrets["netsuite_secret"], secrets["zuora_hmac_secret"])
