"""Pause on outage: a system that keeps failing pauses its integration on its own, jobs queue and
nothing is lost, a scheduled ping resumes it when the system is back; a person can pause and resume too."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from runner import outage
from storage import alerts as store
from storage import crud
from storage.alerts import IncidentKind
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Job
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.alert_sinks import WebhookReceiver, webhook_receiver
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

SECRET = "outage-signing-secret"


@dataclass
class Outage:
    stack: Stack
    receiver: WebhookReceiver
    engine: Engine
    first_job: int = 0  # jobs before this one belong to earlier cases

    @property
    def integration_id(self) -> int:
        return self.stack.integration_id

    def _jobs(self, column: Any) -> list[Any]:
        with Session(self.engine) as session:
            return list(
                session.exec(
                    select(column).where(
                        col(Job.integration_id) == self.integration_id, col(Job.id) >= self.first_job
                    )
                ).all()
            )

    def jobs(self) -> Counter[str]:
        """This case's jobs by status."""
        return Counter(self._jobs(Job.status))

    def attempts(self) -> int:
        return sum(self._jobs(Job.attempts))


@pytest.fixture(scope="module")
def shared(module_engine: Engine, module_vault: Vault, module_settings: Settings) -> Iterator[Outage]:
    """One stack for the module's cases: each starts with the integration running and Zuora up."""
    with webhook_receiver(SECRET) as receiver:
        store.save_settings(
            module_engine,
            module_vault,
            by="test",
            changes={
                "webhook_url": receiver.url,
                "check_seconds": 0.3,
                "outage_failures": 3,  # three failures in a row pause the integration
                "outage_window_minutes": 1,
                "reping_seconds": 0.5,
                "error_rate_min_records": 10_000,  # these cases are about pausing, not the error rate
            },
            webhook_secret=SECRET,
        )
        with running_stack(module_engine, module_vault, module_settings) as stack:
            yield Outage(stack, receiver, module_engine)


@pytest.fixture
def down(shared: Outage) -> Outage:
    assert not outage.status(shared.engine, integration_id=shared.integration_id).paused
    shared.stack.zuora.faults.reset()
    shared.receiver.clear()
    with Session(shared.engine) as session:
        shared.first_job = (session.exec(select(func.max(Job.id))).one() or 0) + 1
    return shared


@pytest.mark.parametrize(
    ("error_class", "message", "counts"),
    [
        ("transient", "zuora: Injected failure (HTTP 503). (POST /v1/accounts → 503)", True),
        ("config", "zuora: invalid client credentials (POST /oauth/token → 401)", True),
        ("transient", "netsuite: token refresh is cooling down until 12:00:00 UTC", True),
        ("transient", "link customer/42 is claimed by job:7", False),  # postponed: busy, not down
        ("config", "mapping: name is required", False),  # our mapping, not the system
        ("remote", "zuora: the account was refused (POST /v1/accounts → 400)", False),
        ("transient", "zoho: Injected failure (HTTP 503)", False),  # not a system of this flow
    ],
)
def test_only_failures_of_the_flows_systems_count_towards_an_outage(
    error_class: str, message: str, counts: bool
) -> None:
    record = AuditRecord(
        integration_id=1, flow="customer_account", source_system="netsuite", source_id="1",
        target_system="zuora", outcome="retrying", error_class=error_class, error_message=message,
    )  # fmt: skip

    assert (outage.failing_system(record) is not None) is counts


FAILURES = {  # what a record says, by shorthand
    "503": ("transient", "zuora: Injected failure (HTTP 503). (GET /object-query/accounts → 503)"),
    "401": ("config", "zuora: invalid client credentials (POST /oauth/token → 401)"),
    "400": ("remote", "zuora: the account was refused (POST /v1/accounts → 400)"),
    "ok": (None, None),
}


def test_an_outage_is_k_outage_failures_in_a_row_with_no_success_between(
    engine: Engine, vault: Vault
) -> None:
    cfg = store.AlertSettings(outage_failures=3, outage_window_minutes=10, reping_seconds=60)
    now = utcnow()
    cases = {  # oldest record first → paused?
        "three 503s": (["503", "503", "503"], True),
        "503s and a refused credential": (["401", "503", "401"], True),
        "a success among them": (["503", "ok", "503", "503"], False),
        "only two": (["503", "503"], False),
        "rejected records": (["400", "400", "400"], False),
        "a success since": (["503", "503", "503", "ok"], False),
    }
    ids = {name: new_integration(engine, vault, name) for name in cases}
    with session_scope(engine) as session:
        for name, (records, _) in cases.items():
            for n, shorthand in enumerate(records):
                error_class, message = FAILURES[shorthand]
                session.add(
                    AuditRecord(
                        integration_id=ids[name], flow="customer_account", source_system="netsuite",
                        source_id=str(n), target_system="zuora", error_class=error_class, error_message=message,
                        outcome="succeeded" if shorthand == "ok" else "retrying",
                        started_at=now - timedelta(seconds=60 - n),
                    )
                )  # fmt: skip
    alice = ids["three 503s"]
    store.set_paused(engine, integration_id=alice, by="alice", reason="hands off")

    paused = outage.detect(engine, cfg, now=now)

    assert sorted(paused) == [ids["503s and a refused credential"]]  # "three 503s" is alice's already
    assert outage.status(engine, integration_id=alice).by == "alice"
    row = store.pause_of(engine, integration_id=ids["503s and a refused credential"])
    assert row is not None and row.by == store.AUTO and row.systems == ["zuora"] and "config" in row.reason
    assert outage.detect(engine, cfg, now=now) == []  # already paused: nothing new


