"""A whole product on loopback for end-to-end tests: the sandbox emulators, the demo workspace wired to
them (the same code ./start.sh uses), and the runner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
from sqlalchemy.engine import Engine

from connectors.auth import MemoryTokens
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.registry import build_client
from connectors.sandbox import SandboxCredentials, build
from connectors.zoho.client import ZohoClient
from connectors.zoho.emulator import ZohoEmulator
from connectors.zuora.emulator import ZuoraEmulator
from demo.wiring import wire
from runner.app import create_app
from storage import crud
from storage.crypto import Vault
from storage.settings import Settings
from tests.support.live import serve


def create_customer_via_api(
    netsuite_url: str,
    *,
    client_id: str,
    certificate_id: str,
    private_key: str,
    fields: dict[str, Any],
    record_type: str = "customer",
) -> str:
    """POST a record (a customer unless told) to NetSuite's record API with an OAuth 2.0 M2M token;
    returns its internal id."""

    async def create() -> str:
        async with httpx2.AsyncClient() as http:
            client = NetSuiteClient(
                base_url=netsuite_url,
                http=http,
                tokens_from=MemoryTokens,
                client_id=client_id,
                certificate_id=certificate_id,
                private_key=private_key,
            )
            return await client.create_record(record_type, fields)

    return asyncio.run(create())


def enable_zoho_watch_via_api(
    credentials: SandboxCredentials, channel: dict[str, Any]
) -> list[dict[str, Any]]:
    """Enable one notification channel with Zoho's watch API (POST /crm/v8/actions/watch), as the
    product's Zoho client does; returns Zoho's per-channel results."""

    async def enable() -> list[dict[str, Any]]:
        async with httpx2.AsyncClient() as http:
            client = build_client(
                "zoho",
                base_url=credentials.zoho_url,
                settings={"client_id": credentials.zoho_client_id},
                secrets={
                    "client_secret": credentials.zoho_client_secret,
                    "refresh_token": credentials.zoho_refresh_token,
                },
                sandbox=True,
                http=http,
            )
            assert isinstance(client, ZohoClient)
            return await client.watch([channel])

    return asyncio.run(enable())


@dataclass
class Stack:
    netsuite: NetSuiteEmulator
    zuora: ZuoraEmulator
    credentials: SandboxCredentials
    runner_url: str
    webhook_url: str
    webhook_secret: str
    integration_id: int
    zoho: ZohoEmulator
    integration_key: str
    zuora_secret: str  # the demo integration's zuora_hmac_secret when the stack started
    zoho_integration_id: int  # the demo's NetSuite ↔ Zoho CRM integration
    zoho_integration_key: str

    @property
    def zuora_webhook_url(self) -> str:
        return f"{self.runner_url}/webhooks/zuora/{self.integration_key}"

    @property
    def zoho_webhook_url(self) -> str:
        return f"{self.runner_url}/webhooks/zoho/{self.integration_key}"

    def enable_zoho_watch(self, channel: dict[str, Any]) -> list[dict[str, Any]]:
        """Enable a notification channel in the Zoho emulator through Zoho's watch API."""
        return enable_zoho_watch_via_api(self.credentials, channel)

    @property
    def netsuite_url(self) -> str:
        return self.credentials.netsuite_url

    @property
    def private_key(self) -> str:
        return self.credentials.netsuite_private_key

    def create_customer(self, fields: dict[str, Any]) -> str:
        """Create a customer through the NetSuite emulator's record API, as a NetSuite user would."""
        return self.create_record("customer", fields)

    def create_record(self, record_type: str, fields: dict[str, Any]) -> str:
        """Create a record through the NetSuite emulator's record API (its User Event script fires)."""
        c = self.credentials
        return create_customer_via_api(
            c.netsuite_url,
            client_id=c.netsuite_client_id,
            certificate_id=c.netsuite_certificate_id,
            private_key=c.netsuite_private_key,
            fields=fields,
            record_type=record_type,
        )

    def zuora_accounts(self, crm_id: str) -> list[dict[str, Any]]:
        return [a for a in self.zuora.accounts() if str(a.get("crmId")) == crm_id]


@contextmanager
def running_stack(
    engine: Engine, vault: Vault, settings: Settings, *, zoho_webhook: bool = False
) -> Iterator[Stack]:
    """Emulators, the demo workspace wired to them, and the runner, all served on loopback.

    NetSuite's User Event script posts to the NetSuite ↔ Zuora integration; with `zoho_webhook` it
    also posts to the NetSuite ↔ Zoho CRM one (tests of one flow need not see the other's jobs)."""
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        stack.enter_context(serve(sandbox.netsuite.app, sock=sockets["netsuite"]))
        stack.enter_context(serve(sandbox.zuora.app, sock=sockets["zuora"]))
        stack.enter_context(serve(sandbox.zoho.app, sock=sockets["zoho"]))
        wiring = wire(engine, vault, sandbox.credentials)
        runner_url = stack.enter_context(serve(create_app(engine=engine, settings=settings, vault=vault)))
        webhook_url = f"{runner_url}/webhooks/netsuite/{wiring.integration_key}"
        sandbox.netsuite.add_webhook(webhook_url, wiring.netsuite_secret)
        if zoho_webhook:
            sandbox.netsuite.add_webhook(
                f"{runner_url}/webhooks/netsuite/{wiring.zoho_integration_key}", wiring.zoho_netsuite_secret
            )
        yield Stack(
            netsuite=sandbox.netsuite,
            zuora=sandbox.zuora,
            credentials=sandbox.credentials,
            runner_url=runner_url,
            webhook_url=webhook_url,
            webhook_secret=wiring.netsuite_secret,
            integration_id=wiring.integration_id,
            zoho=sandbox.zoho,
            integration_key=wiring.integration_key,
            zuora_secret=_zuora_secret(engine, vault, wiring.integration_key),
            zoho_integration_id=wiring.zoho_integration_id,
            zoho_integration_key=wiring.zoho_integration_key,
        )


def _zuora_secret(engine: Engine, vault: Vault, key: str) -> str:
    integration = crud.get_integration_by_key(engine, key=key)
    assert integration is not None
    return crud.integration_secrets(vault, integration)["zuora_hmac_secret"]
