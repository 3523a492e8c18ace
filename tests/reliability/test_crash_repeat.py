"""Crashes, again and again (design.md invariants 1, 2 and 5): SIGKILL the runner at chosen kinds of moment,
five times in a row, restarting it each time; nothing acknowledged is lost and nothing is posted twice.

The load is NetSuite's: each of CUSTOMERS customers is announced by two User Event webhooks, one to the
NetSuite ↔ Zuora integration (the per-record `customer_account` flow) and one to the NetSuite ↔ Zoho
integration (the `customer_zoho` batch flow, up to 100 records an upsert). Paced sender threads keep
deliveries arriving through the whole kill sequence; a delivery counts as acknowledged only when the
runner answered 202 (see test_runner_crash.py for the sender's rules: a refused connection is sent again,
a request cut mid-flight is "unknown" and not sent again, as NetSuite's script would).

The kills, each after a random pause of KILL_PAUSE seconds once the runner is up, and each waiting for
its moment:

    intake        deliveries in flight at the runner
    mid-job       `customer_account` jobs running (Zuora latency keeps them running)
    mid-batch     `customer_zoho` jobs running (Zoho latency keeps an upsert in flight)
    token refresh NetSuite's tokens were just expired and its token endpoint is slowed down: the kill
                  lands while the runner holds the token row locked waiting for the new token
    any moment    whatever the runner is doing

Then the last runner drains the queue. Ground truth: the Zuora accounts (by crmId) and Zoho Accounts
(by NetSuite_Id) in the emulators, the jobs, links and audit records in the database.

Runs on SQLite and PostgreSQL, about 30-45 s each on the 2-core development machine. The random pauses
come from a seed printed at the start (ML_CONNECTOR_TEST_CRASH_SEED replays one).
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import httpx2
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.sandbox import Sandbox
from demo.wiring import DemoWiring
from storage.models import InboundEvent, Job, JobStatus, Outcome
from tests.reliability.conftest import (
    Fleet,
    RunnerProcess,
    accounts_by_crm_id,
    all_jobs,
    audit_records,
    elapsed,
    jobs_by_status,
    linked_targets,
    seed_customers,
    zoho_records_by_netsuite_id,
)
from tests.support.live import wait_for

CUSTOMERS = 300  # each announced to both integrations: 600 deliveries, 600 jobs
SENDERS = 4  # sender threads
SEND_PACE = 0.08  # seconds between one sender's deliveries: ~45 deliveries/s, spread over the kills
KILL_PAUSE = (0.2, 2.0)  # seconds: a random pause in this range before each kill's moment is sought
MOMENT_DEADLINE = 20.0  # seconds to find a kill's moment
ZUORA_LATENCY = 0.05  # seconds per Zuora call, so account jobs are mid-flight when a kill lands
ZOHO_LATENCY = 0.5  # seconds per Zoho call, so a batch upsert is mid-flight when a kill lands
TOKEN_LATENCY = 1.5  # seconds NetSuite's token endpoint takes while the token-refresh kill is sought
SEND_DEADLINE = 60.0  # seconds a sender keeps retrying a refused delivery
DRAIN_DEADLINE = 60.0  # seconds, from the last restart, for every job to finish
RETRY_PAUSE = 0.1  # seconds a sender waits after a refused connection (its backoff)
FLOWS = ("customer_account", "customer_zoho")


@dataclass(frozen=True)
class Delivery:
    """One webhook: a customer announced to one integration."""

    customer: str
    key: str
    secret: str


@dataclass
class Deliveries:
    """What the senders saw, per delivery."""

    acknowledged: dict[Delivery, list[int]] = field(default_factory=dict)  # → job ids in the 202
    unknown: dict[Delivery, str] = field(default_factory=dict)  # cut mid-request: stored or not
    refused: int = 0  # connections refused (no runner listening) and sent again
    in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


class PacedSender:
    """Sends every delivery from SENDERS threads, each pausing SEND_PACE between its deliveries."""

    def __init__(self, url: str, deliveries: list[Delivery]) -> None:
        self.url = url
        self.deliveries = deliveries
        self.seen = Deliveries()
        self._stop = threading.Event()
        self._next = iter(deliveries)
        self._next_lock = threading.Lock()
        self._http = httpx2.Client(timeout=30.0, limits=httpx2.Limits(max_keepalive_connections=0))
        self._pool = ThreadPoolExecutor(max_workers=SENDERS, thread_name_prefix="paced-webhook")
        self._workers = [self._pool.submit(self._send_all) for _ in range(SENDERS)]

    def finished(self) -> bool:
        return all(worker.done() for worker in self._workers)

    def in_flight(self) -> int:
        with self.seen.lock:
            return self.seen.in_flight

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._http.close()
        for worker in self._workers:
            if worker.done():
                worker.result()  # a sender's own bug fails the test here

    def _send_all(self) -> None:
        while not self._stop.is_set():
            with self._next_lock:
                delivery = next(self._next, None)
            if delivery is None:
                return
            self._deliver(delivery)
            self._stop.wait(SEND_PACE)

    def _deliver(self, delivery: Delivery) -> None:
        body = {"recordType": "customer", "id": delivery.customer, "eventType": "create"}
        headers = {"X-Webhook-Secret": delivery.secret}
        url = f"{self.url}/webhooks/netsuite/{delivery.key}"
        deadline = time.monotonic() + SEND_DEADLINE
        seen = self.seen
        while not self._stop.is_set() and time.monotonic() < deadline:
            with seen.lock:
                seen.in_flight += 1
            try:
                response = self._http.post(url, json=body, headers=headers)
            except httpx2.ConnectError:
                with seen.lock:
                    seen.refused += 1
                self._stop.wait(RETRY_PAUSE)
                continue
            except httpx2.TransportError as exc:
                with seen.lock:
                    seen.unknown[delivery] = f"{type(exc).__name__}: {exc}"
                return
            finally:
                with seen.lock:
                    seen.in_flight -= 1
            if response.status_code == 202:
                with seen.lock:
                    seen.acknowledged[delivery] = list(response.json()["jobs"])
                return
            if response.status_code == 503:  # not stored, and the runner says so: send again
                self._stop.wait(RETRY_PAUSE)
                continue
            with seen.lock:
                seen.unknown[delivery] = f"HTTP {response.status_code}: {response.text[:200]}"
            return


def running(engine: Engine, flow: str) -> int:
    with Session(engine) as session:
        query = select(func.count()).where(col(Job.flow) == flow, col(Job.status) == JobStatus.RUNNING)
        return int(session.exec(query).one())


@dataclass(frozen=True)
class Kill:
    moment: str
    runner: str
    seen: str  # what was going on when the kill landed


def test_runner_killed_five_times_at_chosen_moments_loses_nothing_acknowledged_and_posts_nothing_twice(
    engine: Engine, sandbox: Sandbox, wired: DemoWiring, fleet: Fleet
) -> None:
    started = time.monotonic()
    seed = int(os.environ.get("ML_CONNECTOR_TEST_CRASH_SEED") or random.randrange(1_000_000))
    rng = random.Random(seed)
    customers = seed_customers(sandbox, CUSTOMERS)
    sandbox.zuora.faults.latency = ZUORA_LATENCY
    sandbox.zoho.faults.latency = ZOHO_LATENCY
    netsuite = sandbox.netsuite
    deliveries = [
        Delivery(customer, key, secret)
        for customer in customers
        for key, secret in (
            (wired.integration_key, wired.netsuite_secret),
            (wired.zoho_integration_key, wired.zoho_netsuite_secret),
        )
    ]
    runner = fleet.start()[0]
    print(f"\n[{elapsed(started)}] {runner.name} up on {engine.dialect.name}; seed {seed}")
    sender = PacedSender(runner.url, deliveries)

    def moment(what: str, found: Callable[[], object]) -> Callable[[RunnerProcess], str]:
        def seek(live: RunnerProcess) -> str:
            def check() -> object:
                assert live.alive(), f"{live.name} died on its own:\n{live.log()[-3000:]}"
                return found()

            return str(wait_for(check, timeout=MOMENT_DEADLINE, interval=0.01, what=what))

        return seek

    def token_refresh(live: RunnerProcess) -> str:
        netsuite.faults.token_latency = TOKEN_LATENCY
        netsuite.expire_tokens()
        try:
            return moment(
                "a NetSuite token refresh in flight",
                lambda: (
                    netsuite.faults.tokens_in_flight and f"{netsuite.faults.tokens_in_flight} token request"
                ),
            )(live)
        finally:
            netsuite.faults.token_latency = 0.0

    def deliveries_in_flight() -> str:
        return f"{n} deliveries" if (n := sender.in_flight()) else ""

    def jobs_running(flow: str) -> Callable[[], str]:
        return lambda: f"{n} {flow} jobs running" if (n := running(engine, flow)) else ""

    plan: list[tuple[str, Callable[[RunnerProcess], str]]] = [
        ("intake", moment("a delivery in flight", deliveries_in_flight)),
        ("mid-job", moment("a running account job", jobs_running(FLOWS[0]))),
        ("mid-batch", moment("a running Zoho batch", jobs_running(FLOWS[1]))),
        ("token refresh", token_refresh),
        ("any moment", lambda live: repr(dict(jobs_by_status(engine)))),
    ]
    kills: list[Kill] = []
    try:
        for name, seek in plan:
            time.sleep(rng.uniform(*KILL_PAUSE))  # a random point in the runner's life, not a wait for state
            seen = seek(runner)
            runner.kill()
            kills.append(Kill(name, runner.name, seen))
            print(f"[{elapsed(started)}] SIGKILL {runner.name} {name}: {seen}")
            runner = fleet.restart(runner)
        wait_for(sender.finished, timeout=SEND_DEADLINE, interval=0.1, what="the senders to finish")
    finally:
        sender.close()
    d = sender.seen
    print(
        f"[{elapsed(started)}] senders done: {len(d.acknowledged)} acknowledged, {len(d.unknown)} unknown, "
        f"{d.refused} refused connections sent again"
    )

    def drained() -> bool:
        assert runner.alive(), f"{runner.name} died:\n{runner.log()[-3000:]}"
        counts = jobs_by_status(engine)
        return counts[JobStatus.QUEUED] + counts[JobStatus.RUNNING] == 0

    wait_for(drained, timeout=DRAIN_DEADLINE, interval=0.2, what="every job to finish")
    jobs = all_jobs(engine)
    print(f"[{elapsed(started)}] all jobs finished: {dict(jobs_by_status(engine))}")

    # Every kill found its moment, and the work it cut off was taken over after its lease ran out.
    assert [k.moment for k in kills] == [name for name, _ in plan]
    reclaimed = [job.id for job in jobs if job.attempts > 1]
    assert reclaimed, "no job was re-run: the kills did not land mid-job"

    # Invariant 1: nothing acknowledged is lost; every stored event's job succeeded, none is stuck.
    assert len(d.acknowledged) + len(d.unknown) == len(deliveries), "a sender gave up on a refused delivery"
    assert len(d.acknowledged) >= len(deliveries) * 0.9, f"too few acknowledged: {len(d.unknown)} unknown"
    status = {job.id: job.status for job in jobs}
    assert all(len(job_ids) == 1 for job_ids in d.acknowledged.values()), "one customer event, one job"
    lost = [
        (dl.customer, dl.key)
        for dl, ids in d.acknowledged.items()
        if status.get(ids[0]) != JobStatus.SUCCEEDED
    ]
    assert lost == []
    assert Counter(job.status for job in jobs) == Counter({JobStatus.SUCCEEDED: len(jobs)})
    with Session(engine) as session:
        events = int(session.exec(select(func.count()).select_from(InboundEvent)).one())
    assert events == len(jobs), "every stored event has its job, and no job lacks its event"

    # Invariant 2: nothing posted twice, on Zuora and on Zoho themselves; every acknowledged customer
    # is there once and linked to that very record.
    by_flow = {
        FLOWS[0]: {dl.customer for dl in d.acknowledged if dl.key == wired.integration_key},
        FLOWS[1]: {dl.customer for dl in d.acknowledged if dl.key == wired.zoho_integration_key},
    }
    accounts = accounts_by_crm_id(sandbox)
    in_zoho = zoho_records_by_netsuite_id(sandbox)
    for flow, remote in ((FLOWS[0], accounts), (FLOWS[1], in_zoho)):
        assert [source for source, n in remote.items() if n > 1] == [], f"{flow}: posted twice"
        assert [c for c in by_flow[flow] if remote[c] != 1] == [], f"{flow}: acknowledged but missing"
        assert set(remote) <= set(customers), f"{flow}: a record for a customer nobody sent"
    zuora_ids = {str(a["crmId"]): str(a["id"]) for a in sandbox.zuora.accounts()}
    zoho_ids = {str(r["NetSuite_Id"]): str(r["id"]) for r in sandbox.zoho.records("Accounts")}
    assert linked_targets(engine, FLOWS[0]) == zuora_ids
    assert linked_targets(engine, FLOWS[1]) == zoho_ids

    # The audit trail: each job ends in a succeeded record; a create is audited at most once per record.
    records = audit_records(engine)
    last = {record.job_id: record.outcome for record in records}
    assert [job.id for job in jobs if last.get(job.id) != Outcome.SUCCEEDED] == []
    creates = Counter((r.flow, r.source_id) for r in records if r.action == "create")
    assert [key for key, n in creates.items() if n > 1] == []

    posts = sum(1 for r in sandbox.zuora.requests if r["method"] == "POST" and r["path"] == "/v1/accounts")
    upserts = sum(1 for r in sandbox.zoho.requests if r["method"] == "POST" and r["path"].endswith("/upsert"))
    tokens = sum(1 for r in netsuite.requests if r["path"].endswith("/oauth2/v1/token"))
    actions = Counter((r.flow, r.action) for r in records if r.outcome == Outcome.SUCCEEDED)
    print(
        f"[{elapsed(started)}] {len(accounts)} Zuora accounts from {posts} POSTs, {len(in_zoho)} Zoho "
        f"accounts from {upserts} upserts, {tokens} NetSuite token requests; {len(reclaimed)} jobs re-run "
        f"after a kill; {len(records)} audit records; succeeded actions {dict(actions)}"
    )