def new_integration(engine: Engine, vault: Vault, name: str) -> int:
    workspace = crud.get_workspace_by_name(engine, name="Outage") or crud.create_workspace(
        engine, name="Outage"
    )
    assert workspace.id is not None
    connections = [
        crud.create_connection(
            engine, vault, workspace_id=workspace.id, system=s, name=s, base_url=f"https://{s}.test"
        ).id
        for s in ("netsuite", "zuora")
    ]
    created = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name=name, source_connection_id=connections[0] or 0,
        target_connection_id=connections[1] or 0, flows=[],
    )  # fmt: skip
    assert created.id is not None
    return created.id


def test_an_outage_pauses_the_integration_keeps_every_job_and_resumes_by_itself(down: Outage) -> None:
    stack = down.stack
    stack.zuora.faults.fail_next(503, 1_000_000)  # Zuora answers 503 to everything

    customers = [stack.create_customer({"companyName": f"Outage {n}"}) for n in range(5)]

    paused = wait_for(
        lambda: (s := outage.status(down.engine, integration_id=down.integration_id)).paused and s,
        timeout=30,
        what="the integration to pause itself",
    )
    seen = time.monotonic()
    assert paused.by == store.AUTO and paused.systems == ["zuora"] and "503" in (paused.reason or "")
    assert down.receiver.wait(IncidentKind.INTEGRATION_PAUSED, "opened").verified
    # Paused: once the workers have re-read the paused integrations (every PAUSED_TTL seconds) no job is
    # claimed, the jobs running by then settle back into the queue, and the runner keeps pinging Zuora.
    wait_for(
        lambda: time.monotonic() - seen > outage.PAUSED_TTL and down.jobs() == Counter(queued=5),
        timeout=20,
        what="every job back in the queue",
    )
    attempts = down.attempts()
    wait_for(
        lambda: outage.status(down.engine, integration_id=down.integration_id).last_ping_error,
        timeout=20,
        what="a failed re-ping",
    )
    assert down.attempts() == attempts and down.jobs() == Counter(queued=5)

    stack.zuora.faults.reset()  # Zuora is back

    wait_for(lambda: all(stack.zuora_accounts(c) for c in customers), timeout=30, what="every record synced")
    assert all(len(stack.zuora_accounts(c)) == 1 for c in customers)
    assert not outage.status(down.engine, integration_id=down.integration_id).paused
    resolved = down.receiver.wait(IncidentKind.INTEGRATION_PAUSED, "resolved")
    assert resolved.verified and len(down.receiver.of(IncidentKind.INTEGRATION_PAUSED)) == 2
    wait_for(lambda: down.jobs() == Counter(succeeded=5), timeout=10, what="every job done, none dead")


def test_a_person_pauses_and_resumes_an_integration_by_hand(down: Outage) -> None:
    stack = down.stack
    assert outage.pause(down.engine, integration_id=down.integration_id, by="alice", reason="month-end close")
    paused_at = time.monotonic()
    # Workers re-read the paused integrations every PAUSED_TTL seconds: the pause is in force after that.
    wait_for(lambda: time.monotonic() - paused_at > outage.PAUSED_TTL, what="the pause to reach the workers")

    customer = stack.create_customer({"companyName": "Waits For Alice"})
    down.receiver.wait(IncidentKind.INTEGRATION_PAUSED, "opened")

    held = wait_for(
        lambda: (s := outage.status(down.engine, integration_id=down.integration_id)).queued_jobs and s,
        what="the webhook's job in the queue",
    )
    assert (held.paused, held.by, held.reason) == (True, "alice", "month-end close")
    assert held.queued_jobs == 1 and down.attempts() == 0  # intake woke the workers; they passed it by
    assert store.due_for_ping(down.engine) == []  # a person's pause is never resumed by the runner

    assert outage.resume(down.engine, integration_id=down.integration_id, by="alice")

    wait_for(lambda: stack.zuora_accounts(customer), timeout=20, what="the held record to sync")
    assert down.receiver.wait(IncidentKind.INTEGRATION_PAUSED, "resolved").verified
    assert [s.paused for s in outage.overview(down.engine)] == [False, False]
    assert not outage.resume(down.engine, integration_id=down.integration_id, by="alice")  # not paused
