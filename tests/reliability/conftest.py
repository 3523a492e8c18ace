"""The reliability tier: real `python -m runner` processes, killed and multiplied, against emulators.

Everything a test here needs comes from three fixtures:

- `sandbox`: the NetSuite, Zuora and Zoho emulators (connectors.sandbox.build) served on loopback in the
  test process, so the test reads their state directly: the Zuora accounts are the ground truth for
  "no duplicate posting". Zuora's per-minute API rate limit is lifted (see `LIFTED_RATE_LIMIT`).
- `wired`: the demo workspace (demo.wiring.wire) in the test's database, encrypted with a Fernet key the
  runner processes are also given, so they can read the connection secrets the test stored.
- `fleet`: starts runner processes on that database and stops every one of them when the test ends,
  pass or fail (SIGTERM to all, then SIGKILL for any still alive after `STOP_GRACE`).

Helpers at the bottom read the database as the runners left it (jobs by status, audit records and their
HTTP attempts, links), the emulators' state (Zuora accounts and Zoho records per source id) and a
runner's /metrics (remote calls by system and status). A test here proves a design.md invariant end to
end, so it asserts on emulator and database state; a runner's log is read only to tell which runner did
what.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

import httpx2
import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.sandbox import Sandbox, build
from demo.wiring import DemoWiring, wire
from storage.crypto import Vault
from storage.models import AuditAttempt, AuditRecord, Job, JobStatus, Link
from tests.support.live import serve, wait_for

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"  # every process and request in this tier stays on loopback
RUNNER_STARTUP_DEADLINE = 60.0  # seconds: imports, migration check, first heartbeat, on a busy 2-core box
STOP_GRACE = 15.0  # seconds a runner gets to drain after SIGTERM before it is killed
# The Zuora emulator enforces a sandbox tenant's 2,500 API calls per minute, which alone would stretch
# 5,000 jobs (two Zuora calls each) over four minutes. This tier is about crashes and concurrency, not
# rate limits (tests/e2e/test_fairness.py and the connector tests own those), so it lifts the cap.
LIFTED_RATE_LIMIT = 1_000_000  # Zuora API calls per minute
NETSUITE_POLL_OFF = 24 * 3600.0  # seconds: an interval no test here lives to see
TERMINAL = (JobStatus.SUCCEEDED, JobStatus.DEAD)


def free_port() -> int:
    """A TCP port nobody listens on right now (the runner binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# Emulators and wiring --------------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """The three emulators with demo credentials, served on loopback for the length of the test."""
    emulators, sockets = build(HOST, {"netsuite": 0, "zuora": 0, "zoho": 0})
    emulators.zuora.configure(rate_limit_per_minute=LIFTED_RATE_LIMIT)
    with ExitStack() as stack:
        for name, app in (
            ("netsuite", emulators.netsuite.app),
            ("zuora", emulators.zuora.app),
            ("zoho", emulators.zoho.app),
        ):
            stack.enter_context(serve(app, sock=sockets[name]))
        yield emulators


@pytest.fixture
def fernet_key() -> str:
    """One key for the test's vault and the runners' ML_CONNECTOR_KEYS, so both read the same secrets."""
    return Fernet.generate_key().decode()


@pytest.fixture
def wired(engine: Engine, sandbox: Sandbox, fernet_key: str) -> DemoWiring:
    """The demo workspace and integration in the test's (migrated) database, pointing at `sandbox`."""
    return wire(engine, Vault([fernet_key.encode()]), sandbox.credentials)


def seed_customers(sandbox: Sandbox, count: int) -> list[str]:
    """`count` NetSuite customers stored without notifying anyone; returns their internal ids."""
    return [
        sandbox.netsuite.seed(
            "customer",
            {"companyName": f"Reliable {n:05d} Ltd", "email": f"ap{n}@reliable.test", "phone": "555-0199"},
        )
        for n in range(count)
    ]


# Runner processes ------------------------------------------------------------------------------------


@dataclass
class RunnerProcess:
    """One `python -m runner` child: its port, its combined stdout/stderr file, its Popen handle."""

    name: str
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU the process has used so far (Linux /proc; NaN where there is none)."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def healthy(self) -> bool:
        """True once /healthz answers 200; raises (with the log) if the process already exited."""
        if not self.alive():
            raise AssertionError(f"runner {self.name} exited with {self.process.returncode}:\n{self.log()}")
        try:
            return httpx2.get(f"{self.url}/healthz", timeout=2.0).status_code == 200
        except httpx2.TransportError:
            return False

    def kill(self) -> None:
        """SIGKILL: no lifespan shutdown, no lease hand-back, in-flight HTTP cut. What a crash looks like."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(STOP_GRACE)

    def terminate(self) -> None:
        """SIGTERM, once: uvicorn drains on the first signal and exits at once on a second."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)

    def reap(self) -> None:
        """Wait for a terminated process; SIGKILL it if it is still alive after STOP_GRACE."""
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_GRACE)


