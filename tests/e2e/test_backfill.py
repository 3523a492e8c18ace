"""Backfill per flow: every existing NetSuite record synced once, paged by key past SuiteQL's row cap,
resumable after a crash, throttled, with progress the app can show; and the refusals a person may see."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.http import RetryPolicy
from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.sandbox import SandboxCredentials, build
from demo.wiring import wire
from runner import backfill
from runner.backfill import BackfillRefused, backfill_progress, list_backfills, start_backfill
from runner.services import Services
from storage import queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Integration, Job, JobKind, JobStatus, Outcome
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack
from tests.support.live import serve, wait_for

FLOW = "customer_account"
ROW_CAP = 1_000  # the emulator's rows per query, lowered from 100,000 so a few thousand rows are past it
CUSTOMERS = 2_500  # paged by the driver alone: fast
# Synced through the runner: each sync costs ~20 ms of CPU with runner and emulators in one process, so
# this test pages by 250 under a 250-row cap (603 rows: three pages, two past the cap) to stay near 15 s.
SYNCED_CUSTOMERS = 600
SMALL_PAGE = 250


async def _no_sleep(_seconds: float) -> None:
    return None


def seed_customers(netsuite: NetSuiteEmulator, count: int) -> list[str]:
    """`count` customers straight into the emulator (every tenth inactive: a backfill includes them)."""
    return [
        netsuite.seed("customer", {"companyName": f"Backfill Co {n:05d}", "isInactive": n % 10 == 0})
        for n in range(count)
    ]


def record_jobs(engine: Engine) -> list[Job]:
    """The per-record jobs of the flow (everything but the backfill drivers)."""
    with Session(engine) as session:
        return list(
            session.exec(select(Job).where(col(Job.flow) == FLOW, col(Job.kind) != JobKind.BACKFILL)).all()
        )


def driver(engine: Engine, job_id: int) -> Job:
    with Session(engine) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def record_queries(netsuite: NetSuiteEmulator) -> list[str]:
    """Make the emulator remember every SuiteQL statement it runs (its request log keeps no bodies)."""
    seen: list[str] = []
    run = netsuite.suiteql

    def recording(sql: str) -> list[dict[str, Any]]:
        seen.append(sql)
        return run(sql)

    netsuite.suiteql = recording  # type: ignore[method-assign]
    return seen


# --- the whole product: runner, emulators, demo wiring -----------------------------------------------


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    busy = settings.model_copy(update={"workers": 16})  # 603 syncs in about 15 s
    with running_stack(engine, vault, busy) as running:
        yield running


def test_backfill_syncs_every_customer_exactly_once_past_the_row_cap(
    stack: Stack, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    netsuite = stack.netsuite
    monkeypatch.setattr(backfill, "PAGE", SMALL_PAGE)
    netsuite.suiteql_row_cap = SMALL_PAGE
    seed_customers(netsuite, SYNCED_CUSTOMERS)
    every_id = {record["id"] for record in netsuite.records("customer")}  # the sandbox's demo ones too
    queries = record_queries(netsuite)

    job = start_backfill(
        engine, integration_id=stack.integration_id, flow=FLOW, requested_by="ops@example.com"
    )
    progress = wait_for(
        lambda: (
            (p := backfill_progress(engine, integration_id=stack.integration_id, flow=FLOW))
            and p.status == "finished"
            and p
        ),
        timeout=60,
        interval=0.2,
        what="the backfill to finish",
    )

    assert progress.job_id == job.id and progress.requested_by == "ops@example.com"
    assert (progress.total, progress.queued, progress.done) == (len(every_id),) * 3
    assert (progress.failed, progress.pending, progress.skipped, progress.fraction) == (0, 0, 0, 1.0)
    assert progress.started_at <= progress.updated_at and progress.note is None
    synced = Counter(str(account["crmId"]) for account in stack.zuora.accounts())
    assert set(synced) == every_id and set(synced.values()) == {1}  # every record, exactly once
    pages = [q for q in queries if q.startswith("SELECT id FROM customer WHERE id >")]
    assert len(pages) == 3  # 603 ids: pages two and three lie past the row cap, reached by key


# --- emulators and the demo wiring, no runner: the test drives the backfill's driver job itself --------


@dataclass
class Bench:
    engine: Engine
    netsuite: NetSuiteEmulator
    integration_id: int
    zoho_integration_id: int
    vault: Vault
    settings: Settings

    def services(self) -> Services:
        # Built per event loop (its HTTP pool belongs to one); no real sleeps between HTTP retries.
        return Services(
            engine=self.engine, vault=self.vault, settings=self.settings, retry=RetryPolicy(sleep=_no_sleep)
        )

    def run(self, job: Job, *, worker: str) -> str:
        """One run of the driver `job`, claimed by `worker`, as the worker pool would run it."""

        async def once() -> str:
            services = self.services()
            try:
                return await backfill.execute(services, job, worker=worker)
            finally:
                await services.aclose()

        return asyncio.run(once())

    def progress(self) -> backfill.BackfillProgress:
        found = backfill_progress(self.engine, integration_id=self.integration_id, flow=FLOW)
        assert found is not None
        return found


@pytest.fixture
def bench(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Bench]:
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        stack.enter_context(serve(sandbox.netsuite.app, sock=sockets["netsuite"]))
        for unused in ("zuora", "zoho"):  # nothing is synced here: only NetSuite is read
            sockets[unused].close()
        wiring = wire(engine, vault, sandbox.credentials)
        sandbox.netsuite.suiteql_row_cap = ROW_CAP
        yield Bench(
            engine=engine,
            netsuite=sandbox.netsuite,
            integration_id=wiring.integration_id,
            zoho_integration_id=wiring.zoho_integration_id,
            vault=vault,
            settings=settings,
        )


def take(engine: Engine, job_id: int, *, worker: str, lease: float = 30.0) -> Job | None:
    """Claim the driver as `queue.claim` would (when queued and due, or running on an expired lease: running,
    leased, one attempt more), or None when it is not claimable. `queue.claim` itself would hand out the
    per-record jobs queued before it first, and no worker runs those here."""
    now = utcnow()
    with session_scope(engine, write=True) as session:
        job = session.get(Job, job_id)
        assert job is not None
        due = job.status == JobStatus.QUEUED and job.run_after <= now
        abandoned = job.status == JobStatus.RUNNING and job.lease_until is not None and job.lease_until < now
        if not (due or abandoned):
            return None
        job.status, job.locked_by, job.lease_until = JobStatus.RUNNING, worker, now + timedelta(seconds=lease)
        job.attempts += 1
        session.add(job)
        return job


def run_page(bench: Bench, job_id: int, *, worker: str) -> str:
    claimed = take(bench.engine, job_id, worker=worker)
    assert claimed is not None
    return bench.run(claimed, worker=worker)


def test_backfill_pages_by_key_past_the_row_cap_queuing_each_record_once(bench: Bench) -> None:
    engine, netsuite = bench.engine, bench.netsuite
    seed_customers(netsuite, CUSTOMERS)
    every_id = sorted((r["id"] for r in netsuite.records("customer")), key=int)  # 2,503 with the demo's
    assert len(netsuite.suiteql("SELECT id FROM customer ORDER BY id")) == ROW_CAP  # the cap bites
    queries = record_queries(netsuite)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)

    outcomes = [run_page(bench, job.id, worker="runner-a") for _ in range(3)]

    assert outcomes == [Outcome.SUCCEEDED] * 3 and driver(engine, job.id).status == JobStatus.SUCCEEDED
    jobs = record_jobs(engine)
    assert sorted((j.payload["id"] for j in jobs), key=int) == every_id  # every record, one job each
    assert {j.payload["backfill"] for j in jobs} == {job.id} and {j.kind for j in jobs} == {JobKind.POLL}
    pages = [q for q in queries if q.startswith("SELECT id FROM customer WHERE id >")]
    assert pages == [
        f"SELECT id FROM customer WHERE id > {after} ORDER BY id" for after in ("0", *every_id[999:2000:1000])
    ]
    suiteql = [r for r in netsuite.requests if r["path"].endswith("/suiteql")]
    assert suiteql and all(r["query"].get("offset") == "0" for r in suiteql)  # never paged by offset
    progress = bench.progress()
    assert (progress.total, progress.queued, progress.pending, progress.status) == (
        2503,
        2503,
        2503,
        "running",
    )
    assert progress.paging_done and progress.fraction == 0.0


def test_backfill_resumes_from_its_cursor_after_a_crash_without_queuing_twice(bench: Bench) -> None:
    engine, netsuite = bench.engine, bench.netsuite
    seed_customers(netsuite, 1_500)
    every_id = sorted((r["id"] for r in netsuite.records("customer")), key=int)  # 1,503 with the demo's
    queries = record_queries(netsuite)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    assert run_page(bench, job.id, worker="runner-a") == Outcome.SUCCEEDED  # page 1 of 2
    after_page_one = bench.progress()
    assert (after_page_one.queued, after_page_one.after_id, after_page_one.total) == (
        1000,
        every_id[999],
        ROW_CAP,
    )
    assert driver(engine, job.id).status == JobStatus.QUEUED and driver(engine, job.id).attempts == 0

    # runner-a takes page 2 and dies while NetSuite is still answering.
    crashed = take(engine, job.id, worker="runner-a", lease=0.5)
    assert crashed is not None
    netsuite.faults.latency = 2.0

    async def die_mid_page() -> None:
        services = bench.services()
        task = asyncio.create_task(backfill.execute(services, crashed, worker="runner-a"))
        deadline = time.monotonic() + 10
        while netsuite.faults.in_flight == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await services.aclose()

    asyncio.run(die_mid_page())
    netsuite.faults.latency = 0.0
    assert driver(engine, job.id).status == JobStatus.RUNNING  # left claimed, as a killed runner leaves it
    assert bench.progress().queued == 1000 and len(record_jobs(engine)) == 1000  # nothing half-applied

    # runner-b starts and claims the driver once runner-a's lease has run out; it goes on from the cursor.
    resumed = wait_for(lambda: take(engine, job.id, worker="runner-b"), timeout=10, what="the expired lease")
    assert resumed.attempts == 2  # the crashed run spent one
    assert bench.run(resumed, worker="runner-b") == Outcome.SUCCEEDED

    progress = bench.progress()
    assert progress.paging_done and (progress.total, progress.queued, progress.skipped) == (1503, 1503, 0)
    jobs = record_jobs(engine)
    assert sorted((j.payload["id"] for j in jobs), key=int) == every_id  # one job per record, no repeats
    keyset = [q for q in queries if q.startswith("SELECT id FROM customer WHERE id >")]
    assert keyset == [  # the crashed read got no answer; the resumed one starts from the cursor, not from 0
        "SELECT id FROM customer WHERE id > 0 ORDER BY id",
        f"SELECT id FROM customer WHERE id > {every_id[999]} ORDER BY id",
    ]


def test_a_runner_that_lost_the_lease_queues_nothing(bench: Bench) -> None:
    engine = bench.engine
    seed_customers(bench.netsuite, 20)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    stale = take(engine, job.id, worker="runner-a", lease=0.05)
    assert stale is not None
    taken = wait_for(  # runner-a stalls past its lease (a GC pause, a frozen VM); runner-b takes over
        lambda: queue.claim(engine, worker="runner-b", limit=1, lease=30),
        timeout=10,
        what="the expired lease",
    )
    assert [j.id for j in taken] == [job.id]

    assert bench.run(stale, worker="runner-a") == Outcome.RETRYING
    assert record_jobs(engine) == []
    assert bench.run(taken[0], worker="runner-b") == Outcome.SUCCEEDED
    assert len(record_jobs(engine)) == 23 and driver(engine, job.id).status == JobStatus.SUCCEEDED


def test_ids_already_waiting_in_the_queue_are_not_queued_again(bench: Bench) -> None:
    engine = bench.engine
    ids = seed_customers(bench.netsuite, 10)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    with session_scope(engine) as session:  # a webhook got to two of them first
        for record_id in ids[:2]:
            queue.enqueue(session, integration_id=bench.integration_id, flow=FLOW, payload={"id": record_id})

    assert run_page(bench, job.id, worker="runner-a") == Outcome.SUCCEEDED

    progress = bench.progress()
    assert progress.job_id == job.id
    assert (progress.total, progress.queued, progress.skipped) == (13, 11, 2)
    assert progress.paging_done and progress.status == "running" and progress.pending == 11
    assert 0.15 < progress.fraction < 0.16  # 2 of 13 through: the two left to the webhook's jobs
    every_id = {r["id"] for r in bench.netsuite.records("customer")}
    assert Counter(j.payload["id"] for j in record_jobs(engine)) == Counter(every_id)


def test_the_next_page_waits_while_the_flow_has_a_long_queue(
    bench: Bench, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = bench.engine
    monkeypatch.setattr(backfill, "MAX_WAITING", 3)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    with session_scope(engine) as session:
        for n in range(4):
            queue.enqueue(session, integration_id=bench.integration_id, flow=FLOW, payload={"id": str(n)})
    claimed = take(engine, job.id, worker="runner-a")
    assert claimed is not None
    before = len(bench.netsuite.requests)

    assert bench.run(claimed, worker="runner-a") == Outcome.RETRYING

    waiting = driver(engine, job.id)
    assert waiting.status == JobStatus.QUEUED and waiting.attempts == 0  # postponed, no attempt spent
    assert waiting.run_after > utcnow() + timedelta(seconds=backfill.THROTTLE_DELAY - 2)
    assert len(bench.netsuite.requests) == before  # NetSuite not even asked
    assert "throttled: 4 jobs of customer_account are waiting" in (bench.progress().note or "")
    assert len(record_jobs(engine)) == 4


def test_a_netsuite_outage_puts_the_page_back_with_backoff(bench: Bench) -> None:
    engine = bench.engine
    seed_customers(bench.netsuite, 5)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    bench.netsuite.faults.fail_next(503, count=20)  # more than the client's own tries

    assert run_page(bench, job.id, worker="runner-a") == Outcome.RETRYING

    waiting = driver(engine, job.id)
    assert (
        waiting.status == JobStatus.QUEUED and waiting.attempts == 1 and "503" in (waiting.last_error or "")
    )
    assert waiting.payload["after_id"] == "0" and record_jobs(engine) == []
    assert bench.progress().status == "running" and "503" in (bench.progress().note or "")
    bench.netsuite.faults.reset()
    with session_scope(engine) as session:  # skip the backoff
        row = session.get(Job, job.id)
        assert row is not None
        row.run_after = utcnow()
        session.add(row)
    assert run_page(bench, job.id, worker="runner-b") == Outcome.SUCCEEDED
    assert len(record_jobs(engine)) == 8 and bench.progress().note is None


def set_flows(engine: Engine, integration_id: int, flows: list[str]) -> None:
    with session_scope(engine, write=True) as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        integration.flows = flows
        session.add(integration)


def test_a_backfill_of_a_flow_disabled_meanwhile_stops(bench: Bench) -> None:
    job = start_backfill(bench.engine, integration_id=bench.integration_id, flow=FLOW)
    set_flows(bench.engine, bench.integration_id, [])

    assert run_page(bench, job.id, worker="runner-a") == Outcome.FAILED

    progress = bench.progress()
    assert progress.job_id == job.id and progress.status == "failed"
    assert "customer_account was disabled" in (progress.note or "")


def test_a_failed_backfill_started_again_resumes_from_its_cursor(bench: Bench) -> None:
    engine = bench.engine
    seed_customers(bench.netsuite, 1_500)
    job = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    assert run_page(bench, job.id, worker="runner-a") == Outcome.SUCCEEDED  # page 1 of 2
    set_flows(engine, bench.integration_id, [])
    assert run_page(bench, job.id, worker="runner-a") == Outcome.FAILED  # the flow was switched off
    set_flows(engine, bench.integration_id, [FLOW])

    again = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW, requested_by="ann")

    assert again.id == job.id and again.status == JobStatus.QUEUED and again.attempts == 0
    assert bench.progress().status == "running" and bench.progress().note is None
    assert run_page(bench, job.id, worker="runner-b") == Outcome.SUCCEEDED
    progress = bench.progress()
    assert progress.paging_done and (progress.total, progress.queued) == (1503, 1503)
    assert len({j.payload["id"] for j in record_jobs(engine)}) == len(record_jobs(engine)) == 1503
    fresh = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW, from_start=True)
    assert fresh.id != job.id and fresh.payload["after_id"] == "0"


def test_backfills_are_listed_newest_first(bench: Bench) -> None:
    engine = bench.engine
    assert backfill_progress(engine, integration_id=bench.integration_id, flow=FLOW) is None
    first = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)
    run_page(bench, first.id, worker="w")
    second = start_backfill(engine, integration_id=bench.integration_id, flow=FLOW)  # the first one paged

    listed = list_backfills(engine, integration_id=bench.integration_id)

    assert [p.job_id for p in listed] == [second.id, first.id]
    assert [p.status for p in listed] == ["running", "running"]  # the first's three jobs have not run
    assert (listed[0].total, listed[0].queued, listed[0].fraction) == (None, 0, 0.0)
    assert list_backfills(engine, integration_id=bench.zoho_integration_id) == []


# --- refusals ---------------------------------------------------------------------------------------


class ZuoraFed:
    name = "subscription_event"
    title = "Zuora subscription event → NetSuite custom record"
    source_system = "zuora"
    target_system = "netsuite"
    source_record = ""


@pytest.mark.parametrize(
    ("integration", "flow", "says"),
    [
        ("demo", "no_such_flow", "there is no flow 'no_such_flow'"),
        ("demo", "subscription_event", "is fed by zuora, not by a NetSuite table"),
        (
            "demo-zoho",
            FLOW,
            "customer_account is not enabled on the integration 'NetSuite ↔ Zoho CRM (demo)'",
        ),
        ("missing", FLOW, "there is no integration 999999"),
        ("demo", FLOW + "-twice", "a backfill of customer_account is already queued on this integration"),
    ],
)
def test_start_backfill_refusals_say_why(
    engine: Engine, vault: Vault, monkeypatch: pytest.MonkeyPatch, integration: str, flow: str, says: str
) -> None:
    flows = {**backfill.registry(), "subscription_event": ZuoraFed()}
    monkeypatch.setattr(backfill, "registry", lambda: flows)
    credentials = SandboxCredentials(  # nothing is called: the refusals come before any remote system
        **{
            f.name: "http://127.0.0.1:9" if f.name.endswith("_url") else "x"
            for f in fields(SandboxCredentials)
        }
    )
    wiring = wire(engine, vault, credentials)
    ids = {"demo": wiring.integration_id, "demo-zoho": wiring.zoho_integration_id, "missing": 999_999}
    if flow.endswith("-twice"):
        flow = flow.removesuffix("-twice")
        start_backfill(engine, integration_id=ids[integration], flow=flow)

    with pytest.raises(BackfillRefused) as refused:
        start_backfill(engine, integration_id=ids[integration], flow=flow)

    assert says in str(refused.value)
    assert isinstance(refused.value, ValueError)
    with Session(engine) as session:
        drivers = session.exec(select(Job).where(col(Job.kind) == JobKind.BACKFILL)).all()
    assert len(drivers) == (1 if "already" in says else 0)
