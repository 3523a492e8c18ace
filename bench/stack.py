"""The product on loopback for the end-to-end and overhead benchmarks.

The three emulators (connectors.sandbox.build) are served in this process, so the benchmark seeds
NetSuite directly and reads every emulator's request log; the demo workspace (demo.wiring.wire) is
wired to them in a throwaway SQLite database; the runner is `python -m runner` in a child process, so
its CPU and memory are its own.

`Stack.backfill` runs one flow's backfill of every NetSuite customer and measures it:

* the rate from the first record's success to the last's: records finished after the first one (and
  after any that finished with it, a batch) ÷ the time between, so the backfill's start (counting the
  customers, reading the first page of ids, the first record's own round trips) is not in it;
* the whole span, from the backfill's first NetSuite call (the emulator logs its answer, so the call
  began that time minus the latency) to the last success, and the rate over it;
* the runner's CPU over the run, and every call each emulator answered, by kind (API, token) and status.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from bench.common import (
    HOST,
    Child,
    child,
    child_env,
    free_port,
    note,
    own_cpu_seconds,
    serve,
    sqlite_database,
)
from connectors.emulator_kit import BaseEmulator, RouteKind
from connectors.sandbox import Sandbox, build
from demo.wiring import DemoWiring, wire
from runner.backfill import start_backfill
from storage import migrate
from storage.crypto import Vault
from storage.db import make_engine
from storage.models import AuditRecord, Outcome

SYSTEMS = ("netsuite", "zuora", "zoho")
NETSUITE_POLL_OFF = 24 * 3600.0  # seconds: the SuiteQL safety net would queue jobs of its own
LIFTED_RATE_LIMIT = 1_000_000  # Zuora API calls per minute, for runs that are not about rate limits
POLL = 0.25  # seconds between looks at the audit trail while a backfill runs
TOGETHER = 0.05  # seconds: successes this close to the first one finished with it (one batch)


@dataclass
class BackfillRun:
    """One backfill as measured."""

    flow: str
    records: int  # customers in NetSuite: the backfill syncs each once
    succeeded: int = 0
    failed: int = 0
    retried: int = 0  # audit records that said "retrying" (each a job sent back to the queue)
    seconds: float = float("nan")  # first NetSuite call → last success
    first_success: float = float("nan")  # seconds after the first NetSuite call
    runner_cpu_seconds: float = float("nan")  # over the same span, plus the last poll interval
    bench_cpu_seconds: float = float("nan")  # this process (the emulators) over the same span
    finished: bool = False
    # system → {"api": calls, "api 429": …, "api <status>": …, "token": …}
    calls: dict[str, dict[str, int]] = field(default_factory=dict)
    finish_times: list[float] = field(default_factory=list, repr=False)  # epoch seconds, per success

    @property
    def per_second(self) -> float:
        """From the first success to the last (see the module docstring)."""
        if len(self.finish_times) < 2:
            return float("nan")
        times = sorted(self.finish_times)
        later = [t for t in times if t > times[0] + TOGETHER]
        return len(later) / (times[-1] - times[0]) if later else float("nan")

    @property
    def overall_per_second(self) -> float:
        """From the backfill's first NetSuite call to the last success."""
        return self.succeeded / self.seconds if self.seconds > 0 else float("nan")

    @property
    def cpu_ms_per_record(self) -> float:
        return self.runner_cpu_seconds * 1000 / self.succeeded if self.succeeded else float("nan")

    def api_calls(self, system: str) -> int:
        return self.calls.get(system, {}).get("api", 0)

    def api_429(self, system: str) -> int:
        return self.calls.get(system, {}).get("api 429", 0)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "finish_times"},
            "per_second": self.per_second,
            "overall_per_second": self.overall_per_second,
            "cpu_ms_per_record": self.cpu_ms_per_record,
        }


