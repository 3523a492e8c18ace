"""Zuora subscription events end to end over real HTTP: the Zuora emulator's signed callouts → runner →
one NetSuite custom record per subscription version, upserted by external id, audited.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.zuora.callouts import sign
from runner.flows.subscription import RECORD_TYPE
from runner.replay import ReplayMode, replay_one
from storage import audit
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.models import AuditRecord, Job, JobStatus, Link, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

FLOW = "subscription_event"


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        running.zuora.register_callout(running.zuora_webhook_url, secret=running.zuora_secret)
        yield running


def seed_account(stack: Stack) -> str:
    """An Active Zuora account, seeded over HTTP so the emulator learns the loop it sends callouts from."""
    body = {
        "name": "Acme Ltd",
        "currency": "EUR",
        "billCycleDay": 1,
        "billToContact": {"firstName": "Amy", "lastName": "Lawrence", "country": "United States"},
    }
    response = httpx2.post(f"{stack.credentials.zuora_url}/_emulator/seed/accounts", json=body)
    assert response.status_code == 201, response.text
    (account,) = [a for a in stack.zuora.accounts() if a["id"] == response.json()["id"]]
    return str(account["accountNumber"])


def create_amend_cancel(stack: Stack) -> list[dict[str, Any]]:
    """Versions 1 (created), 2 (a product added) and 3 (cancelled) of one subscription."""
    account = seed_account(stack)
    plan = next(c["productRatePlanId"] for c in stack.zuora.catalog() if c["name"] == "Consulting")
    created = stack.zuora.create_subscription(account, contract_effective_date="2024-07-01")
    number = created["subscriptionNumber"]
    amended = stack.zuora.amend_subscription(
        number, "NewProduct", add_rate_plans=[{"productRatePlanId": plan}], effective_date="2024-08-01"
    )
    cancelled = stack.zuora.cancel_subscription(number, cancellation_date="2024-10-15", reason="Churned")
    return [created, amended, cancelled]


def jobs(engine: Engine, status: JobStatus | None = None) -> int:
    where = [col(Job.flow) == FLOW] + ([col(Job.status) == status] if status else [])
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(Job).where(*where)).one())


def settle(stack: Stack, engine: Engine, count: int) -> None:
    """Wait until the emulator delivered its callouts and `count` subscription jobs succeeded."""
    wait_for(lambda: stack.zuora.pending_callouts == 0, what="the callouts to be delivered")
    wait_for(lambda: jobs(engine, JobStatus.SUCCEEDED) >= count, timeout=30, what=f"{count} jobs")
    assert jobs(engine) == count


def custom_records(stack: Stack) -> dict[str, dict[str, Any]]:
    """The NetSuite emulator's subscription records by external id (failing on a duplicate)."""
    rows = stack.netsuite.records(RECORD_TYPE)
    by_eid = {row["externalId"]: row for row in rows}
    assert len(by_eid) == len(rows), f"duplicate external ids in {rows}"
    return by_eid


def succeeded(engine: Engine, source_id: str) -> list[AuditRecord]:
    found = audit.list_records(engine, filters=AuditFilter(source_id=source_id, outcome=Outcome.SUCCEEDED))
    return sorted(found, key=lambda r: r.id or 0)


def links(engine: Engine) -> list[Link]:
    with Session(engine) as session:
        return list(session.exec(select(Link).where(col(Link.flow) == FLOW)))


