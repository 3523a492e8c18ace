"""The Zoho poll under the notification channels: a channel Zoho let lapse is re-provisioned within one
poll, and what changed while it was down reaches NetSuite through the poll.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from runner import zoho_poll
from runner.scheduled import ScheduledWork
from runner.services import Services
from runner.worker import WorkerPool
from storage.crypto import Vault
from storage.models import Channel, Job, Watermark
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack
from tests.e2e.test_zoho_change_flow import edit_in_zoho, link, netsuite_record, open_channel, succeeded
from tests.support.live import wait_for

LAPSE = 8 * 86400.0  # seconds: past the longest channel Zoho grants (a week)


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings, zoho_webhook=True) as running:
        running.netsuite.clear_webhooks()  # only Zoho's side moves in these tests
        yield running
        running.zoho.watch.clock = time.time  # type: ignore[attr-defined]


def poll(engine: Engine, vault: Vault, settings: Settings, *, now: datetime | None = None) -> dict[str, int]:
    services = Services(engine=engine, vault=vault, settings=settings)

    async def once() -> dict[str, int]:
        try:
            return await zoho_poll.poll(services, now=now)
        finally:
            await services.aclose()

    return asyncio.run(once())


def test_a_lapsed_channel_is_re_provisioned_and_the_poll_brings_what_changed_meanwhile(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    channel_id = open_channel(stack, engine, vault, settings)
    netsuite_id = stack.netsuite.seed("customer", {"companyName": "Lapse Co", "phone": "555-0500"})
    zoho_id = stack.zoho.seed("Accounts", {"Account_Name": "Lapse Co", "Phone": "555-0500"})
    link(engine, stack, "customer", netsuite_id, zoho_id)
    integration = stack.zoho_integration_id

    first = poll(engine, vault, settings)  # sets the watermarks only
    stack.zoho.watch.clock = lambda: time.time() + LAPSE  # type: ignore[attr-defined]
    sent = len(stack.zoho.notifications)
    edit_in_zoho(stack, "Accounts", zoho_id, {"Phone": "555-0555"})  # while the channel is down
    unheard = len(stack.zoho.notifications) == sent
    second = poll(engine, vault, settings, now=utcnow() + timedelta(seconds=LAPSE))

    assert first == {f"{integration}/{m}": 0 for m in ("Accounts", "Vendors", "Contacts")}
    assert unheard
    assert second[f"{integration}/Accounts"] == 1
    with Session(engine) as session:
        marks = {
            m.name
            for m in session.exec(select(Watermark).where(col(Watermark.integration_id) == integration))
        }
        channel = session.exec(select(Channel).where(col(Channel.channel_id) == channel_id)).one()
    assert marks == {"zoho-Accounts", "zoho-Vendors", "zoho-Contacts"}
    listings = [r for r in stack.zoho.requests if r["method"] == "GET" and r["path"].startswith("/crm/v8/")]
    polled = [r for r in listings if "if-modified-since" in r["headers"]]
    assert {r["path"] for r in polled} == {"/crm/v8/Accounts", "/crm/v8/Vendors", "/crm/v8/Contacts"}
    assert {r["status"] for r in polled if r["path"] == "/crm/v8/Vendors"} == {304}  # nothing changed there
    assert channel.status == "active" and channel.last_error is None  # re-provisioned by the same poll
    assert [c["expired"] for c in stack.zoho.channels() if c["channel_id"] == channel_id] == [False] * 3
    wait_for(lambda: netsuite_record(stack, "customer", netsuite_id)["phone"] == "555-0555", timeout=20,
             what="the polled change in NetSuite")  # fmt: skip

    # The channel works again: the next edit arrives as a notice, and the poll after it finds nothing new.
    edit_in_zoho(stack, "Accounts", zoho_id, {"Phone": "555-0556"})
    wait_for(lambda: netsuite_record(stack, "customer", netsuite_id)["phone"] == "555-0556", timeout=20,
             what="the notified change in NetSuite")  # fmt: skip
    wait_for(lambda: len(succeeded(engine, f"Accounts/{zoho_id}")) == 2, timeout=20, what="its audit")
    third = poll(engine, vault, settings, now=utcnow() + timedelta(seconds=LAPSE))
    assert third[f"{integration}/Accounts"] == 0
    with Session(engine) as session:
        kinds = [
            j.kind
            for j in session.exec(select(Job).where(col(Job.flow) == "zoho_change").order_by(col(Job.id)))
        ]
    assert kinds == ["poll", "sync"]


def test_the_zoho_poll_runs_as_a_singleton_every_poll_interval(
    engine: Engine, vault: Vault, settings: Settings
) -> None:
    services = Services(engine=engine, vault=vault, settings=settings)
    scheduler = AsyncIOScheduler(timezone="UTC")
    ScheduledWork(services, WorkerPool(services, concurrency=1, lease=30, idle_wait=1)).install(scheduler)

    job = scheduler.get_job("zoho-poll")

    assert job is not None
    assert job.trigger.interval == timedelta(seconds=settings.netsuite_poll_interval)
    assert job.func.func.__name__ == "singleton" and job.func.args[0] == "zoho-poll"
    asyncio.run(services.aclose())
