"""What reconciliation keeps: one runner at a time works on a run, a crashed run is taken over once its
lease runs out, and a run's report settles the drifts of the runs before it."""

from __future__ import annotations

import time

import pytest
from sqlalchemy.engine import Engine

from storage import crud
from storage import reconcile as store
from storage.crypto import Vault
from storage.reconcile import DriftFilter, DriftKind, DriftStatus, Found, RunStatus


@pytest.fixture
def integration_id(engine: Engine, vault: Vault) -> int:
    workspace = crud.create_workspace(engine, name="Recon")
    assert workspace.id is not None
    ids = [
        crud.create_connection(
            engine, vault, workspace_id=workspace.id, system=system, name=system, base_url="https://x.test",
            environment="", settings={}, secrets={},
        ).id
        for system in ("netsuite", "zuora")
    ]  # fmt: skip
    integration = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name="NS-Zuora", source_connection_id=ids[0],
        target_connection_id=ids[1], flows=["customer_account"], key="recon",
    )  # fmt: skip
    assert integration.id is not None
    return integration.id


def claimed(engine: Engine, integration_id: int, worker: str, lease: float = 30.0) -> int:
    store.create_run(engine, integration_id=integration_id, requested_by="ops")
    run = store.claim_run(engine, worker=worker, lease=lease)
    assert run is not None and run.id is not None
    return run.id


def test_create_run_returns_the_run_already_waiting(engine: Engine, integration_id: int) -> None:
    first = store.create_run(engine, integration_id=integration_id, requested_by="ops")
    second = store.create_run(engine, integration_id=integration_id, requested_by="someone else")

    assert first.id == second.id and second.requested_by == "ops"


def test_claim_run_gives_a_run_to_one_runner_only(engine: Engine, integration_id: int) -> None:
    run_id = claimed(engine, integration_id, "runner-1")

    assert store.claim_run(engine, worker="runner-2", lease=30.0) is None
    assert store.progress(engine, run_id=run_id, worker="runner-1", lease=30.0, phase="reading", total=10)
    assert not store.progress(engine, run_id=run_id, worker="runner-2", lease=30.0, done=5)


def test_a_run_whose_runner_died_is_taken_over_after_its_lease_and_the_old_runner_cannot_finish_it(
    engine: Engine, integration_id: int
) -> None:
    run_id = claimed(engine, integration_id, "crashed", lease=0.2)
    time.sleep(0.3)  # the lease runs out: nothing to poll for, the clock is the condition

    taken = store.claim_run(engine, worker="runner-2", lease=30.0)

    assert taken is not None and taken.id == run_id and taken.lease_owner == "runner-2"
    assert not store.finish_run(engine, run_id=run_id, worker="crashed", totals={}, found=[])
    assert store.finish_run(engine, run_id=run_id, worker="runner-2", totals={"flows": []}, found=[])
    run = store.get_run(engine, run_id=run_id)
    assert run is not None and run.status == RunStatus.SUCCEEDED and run.lease_until is None


def test_finish_run_keeps_accepted_drifts_accepted_and_settles_earlier_ones(
    engine: Engine, integration_id: int
) -> None:
    gone = Found("customer_account", DriftKind.MISSING_IN_TARGET, "1", label="Fixed Co")
    stays = Found("customer_account", DriftKind.MISSING_IN_TARGET, "2", label="Still Co")
    fine = Found("invoice", DriftKind.AMOUNT_MISMATCH, "3", "z3", "INV3", ({"field": "amount"},))
    first = claimed(engine, integration_id, "r")
    store.finish_run(engine, run_id=first, worker="r", totals={}, found=[gone, stays, fine])
    by_source = {d.source_id: d for d in store.list_drifts(engine, filters=DriftFilter(run_id=first))}
    store.decide(engine, drift_id=by_source["3"].id or 0, status=DriftStatus.ACCEPTED, resolution="accept",
                 decided_by="cfo", reason="credit memo")  # fmt: skip

    second = claimed(engine, integration_id, "r")
    store.finish_run(engine, run_id=second, worker="r", totals={}, found=[stays, fine])

    now = {d.source_id: d for d in store.list_drifts(engine, filters=DriftFilter(run_id=second))}
    assert {k: d.status for k, d in now.items()} == {"2": DriftStatus.OPEN, "3": DriftStatus.ACCEPTED}
    assert now["3"].reason == "credit memo" and now["3"].decided_by == "cfo"
    before = {d.source_id: d.status for d in store.list_drifts(engine, filters=DriftFilter(run_id=first))}
    assert before == {"1": DriftStatus.RESOLVED, "2": DriftStatus.SUPERSEDED, "3": DriftStatus.ACCEPTED}
