"""Scale-out, the scheduled side (design.md §5): three runners and the app on one PostgreSQL database,
under load. Singleton scheduled work runs once per interval across the fleet, the app's pages and a bulk
replay work alongside, every effect happens once, and nothing deadlocks.

Three `python -m runner` processes start with every scheduler interval cut to EVERY seconds and run for
WINDOW seconds while a queue of jobs drains, NetSuite webhooks arrive, Zuora takes payments, and a
person keeps the Health and Audit pages open (Streamlit's AppTest) and replays the failures in bulk.

The evidence that each singleton ran once per interval for the whole fleet, not once per runner, comes
from two places that do not depend on one another:

- the lease table's history: a trigger (test-only, in the test's database) copies every successful
  `storage.leases.acquire` into `test_lease_history`. A holder never takes a lease over before its
  previous holder's expired, two acquisitions are never closer than (1 - TOLERANCE) x EVERY, and there are
  about lifetime / EVERY of them, not three times that;
- the emulators' request logs: each singleton makes the same calls on every run (table below), so the
  calls between one acquisition and the next are one run's worth or none, never two runs' worth, and
  none come before the first acquisition. The runners' logs place every channel renewal on a holder of
  the channel lease.

| singleton        | calls of one run                                 | why exactly these                         |
|------------------|--------------------------------------------------|-------------------------------------------|
| payments-pull    | Zuora GET /v1/payments                           | fewer payments than a page holds          |
| token-prerefresh | Zuora POST /oauth/token (all but the first mint) | tokens live ZUORA_TOKEN_TTL: always due   |
| zoho-channels    | Zoho PATCH /crm/v8/actions/watch                 | Zoho grants an hour: always due           |
| zoho-poll        | Zoho GET /crm/v8/actions/watch                   | one channel to check                      |
| netsuite-poll    | SuiteQL POST per polled table and integration    | nothing modified lately: one page each    |

Heartbeats, per-runner work, come from all three. The load's effects happen once: one Zuora account per
NetSuite customer, one audit record per job (replay jobs too), one mirrored row per Zuora payment. No
deadlock: pg_stat_database.deadlocks stays 0, and no runner logged a deadlock or error 40P01.

About 25 s on the 2-core development machine (40 s when it is busy), most of it the WINDOW.
"""

from __future__ import annotations

import copy
import re
import threading
import time
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import cycle, pairwise
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from streamlit.testing.v1 import AppTest

from connectors.emulator_kit import BaseEmulator
from connectors.sandbox import Sandbox
from demo.wiring import DemoWiring
from runner.flows.customer_account import DEFAULT_MAPPING
from runner.replay import ReplayMode
from runner.scheduled import polled_tables
from storage import channels as channel_store
from storage import crud, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import (
    AuditRecord,
    Channel,
    ChannelRenewal,
    Heartbeat,
    Integration,
    Job,
    JobKind,
    JobStatus,
    Outcome,
    Payment,
)
from tests.reliability.conftest import (
    HOST,
    RunnerProcess,
    ScheduledFleet,
    accounts_by_crm_id,
    all_jobs,
    audit_records,
    elapsed,
    free_port,
    runner_of,
)
from tests.support.live import wait_for
from tests.ui.conftest import APP_PATH, _clear_caches, signed_in

pytestmark = pytest.mark.postgres

