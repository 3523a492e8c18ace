"""Tokens kept in the database: refreshed once across processes, re-read after the lock, cooled down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from functools import partial
from pathlib import Path

import pytest
from anyio import to_thread
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.auth import MemoryTokens, TokenGrant
from connectors.errors import ConfigurationError, TransientError
from connectors.http import Attempt
from connectors.registry import SYSTEMS
from connectors.sync import ping_connection
from connectors.zoho.emulator import ZohoEmulator
from connectors.zuora.emulator import ZuoraEmulator
from runner.services import Services
from storage import crud
from storage.crypto import Vault
from storage.models import Token
from storage.settings import Settings
from storage.tokens import StoredRefreshBudget, refresh_log
from storage.types import utcnow
from tests.support.live import serve, wait_for

REPO = Path(__file__).resolve().parents[2]
CLIENT_ID, CLIENT_SECRET = "tokens-client", "tokens-secret-value"
PROCESS = """
import asyncio, pathlib, sys, time
from cryptography.fernet import Fernet
from storage.crypto import Vault
from storage.db import make_engine
from storage.settings import Settings
from runner.services import Services
url, key, connection_id, ready, go = sys.argv[1:6]
engine = make_engine(url)
async def main():
    services = Services(engine=engine, vault=Vault([key.encode()]),
                        settings=Settings.model_validate({"ML_CONNECTOR_SANDBOX": True}))
    client = await services.client_for(int(connection_id))
    pathlib.Path(ready).touch()
    deadline = time.monotonic() + 30
    while not pathlib.Path(go).exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    await asyncio.gather(*(client.find_account_by_crm_id(f"x{i}") for i in range(8)))
    await services.aclose()