def test_billing_tenant_create_amend_cancel_become_one_custom_record_per_version(
    stack: Stack, engine: Engine
) -> None:
    versions = create_amend_cancel(stack)
    number = versions[0]["subscriptionNumber"]

    settle(stack, engine, 3)

    records = custom_records(stack)
    assert sorted(records) == [f"{number}-v1", f"{number}-v2", f"{number}-v3"]
    for zuora_version, kind in zip(versions, ["created", "amended", "cancelled"], strict=True):
        row = records[f"{number}-v{zuora_version['version']}"]
        assert row["name"] == f"{number} v{zuora_version['version']}"
        assert row["custrecord_mlz_event_kind"] == kind
        assert row["custrecord_mlz_sub_number"] == number
        assert row["custrecord_mlz_sub_id"] == zuora_version["id"]
        assert row["custrecord_mlz_version"] == zuora_version["version"]
        assert row["custrecord_mlz_status"] == zuora_version["status"]
        assert row["custrecord_mlz_account_number"] == zuora_version["accountNumber"]
        assert row["custrecord_mlz_contract_effective"] == "2024-07-01"
        assert row["custrecord_mlz_term_start"] == zuora_version["termStartDate"]
        assert row["custrecord_mlz_currency"] == "EUR"
        assert row["custrecord_mlz_mrr"] == zuora_version["contractedMrr"]
        assert row["custrecord_mlz_tcv"] == zuora_version["totalContractedValue"]
    # Version 2 added one-time consulting: the contract value grows, the MRR does not.
    assert (
        records[f"{number}-v2"]["custrecord_mlz_tcv"] == records[f"{number}-v1"]["custrecord_mlz_tcv"] + 150
    )
    cancelled = records[f"{number}-v3"]
    assert (cancelled["custrecord_mlz_status"], cancelled["custrecord_mlz_cancelled_date"]) == (
        "Cancelled",
        "2024-10-15",
    )
    assert "custrecord_mlz_cancelled_date" not in records[f"{number}-v1"]
    assert sorted((link.source_id, link.target_id) for link in links(engine)) == sorted(
        (f"{number}@v{v}", records[f"{number}-v{v}"]["id"]) for v in (1, 2, 3)
    )


def test_subscription_audit_record_is_complete(stack: Stack, engine: Engine) -> None:
    account = seed_account(stack)
    created = stack.zuora.create_subscription(account)
    number = created["subscriptionNumber"]

    settle(stack, engine, 1)

    (callout,) = stack.zuora.callouts
    (summary,) = succeeded(engine, f"{number}@v1")
    found = audit.get_record(engine, summary.id or 0)
    assert found is not None
    record, attempts = found
    row = custom_records(stack)[f"{number}-v1"]
    assert (record.flow, record.source_system, record.target_system) == (FLOW, "zuora", "netsuite")
    assert (record.action, record.target_id, record.mapping_version) == ("create", row["id"], 0)
    assert record.source_snapshot["id"] == created["id"]
    assert record.source_snapshot["ratePlans"] == created["ratePlans"]
    assert record.source_snapshot["_event"] == {
        "kind": "created",
        "event": "Subscription Created",
        "notification": "Subscription Created",
        "notificationId": callout["notificationId"],
    }
    assert record.payload["externalId"] == f"{number}-v1"
    assert record.payload["custrecord_mlz_event_kind"] == "created"
    assert record.response == {"recordType": RECORD_TYPE, "externalId": f"{number}-v1", "id": row["id"]}
    calls = [(a.system, a.method, a.url.split("/v1/", 1)[-1], a.status) for a in attempts]
    assert ("zuora", "GET", f"subscriptions/{number}/versions/1", 200) in calls
    assert ("netsuite", "PUT", f"{RECORD_TYPE}/eid:{number}-v1", 204) in calls


def test_orders_tenant_events_become_one_custom_record_per_version(stack: Stack, engine: Engine) -> None:
    stack.zuora.configure(orders_tenant=True)
    versions = create_amend_cancel(stack)
    number = versions[0]["subscriptionNumber"]

    settle(stack, engine, 6)  # Order Processed and Order Action Processed for each change

    records = custom_records(stack)
    assert {eid: r["custrecord_mlz_event_kind"] for eid, r in records.items()} == {
        f"{number}-v1": "created",
        f"{number}-v2": "amended",
        f"{number}-v3": "cancelled",
    }
    assert records[f"{number}-v3"]["custrecord_mlz_cancel_reason"] == "Churned"
    assert records[f"{number}-v2"]["custrecord_mlz_order_number"] == versions[1]["orderNumber"]
    assert len(links(engine)) == 3
    notifications = {
        (r.source_id, r.source_snapshot["_event"]["notification"], r.action)
        for v in (1, 2, 3)
        for r in succeeded(engine, f"{number}@v{v}")
    }
    assert {(s, n) for s, n, _ in notifications} == {
        (f"{number}@v1", "Order Processed"),
        (f"{number}@v1", "Create Subscription"),
        (f"{number}@v2", "Order Processed"),
        (f"{number}@v2", "Add Product"),
        (f"{number}@v3", "Order Processed"),
        (f"{number}@v3", "Cancel Subscription"),
    }
    # The first job of each version creates the record; the other one upserts the same record.
    for v in (1, 2, 3):
        assert sorted(r.action or "" for r in succeeded(engine, f"{number}@v{v}")) == ["create", "update"]