RUNNERS = 3
WORKERS = 8  # per runner (ML_CONNECTOR_WORKERS): plenty for two cores, and the scheduler is not starved
EVERY = 3.0  # seconds: every singleton's interval
HEARTBEAT = 1.0  # seconds: the per-runner heartbeat
SCHEDULE = {
    "ML_CONNECTOR_TOKEN_CHECK_INTERVAL": str(EVERY),
    "ML_CONNECTOR_PAYMENTS_INTERVAL": str(EVERY),
    "ML_CONNECTOR_NETSUITE_POLL_INTERVAL": str(EVERY),  # the Zoho poll's interval too
    "ML_CONNECTOR_CHANNEL_CHECK_INTERVAL": str(EVERY),
    "ML_CONNECTOR_HEARTBEAT_INTERVAL": str(HEARTBEAT),
}
SINGLETONS = ("token-prerefresh", "payments-pull", "netsuite-poll", "zoho-channels", "zoho-poll")
WINDOW = 18.0  # seconds of load once all three runners answer: six intervals
TOLERANCE = 0.5  # of EVERY: how much a run may start late (event loop lag under load) and the next on time
LEASE = 30.0  # seconds: job lease; a healthy runner never loses one here
QUEUED = 150  # jobs waiting when the runners start
FAILING = 12  # of them, customers whose currency Zuora rejects: the failures replayed in bulk
WEBHOOK_EVERY = 0.1  # seconds between two NetSuite webhooks, each for a new customer
PAYMENT_EVERY = 1.5  # seconds between two Zuora payments
PAYMENTS_MAX = 30  # Zuora payments in all: fewer than a page (40), so one pull is one GET
ZUORA_TOKEN_TTL = 480  # seconds: over the 300 s refresh margin (jobs keep using the token) and under
# the 600 s pre-refresh window (every pre-refresh run renews it)
ZOHO_CHANNEL_LIFETIME = 3600.0  # seconds Zoho grants a channel here: under the one-day renewal window
DRAIN_DEADLINE = 30.0  # seconds for the jobs and payments to settle once the load stops
APP_TIMEOUT = 30.0  # seconds for one AppTest run
LONG_AGO = "2020-01-01T00:00:00Z"  # created and last modified: before any poll's overlap window
RUNNER_PID = re.compile(r":(\d+):[0-9a-f]{6}\b")  # in a runner's name, host:pid:tag (runner.worker)
SHUTDOWN = "INFO:     Shutting down"  # uvicorn's line on SIGTERM; the log before it is the run under load

# Every successful `leases.acquire` (an UPDATE of its row), copied with the database's clock.
LEASE_HISTORY = (
    "CREATE TABLE test_lease_history (name text NOT NULL, holder text NOT NULL, "
    "expires_at timestamptz NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp())",
    "CREATE FUNCTION test_lease_history() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "INSERT INTO test_lease_history (name, holder, expires_at) VALUES (NEW.name, NEW.holder, NEW.expires_at); "
    "RETURN NEW; END $$",
    "CREATE TRIGGER test_lease_history AFTER UPDATE ON lease FOR EACH ROW EXECUTE FUNCTION test_lease_history()",
)


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """Scale-out is a PostgreSQL story (design.md §5): this module runs on PostgreSQL only."""
    return postgres_url


@pytest.fixture
def scheduled_fleet(database_url: str, fernet_key: str, tmp_path: Path) -> Iterator[ScheduledFleet]:
    """Runners on the test's database with every interval at EVERY; all stopped when the test ends."""
    fleet = ScheduledFleet(
        database_url=database_url,
        fernet_key=fernet_key,
        workdir=tmp_path,
        lease=LEASE,
        workers=WORKERS,
        settings=SCHEDULE,
    )
    try:
        yield fleet
    finally:
        fleet.stop_all()


@pytest.fixture
def app_database(
    database_url: str, fernet_key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The Streamlit app on the runners' database, key and schedule (tests/ui/conftest.py's way)."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("ML_CONNECTOR_DATA_DIR", str(tmp_path / "app"))
    monkeypatch.setenv("ML_CONNECTOR_KEYS", fernet_key)
    for name, value in SCHEDULE.items():
        monkeypatch.setenv(name, value)
    _clear_caches()
    try:
        yield database_url
    finally:
        _clear_caches()


# The world before the runners start ------------------------------------------------------------------


def old_customer(sandbox: Sandbox, name: str, **fields: object) -> str:
    """A NetSuite customer last modified long ago: the SuiteQL poll's window never reaches it."""
    record = {
        "companyName": name,
        "email": "ap@scale.test",
        "dateCreated": LONG_AGO,
        "lastModifiedDate": LONG_AGO,
    }
    return sandbox.netsuite.seed("customer", {**record, **fields})


