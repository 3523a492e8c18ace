"""Crash safety (design.md invariants 1 and 2): SIGKILL the runner in the middle of a 2,000-event load,
start it again, and again: every acknowledged event is processed, and no customer is posted twice.

The load is what NetSuite would send: 2,000 customers exist in the NetSuite emulator, and a pool of
sender threads POSTs one User Event webhook per customer to the runner. A sender counts an event as
acknowledged only when the runner answered 202. When the connection is refused (no runner listening
between a kill and the restart) the request never arrived, so the sender tries again; when a request
dies in flight the sender cannot know whether it was stored, so it records the event as "unknown" and
moves on, as NetSuite's script would.

While the senders run, the test SIGKILLs the runner once a quarter of the jobs have finished (with
others running), starts a new one on the same port, and does it again at 60%. A killed runner leaves jobs `running` under a lease
(ML_CONNECTOR_JOB_LEASE, 5 s here) and perhaps a Zuora create sent but not yet linked; the next runner
takes the expired leases over, and the link table plus Zuora's Idempotency-Key keep the re-run from
creating a second account. A little Zuora latency keeps jobs in flight so that the kills land mid-work.

Ground truth is the Zuora emulator's accounts (by crmId) and the database: events, jobs, audit records.
Runs on SQLite (one machine) and PostgreSQL (the `engine` fixture is parametrized), about 75-100 s each
on the 2-core development machine: one runner process is CPU-bound on intake plus jobs.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx2
from sqlalchemy.engine import Engine
from sqlmodel import Session, func, select

from connectors.sandbox import Sandbox
from demo.wiring import DemoWiring
from storage.models import InboundEvent, JobStatus, Outcome
from tests.reliability.conftest import (
    Fleet,
    RunnerProcess,
    accounts_by_crm_id,
    all_jobs,
    audit_records,
    elapsed,
    jobs_by_status,
    seed_customers,
)
from tests.support.live import wait_for

EVENTS = 2_000
SENDERS = 16  # webhook deliveries in flight at once
KILL_AT = (0.25, 0.6)  # SIGKILL the live runner when this share of EVENTS jobs has finished
ZUORA_LATENCY = 0.01  # seconds added to every Zuora API call, so jobs are mid-flight when a kill lands
SEND_DEADLINE = 90.0  # seconds a sender keeps retrying a refused delivery
DRAIN_DEADLINE = 180.0  # seconds, from the last restart, for every job to finish
RETRY_PAUSE = 0.1  # seconds a sender waits after a refused connection (a sender's backoff, not a poll)


@dataclass
class Deliveries:
    """What the senders saw, per NetSuite customer id."""

    acknowledged: dict[str, list[int]] = field(default_factory=dict)  # customer → job ids in the 202
    unknown: dict[str, str] = field(default_factory=dict)  # customer → error of a request cut in flight
    refused: Counter[str] = field(default_factory=Counter)  # connection refused, tried again
    lock: threading.Lock = field(default_factory=threading.Lock)


class WebhookSender:
    """Delivers one NetSuite webhook per customer from a thread pool, in the background.

    Each request opens its own connection (no keep-alive), so "connection refused" reliably means the
    request never reached a runner and is safe to send again.
    """

    def __init__(self, url: str, secret: str, customers: list[str]) -> None:
        self.url = url
        self.secret = secret
        self.customers = customers
        self.deliveries = Deliveries()
        self._stop = threading.Event()
        self._http = httpx2.Client(timeout=30.0, limits=httpx2.Limits(max_keepalive_connections=0))
        self._pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="netsuite-webhook")
        self._done: threading.Thread | None = None

    def __enter__(self) -> WebhookSender:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def start(self) -> None:
        futures = [self._pool.submit(self._deliver, customer) for customer in self.customers]
        self._done = threading.Thread(target=lambda: [f.result() for f in futures], daemon=True)
        self._done.start()

    def finished(self) -> bool:
        return self._done is not None and not self._done.is_alive()

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()

    def _deliver(self, customer: str) -> None:
        body = {"recordType": "customer", "id": customer, "eventType": "create"}
        headers = {"X-Webhook-Secret": self.secret}
        deadline = time.monotonic() + SEND_DEADLINE
        d = self.deliveries
        while not self._stop.is_set():
            try:
                response = self._http.post(self.url, json=body, headers=headers)
            except httpx2.ConnectError:
                with d.lock:
                    d.refused[customer] += 1
                if time.monotonic() > deadline:
                    return
                self._stop.wait(RETRY_PAUSE)
                continue
            except httpx2.TransportError as exc:
                with d.lock:
                    d.unknown[customer] = f"{type(exc).__name__}: {exc}"
                return
            if response.status_code == 202:
                with d.lock:
                    d.acknowledged[customer] = list(response.json()["jobs"])
                return
            if response.status_code == 503:  # the runner could not store it and says so: send again
                self._stop.wait(RETRY_PAUSE)
                continue
            with d.lock:
                d.unknown[customer] = f"HTTP {response.status_code}: {response.text[:200]}"
            return


@dataclass(frozen=True)
class Kill:
    runner: str
    finished: int  # jobs finished when the kill landed
    running: int  # jobs in `running` state just before it


def kill_when(engine: Engine, runner: RunnerProcess, finished_at_least: int) -> Kill:
    """SIGKILL `runner` once `finished_at_least` jobs have finished and some are running."""

    def mid_work() -> Counter[str] | None:
        assert runner.alive(), f"{runner.name} died on its own:\n{runner.log()[-3000:]}"
        counts = jobs_by_status(engine)
        finished = counts[JobStatus.SUCCEEDED] + counts[JobStatus.DEAD]
        return counts if finished >= finished_at_least and counts[JobStatus.RUNNING] else None

    counts = wait_for(
        mid_work, timeout=DRAIN_DEADLINE, interval=0.05, what=f"{finished_at_least} finished jobs"
    )
    runner.kill()
    return Kill(runner.name, counts[JobStatus.SUCCEEDED] + counts[JobStatus.DEAD], counts[JobStatus.RUNNING])


def kill_and_restart(
    engine: Engine, fleet: Fleet, runner: RunnerProcess, started: float
) -> tuple[list[Kill], RunnerProcess]:
    """Kill the live runner at each KILL_AT share of finished jobs and start the next on its port."""
    kills: list[Kill] = []
    for share in KILL_AT:
        kill = kill_when(engine, runner, int(EVENTS * share))
        kills.append(kill)
        print(f"[{elapsed(started)}] SIGKILL {kill.runner}: {kill.finished} finished, {kill.running} running")
        runner = fleet.restart(runner)
        print(f"[{elapsed(started)}] {runner.name} up on the same port")
    return kills, runner


def count_events(engine: Engine) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(InboundEvent)).one())


def test_runner_killed_mid_load_loses_no_acknowledged_event_and_posts_none_twice(
    engine: Engine, sandbox: Sandbox, wired: DemoWiring, fleet: Fleet
) -> None:
    started = time.monotonic()
    customers = seed_customers(sandbox, EVENTS)
    sandbox.zuora.faults.latency = ZUORA_LATENCY
    runner = fleet.start()[0]
    url = f"{runner.url}/webhooks/netsuite/{wired.integration_key}"
    print(f"\n[{elapsed(started)}] {runner.name} up on {engine.dialect.name}; sending {EVENTS} webhooks")
    with WebhookSender(url, wired.netsuite_secret, customers) as sender:
        sender.start()
        kills, runner = kill_and_restart(engine, fleet, runner, started)
        wait_for(sender.finished, timeout=DRAIN_DEADLINE, interval=0.1, what="the senders to finish")

    d = sender.deliveries
    print(
        f"[{elapsed(started)}] senders done: {len(d.acknowledged)} acknowledged, {len(d.unknown)} unknown, "
        f"{sum(d.refused.values())} refused connections retried"
    )

    def drained() -> bool:
        assert runner.alive(), f"{runner.name} died:\n{runner.log()[-3000:]}"
        counts = jobs_by_status(engine)
        return counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0

    wait_for(drained, timeout=DRAIN_DEADLINE, interval=0.2, what="every job to finish")
    print(f"[{elapsed(started)}] all jobs finished: {dict(jobs_by_status(engine))}")

    # Every kill landed with work in flight, and that work was taken over after the lease ran out.
    jobs = all_jobs(engine)
    reclaimed = [job.id for job in jobs if job.attempts > 1]
    print(f"[{elapsed(started)}] jobs re-run after a kill: {len(reclaimed)}")
    assert reclaimed, "no job was re-run: the kills did not land mid-job"

    # Invariant 1: nothing acknowledged is lost. Each 202 named jobs, and each of them succeeded.
    assert len(d.acknowledged) + len(d.unknown) == EVENTS, "a sender gave up on a refused delivery"
    assert len(d.acknowledged) >= EVENTS * 0.9, f"too few deliveries acknowledged: {len(d.unknown)} unknown"
    status = {job.id: job.status for job in jobs}
    acknowledged_jobs = [job_id for job_ids in d.acknowledged.values() for job_id in job_ids]
    assert len(acknowledged_jobs) == len(d.acknowledged), "one customer event queues one job"
    assert [j for j in acknowledged_jobs if status.get(j) != JobStatus.SUCCEEDED] == []
    assert Counter(job.status for job in jobs) == Counter({JobStatus.SUCCEEDED: len(jobs)})
    assert count_events(engine) == len(jobs), "every stored event has its job, and no job lacks its event"

    # Invariant 2: no duplicate posting, checked on Zuora itself.
    accounts = accounts_by_crm_id(sandbox)
    assert [crm_id for crm_id, n in accounts.items() if n > 1] == []
    assert [c for c in d.acknowledged if accounts[c] != 1] == []
    assert set(accounts) <= set(customers), "an account for a customer nobody sent"

    # Audit: every job ends in a succeeded record; a create is audited at most once per customer.
    records = audit_records(engine)
    last_outcome = {record.job_id: record.outcome for record in records}  # oldest first: last one wins
    assert [job.id for job in jobs if last_outcome.get(job.id) != Outcome.SUCCEEDED] == []
    creates = Counter(record.source_id for record in records if record.action == "create")
    assert [source for source, n in creates.items() if n > 1] == []

    # How hard the guards were tried: a `link` action is an account created by a killed run, found by
    # crmId and linked instead of created again; account POSTs beyond one per account would be re-sends
    # answered from Zuora's Idempotency-Key store.
    posts = sum(1 for r in sandbox.zuora.requests if r["method"] == "POST" and r["path"] == "/v1/accounts")
    actions = Counter(record.action for record in records if record.outcome == Outcome.SUCCEEDED)
    print(
        f"[{elapsed(started)}] {len(accounts)} accounts from {posts} account POSTs; {len(records)} audit "
        f"records; succeeded actions {dict(actions)}; kills {[(k.finished, k.running) for k in kills]}"
    )