def test_subscription_redelivery_and_replays_make_no_duplicate(stack: Stack, engine: Engine) -> None:
    account = seed_account(stack)
    created = stack.zuora.create_subscription(account)
    number, source_id = created["subscriptionNumber"], f"{created['subscriptionNumber']}@v1"
    settle(stack, engine, 1)
    (callout,) = stack.zuora.callouts
    raw = json.dumps(callout["body"], separators=(",", ":")).encode()

    def deliver(notification_id: str) -> dict[str, Any]:
        headers = {
            "Content-Type": "application/json",
            "X-Zuora-Signature": sign(stack.zuora_secret, raw),
            "Zuora-Notification-Id": notification_id,
        }
        response = httpx2.post(stack.zuora_webhook_url, content=raw, headers=headers)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert deliver(callout["notificationId"])["duplicate"] is True  # Zuora's retry: deduped at intake
    assert deliver(uuid.uuid4().hex)["duplicate"] is False  # a resend under a new id: a new job
    settle(stack, engine, 2)
    original = succeeded(engine, source_id)[0]
    replays = [(ReplayMode.PAYLOAD, False), (ReplayMode.REMAP, False), (ReplayMode.REMAP, True)]
    for done, (mode, refetch) in enumerate(replays, start=3):
        replay_one(engine, original.id or 0, mode=mode, refetch=refetch)
        settle(stack, engine, done)

    records = custom_records(stack)
    assert list(records) == [f"{number}-v1"]
    assert records[f"{number}-v1"]["custrecord_mlz_event_kind"] == "created"
    history = succeeded(engine, source_id)
    assert [r.action for r in history] == ["create"] + ["update"] * 4
    assert [r.replay_of for r in history[2:]] == [original.id] * 3
    refetched = history[-1].source_snapshot["_event"]
    assert (refetched["kind"], refetched["notificationId"]) == ("created", None)
    assert len(links(engine)) == 1


def test_subscription_events_that_cannot_be_written_are_audited_as_failed(
    stack: Stack, engine: Engine
) -> None:
    def post(body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        headers = {
            "X-Zuora-Signature": sign(stack.zuora_secret, raw),
            "Zuora-Notification-Id": uuid.uuid4().hex,
            "Content-Type": "application/json",
        }
        assert httpx2.post(stack.zuora_webhook_url, content=raw, headers=headers).status_code == 200

    common = {"tenantId": "19", "accountId": None, "accountNumber": None, "eventCategory": None}
    post(
        {**common, "event": "Subscription Created", "subscriptionId": "nope", "subscriptionNumber": "A-S404"}
    )
    post({**common, "event": "Invoice Posted", "subscriptionId": None, "subscriptionNumber": None})

    wait_for(lambda: jobs(engine, JobStatus.DEAD) == 2, timeout=20, what="both jobs to be dead")
    failed = audit.list_records(engine, filters=AuditFilter(flow=FLOW, outcome=Outcome.FAILED))
    by_class = {r.error_class: r for r in failed}
    assert set(by_class) == {"remote", "config"}
    assert by_class["remote"].source_id == "nope"  # no version named: the version id Zuora sent
    assert "Invoice Posted" in (by_class["config"].error_message or "")
    assert stack.netsuite.records(RECORD_TYPE) == []
    assert links(engine) == []
