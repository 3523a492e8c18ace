"""Reconciliation end to end over real HTTP (emulators + runner): drift seeded on purpose is found exactly,
each one-click fix resolves it, and the next run reports nothing open; the pre-create lookup asks before
linking; a large tenant is read page by page.

Every test here runs on SQLite and on PostgreSQL unless marked (the `engine` fixture is parametrized).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.zuora.emulator import ZuoraEmulator
from runner.backfill import start_backfill
from runner.flows.invoice import GL_TABLE
from runner.reconcile import service
from runner.reconcile.run import schedule_due
from runner.reconcile.service import Choice, ReconcileRefused
from storage import audit, links
from storage import reconcile as store
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.db import session_scope
from storage.lookups import save_lookup
from storage.models import Integration, Job, JobStatus
from storage.reconcile import Drift, ReconciliationRun, RunStatus
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

GL_ROWS = {"4000": "4000 Services"}
LINE = {
    "item": {"id": "86", "refName": "Consulting Hours"},
    "quantity": 2,
    "rate": 150.0,
    "account": {"id": "54", "refName": "4000 Consulting Income"},
}


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings.model_copy(update={"workers": 8})) as running:
        save_lookup(engine, integration_id=running.integration_id, name=GL_TABLE, rows=GL_ROWS)
        yield running


def settled(engine: Engine) -> bool:
    busy = col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING])
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(Job).where(busy)).one()) == 0


def reconcile(engine: Engine, integration_id: int, by: str = "ops@example.com") -> int:
    """Request a run and wait for the runner to finish it; returns the run id."""
    run_id = service.request_run(engine, integration_id=integration_id, requested_by=by)
    progress = wait_for(
        lambda: (
            (p := service.run_progress(engine, run_id=run_id)) and p.status in ("succeeded", "failed") and p
        ),
        timeout=60,
        interval=0.1,
        what=f"reconciliation {run_id}",
    )
    assert progress.status == "succeeded", progress.error
    return run_id


def drifts(engine: Engine, run_id: int, status: str | None = "open") -> set[tuple[str, str, str]]:
    return {(d.flow, d.kind, d.source_id) for d in service.list_drifts(engine, run_id=run_id, status=status)}


def only(engine: Engine, run_id: int, flow: str, kind: str) -> Drift:
    [drift] = service.list_drifts(engine, run_id=run_id, flow=flow, kind=kind)
    return drift


def synced_world(stack: Stack, engine: Engine) -> dict[str, str]:
    """Two customers (plus the sandbox's three), one invoice, all synced to Zuora and Zoho by backfills."""
    netsuite = stack.netsuite
    ids = {
        "acme": netsuite.seed(
            "customer", {"companyName": "Acme Ltd", "email": "ap@acme.test", "phone": "555-0001"}
        ),
        "globex": netsuite.seed("customer", {"companyName": "Globex", "phone": "555-0002"}),
    }
    ids["invoice"] = netsuite.seed(
        "invoice", {"entity": {"id": ids["acme"]}, "tranDate": "2024-05-01", "item": {"items": [dict(LINE)]}}
    )
    for integration_id, flow in (
        (stack.integration_id, "customer_account"),
        (stack.integration_id, "invoice"),
        (stack.zoho_integration_id, "customer_zoho"),
    ):
        start_backfill(engine, integration_id=integration_id, flow=flow)
        wait_for(lambda: settled(engine), timeout=60, interval=0.2, what=f"the {flow} backfill")
    assert len(stack.zuora.invoices()) == 1 and len(stack.zoho.records("Accounts")) == 5
    return ids


def test_reconciliation_finds_seeded_drift_exactly_each_fix_resolves_it_and_the_next_run_is_clean(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    ids = synced_world(stack, engine)
    zuora_run, zoho_run = (
        reconcile(engine, stack.integration_id),
        reconcile(engine, stack.zoho_integration_id),
    )
    assert drifts(engine, zuora_run) == set() and drifts(engine, zoho_run) == set()  # flows and checks agree

    # Drift on purpose: a customer made in NetSuite that never reached Zuora or Zoho; the NetSuite invoice's
    # amount changed after it was billed in Zuora; a phone number edited in Zoho.
    newco = stack.netsuite.seed("customer", {"companyName": "Newco GmbH"})  # no webhook: never synced
    stack.netsuite.write("invoice", ids["invoice"], {"item": {"items": [{"line": 1, "rate": 175.0}]}})
    [globex_zoho] = [r for r in stack.zoho.records("Accounts") if r["NetSuite_Id"] == ids["globex"]]
    stack.zoho.update_record("Accounts", globex_zoho["id"], {"Phone": "555-9999"}, notify=False)
    newco_by_hand = stack.zoho.seed(
        "Accounts", {"Account_Name": "Newco GmbH"}
    )  # made in Zoho, no NetSuite id

    zuora_run, zoho_run = (
        reconcile(engine, stack.integration_id),
        reconcile(engine, stack.zoho_integration_id),
    )

    assert drifts(engine, zuora_run) == {
        ("customer_account", "missing_in_target", newco),
        ("invoice", "amount_mismatch", ids["invoice"]),
    }
    assert drifts(engine, zoho_run) == {
        ("customer_zoho", "missing_in_target", newco),
        ("customer_zoho", "field_mismatch", ids["globex"]),
    }
    amount = only(engine, zuora_run, "invoice", "amount_mismatch")
    assert amount.differences == [{"field": "amount", "netsuite": "350.00", "target": "300.00"}]
    phone = only(engine, zoho_run, "customer_zoho", "field_mismatch")
    assert phone.differences == [{"field": "Phone", "netsuite": "555-0002", "target": "555-9999"}]
    assert phone.target_id == globex_zoho["id"] and phone.label == "Globex"
    progress = service.run_progress(engine, run_id=zuora_run)
    assert progress is not None and progress.done == progress.total > 0 and progress.fraction == 1.0
    totals = service.run_totals(engine, run_id=zuora_run)
    [may] = totals["invoices"]["by_period"]
    assert may == {
        "period": "2024-05", "netsuite_count": 1, "netsuite_amount": "350.00", "target_count": 1,
        "target_amount": "300.00", "agrees": False,
    }  # fmt: skip
    csv_text = service.drift_csv(engine, run_id=zoho_run)
    assert "Phone,555-0002,555-9999" in csv_text and csv_text.startswith("id,run_id,")

    # The fixes, one click each.
    missing = only(engine, zuora_run, "customer_account", "missing_in_target")
    assert service.resync(engine, vault, settings, drift_id=missing.id or 0, by="ops").status == "queued"
    assert service.resync(engine, vault, settings, drift_id=phone.id or 0, by="ops").status == "queued"
    zoho_missing = only(engine, zoho_run, "customer_zoho", "missing_in_target")
    linked = service.link(
        engine, vault, settings, drift_id=zoho_missing.id or 0, target_id=newco_by_hand, by="ops"
    )
    assert linked.status == "queued"
    with pytest.raises(ReconcileRefused, match="never rewritten"):
        service.resync(engine, vault, settings, drift_id=amount.id or 0, by="ops")
    with pytest.raises(ReconcileRefused, match="reason"):
        service.accept(engine, drift_id=amount.id or 0, reason="  ", by="ops")
    service.accept(engine, drift_id=amount.id or 0, reason="credit memo 77 covers the difference", by="cfo")
    wait_for(lambda: settled(engine), timeout=30, interval=0.2, what="the fixes' sync jobs")

    zuora_run, zoho_run = (
        reconcile(engine, stack.integration_id),
        reconcile(engine, stack.zoho_integration_id),
    )

    assert drifts(engine, zuora_run) == set() and drifts(engine, zoho_run) == set()
    assert drifts(engine, zuora_run, status="accepted") == {("invoice", "amount_mismatch", ids["invoice"])}
    assert [r["id"] for r in stack.zoho.records("Accounts") if r.get("NetSuite_Id") == newco] == [
        newco_by_hand
    ]
    assert len(stack.zuora_accounts(newco)) == 1
    for fixed in (missing, phone, zoho_missing):
        assert service.list_drifts(
            engine, run_id=fixed.run_id, status="resolved", flow=fixed.flow, kind=fixed.kind
        )
    decisions = {r.action for r in audit.list_records(engine, filters=AuditFilter(source_id=ids["invoice"]))}
    assert "accept" in decisions


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_resync_that_would_create_asks_first_when_the_target_exists_and_audits_each_choice(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    names = ("Update Me", "Link Me", "Skip Me")
    customers = {name: stack.netsuite.seed("customer", {"companyName": name}) for name in names}
    run_id = reconcile(engine, stack.integration_id)
    missing = {d.source_id: d for d in service.list_drifts(engine, run_id=run_id, kind="missing_in_target")}
    # Someone makes the accounts by hand in Zuora, with the NetSuite id, after the run.
    accounts = {name: stack.zuora.seed("account", _account(name, customers[name])) for name in names}

    for name, choice in zip(names, (Choice.UPDATE, Choice.LINK, Choice.SKIP), strict=True):
        drift = missing[customers[name]]
        asked = service.resync(engine, vault, settings, drift_id=drift.id or 0, by="ops")
        assert asked.status == "needs_decision" and asked.existing is not None
        assert asked.existing.target_id == accounts[name] and asked.existing.via == "crmId"
        done = service.resync(engine, vault, settings, drift_id=drift.id or 0, by="ops", choice=choice)
        assert done.status == {"update": "queued", "link": "linked", "skip": "skipped"}[choice]
        assert (
            done.drift is not None
            and done.drift.resolution == choice.value
            and done.drift.decided_by == "ops"
        )
        [record] = audit.list_records(
            engine, filters=AuditFilter(source_id=customers[name], flow="customer_account")
        )
        assert record.action == choice.value and record.response and record.response["decided_by"] == "ops"
        link = links.find(
            engine, integration_id=stack.integration_id, flow="customer_account", source_id=customers[name]
        )
        assert (link.target_id if link else None) == (None if choice is Choice.SKIP else accounts[name])

    found = service.find_existing_target(
        engine, vault, settings, integration_id=stack.integration_id, flow="customer_account",
        source_id=customers["Skip Me"],
    )  # fmt: skip
    assert found is not None and found.target_id == accounts["Skip Me"]
    assert [len(stack.zuora_accounts(customers[name])) for name in names] == [1, 1, 1]  # nothing duplicated


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_large_tenant_is_read_page_by_page_and_every_record_is_paired(stack: Stack, engine: Engine) -> None:
    stack.netsuite.suiteql_row_cap = 1_000  # past the row cap only by key
    count = 2_500
    unsynced = ""
    for n in range(count):
        name = f"Bulk Co {n:05d}"
        customer_id = stack.netsuite.seed("customer", {"companyName": name})
        if n == 1234:
            unsynced = customer_id
            continue
        stack.zuora.seed("account", _account(name, customer_id))

    queries = record_queries(stack.netsuite)

    run_id = reconcile(engine, stack.integration_id)

    pages = [
        q for q in queries if q.startswith("SELECT id, companyname, entityid, ") and "FROM customer" in q
    ]
    assert len(pages) == 3 and sum("WHERE id >" in q for q in pages) == 2  # 2,503 rows: by key past the cap
    assert calls(stack.zuora, "/v1/action/queryMore") >= 2  # accounts and contacts past 2,000 a call
    demo = {r["id"] for r in stack.netsuite.records("customer")} - {
        str(a["crmId"]) for a in stack.zuora.accounts() if a.get("crmId")
    }
    assert drifts(engine, run_id) == {("customer_account", "missing_in_target", i) for i in demo}
    assert unsynced in demo and len(demo) == 4  # the sandbox's three and the one left out
    [row] = [r for r in service.run_totals(engine, run_id=run_id)["flows"] if r["flow"] == "customer_account"]
    assert (row["netsuite"], row["matched"], row["field_mismatch"]) == (count + 3, count - 1, 0)
    progress = service.run_progress(engine, run_id=run_id)
    assert progress is not None and progress.done == progress.total >= count


def test_a_run_left_by_a_dead_runner_is_taken_over_and_the_schedule_requests_due_runs(
    stack: Stack, engine: Engine
) -> None:
    with session_scope(engine, write=True) as session:
        orphan = ReconciliationRun(
            integration_id=stack.integration_id, status=RunStatus.RUNNING, lease_owner="dead-runner",
            lease_until=utcnow() + timedelta(seconds=0.5), phase="comparing", done=1, total=9,
        )  # fmt: skip
        session.add(orphan)
        session.flush()
        orphan_id = orphan.id or 0

    finished = wait_for(
        lambda: (r := store.get_run(engine, run_id=orphan_id)) and r.status == RunStatus.SUCCEEDED and r,
        timeout=30,
        interval=0.1,
        what="the abandoned run to be finished by the live runner",
    )
    assert finished.lease_owner != "dead-runner" and finished.totals["flows"]

    assert schedule_due(engine, default_interval=86_400) == []  # both integrations were made just now
    set_setting(engine, stack.integration_id, reconcile_interval=0)  # off for this one
    set_setting(engine, stack.zoho_integration_id, reconcile_interval=0.001)
    [scheduled] = schedule_due(engine, default_interval=86_400)
    run = store.get_run(engine, run_id=scheduled)
    assert run is not None and (run.integration_id, run.trigger) == (stack.zoho_integration_id, "scheduled")
    wait_for(
        lambda: (r := store.get_run(engine, run_id=scheduled)) and r.status == RunStatus.SUCCEEDED,
        timeout=30,
        interval=0.1,
        what="the scheduled run",
    )


def set_setting(engine: Engine, integration_id: int, **values: Any) -> None:
    with session_scope(engine, write=True) as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        integration.settings = {**(integration.settings or {}), **values}
        session.add(integration)


def record_queries(netsuite: NetSuiteEmulator) -> list[str]:
    """Make the emulator remember every SuiteQL statement it runs."""
    seen: list[str] = []
    run = netsuite.suiteql

    def recording(sql: str) -> list[dict[str, Any]]:
        seen.append(sql)
        return run(sql)

    netsuite.suiteql = recording  # type: ignore[method-assign]
    return seen


def calls(emulator: ZuoraEmulator, path: str) -> int:
    with emulator.lock:
        return sum(1 for r in emulator.requests if r["path"] == path)


def _account(name: str, crm_id: str) -> dict[str, Any]:
    return {"name": name, "crmId": crm_id, "currency": "USD", "billCycleDay": 1,
            "billToContact": {"firstName": "Accounts", "lastName": name}}  # fmt: skip
