"""One harness per system: its emulator served on loopback and the product's client pointed at it.

The contract suite is parametrized over the three harnesses, so every behaviour is asserted for
NetSuite, Zuora and Zoho CRM alike; system differences live here, not in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from cryptography.hazmat.primitives import serialization

from connectors.emulator_kit import BaseEmulator
from connectors.http import ApiClient, Attempt, RetryPolicy
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.emulator import NetSuiteEmulator
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
    make_at: Callable[..., ApiClient]  # make_at(base_url, **overrides) -> client of another instance

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

    def revoke_credentials(self) -> dict[str, int]:
        """Revoke the harness's credentials through the emulators' shared test hook, over HTTP, as an
        administrator would in the real system (see `restore_credentials`)."""
        target = {
            "netsuite": {"certificate_id": self.credentials.netsuite_certificate_id},
            "zuora": {"client_id": self.credentials.zuora_client_id},
            "zoho": {"refresh_token": self.credentials.zoho_refresh_token},
        }[self.system]
        response = httpx2.post(f"{self.url}/_emulator/revoke", json=target)
        assert response.status_code == 200, response.text
        return dict(response.json()["revoked"])

    def restore_credentials(self) -> None:
        """Register the harness's credentials again (revocations survive an emulator reset)."""
        c = self.credentials
        if self.system == "netsuite":
            key = serialization.load_pem_private_key(c.netsuite_private_key.encode(), password=None)
            public = key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            self.emulator.register_m2m_client(  # type: ignore[attr-defined]
                c.netsuite_client_id, c.netsuite_certificate_id, public.decode()
            )
        elif self.system == "zuora":
            self.emulator.register_client(c.zuora_client_id, c.zuora_client_secret)  # type: ignore[attr-defined]
        else:
            self.emulator.register_client(  # type: ignore[attr-defined]
                c.zoho_client_id, c.zoho_client_secret, c.zoho_refresh_token
            )

    async def page_through(self, count: int) -> tuple[list[dict[str, Any]], int]:
        """Seed `count` records and read them back through the client's paged listing, with pages small
        enough to need several; returns the rows and the number of page requests made."""
        client: Any = self.client
        before = len(self.api_attempts())
        if self.system == "netsuite":
            first = self.emulator.seed("customer", {"companyName": "paged-0"})
            for n in range(1, count):
                self.emulator.seed("customer", {"companyName": f"paged-{n}"})
            query = f"SELECT id FROM customer WHERE id >= {first} ORDER BY id"
            rows = [row async for row in client.suiteql(query, limit=3)]
        elif self.system == "zuora":
            account = await client.create_account(
                {"name": "Paged Co", "currency": "USD", "billCycleDay": 1,
                 "billToContact": {"firstName": "A", "lastName": "B"}},
                idempotency_key="paged-account",
            )  # fmt: skip
            before = len(self.api_attempts())
            for n in range(count):
                self.emulator.add_payment(account["accountId"], 10 + n)  # type: ignore[attr-defined]
            rows = [row async for row in client.payments(accountId=account["accountId"])]
        else:
            for n in range(count):
                self.emulator.seed("Accounts", {"Account_Name": f"Paged {n}"})
            rows = [row async for row in client.list_records("Accounts", fields=["Account_Name"], per_page=3)]
        return rows, len(self.api_attempts()) - before


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

        def make_at(base_url: str, **overrides: str) -> ApiClient:
            values = {**settings, **secrets, **overrides}
            return build_client(
                system,
                base_url=base_url,
                settings={k: v for k, v in values.items() if k in settings},
                secrets={k: v for k, v in values.items() if k not in settings},
                sandbox=True,
                http=http,
                on_attempt=attempts.append,
                retry=RetryPolicy(sleep=sleeps),
            )

        def make(**overrides: str) -> ApiClient:
            return make_at(urls[system], **overrides)

        yield Harness(
            system, emulator, urls[system], box.credentials, make, make(), attempts, sleeps, make_at
        )
    emulator.faults.reset()


WrongCredentials = dict[str, dict[str, str]]
# For each system, credentials that the emulator rejects at the token endpoint.
WRONG_SECRET: WrongCredentials = {
    "netsuite": {"certificate_id": "not-a-mapped-certificate"},
    "zuora": {"client_secret": "wrong-secret"},
    "zoho": {"client_secret": "wrong-secret"},
}

AsyncCall = Callable[[], Awaitable[Any]]


# --- NetSuite's other ways in (authorization code, TBA), on an emulator of their own -----------------

ACCOUNT = "1234567_SB1"
REDIRECT = "https://app.example.test/oauth/netsuite"
CODE_SECRET = "code-secret-" + "f" * 20  # the authorization-code client's secret
TBA_CREDS = {
    "consumer_key": "ck-" + "a" * 20,
    "consumer_secret": "cs-" + "b" * 20,
    "token_id": "tk-" + "c" * 20,
    "token_secret": "ts-" + "d" * 20,
}


async def _no_sleep(_seconds: float) -> None:
    return None


@pytest.fixture
async def netsuite() -> AsyncIterator[tuple[NetSuiteEmulator, str, httpx2.AsyncClient]]:
    emulator = NetSuiteEmulator(ACCOUNT)
    emulator.register_auth_code_client("code-client", CODE_SECRET, REDIRECT)
    emulator.register_tba(**TBA_CREDS)
    for n in range(3):
        emulator.seed("customer", {"companyName": f"Customer {n}"})
    with serve(emulator.app) as url:
        async with httpx2.AsyncClient() as http:
            yield emulator, url, http


def netsuite_client(
    url: str, http: httpx2.AsyncClient, attempts: list[Attempt], **settings: Any
) -> NetSuiteClient:
    client = build_client(
        "netsuite",
        base_url=url,
        settings={
            "account_id": ACCOUNT,
            **{k: v for k, v in settings.items() if "secret" not in k and k != "refresh_token"},
        },
        secrets={k: v for k, v in settings.items() if "secret" in k or k == "refresh_token"},
        sandbox=True,
        http=http,
        on_attempt=attempts.append,
        retry=RetryPolicy(sleep=_no_sleep),
    )
    assert isinstance(client, NetSuiteClient)
    return client


async def consent(url: str, http: httpx2.AsyncClient, client: NetSuiteClient) -> dict[str, Any]:
    """Step 1 and 2 of the authorization code grant with PKCE, as the app does it."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    state = secrets.token_urlsafe(8)
    authorize = client.authorize_url(
        redirect_uri=REDIRECT, state=state, code_challenge=challenge, ui_base=url
    )
    redirect = await http.get(authorize, follow_redirects=False)
    assert redirect.status_code in (302, 303), redirect.text
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["state"] == [state]
    return await client.exchange_code(code=query["code"][0], redirect_uri=REDIRECT, code_verifier=verifier)
