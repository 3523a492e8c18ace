"""Scale out (design.md §5 and invariant 2): three runners on PostgreSQL share one queue, and each job
runs exactly once.

The jobs are queued in one transaction before any runner exists, then three `python -m runner`
processes start at the same moment and race for them with `FOR UPDATE SKIP LOCKED` claims. The
evidence that no job ran twice comes from three places that do not depend on one another:

- the Zuora emulator: one account per NetSuite customer, none created twice;
- the database: every job succeeded on its first claim (`attempts == 1`) with exactly one audit
  record, and no customer has two `create` audit records;
- the runners' own logs: the executor logs one `job=<id> ... outcome=<outcome>` line per run, so each
  job id appears in exactly one runner's log, and each runner's log holds a share of them.

A finished job row does not say which runner ran it (`locked_by` describes a claim, not a history),
which is why the per-runner split is read from the logs.

Size: the acceptance, 5,000 jobs, by default (about 2.5 minutes on the 2-core development machine);
ML_CONNECTOR_TEST_SCALE_JOBS sets another size. The Zuora emulator narrows its crmId Object Query before
building rows, so the cost no longer grows with the square of the job count.
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter

import pytest
from sqlalchemy.engine import Engine

from connectors.sandbox import Sandbox
from demo.wiring import DemoWiring
from storage import queue
from storage.db import session_scope
from storage.models import JobStatus, Outcome
from tests.reliability.conftest import (
    Fleet,
    accounts_by_crm_id,
    all_jobs,
    audit_records,
    elapsed,
    finished_jobs,
    http_statuses,
    jobs_by_status,
    seed_customers,
)
from tests.support.live import wait_for

pytestmark = pytest.mark.postgres

ACCEPTANCE_JOBS = 5_000
DEFAULT_JOBS = ACCEPTANCE_JOBS
JOBS = int(os.environ.get("ML_CONNECTOR_TEST_SCALE_JOBS", DEFAULT_JOBS))
RUNNERS = 3
LEASE = 30.0  # seconds: a healthy runner must never lose a lease here, or a re-claim would be a double run
SLOWEST = 8.0  # jobs per second: below this the drain deadline fails the test
DRAIN_DEADLINE = 30.0 + JOBS / SLOWEST  # seconds
RUN_LINE = re.compile(r"\bjob=(\d+) flow=\S+ .*?\boutcome=(\w+) .*?\battempts=(\d+)")
BATCH_LINE = re.compile(r"\bbatch flow=\S+ .*?\bsucceeded_jobs=([\d:,]+)")


@pytest.fixture
def database_url(postgres_url: str) -> str:
    """Scale-out is a PostgreSQL story (design.md §5): this module runs on PostgreSQL only."""
    return postgres_url


def runs_in_log(log: str) -> list[tuple[int, str, int]]:
    """(job id, outcome, attempt number) for every job run a runner logged: a line per job, except that
    the successes of a batch flow are summed up in the batch's line (job id:attempt each)."""
    runs = [(int(job), outcome, int(attempt)) for job, outcome, attempt in RUN_LINE.findall(log)]
    for listed in BATCH_LINE.findall(log):
        for pair in listed.split(","):
            job, _, attempt = pair.partition(":")
            runs.append((int(job), "succeeded", int(attempt)))
    return runs


def test_three_runners_on_postgresql_run_each_queued_job_exactly_once(
    engine: Engine, sandbox: Sandbox, wired: DemoWiring, fleet: Fleet
) -> None:
    started = time.monotonic()
    customers = seed_customers(sandbox, JOBS)
    with session_scope(engine) as session:
        for customer_id in customers:
            queue.enqueue(
                session,
                integration_id=wired.integration_id,
                flow="customer_account",
                payload={"record_type": "customer", "id": customer_id, "event_type": "create"},
            )
    print(f"\n[{elapsed(started)}] queued {JOBS} jobs (acceptance size {ACCEPTANCE_JOBS})")

    fleet.lease = LEASE
    cpu_before = time.process_time()
    runners = fleet.start(RUNNERS)
    print(f"[{elapsed(started)}] {RUNNERS} runners up, pids {[r.pid for r in runners]}")
    drain_started = time.monotonic()

    def drained() -> bool:
        for runner in runners:
            assert runner.alive(), f"{runner.name} died:\n{runner.log()[-3000:]}"
        return finished_jobs(engine) == JOBS

    wait_for(drained, timeout=DRAIN_DEADLINE, interval=0.5, what=f"{RUNNERS} runners to finish {JOBS} jobs")
    drain = time.monotonic() - drain_started
    runner_cpu = sum(runner.cpu_seconds() for runner in runners)
    emulator_cpu = time.process_time() - cpu_before
    print(
        f"[{elapsed(started)}] drained in {drain:.1f}s ({JOBS / drain:.0f} jobs/s); CPU: runners "
        f"{runner_cpu:.1f}s ({runner_cpu / JOBS * 1000:.0f} ms/job), test process with the emulators "
        f"{emulator_cpu:.1f}s"
    )
    fleet.stop_all()  # flushes and closes the logs before they are read

    # The emulator: one account per customer, nothing else.
    accounts = accounts_by_crm_id(sandbox)
    assert sorted(accounts) == sorted(customers)
    assert [crm_id for crm_id, n in accounts.items() if n > 1] == []

    # The database: one claim, one run, one audit record per job.
    jobs = all_jobs(engine)
    assert jobs_by_status(engine) == Counter({JobStatus.SUCCEEDED: JOBS})
    assert [(job.id, job.attempts) for job in jobs if job.attempts != 1] == []
    records = audit_records(engine)
    per_job = Counter(record.job_id for record in records)
    assert set(per_job) == {job.id for job in jobs}
    assert [job_id for job_id, n in per_job.items() if n != 1] == []
    assert {record.outcome for record in records} == {Outcome.SUCCEEDED}
    creates = Counter(record.source_id for record in records if record.action == "create")
    assert sorted(creates) == sorted(customers) and max(creates.values()) == 1
    throttled = {key: n for key, n in http_statuses(engine).items() if key[1] == 429}
    print(f"[{elapsed(started)}] 429s met and retried inside jobs: {throttled or 'none'}")

    # The runners' logs: every job run once in exactly one of them, and every runner took a share.
    logs = {runner.name: runner.log() for runner in runners}
    runs = {name: runs_in_log(log) for name, log in logs.items()}
    every_run = [run for entries in runs.values() for run in entries]
    assert sorted(job_id for job_id, _, _ in every_run) == sorted(job.id for job in jobs)
    assert {(outcome, attempt) for _, outcome, attempt in every_run} == {(Outcome.SUCCEEDED, 1)}
    shares = {name: len(entries) for name, entries in runs.items()}
    print(f"[{elapsed(started)}] jobs per runner: {shares}")
    assert all(share > 0 for share in shares.values()), shares
    for name, log in logs.items():
        assert "deadlock" not in log.lower(), f"{name} hit a deadlock:\n{log[-3000:]}"
        # Up to uvicorn's SIGTERM line: the run under load. (At shutdown APScheduler may log a cancelled
        # pickup as an error, which says nothing about the work.)
        under_load = log.split("INFO:     Shutting down")[0]
        assert "Traceback" not in under_load, f"{name} logged a traceback:\n{under_load[-3000:]}"
