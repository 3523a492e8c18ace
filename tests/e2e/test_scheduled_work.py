"""The runner's periodic work: heartbeats, singleton leases, token pre-refresh, the payments mirror,
retention."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from runner.scheduled import ScheduledWork
from runner.services import Services
from runner.worker import WorkerPool
from storage import audit, leases
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Connection, Heartbeat, Job, Payment, Token, Watermark
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def work_for(engine: Engine, vault: Vault, settings: Settings, name: str) -> ScheduledWork:
    services = Services(engine=engine, vault=vault, settings=settings)
    return ScheduledWork(services, WorkerPool(services, concurrency=1, lease=30, idle_wait=1, name=name))


def test_the_runner_beats_at_start(stack: Stack, engine: Engine) -> None:
    with Session(engine) as session:
        beats = session.exec(select(Heartbeat)).all()

    assert len(beats) == 1 and beats[0].seen_at > utcnow() - timedelta(minutes=1)


def test_a_lease_is_held_by_one_runner_until_it_expires(engine: Engine) -> None:
    assert leases.acquire(engine, "poll", holder="a", ttl=60) is True
    assert leases.acquire(engine, "poll", holder="b", ttl=60) is False
    assert leases.acquire(engine, "poll", holder="a", ttl=60) is True  # renewal
    leases.release(engine, "poll", holder="a")
    assert leases.acquire(engine, "poll", holder="b", ttl=0.001) is True
    wait_for(lambda: leases.acquire(engine, "poll", holder="c", ttl=60), timeout=5, what="the expired lease")


def test_singleton_work_runs_on_one_of_two_runners(engine: Engine, vault: Vault, settings: Settings) -> None:
    ran: list[str] = []
    first, second = (work_for(engine, vault, settings, name) for name in ("runner-1", "runner-2"))

    async def both() -> None:
        async def job_of(name: str) -> None:
            ran.append(name)

        await first.singleton("demo-singleton", lambda: job_of("runner-1"), 60)
        await second.singleton("demo-singleton", lambda: job_of("runner-2"), 60)
        await first.singleton("demo-singleton", lambda: job_of("runner-1"), 60)
        await first.services.aclose()
        await second.services.aclose()

    asyncio.run(both())

    assert ran == ["runner-1", "runner-1"]


def test_tokens_about_to_expire_are_refreshed_ahead_of_use(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    customer = stack.create_customer({"companyName": "Token Co"})
    wait_for(lambda: stack.zuora_accounts(customer), timeout=20, what="a sync, which mints tokens")
    # write=True: the runner writes meanwhile; a deferred SQLite read-then-write would fail at once.
    with session_scope(engine, write=True) as session:
        for token in session.exec(select(Token)).all():
            token.expires_at = utcnow() + timedelta(minutes=8)  # inside the pre-refresh window
            session.add(token)
    work = work_for(engine, vault, settings, "refresher")

    async def run() -> None:
        await work.prerefresh_tokens()
        await work.services.aclose()

    asyncio.run(run())

    with Session(engine) as session:
        tokens = session.exec(select(Token)).all()
    assert len(tokens) == 2
    assert all(t.reason == "pre-refresh before expiry" for t in tokens)
    assert all(t.expires_at is not None and t.expires_at > utcnow() + timedelta(minutes=50) for t in tokens)


def test_payments_are_mirrored_read_only_and_incrementally(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    customer = stack.create_customer({"companyName": "Paying Co"})
    account = wait_for(lambda: stack.zuora_accounts(customer), timeout=20, what="the account")[0]
    zuora = stack.zuora
    now = time.time()
    for age, amount in ((7200, 10), (3600, 20), (3600, 30)):  # updated two hours and one hour ago
        zuora.clock = lambda age=age: now - age  # type: ignore[method-assign]
        zuora.add_payment(account["id"], amount)  # type: ignore[attr-defined]
    zuora.clock = time.time  # type: ignore[method-assign]
    work = work_for(engine, vault, settings, "payments")
    writes_before = [r for r in zuora.requests if r["method"] in ("POST", "PUT", "PATCH")]

    async def pull() -> tuple[int, int]:
        first = await work.pull_payments_for(stack.integration_id, connection_id(engine, "zuora"))
        zuora.add_payment(account["id"], 40)  # type: ignore[attr-defined]
        second = await work.pull_payments_for(stack.integration_id, connection_id(engine, "zuora"))
        await work.services.aclose()
        return first, second

    first, second = asyncio.run(pull())

    with Session(engine) as session:
        mirrored = session.exec(select(Payment).order_by(col(Payment.amount))).all()
        mark = session.exec(select(Watermark)).one()
    assert first == 3
    assert second == 3  # the new payment, and the two at the watermark's second; not the older one
    assert [p.amount for p in mirrored] == [10, 20, 30, 40]
    assert mark.name == "zuora-payments" and mark.value
    writes_after = [r for r in zuora.requests if r["method"] in ("POST", "PUT", "PATCH")]
    assert writes_after == writes_before  # read only: nothing written anywhere


def test_retention_forgets_old_payloads(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    customer = stack.create_customer({"companyName": "Old News"})
    wait_for(
        lambda: audit.list_records(engine, filters=AuditFilter(source_id=customer, flow="customer_account")),
        timeout=20,
        what="audit",
    )
    with session_scope(engine, write=True) as session:
        for record in session.exec(select(AuditRecord)).all():
            record.started_at = utcnow() - timedelta(days=settings.retention_days + 1)
            session.add(record)
    work = work_for(engine, vault, settings, "retention")

    async def run() -> None:
        await work.retention()
        await work.services.aclose()

    asyncio.run(run())

    with Session(engine) as session:
        records = session.exec(select(AuditRecord)).all()
    assert records and all(r.payload is None and r.source_snapshot is None for r in records)
    assert all(r.outcome for r in records)  # the trail itself stays


def connection_id(engine: Engine, system: str) -> int:
    with Session(engine) as session:
        row = session.exec(select(Connection).where(col(Connection.system) == system)).first()
    assert row is not None and row.id is not None
    return row.id


def test_the_netsuite_poll_catches_changes_the_webhook_missed(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    netsuite_id = connection_id(engine, "netsuite")

    def poll() -> int:
        work = work_for(engine, vault, settings, "poller")

        async def once() -> int:
            try:
                return await work.poll_netsuite_table(
                    stack.integration_id, netsuite_id, ["customer_account"], "customer"
                )
            finally:
                await work.services.aclose()

        return asyncio.run(once())

    first = poll()  # sets the watermark only
    stack.netsuite.clear_webhooks()  # the User Event script misses what follows
    stack.create_customer({"companyName": "Missed By Webhook"})
    second = poll()

    def synced() -> list[dict[str, object]]:
        return [a for a in stack.zuora.accounts() if a["name"] == "Missed By Webhook"]

    wait_for(synced, timeout=20, what="the polled customer to reach Zuora")
    # The overlap window also re-reads the sandbox's demo customers, seeded moments earlier: harmless,
    # since every write is idempotent, and the price of not trusting NetSuite's time zone.
    assert first == 0 and second >= 1
    assert len(synced()) == 1


def test_the_netsuite_poll_reads_invoices_from_the_transaction_table(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    netsuite_id = connection_id(engine, "netsuite")
    stack.netsuite.clear_webhooks()

    def poll() -> int:
        work = work_for(engine, vault, settings, "poller")

        async def once() -> int:
            try:
                return await work.poll_netsuite_table(
                    stack.integration_id, netsuite_id, ["invoice"], "invoice"
                )
            finally:
                await work.services.aclose()

        return asyncio.run(once())

    first = poll()  # sets the watermark only
    customer = stack.netsuite.seed("customer", {"companyName": "Invoiced Co"})
    invoice = stack.netsuite.seed(
        "invoice", {"entity": {"id": customer}, "tranDate": "2026-11-01", "item": {"items": [{"item": {"id": "1"}, "quantity": 1, "rate": 10}]}}
    )  # fmt: skip
    second = poll()

    with Session(engine) as session:
        queued = [job.payload["id"] for job in session.exec(select(Job).where(col(Job.flow) == "invoice"))]
    assert first == 0 and second >= 1
    assert invoice in queued and customer not in queued


def test_a_singleton_run_longer_than_its_lease_keeps_the_lease_until_it_ends(
    engine: Engine, vault: Vault, settings: Settings
) -> None:
    every = 0.2  # seconds: the lease is two intervals, the run lasts about five
    work = work_for(engine, vault, settings, "slow-runner")
    seen_by_other: list[bool] = []

    async def slow() -> None:
        for _ in range(5):
            await asyncio.sleep(every)
            seen_by_other.append(leases.acquire(engine, "slow-poll", holder="other-runner", ttl=2 * every))

    async def run() -> None:
        try:
            await work.singleton("slow-poll", slow, every)
        finally:
            await work.services.aclose()

    asyncio.run(run())

    assert len(seen_by_other) == 5 and not any(seen_by_other)  # renewed while it ran: never up for grabs