asyncio.run(main())
"""


@pytest.fixture
def zuora() -> Iterator[tuple[ZuoraEmulator, str]]:
    emulator = ZuoraEmulator()
    emulator.register_client(CLIENT_ID, CLIENT_SECRET)
    with serve(emulator.app) as url:
        yield emulator, url


def token_requests(emulator: ZuoraEmulator) -> int:
    return sum(1 for r in emulator.requests if r["path"] == "/oauth/token")


def test_two_processes_with_an_expired_token_cause_exactly_one_refresh(
    engine: Engine, database_url: str, zuora: tuple[ZuoraEmulator, str], tmp_path: Path
) -> None:
    emulator, url = zuora
    key = b"6l0iSw9Oe0Pv6kcXr2yjH3mvTqnD4_Kp9qvKJrCUCJk="
    vault = Vault([key])
    workspace = crud.create_workspace(engine, name="T")
    assert workspace.id is not None
    connection = crud.create_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="zuora",
        name="z",
        base_url=url,
        settings={"client_id": CLIENT_ID},
        secrets={"client_secret": CLIENT_SECRET},
    )
    with Session(engine) as session:  # a token that expired a minute ago
        session.add(
            Token(
                connection_id=connection.id,
                access_token_encrypted=vault.encrypt("long-expired"),
                expires_at=utcnow() - timedelta(minutes=1),
            )
        )
        session.commit()
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                PROCESS,
                database_url,
                key.decode(),
                str(connection.id),
                str(tmp_path / f"r{i}"),
                str(go),
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    wait_for(
        lambda: all((tmp_path / f"r{i}").exists() for i in range(2)), timeout=60, what="both runners ready"
    )
    go.touch()
    outputs = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], outputs
    assert token_requests(emulator) == 1
    api_calls = [r for r in emulator.requests if r["path"] == "/object-query/accounts"]
    assert len(api_calls) == 16 and all(r["status"] == 200 for r in api_calls)
    with Session(engine) as session:
        row = session.exec(select(Token).where(col(Token.connection_id) == connection.id)).one()
    assert row.reason == "expiring" and row.failures == 0
    assert row.expires_at is not None and row.expires_at > utcnow() + timedelta(minutes=50)


def make_connection(
    engine: Engine, vault: Vault, system: str, url: str, settings: dict, secrets: dict
) -> int:
    workspace = crud.get_workspace_by_name(engine, name="T") or crud.create_workspace(engine, name="T")
    assert workspace.id is not None
    return crud.create_connection(
        engine, vault, workspace_id=workspace.id, system=system, name=system, base_url=url,
        settings=settings, secrets=secrets,
    ).id  # fmt: skip


def services_for(engine: Engine, vault: Vault) -> Services:
    return Services(
        engine=engine, vault=vault, settings=Settings.model_validate({"ML_CONNECTOR_SANDBOX": True})
    )


async def test_failed_refresh_cools_down_instead_of_hammering(
    engine: Engine, vault: Vault, zuora: tuple[ZuoraEmulator, str]
) -> None:
    emulator, url = zuora
    connection_id = make_connection(
        engine, vault, "zuora", url, {"client_id": CLIENT_ID}, {"client_secret": "not-the-secret"}
    )
    services = services_for(engine, vault)
    client = await services.client_for(connection_id)

    with pytest.raises(ConfigurationError):
        await client.find_account_by_crm_id("a")
    with pytest.raises(TransientError, match="cooling down") as caught:
        await client.find_account_by_crm_id("b")

    await services.aclose()
    assert token_requests(emulator) == 1
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    with Session(engine) as session:
        row = session.exec(select(Token).where(col(Token.connection_id) == connection_id)).one()
    assert row.failures == 1 and "Zuora refused" in row.reason
    assert "not-the-secret" not in row.reason


async def test_zoho_refresh_budget_stays_under_zohos_token_limit(engine: Engine, vault: Vault) -> None:
    emulator = ZohoEmulator()
    emulator.register_client("1000.C", "zoho-secret", "1000.refresh")
    with serve(emulator.app) as url:
        connection_id = make_connection(
            engine, vault, "zoho", url, {"client_id": "1000.C"},
            {"client_secret": "zoho-secret", "refresh_token": "1000.refresh"},
        )  # fmt: skip
        services = services_for(engine, vault)
        client = await services.client_for(connection_id)
        token = await client.tokens.get()
        with pytest.raises(TransientError, match="token refreshes in the last 10 minutes") as caught:
            for _ in range(10):  # every token "rejected": each call asks for a new one
                token = await client.tokens.get(stale=token, reason="test")
        await services.aclose()

    assert emulator.token_requests == SYSTEMS["zoho"].refresh_budget[0]  # type: ignore[index]
    assert emulator.token_requests < 10  # Zoho's own limit was never reached
    assert caught.value.retry_after is not None and caught.value.retry_after > 500


def token_row(engine: Engine, connection_id: int) -> Token:
    with Session(engine) as session:
        return session.exec(select(Token).where(col(Token.connection_id) == connection_id)).one()


async def test_a_token_older_than_a_day_is_refreshed_before_it_expires(
    engine: Engine, vault: Vault, zuora: tuple[ZuoraEmulator, str]
) -> None:
    emulator, url = zuora
    connection_id = make_connection(
        engine, vault, "zuora", url, {"client_id": CLIENT_ID}, {"client_secret": CLIENT_SECRET}
    )
    with Session(engine) as session:  # still valid for an hour, but minted 25 hours ago
        session.add(
            Token(
                connection_id=connection_id,
                access_token_encrypted=vault.encrypt("a-day-old"),
                expires_at=utcnow() + timedelta(hours=1),
                refreshed_at=utcnow() - timedelta(hours=25),
            )
        )
        session.commit()
    services = services_for(engine, vault)
    client = await services.client_for(connection_id)

    await client.find_account_by_crm_id("a")
    await services.aclose()

    assert token_requests(emulator) == 1
    assert [r["status"] for r in emulator.requests if r["path"] == "/object-query/accounts"] == [200]
    row = token_row(engine, connection_id)
    assert row.reason.startswith("older than 24 h")
    assert row.refreshed_at is not None and row.refreshed_at > utcnow() - timedelta(minutes=1)


def test_memory_tokens_refresh_a_token_older_than_a_day() -> None:
    now = [1_000_000.0]
    minted: list[str] = []

    async def fetch() -> TokenGrant:  # a token endpoint handing out week-long tokens
        minted.append(f"token-{len(minted)}")
        return TokenGrant(minted[-1], expires_in=7 * 86400)

    tokens = MemoryTokens(fetch, clock=lambda: now[0])

    async def day() -> list[str]:
        first = await tokens.get()
        now[0] += 86400 - 1
        same = await tokens.get()
        now[0] += 1
        return [first, same, await tokens.get()]

    assert asyncio.run(day()) == ["token-0", "token-0", "token-1"]
    assert tokens.reasons == ["no token yet", "older than 24 h (refreshed at least daily)"]


async def test_every_refresh_keeps_its_reason_on_the_token_call_and_in_the_log(
    engine: Engine, vault: Vault, zuora: tuple[ZuoraEmulator, str]
) -> None:
    emulator, url = zuora
    connection_id = make_connection(
        engine, vault, "zuora", url, {"client_id": CLIENT_ID}, {"client_secret": CLIENT_SECRET}
    )
    attempts: list[Attempt] = []

    async def one_call(*, expire: bool = False) -> None:
        services = Services(
            engine=engine,
            vault=vault,
            settings=Settings.model_validate({"ML_CONNECTOR_SANDBOX": True}),
            on_call=attempts.append,
        )
        client = await services.client_for(connection_id)
        if expire:
            emulator.expire_tokens()  # the token the row holds is refused: a 401, then a refresh
        await client.find_account_by_crm_id("a")
        await services.aclose()

    await one_call()  # no token yet
    await one_call(expire=True)  # refused
    with Session(engine) as session:  # about to expire
        row = session.exec(select(Token).where(col(Token.connection_id) == connection_id)).one()
        row.expires_at = utcnow() + timedelta(seconds=60)
        session.add(row)
        session.commit()
    await one_call()

    rejected = f"401 from GET {url}/object-query/accounts"
    reasons = ["no token yet", rejected, "expiring"]
    log = refresh_log(token_row(engine, connection_id).extra)
    assert [(entry["reason"], entry["ok"]) for entry in log] == [(reason, True) for reason in reasons]
    token_calls = [a.response_excerpt for a in attempts if a.url.endswith("/oauth/token")]
    assert token_calls == [f"(withheld: token response) refresh reason: {reason}" for reason in reasons]
    assert token_row(engine, connection_id).reason == "expiring"


async def test_app_pings_of_a_saved_connection_share_the_runners_budget(engine: Engine, vault: Vault) -> None:
    emulator = ZohoEmulator()
    emulator.register_client("1000.SHARED", "zoho-secret", "1000.shared.refresh")
    settings = {"client_id": "1000.SHARED", "data_centre": "com"}
    secrets = {"client_secret": "zoho-secret", "refresh_token": "1000.shared.refresh"}
    with serve(emulator.app) as url:
        connection_id = make_connection(engine, vault, "zoho", url, settings, secrets)
        services = services_for(engine, vault)
        client = await services.client_for(connection_id)
        await client.tokens.get()  # the runner's own refresh
        await services.aclose()
        budget = SYSTEMS["zoho"].refresh_budget
        assert budget is not None
        shared = StoredRefreshBudget(engine=engine, connection_id=connection_id, system="zoho", budget=budget)

        results = [
            await to_thread.run_sync(
                partial(
                    ping_connection, "zoho", base_url=url, settings=settings, secrets=secrets, sandbox=True,
                    refresh_budget=shared,
                )
            )
            for _ in range(budget[0] + 1)
        ]  # fmt: skip

    assert [r.ok for r in results] == [True] * (budget[0] - 1) + [False] * 2
    assert emulator.token_requests == budget[0]  # runner and app together: the runner's budget
    assert "Wait 10 minutes" in results[-1].message
