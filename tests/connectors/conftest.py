"""One harness per system: its emulator served on loopback and the product's client pointed at it.

The contract suite is parametrized over the three harnesses, so every behaviour is asserted for
NetSuite, Zuora and Zoho CRM alike; system differences live here, not in the tests.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2
import pytest

from connectors.emulator_kit import BaseEmulator
from connectors.http import ApiClient, Attempt, RetryPolicy
from connectors.registry import build_client
from connectors.sandbox import SandboxCredentials, build
from tests.support.live import serve

SYSTEMS = ["netsuite", "zuora", "zoho"]


@dataclass
class Sleeps:
    """An injected sleep that records the waits instead of waiting."""

    waits: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@dataclass
class Harness:
    system: str
    emulator: BaseEmulator
    url: str
    credentials: SandboxCredentials
    make: Callable[..., ApiClient]  # make(**credential overrides) -> client
    client: ApiClient
    attempts: list[Attempt]
    sleeps: Sleeps

    async def cheap_call(self, client: ApiClient | None = None) -> Any:
        """One authenticated API call that succeeds on an empty account."""
        client = client or self.client
        if self.system == "netsuite":
            return await client.suiteql_page("SELECT id FROM customer", limit=1)  # type: ignore[attr-defined]
        if self.system == "zuora":
            return await client.find_account_by_crm_id("none")  # type: ignore[attr-defined]
        return await client.get_record("Accounts", "1")  # type: ignore[attr-defined]

    def api_attempts(self) -> list[Attempt]:
        """Attempts other than token requests."""
        return [a for a in self.attempts if "token" not in a.url]

    def token_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts if "token" in a.url]


def settings_and_secrets(system: str, creds: SandboxCredentials) -> tuple[dict[str, str], dict[str, str]]:
    if system == "netsuite":
        return (
            {
                "account_id": creds.netsuite_account_id,
                "client_id": creds.netsuite_client_id,
                "certificate_id": creds.netsuite_certificate_id,
            },
            {"private_key": creds.netsuite_private_key},
        )
    if system == "zuora":
        return {"client_id": creds.zuora_client_id}, {"client_secret": creds.zuora_client_secret}
    return (
        {"client_id": creds.zoho_client_id, "data_centre": "com"},
        {"client_secret": creds.zoho_client_secret, "refresh_token": creds.zoho_refresh_token},
    )


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[Any, dict[str, str]]]:
    """The three emulators on loopback for a whole module (tests reset their state)."""
    box, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with (
        serve(box.netsuite.app, sock=sockets["netsuite"]) as ns,
        serve(box.zuora.app, sock=sockets["zuora"]) as zu,
        serve(box.zoho.app, sock=sockets["zoho"]) as zo,
    ):
        yield box, {"netsuite": ns, "zuora": zu, "zoho": zo}


@pytest.fixture(params=SYSTEMS)
async def harness(
    request: pytest.FixtureRequest, sandbox: tuple[Any, dict[str, str]]
) -> AsyncIterator[Harness]:
    box, urls = sandbox
    system: str = request.param
    emulator: BaseEmulator = getattr(box, system)
    emulator.reset()
    emulator.faults.reset()
    emulator.expire_tokens()
    attempts: list[Attempt] = []
    sleeps = Sleeps()
    settings, secrets = settings_and_secrets(system, box.credentials)
    async with httpx2.AsyncClient() as http:

        def make(**overrides: str) -> ApiClient:
            values = {**settings, **secrets, **overrides}
            return build_client(
                system,
                base_url=urls[system],
                settings={k: v for k, v in values.items() if k in settings},
                secrets={k: v for k, v in values.items() if k not in settings},
                sandbox=True,
                http=http,
                on_attempt=attempts.append,
                retry=RetryPolicy(sleep=sleeps),
            )

        yield Harness(system, emulator, urls[system], box.credentials, make, make(), attempts, sleeps)
    emulator.faults.reset()


WrongCredentials = dict[str, dict[str, str]]
# For each system, credentials that the emulator rejects at the token endpoint.
WRONG_SECRET: WrongCredentials = {
    "netsuite": {"certificate_id": "not-a-mapped-certificate"},
    "zuora": {"client_secret": "wrong-secret"},
    "zoho": {"client_secret": "wrong-secret"},
}

AsyncCall = Callable[[], Awaitable[Any]]
