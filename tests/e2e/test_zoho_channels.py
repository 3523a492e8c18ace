"""Zoho channels kept alive by the runner: renewed before expiry, re-provisioned after a lapse."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from connectors.zoho.emulator import ZohoEmulator
from runner import channels
from runner.services import Services
from storage import channels as channel_store
from storage import crud
from storage.crypto import Vault
from storage.models import Channel, Connection
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def zoho_integration(engine: Engine, vault: Vault, stack: Stack) -> tuple[int, str]:
    with Session(engine) as session:
        connections = {c.system: c for c in session.exec(select(Connection)).all()}
    integration = crud.create_integration(
        engine, vault, workspace_id=connections["zoho"].workspace_id, name="NetSuite → Zoho", key="zoho-demo",
        source_connection_id=connections["netsuite"].id, target_connection_id=connections["zoho"].id, flows=[],
    )  # fmt: skip
    return integration.id, f"{stack.runner_url}/webhooks/zoho/zoho-demo"


def keep_alive(engine: Engine, vault: Vault, settings: Settings, *, days_ahead: float = 0) -> dict[str, str]:
    services = Services(engine=engine, vault=vault, settings=settings)

    async def run() -> dict[str, str]:
        try:
            return await channels.keep_alive(services, now=utcnow() + timedelta(days=days_ahead))
        finally:
            await services.aclose()

    return asyncio.run(run())


def stored(engine: Engine) -> Channel:
    with Session(engine) as session:
        return session.exec(select(Channel)).one()


def test_a_new_channel_is_provisioned_then_renewed_before_expiry(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings, zoho: ZohoEmulator
) -> None:
    integration_id, notify_url = zoho_integration(engine, vault, stack)
    channel_store.create_channel(
        engine, vault, integration_id=integration_id, events=["Accounts.all"], notify_url=notify_url
    )

    first = keep_alive(engine, vault, settings)
    after_first = stored(engine)
    quiet = keep_alive(engine, vault, settings)  # nothing due yet
    second = keep_alive(engine, vault, settings, days_ahead=6.5)  # within a day of expiry

    assert list(first.values()) == ["re-provisioned"]  # Zoho had never heard of it
    assert after_first.status == "active" and after_first.expires_at is not None
    assert quiet == {}
    assert list(second.values()) == ["renewed"]
    assert [c["channel_id"] for c in zoho.channels()] == [after_first.channel_id]  # type: ignore[attr-defined]


def test_a_lapsed_channel_is_re_provisioned_under_the_same_id_and_token(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings, zoho: ZohoEmulator
) -> None:
    integration_id, notify_url = zoho_integration(engine, vault, stack)
    channel_store.create_channel(
        engine, vault, integration_id=integration_id, events=["Accounts.all"], notify_url=notify_url
    )
    keep_alive(engine, vault, settings)
    # Zoho lets it lapse: eight days pass for its channel store.
    zoho.watch.clock = lambda: time.time() + 8 * 86400  # type: ignore[attr-defined]

    outcome = keep_alive(engine, vault, settings, days_ahead=8)

    assert list(outcome.values()) == ["re-provisioned"]
    live = [c for c in zoho.channels() if not c.get("expired")]  # type: ignore[attr-defined]
    channel = stored(engine)
    assert [c["channel_id"] for c in live] == [channel.channel_id]
    assert channel.status == "active" and channel.last_error is None
    assert channel.expires_at is not None and channel.expires_at > utcnow() + timedelta(days=7)


@pytest.fixture
def zoho(stack: Stack) -> Iterator[ZohoEmulator]:
    emulator = stack.zoho
    yield emulator
    emulator.watch.clock = time.time  # type: ignore[attr-defined]