def queue_customers(engine: Engine, sandbox: Sandbox, integration_id: int) -> tuple[list[str], list[str]]:
    """QUEUED customer_account jobs, the FAILING rejected ones first; returns (failing, the others)."""
    rejected = {"currency": {"id": "9", "refName": "XXX"}}
    failing = [old_customer(sandbox, f"Rejected {n:03d} Ltd", **rejected) for n in range(FAILING)]
    others = [old_customer(sandbox, f"Queued {n:05d} Ltd") for n in range(QUEUED - FAILING)]
    with session_scope(engine) as session:
        for customer in failing + others:
            queue.enqueue(
                session,
                integration_id=integration_id,
                flow="customer_account",
                payload={"record_type": "customer", "id": customer, "event_type": "create"},
            )
    return failing, others


def live_channel(
    engine: Engine, vault: Vault, sandbox: Sandbox, wired: DemoWiring, notify_url: str
) -> Channel:
    """A Zoho channel as onboarding leaves it: stored here, enabled in Zoho, an hour to live."""
    expires = datetime.now(UTC) + timedelta(hours=1)
    channel = channel_store.create_channel(
        engine,
        vault,
        integration_id=wired.zoho_integration_id,
        events=["Accounts.all"],
        notify_url=notify_url,
        expires_at=expires,
    )
    item = {
        "channel_id": channel.channel_id,
        "events": list(channel.events),
        "notify_url": notify_url,
        "token": channel_store.channel_token(vault, channel),
        "channel_expiry": expires.isoformat(timespec="seconds"),
    }
    status, body = sandbox.zoho.watch.enable([item], sandbox.credentials.zoho_url)
    assert status == 201, body
    return channel


def record_lease_history(engine: Engine) -> None:
    with engine.begin() as connection:
        for statement in LEASE_HISTORY:
            connection.execute(sa.text(statement))


# Load while the runners work -------------------------------------------------------------------------


@contextmanager
def repeating(every: float, action: Callable[[], object], what: str) -> Iterator[None]:
    """Call `action` every `every` seconds in a thread until the block ends; its first error fails."""
    stop = threading.Event()
    errors: list[Exception] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                action()
            except Exception as exc:
                errors.append(exc)
                return
            stop.wait(every)

    thread = threading.Thread(target=loop, name=what, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10.0)
    if errors:
        raise AssertionError(f"{what} failed: {errors[0]!r}") from errors[0]


@dataclass
class Webhooks:
    """One NetSuite webhook per new customer, to the runners in turn (a load balancer's round robin)."""

    sandbox: Sandbox
    urls: list[str]
    secret: str
    sent: dict[str, list[int]] = field(default_factory=dict)  # customer → job ids in the 202
    http: httpx2.Client = field(default_factory=lambda: httpx2.Client(timeout=30.0))

    def send_one(self) -> None:
        customer = old_customer(self.sandbox, f"Webhook {len(self.sent):05d} Ltd")
        url = self.urls[len(self.sent) % len(self.urls)]
        body = {"recordType": "customer", "id": customer, "eventType": "create"}
        response = self.http.post(url, json=body, headers={"X-Webhook-Secret": self.secret})
        assert response.status_code == 202, (url, response.status_code, response.text[:300])
        self.sent[customer] = list(response.json()["jobs"])


@dataclass
class Payments:
    """Zuora payments on one account, PAYMENTS_MAX at most."""

    sandbox: Sandbox
    account_id: str
    ids: list[str] = field(default_factory=list)

    def add_one(self) -> None:
        if len(self.ids) < PAYMENTS_MAX:
            self.ids.append(str(self.sandbox.zuora.add_payment(self.account_id, 10.0 + len(self.ids))["id"]))