@dataclass
class Fleet:
    """Starts runner processes on one database; `stop_all` ends each one it started."""

    database_url: str
    fernet_key: str
    workdir: Path
    lease: float  # seconds: ML_CONNECTOR_JOB_LEASE
    workers: int | None = None  # ML_CONNECTOR_WORKERS; None keeps the product's default
    poll_interval: float = 0.5  # seconds: ML_CONNECTOR_POLL_INTERVAL
    started: list[RunnerProcess] = field(default_factory=list)

    def spawn(self, port: int | None = None) -> RunnerProcess:
        """Start one runner without waiting for it (so several can start at the same moment).

        `port` restarts a runner where a dead one listened, as a supervisor would; senders keep their URL.
        """
        name = f"runner-{len(self.started) + 1}"
        port = port or free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("ML_CONNECTOR_") and k != "DATABASE_URL"
        }
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "ML_CONNECTOR_KEYS": self.fernet_key,
                "ML_CONNECTOR_SANDBOX": "1",
                "ML_CONNECTOR_DATA_DIR": str(self.workdir / "data"),
                "ML_CONNECTOR_RUNNER_HOST": HOST,
                "ML_CONNECTOR_RUNNER_PORT": str(port),
                "ML_CONNECTOR_JOB_LEASE": str(self.lease),
                "ML_CONNECTOR_POLL_INTERVAL": str(self.poll_interval),
                # The SuiteQL safety net would queue jobs of its own for the seeded customers (its
                # overlap window reaches back before the runner started); these tests count jobs exactly.
                "ML_CONNECTOR_NETSUITE_POLL_INTERVAL": str(NETSUITE_POLL_OFF),
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if self.workers is not None:
            env["ML_CONNECTOR_WORKERS"] = str(self.workers)
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            # cwd is the test's own directory, so no `.env` of a developer's checkout leaks in.
            process = subprocess.Popen(
                [sys.executable, "-m", "runner"],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        runner = RunnerProcess(name, port, log_path, process)
        self.started.append(runner)
        return runner

    def start(self, count: int = 1) -> list[RunnerProcess]:
        """Start `count` runners at once and wait until each answers /healthz."""
        runners = [self.spawn() for _ in range(count)]
        for runner in runners:
            self.wait_healthy(runner)
        return runners

    def restart(self, dead: RunnerProcess) -> RunnerProcess:
        """A new runner on the dead one's port, once it answers /healthz."""
        assert not dead.alive(), f"{dead.name} is still running"
        return self.wait_healthy(self.spawn(port=dead.port))

    @staticmethod
    def wait_healthy(runner: RunnerProcess) -> RunnerProcess:
        wait_for(
            runner.healthy, timeout=RUNNER_STARTUP_DEADLINE, interval=0.1, what=f"{runner.name} /healthz"
        )
        return runner

    def stop_all(self) -> None:
        """SIGTERM every runner still alive, then wait for each (SIGKILL after STOP_GRACE)."""
        for runner in self.started:
            runner.terminate()
        for runner in self.started:
            runner.reap()


@pytest.fixture
def fleet(database_url: str, fernet_key: str, tmp_path: Path) -> Iterator[Fleet]:
    """Runner processes for this test's database; all of them are stopped when the test ends."""
    fleet = Fleet(database_url=database_url, fernet_key=fernet_key, workdir=tmp_path, lease=5.0)
    try:
        yield fleet
    finally:
        fleet.stop_all()


# Reading what the runners left behind -----------------------------------------------------------------


def jobs_by_status(engine: Engine) -> Counter[str]:
    with Session(engine) as session:
        rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return Counter({status: count for status, count in rows})


def finished_jobs(engine: Engine) -> int:
    """Jobs in a terminal state (succeeded or dead)."""
    counts = jobs_by_status(engine)
    return sum(counts[status] for status in TERMINAL)


def all_jobs(engine: Engine) -> list[Job]:
    with Session(engine) as session:
        return list(session.exec(select(Job).order_by(col(Job.id))))


def audit_records(engine: Engine) -> list[AuditRecord]:
    """Every audit record, oldest first."""
    with Session(engine) as session:
        return list(session.exec(select(AuditRecord).order_by(col(AuditRecord.id))))


def http_statuses(engine: Engine) -> Counter[tuple[str, int | None]]:
    """Audited HTTP attempts by (system, status): shows the 429s the runners met and absorbed."""
    with Session(engine) as session:
        rows = session.exec(
            select(AuditAttempt.system, AuditAttempt.status, func.count()).group_by(
                AuditAttempt.system, AuditAttempt.status
            )
        ).all()
    return Counter({(system, status): count for system, status, count in rows})


def accounts_by_crm_id(sandbox: Sandbox) -> Counter[str]:
    """How many Zuora accounts the emulator holds for each crmId: the ground truth for duplicates."""
    return Counter(str(account.get("crmId")) for account in sandbox.zuora.accounts())


def elapsed(started: float) -> str:
    return f"{time.monotonic() - started:6.1f}s"


@dataclass(frozen=True)
class AuditedAttempt:
    """One audited HTTP attempt with the job it was made for; `path` is the URL's path (no host)."""

    job_id: int | None
    record_id: int
    seq: int
    method: str
    path: str
    status: int | None
    duration_ms: float
    at: datetime


def audited_attempts(engine: Engine, system: str) -> list[AuditedAttempt]:
    """Every audited HTTP attempt to `system`, in the order each audit record made them.

    A batch's shared call (a Zoho upsert) is audited once per record in it, so it appears here once per
    record; `(path, status, at)` tells the copies of one call apart from another call.
    """
    with Session(engine) as session:
        rows = session.exec(
            select(AuditRecord.job_id, AuditAttempt)
            .join(AuditRecord, col(AuditRecord.id) == col(AuditAttempt.audit_record_id))
            .where(col(AuditAttempt.system) == system)
            .order_by(col(AuditAttempt.audit_record_id), col(AuditAttempt.seq))
        ).all()
    return [
        AuditedAttempt(
            job_id, a.audit_record_id, a.seq, a.method, urlsplit(a.url).path, a.status, a.duration_ms, a.at
        )
        for job_id, a in rows
    ]


def linked_targets(engine: Engine, flow: str) -> dict[str, str]:
    """Source id → target id for every link of `flow` that names its target (a finished write)."""
    with Session(engine) as session:
        rows = session.exec(
            select(Link.source_id, Link.target_id).where(
                col(Link.flow) == flow, col(Link.target_id).is_not(None)
            )
        ).all()
    return {source: str(target) for source, target in rows}


def zoho_records_by_netsuite_id(sandbox: Sandbox, module: str = "Accounts") -> Counter[str]:
    """How many Zoho records of `module` carry each NetSuite_Id: the ground truth for Zoho duplicates."""
    return Counter(str(record.get("NetSuite_Id")) for record in sandbox.zoho.records(module))


def remote_calls(runner: RunnerProcess) -> Counter[tuple[str, str]]:
    """The runner's own count of HTTP calls by (system, status), read from its /metrics."""
    text = httpx2.get(f"{runner.url}/metrics", timeout=10.0).text
    calls: Counter[tuple[str, str]] = Counter()
    for line in text.splitlines():
        if not line.startswith("mlc_remote_calls_total{"):
            continue
        labels, value = line[len("mlc_remote_calls_total{") :].rsplit("} ", 1)
        parsed = dict(part.split("=", 1) for part in labels.split(","))
        calls[(parsed["system"].strip('"'), parsed["status"].strip('"'))] = int(float(value))
    return calls


# Runners with their own schedule --------------------------------------------------------------------


@dataclass
class ScheduledFleet(Fleet):
    """A `Fleet` whose runners also get `settings`: environment entries laid over the ones `Fleet` sets,
    e.g. scheduler intervals in seconds (`ML_CONNECTOR_PAYMENTS_INTERVAL`), the NetSuite poll's included.

    `Fleet.spawn` pins the NetSuite poll off for the tests that count jobs exactly; a test of the
    scheduled work itself needs it on, so this spawns with the same environment plus `settings`.
    """

    settings: dict[str, str] = field(default_factory=dict)

    def spawn(self, port: int | None = None) -> RunnerProcess:
        name = f"runner-{len(self.started) + 1}"
        port = port or free_port()
        env = {
            k: v for k, v in os.environ.items() if not k.startswith("ML_CONNECTOR_") and k != "DATABASE_URL"
        }
        env.update(
            {
                "DATABASE_URL": self.database_url,
                "ML_CONNECTOR_KEYS": self.fernet_key,
                "ML_CONNECTOR_SANDBOX": "1",
                "ML_CONNECTOR_DATA_DIR": str(self.workdir / "data"),
                "ML_CONNECTOR_RUNNER_HOST": HOST,
                "ML_CONNECTOR_RUNNER_PORT": str(port),
                "ML_CONNECTOR_JOB_LEASE": str(self.lease),
                "ML_CONNECTOR_POLL_INTERVAL": str(self.poll_interval),
                "ML_CONNECTOR_NETSUITE_POLL_INTERVAL": str(NETSUITE_POLL_OFF),
                "PYTHONPATH": str(REPO),
                "PYTHONUNBUFFERED": "1",
                **({"ML_CONNECTOR_WORKERS": str(self.workers)} if self.workers is not None else {}),
                **self.settings,
            }
        )
        log_path = self.workdir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "runner"],
                cwd=self.workdir,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        runner = RunnerProcess(name, port, log_path, process)
        self.started.append(runner)
        return runner


def runner_of(runners: list[RunnerProcess], holder: str) -> str:
    """The name of the runner a lease holder or job claimer (`host:pid:tag`, runner.worker) names."""
    pid = int(holder.split(":")[-2])
    return next((r.name for r in runners if r.pid == pid), holder)