@dataclass
class Stack:
    sandbox: Sandbox
    engine: Engine
    wiring: DemoWiring
    env: dict[str, str]
    workdir: Path
    progress: int = 0  # records of the running backfill done so far (read by a memory sampler)

    def emulators(self) -> dict[str, BaseEmulator]:
        return {"netsuite": self.sandbox.netsuite, "zuora": self.sandbox.zuora, "zoho": self.sandbox.zoho}

    @contextmanager
    def runner(self, name: str = "runner", **settings: str) -> Iterator[Child]:
        """`python -m runner` on this stack's database, healthy, stopped afterwards."""
        port = free_port()
        env = {**self.env, "ML_CONNECTOR_RUNNER_PORT": str(port), **settings}
        with child(name, "runner", env, self.workdir, port) as started:
            yield started.wait_ready()

    def set_faults(self, latency: float, limits: dict[str, int | None]) -> None:
        """The same latency on every emulator's API calls, and each one's concurrency cap. The latency is
        each call's whole time, arrival to answer (`latency_is_total`): the emulators share this process
        and its cores with the load, so their own work, added on top, would be measured as the runner's."""
        for name, emulator in self.emulators().items():
            emulator.faults.configure(
                {"latency": latency, "latency_is_total": True, "concurrency_limit": limits.get(name)}
            )

    def seed_customers(self, total: int) -> int:
        """Add NetSuite customers (nobody notified) until there are `total`; returns how many there are."""
        netsuite = self.sandbox.netsuite
        have = len(netsuite.records("customer"))
        for n in range(have, total):
            netsuite.seed(
                "customer",
                {
                    "companyName": f"Bench Customer {n:06d} Ltd",
                    "email": f"ap{n}@bench.test",
                    "phone": "555-0100",
                    "currency": {"id": "1", "refName": "USD"},
                },
            )
        return max(have, total)

    def drain_calls(self, into: dict[str, Counter[str]], since: float) -> float | None:
        """Move every emulator's logged requests into `into` (system → Counter), emptying the logs so a
        long run does not pile them up; returns the earliest NetSuite API answer at or after `since`."""
        first: float | None = None
        for name, emulator in self.emulators().items():
            with emulator.lock:
                taken = list(emulator.requests)
                emulator.requests.clear()
            for entry in taken:
                kind = emulator.route_kind(entry["path"])
                if kind is RouteKind.API:
                    into[name]["api"] += 1
                    if entry["status"] >= 400:
                        into[name][f"api {entry['status']}"] += 1
                    if name == "netsuite" and entry["at"] >= since:
                        first = entry["at"] if first is None else min(first, entry["at"])
                elif kind is RouteKind.TOKEN:
                    into[name]["token"] += 1
        return first

    def backfill(self, runner: Child, *, flow: str, integration_id: int, timeout: float) -> BackfillRun:
        """Backfill `flow` and wait until every customer succeeded (or failed, or `timeout` seconds)."""
        run = BackfillRun(flow=flow, records=len(self.sandbox.netsuite.records("customer")))
        calls: dict[str, Counter[str]] = {name: Counter() for name in SYSTEMS}
        self.drain_calls({name: Counter() for name in SYSTEMS}, 0.0)  # what came before is not ours
        seen = self._last_audit_id()
        latency = self.sandbox.netsuite.faults.latency
        self.progress = 0
        queued_at = time.time()
        cpu_before, own_before = runner.cpu_seconds(), own_cpu_seconds()
        start_backfill(self.engine, integration_id=integration_id, flow=flow, requested_by="bench")
        first_answer: float | None = None
        deadline = time.monotonic() + timeout
        while run.succeeded + run.failed < run.records and time.monotonic() < deadline:
            time.sleep(POLL)
            answered = self.drain_calls(calls, queued_at)
            if first_answer is None:
                first_answer = answered
            seen = self._tally(run, flow, seen)
            self.progress = run.succeeded
        run.runner_cpu_seconds = runner.cpu_seconds() - cpu_before
        run.bench_cpu_seconds = own_cpu_seconds() - own_before
        self.drain_calls(calls, queued_at)
        run.finished = run.succeeded == run.records
        if first_answer is not None and run.finish_times:
            began = first_answer - latency
            run.seconds = max(run.finish_times) - began
            run.first_success = min(run.finish_times) - began
        run.calls = {name: dict(counter) for name, counter in calls.items() if counter}
        if not run.finished:
            note(
                f"{flow}: {run.succeeded} of {run.records} succeeded, {run.failed} failed within {timeout:.0f}s"
            )
        return run

    def _last_audit_id(self) -> int:
        with Session(self.engine) as session:
            return int(session.exec(select(func.max(AuditRecord.id))).one() or 0)

    def _tally(self, run: BackfillRun, flow: str, after: int) -> int:
        """Count the audit records of `flow` written since id `after`; returns the newest id seen."""
        with Session(self.engine) as session:
            rows = session.exec(
                select(AuditRecord.id, AuditRecord.outcome, AuditRecord.finished_at)
                .where(col(AuditRecord.id) > after, col(AuditRecord.flow) == flow)
                .order_by(col(AuditRecord.id))
            ).all()
        for record_id, outcome, finished_at in rows:
            after = max(after, int(record_id or 0))
            if outcome == Outcome.SUCCEEDED:
                run.succeeded += 1
                if finished_at is not None:
                    run.finish_times.append(finished_at.timestamp())
            elif outcome == Outcome.FAILED:
                run.failed += 1
            else:
                run.retried += 1
        return after


@contextmanager
def running_stack(workdir: Path, *, zuora_rate_limit: int | None = None) -> Iterator[Stack]:
    """Emulators served here, a fresh SQLite database wired to them; runners come from `Stack.runner`."""
    sandbox, sockets = build(HOST, dict.fromkeys(SYSTEMS, 0))
    if zuora_rate_limit is not None:
        sandbox.zuora.configure(rate_limit_per_minute=zuora_rate_limit)
    with ExitStack() as stack:
        for name, emulator in (
            ("netsuite", sandbox.netsuite),
            ("zuora", sandbox.zuora),
            ("zoho", sandbox.zoho),
        ):
            stack.enter_context(serve(emulator.app, sock=sockets[name]))
        url = stack.enter_context(sqlite_database(workdir, f"stack-{time.monotonic_ns()}.db"))
        engine = make_engine(url)
        stack.callback(engine.dispose)
        migrate.upgrade(engine)
        key = Fernet.generate_key()
        wiring = wire(engine, Vault([key]), sandbox.credentials)
        env = child_env(
            DATABASE_URL=url,
            ML_CONNECTOR_KEYS=key.decode(),
            ML_CONNECTOR_SANDBOX="1",  # the connections point at loopback emulators
            ML_CONNECTOR_DATA_DIR=str(workdir / "data"),
            ML_CONNECTOR_RUNNER_HOST=HOST,
            ML_CONNECTOR_NETSUITE_POLL_INTERVAL=str(NETSUITE_POLL_OFF),
        )
        yield Stack(sandbox=sandbox, engine=engine, wiring=wiring, env=env, workdir=workdir)