@dataclass
class Person:
    """Someone with the Health and Audit pages open, looking at them again and again."""

    pages: dict[str, AppTest] = field(default_factory=dict)
    renders: Counter[str] = field(default_factory=Counter)
    slowest: dict[str, float] = field(default_factory=dict)
    seen_alive: set[int] = field(default_factory=set)  # pids the Health page listed as alive

    def look_at(self, page: str) -> AppTest:
        started = time.monotonic()
        at = self.pages.get(page)
        if at is None:
            at = self.pages[page] = signed_in(AppTest.from_file(APP_PATH, default_timeout=APP_TIMEOUT)).run()
            if page == "audit":
                at.switch_page("views/audit.py").run()
        else:
            at.run()
        self._rendered(at, page, started)
        if page == "health":
            for line in (str(m.value) for m in at.markdown if "favorite: alive" in str(m.value)):
                self.seen_alive.update(int(pid) for pid in RUNNER_PID.findall(line))
        return at

    def replay_failures(self) -> None:
        """On the Audit page: count the failures, choose the current mapping, confirm."""
        at = self.look_at("audit")
        started = time.monotonic()
        at.button(key="audit_bulk_count").click().run()
        self._rendered(at, "audit", started)
        shown = " ".join(str(i.value) for i in at.info)
        assert f"**{FAILING} source records**" in shown, shown
        at.radio(key="audit_bulk_mode").set_value(ReplayMode.REMAP)
        at.button(key="audit_bulk_confirm").click().run()
        self._rendered(at, "audit", started)
        done = " ".join(str(s.value) for s in at.success)
        assert f"Enqueued **{FAILING} replay jobs**" in done, done

    def _rendered(self, at: AppTest, page: str, started: float) -> None:
        assert not at.exception, f"the {page} page raised: {[e.value for e in at.exception]}"
        self.renders[page] += 1
        self.slowest[page] = max(self.slowest.get(page, 0.0), time.monotonic() - started)


def fix_currency_mapping(engine: Engine, integration_id: int) -> None:
    """What the person does about the rejected currency: map every new account to USD."""
    spec = copy.deepcopy(DEFAULT_MAPPING)
    for rule in spec["fields"]:
        if rule["target"] == "currency":
            rule.pop("source")
            rule["value"] = "USD"
    crud.save_mapping(
        engine, integration_id=integration_id, flow="customer_account", spec=spec, created_by="test"
    )


def failures(engine: Engine) -> int:
    with Session(engine) as session:
        return len(
            session.exec(select(AuditRecord.id).where(col(AuditRecord.outcome) == Outcome.FAILED)).all()
        )


def settled(engine: Engine, payments: int) -> bool:
    """No job waiting or running, and every Zuora payment mirrored."""
    with Session(engine) as session:
        busy = session.exec(
            select(Job.id).where(col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        ).first()
        mirrored = len(session.exec(select(Payment.id)).all())
    return busy is None and mirrored == payments


# Evidence --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acquisition:
    """One successful `leases.acquire`: who took or renewed the lease, when (database clock), until when."""

    holder: str
    at: float  # epoch seconds
    expires_at: float  # epoch seconds


def lease_history(engine: Engine) -> dict[str, list[Acquisition]]:
    """Each lease's acquisitions, oldest first (from the test's trigger)."""
    with engine.connect() as connection:
        rows = connection.execute(
            sa.text("SELECT name, holder, at, expires_at FROM test_lease_history ORDER BY at")
        ).all()
    history: dict[str, list[Acquisition]] = {}
    for name, holder, at, expires_at in rows:
        if expires_at > at:  # an acquisition, not a release
            history.setdefault(name, []).append(Acquisition(holder, at.timestamp(), expires_at.timestamp()))
    return history


def calls(emulator: BaseEmulator, method: str, path: str, status: int | None = None) -> list[float]:
    """When the emulator answered `method path` (epoch seconds, oldest first)."""
    with emulator.lock:
        log = list(emulator.requests)
    return sorted(
        r["at"]
        for r in log
        if r["method"] == method and r["path"] == path and (status is None or r["status"] == status)
    )


def record_polls(sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """When the NetSuite poll's SuiteQL statements ran: the flows' bulk reads of a batch's customers go
    to the same endpoint (and the request log keeps no bodies), so the poll is told by its statement."""
    polls: list[float] = []
    run = sandbox.netsuite.suiteql

    def recording(sql: str) -> list[dict[str, Any]]:
        if "lastmodifieddate >=" in sql.lower():
            polls.append(time.time())
        return run(sql)

    monkeypatch.setattr(sandbox.netsuite, "suiteql", recording)
    return polls


def singleton_calls(sandbox: Sandbox, polls: list[float]) -> dict[str, list[float]]:
    """The calls each singleton makes on every run (see the module docstring's table)."""
    watch = "/crm/v8/actions/watch"
    return {
        "payments-pull": calls(sandbox.zuora, "GET", "/v1/payments"),
        # The first token is minted by whichever job or pull needs one first; each later one is a pre-refresh.
        "token-prerefresh": calls(sandbox.zuora, "POST", "/oauth/token", status=200)[1:],
        "zoho-channels": calls(sandbox.zoho, "PATCH", watch),
        "zoho-poll": calls(sandbox.zoho, "GET", watch),
        "netsuite-poll": sorted(polls),
    }


def calls_per_run(engine: Engine) -> dict[str, int]:
    """How many of its calls (`singleton_calls`) one run of each singleton makes."""
    with Session(engine) as session:
        integrations = session.exec(select(Integration).where(col(Integration.active))).all()
    suiteql = sum(len(polled_tables(list(i.flows or []))) for i in integrations)
    return {name: suiteql if name == "netsuite-poll" else 1 for name in SINGLETONS}


def calls_per_turn(taken: list[Acquisition], made: list[float]) -> tuple[int, list[int]]:
    """`made` split by turn (from one acquisition to the next): (calls before the first, calls per turn)."""
    starts = [a.at for a in taken]
    turns = [0] * len(taken)
    before = 0
    for at in made:
        turn = bisect_right(starts, at) - 1
        if turn < 0:
            before += 1
        else:
            turns[turn] += 1
    return before, turns


def overlap(name: str, taken: list[Acquisition], turns: list[int], runners: list[RunnerProcess]) -> str:
    """Why some turn did not make one run's calls: who took the lease for each turn, and its calls."""
    lines = [f"{name} made {turns} calls per turn:"]
    for turn, (acquisition, made) in enumerate(zip(taken, turns, strict=True)):
        lasted = f"expired {acquisition.expires_at - acquisition.at:.1f}s later"
        holder = runner_of(runners, acquisition.holder)
        lines.append(
            f"  turn {turn}: {holder} took the lease at {acquisition.at:.2f} ({lasted}), {made} calls"
        )
    lines.append(
        "More calls in a turn than one run makes means two runs overlapped: a runner did the work without "
        "the lease, or a run outlasted its lease (taken for 2 intervals, renewed once a run outlasts one) "
        "and another runner took it over."
    )
    return "\n".join(lines)


def pg_deadlocks(engine: Engine) -> int:
    with engine.connect() as connection:
        query = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()"
        return int(connection.execute(sa.text(query)).scalar_one())


def under_load(runner: RunnerProcess) -> str:
    """The runner's log up to its SIGTERM."""
    return runner.log().split(SHUTDOWN, 1)[0]


def test_three_runners_run_each_singleton_once_per_interval_while_the_app_works_under_load(
    engine: Engine,
    sandbox: Sandbox,
    wired: DemoWiring,
    fernet_key: str,
    scheduled_fleet: ScheduledFleet,
    app_database: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = time.monotonic()
    sandbox.netsuite.reset()  # only this test's customers, all last modified long ago: polls find none
    polls = record_polls(sandbox, monkeypatch)
    sandbox.zuora.configure(token_ttl=ZUORA_TOKEN_TTL)
    sandbox.zoho.watch.max_lifetime = ZOHO_CHANNEL_LIFETIME  # a week asked for becomes an hour
    failing, queued = queue_customers(engine, sandbox, wired.integration_id)
    payer = {"name": "Payer Ltd", "currency": "USD", "billCycleDay": 1, "crmId": "payer"}
    payments = Payments(sandbox, str(sandbox.zuora.seed("account", payer)))
    for _ in range(3):
        payments.add_one()
    first_port = free_port()
    notify_url = f"http://{HOST}:{first_port}/webhooks/zoho/{wired.zoho_integration_key}"
    channel = live_channel(engine, Vault([fernet_key.encode()]), sandbox, wired, notify_url)
    record_lease_history(engine)
    deadlocks_before = pg_deadlocks(engine)
    person = Person()
    person.look_at("health")  # open before the runners start (this first render imports pandas)
    person.look_at("audit")
    print(f"\n[{elapsed(started)}] {QUEUED} jobs queued ({FAILING} to be rejected); the app's pages open")

    fleet = scheduled_fleet
    spawned = time.time()
    runners = [fleet.spawn(port=first_port), *(fleet.spawn() for _ in range(RUNNERS - 1))]
    for runner in runners:
        fleet.wait_healthy(runner)
    healthy = time.time()
    print(
        f"[{elapsed(started)}] {RUNNERS} runners up in {healthy - spawned:.1f}s, pids {[r.pid for r in runners]}"
    )
    urls = [f"{runner.url}/webhooks/netsuite/{wired.integration_key}" for runner in runners]
    hooks = Webhooks(sandbox, urls, wired.netsuite_secret)
    replayed = False
    with (
        repeating(WEBHOOK_EVERY, hooks.send_one, "webhooks"),
        repeating(PAYMENT_EVERY, payments.add_one, "payments"),
    ):
        until = time.monotonic() + WINDOW
        for page in cycle(("health", "audit")):
            if time.monotonic() > until:
                break
            for runner in runners:
                assert runner.alive(), f"{runner.name} died:\n{runner.log()[-3000:]}"
            if page == "audit" and not replayed and failures(engine) == FAILING:
                fix_currency_mapping(engine, wired.integration_id)
                person.replay_failures()
                replayed = True
                print(f"[{elapsed(started)}] {FAILING} failures replayed in bulk from the Audit page")
            else:
                person.look_at(page)
    hooks.http.close()
    assert replayed, f"{failures(engine)} of the {FAILING} rejected customers had failed by the end"
    print(
        f"[{elapsed(started)}] load stopped: {len(hooks.sent)} webhooks, {len(payments.ids)} payments, "
        f"{len(all_jobs(engine))} jobs so far, page renders {dict(person.renders)}"
    )
    wait_for(
        lambda: settled(engine, len(payments.ids)),
        timeout=DRAIN_DEADLINE,
        interval=0.5,
        what="the jobs to finish and every payment to be mirrored",
    )
    stopping = time.time()
    fleet.stop_all()
    lifetime, steady = stopping - spawned, stopping - healthy
    most = lifetime / EVERY + 2  # runs one holder can fit in the runners' lifetime, start and end included
    print(f"[{elapsed(started)}] runners stopped after {lifetime:.1f}s, {steady:.1f}s of it all three up")

    # Singletons, by the lease history: one holder at a time, once per interval.
    history = lease_history(engine)
    made = singleton_calls(sandbox, polls)
    per_run = calls_per_run(engine)
    for name in SINGLETONS:
        taken = history.get(name, [])
        before, turns = calls_per_turn(taken, made[name])
        gaps = [b.at - a.at for a, b in pairwise(taken)]
        holders = Counter(runner_of(runners, a.holder) for a in taken)
        runs = sum(turns) / per_run[name]
        print(
            f"  {name:16} {len(taken):2} acquisitions {min(gaps):.2f}-{max(gaps):.2f}s apart by "
            f"{dict(holders)}; {runs:.0f} runs ({per_run[name]} calls each) in {lifetime / EVERY:.1f} intervals"
        )
        assert len(taken) <= most, f"{name} was acquired {len(taken)} times in {lifetime:.0f}s"
        assert min(gaps) >= EVERY * (1 - TOLERANCE), f"{name} acquired twice within {min(gaps):.2f}s"
        for previous, current in pairwise(taken):
            if current.holder != previous.holder:
                assert current.at > previous.expires_at, f"{name} taken over while held: {previous} {current}"
        # ... and by the emulators: each turn made one run's calls or none, and no call came outside a turn.
        assert before == 0, f"{name}: {before} calls before anyone held the lease"
        assert set(turns[:-1]) <= {0, per_run[name]}, overlap(name, taken, turns, runners)
        assert turns[-1] <= per_run[name], f"{name}: calls in the last turn {turns[-1]}"  # cut by SIGTERM
        assert steady / EVERY / 2 <= runs <= most, f"{name} ran {runs:.0f} times in {lifetime:.0f}s"

    # ... and by the runners' logs: every channel renewal was logged by a holder of the channel lease.
    logs = {runner.name: under_load(runner) for runner in runners}
    renewed = {name: log.count(f"channel {channel.channel_id} renewed until") for name, log in logs.items()}
    channel_holders = {runner_of(runners, a.holder) for a in history["zoho-channels"]}
    with Session(engine) as session:
        renewals = list(session.exec(select(ChannelRenewal.action)))
        beats = {runner_of(runners, b.runner) for b in session.exec(select(Heartbeat))}
    print(f"  channel renewals logged per runner {renewed}; heartbeats from {sorted(beats)}")
    assert {name for name, n in renewed.items() if n} <= channel_holders
    assert sum(renewed.values()) == len(made["zoho-channels"]) == len(renewals)
    assert set(renewals) == {"renewed"}
    # Per-runner work runs everywhere, and the app saw it.
    assert beats == {runner.name for runner in runners}
    assert person.seen_alive == {runner.pid for runner in runners}

    # Effects once: an account per customer, an audit record per job, a mirrored row per payment.
    customers = failing + queued + list(hooks.sent)
    accounts = accounts_by_crm_id(sandbox)
    assert sorted(crm for crm in accounts if crm != "payer") == sorted(customers)
    assert [crm for crm, n in accounts.items() if n > 1] == []
    jobs = all_jobs(engine)
    assert Counter(job.kind for job in jobs) == Counter(
        {JobKind.SYNC: len(customers), JobKind.REPLAY: FAILING}
    )
    assert [(job.id, job.attempts) for job in jobs if job.attempts != 1] == []
    records = audit_records(engine)
    per_job = Counter(record.job_id for record in records)
    assert [job.id for job in jobs if per_job[job.id] != 1] == []
    record_of = {record.job_id: record for record in records}
    dead = [record_of[job.id].source_id for job in jobs if job.status == JobStatus.DEAD]
    replays = [record_of[job.id] for job in jobs if job.kind == JobKind.REPLAY]
    assert sorted(dead) == sorted(failing)
    assert sorted(r.source_id for r in replays) == sorted(failing)
    assert {r.outcome for r in replays} == {Outcome.SUCCEEDED}
    with Session(engine) as session:
        mirrored = Counter(session.exec(select(Payment.zuora_id)).all())
    assert sorted(mirrored) == sorted(payments.ids) and set(mirrored.values()) == {1}

    # No deadlock, no error.
    deadlocks_after = pg_deadlocks(engine)
    skipped = {name: log.count("maximum number of running instances") for name, log in logs.items()}
    print(
        f"[{elapsed(started)}] {len(jobs)} jobs ({len(replays)} replays), {len(records)} audit records; "
        f"pg_stat_database.deadlocks {deadlocks_before} -> {deadlocks_after}; ticks skipped (still running) "
        f"{skipped}; slowest renders "
        + ", ".join(f"{page} {seconds:.1f}s" for page, seconds in person.slowest.items())
    )
    assert deadlocks_before == deadlocks_after == 0
    for name, log in logs.items():
        for sign in ("deadlock", "40P01", "Traceback", "failed; it runs again"):
            assert sign.lower() not in log.lower(), f"{name} logged {sign!r}:\n{log[-3000:]}"
