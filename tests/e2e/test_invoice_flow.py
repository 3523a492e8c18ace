"""NetSuite invoice → Zuora invoice end to end over real HTTP: NetSuite emulator webhook → runner → Zuora
emulator → audit, with the customer synced first when Zuora has no account for it.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.auth import MemoryTokens
from connectors.netsuite.client import NetSuiteClient
from runner.flows.invoice import GL_TABLE, NETSUITE_ID_FIELD
from runner.replay import ReplayMode, replay_one
from storage import audit, links
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.lookups import save_lookup
from storage.models import AuditRecord, Job, JobStatus, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

GL_ROWS = {"4000": "4000 Services", "4010": "Subscription Revenue"}  # keyed by account number
CONSULTING = {
    "item": {"id": "86", "refName": "Consulting Hours"},
    "quantity": 2,
    "rate": 150.0,
    "description": "May workshop",
    "account": {"id": "54", "refName": "4000 Consulting Income"},
    "revRecStartDate": "2024-05-01",
    "revRecEndDate": "2024-05-31",
}
PLATFORM = {
    "item": {"id": "87", "refName": "Platform"},
    "amount": 99.5,
    "account": {"id": "55", "refName": "4010 Subscription Income"},
}


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        save_lookup(engine, integration_id=running.integration_id, name=GL_TABLE, rows=GL_ROWS)
        yield running


def invoice_body(customer_id: str, *lines: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "entity": {"id": customer_id},
        "tranDate": "2024-05-01",
        "dueDate": "2024-05-31",
        "item": {"items": list(lines) or [CONSULTING, PLATFORM]},
        **fields,
    }


def create_invoice(stack: Stack, customer_id: str, *lines: dict[str, Any], **fields: Any) -> str:
    """POST an invoice to NetSuite's record API, as a NetSuite user would; the emulator's User Event
    script then posts the webhook. Returns the invoice's internal id."""

    async def create() -> str:
        c = stack.credentials
        async with httpx2.AsyncClient() as http:
            client = NetSuiteClient(
                base_url=c.netsuite_url,
                http=http,
                tokens_from=MemoryTokens,
                client_id=c.netsuite_client_id,
                certificate_id=c.netsuite_certificate_id,
                private_key=c.netsuite_private_key,
            )
            return await client.create_record("invoice", invoice_body(customer_id, *lines, **fields))

    return asyncio.run(create())


def redeliver(stack: Stack, invoice_id: str) -> None:
    body = {"recordType": "invoice", "id": invoice_id, "eventType": "edit"}
    response = httpx2.post(stack.webhook_url, json=body, headers={"X-Webhook-Secret": stack.webhook_secret})
    assert response.status_code == 202, response.text


def zuora_invoices(stack: Stack, invoice_id: str) -> list[dict[str, Any]]:
    return [i for i in stack.zuora.invoices() if i.get(NETSUITE_ID_FIELD) == invoice_id]


def records(
    engine: Engine, source_id: str, outcome: str | None = None, flow: str = "invoice"
) -> list[AuditRecord]:
    found = audit.list_records(engine, filters=AuditFilter(flow=flow, source_id=source_id, outcome=outcome))
    return list(found)


def synced_customer(stack: Stack, engine: Engine, name: str) -> tuple[str, dict[str, Any]]:
    """A customer created in NetSuite and synced to a Zuora account by the customer flow."""
    customer_id = stack.create_customer({"companyName": name})
    wait_for(
        lambda: records(engine, customer_id, Outcome.SUCCEEDED, flow="customer_account"),
        timeout=20,
        what="the customer sync",
    )
    [account] = stack.zuora_accounts(customer_id)
    return customer_id, account


def settled(engine: Engine) -> bool:
    """No job queued or running: every delivery, poll hit and replay so far has finished."""
    busy = col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING])
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(Job).where(busy)).one()) == 0


def test_invoice_becomes_one_zuora_invoice_on_its_customers_account(stack: Stack, engine: Engine) -> None:
    customer_id, account = synced_customer(stack, engine, "Acme Ltd")

    invoice_id = create_invoice(stack, customer_id, memo="May services")

    [invoice] = wait_for(lambda: zuora_invoices(stack, invoice_id), timeout=20, what="the Zuora invoice")
    assert (invoice["accountId"], invoice["invoiceNumber"], invoice["status"]) == (
        account["id"],
        f"INV{invoice_id}",
        "Draft",
    )
    assert (invoice["invoiceDate"], invoice["dueDate"], invoice["amount"], invoice["comments"]) == (
        "2024-05-01",
        "2024-05-31",
        399.5,
        "May services",
    )
    lines = [
        (i["chargeName"], i["chargeAmount"], i["accountingCode"], i["serviceStartDate"], i["serviceEndDate"])
        for i in invoice["invoiceItems"]
    ]
    assert lines == [
        ("Consulting Hours", 300, "4000 Services", "2024-05-01", "2024-05-31"),
        ("Platform", 99.5, "Subscription Revenue", "2024-05-01", None),
    ]


def test_invoice_audit_record_is_complete(stack: Stack, engine: Engine) -> None:
    customer_id, account = synced_customer(stack, engine, "Audited Ltd")

    invoice_id = create_invoice(stack, customer_id)

    created = wait_for(lambda: records(engine, invoice_id, Outcome.SUCCEEDED), timeout=20, what="the sync")
    record, attempts = audit.get_record(engine, created[-1].id)  # type: ignore[arg-type, misc]
    [invoice] = zuora_invoices(stack, invoice_id)
    assert (record.action, record.target_id, record.mapping_version) == ("create", invoice["id"], 0)
    assert record.source_snapshot["tranId"] == f"INV{invoice_id}"
    assert record.source_snapshot["item"]["items"][0]["account"]["refName"] == "4000 Consulting Income"
    assert record.source_snapshot["zuoraAccount"] == {
        "id": account["id"],
        "customerId": customer_id,
        "via": "link",
    }
    assert record.payload["accountId"] == account["id"]
    assert [i["accountingCode"] for i in record.payload["invoiceItems"]] == [
        "4000 Services",
        "Subscription Revenue",
    ]
    assert record.response["id"] == invoice["id"]
    calls = [(a.system, a.method, a.url.split("/services/rest", 1)[-1]) for a in attempts]
    assert ("netsuite", "GET", f"/record/v1/invoice/{invoice_id}") in calls
    assert calls[-1][:2] == ("zuora", "POST") and attempts[-1].url.endswith("/v1/invoices")
    assert all(a.status == 200 and a.duration_ms >= 0 for a in attempts if a.system == "zuora")


def test_customer_missing_in_zuora_is_synced_before_its_invoice(stack: Stack, engine: Engine) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Newco GmbH"})  # no webhook: never synced

    invoice_id = create_invoice(stack, customer_id, CONSULTING)

    synced = wait_for(lambda: records(engine, invoice_id, Outcome.SUCCEEDED), timeout=20, what="the sync")
    [invoice] = zuora_invoices(stack, invoice_id)
    [account] = stack.zuora_accounts(customer_id)
    assert (account["name"], invoice["accountId"]) == ("Newco GmbH", account["id"])
    link = links.find(
        engine, integration_id=stack.integration_id, flow="customer_account", source_id=customer_id
    )
    assert link is not None and link.target_id == account["id"]
    record, attempts = audit.get_record(engine, synced[0].id)  # type: ignore[arg-type, misc]
    assert record.source_snapshot["zuoraAccount"]["via"] == "synced"
    posts = [a.url.split("/v1/", 1)[-1] for a in attempts if a.system == "zuora" and a.method == "POST"]
    assert posts[-2:] == ["accounts", "invoices"]  # after the token exchange


def test_redelivered_webhooks_and_replays_make_no_second_invoice(stack: Stack, engine: Engine) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Twice Billed Inc"})
    invoice_id = create_invoice(stack, customer_id)
    original = wait_for(lambda: records(engine, invoice_id, Outcome.SUCCEEDED), timeout=20, what="the sync")[
        0
    ]

    redeliver(stack, invoice_id)
    redeliver(stack, invoice_id)
    replay_one(engine, original.id, mode=ReplayMode.PAYLOAD)  # type: ignore[arg-type]
    replay_one(engine, original.id, mode=ReplayMode.REMAP)  # type: ignore[arg-type]

    wait_for(
        lambda: len(records(engine, invoice_id, Outcome.SUCCEEDED)) >= 5 and settled(engine),
        timeout=30,
        what="the redeliveries and replays",
    )
    assert len(stack.zuora.invoices()) == 1
    actions = [r.action for r in records(engine, invoice_id, Outcome.SUCCEEDED)]
    assert sorted(actions).count("create") == 1 and set(actions) == {"create", "skip"}
    assert {r.target_id for r in records(engine, invoice_id, Outcome.SUCCEEDED)} == {original.target_id}


def test_concurrent_deliveries_for_an_unsynced_customer_make_one_account_and_one_invoice(
    stack: Stack, engine: Engine
) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Racing Invoices Co"})

    invoice_id = create_invoice(stack, customer_id)
    for _ in range(3):
        redeliver(stack, invoice_id)

    wait_for(
        lambda: len(records(engine, invoice_id, Outcome.SUCCEEDED)) >= 4 and settled(engine),
        timeout=30,
        what="all four deliveries",
    )
    assert len(stack.zuora_accounts(customer_id)) == 1
    assert len(zuora_invoices(stack, invoice_id)) == 1


def test_invoice_already_in_zuora_is_linked_not_posted_again(stack: Stack, engine: Engine) -> None:
    customer_id, account = synced_customer(stack, engine, "Crashed Co")
    invoice_id = stack.netsuite.seed("invoice", invoice_body(customer_id))
    # A runner posted the invoice and died before recording the link.
    status, made = stack.zuora.invoice_store.create(
        {
            "accountId": account["id"],
            "invoiceDate": "2024-05-01",
            "invoiceNumber": f"INV{invoice_id}",
            NETSUITE_ID_FIELD: invoice_id,
            "invoiceItems": [{"amount": 399.5, "serviceStartDate": "2024-05-01", "chargeName": "Consulting"}],
        }
    )
    assert status == 200 and made["success"], made

    redeliver(stack, invoice_id)

    [record] = wait_for(lambda: records(engine, invoice_id, Outcome.SUCCEEDED), timeout=20, what="the sync")
    assert (record.action, record.target_id) == ("link", made["id"])
    assert len(stack.zuora.invoices()) == 1


def test_unmapped_gl_account_fails_naming_the_field_and_the_account(stack: Stack, engine: Engine) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Odd Ledger Ltd"})
    odd = {**PLATFORM, "account": {"id": "77", "refName": "4999 Miscellaneous Income"}}

    invoice_id = create_invoice(stack, customer_id, CONSULTING, odd)

    failed = wait_for(lambda: records(engine, invoice_id, Outcome.FAILED), timeout=20, what="the failure")[0]
    assert failed.error_class == "config"
    assert "invoiceItems[1].accountingCode" in (failed.error_message or "")
    assert "'4999'" in (failed.error_message or "")  # the account number the lookup looked for
    assert failed.source_snapshot["id"] == invoice_id and failed.mapping_version == 0
    assert zuora_invoices(stack, invoice_id) == []

    # Once the account is in the table, a replay with the current mapping posts the invoice.
    save_lookup(
        engine,
        integration_id=stack.integration_id,
        name=GL_TABLE,
        rows={**GL_ROWS, "4999": "4100 Product Sales"},
    )
    replay_one(engine, failed.id, mode=ReplayMode.REMAP)  # type: ignore[arg-type]

    [invoice] = wait_for(lambda: zuora_invoices(stack, invoice_id), timeout=20, what="the replayed invoice")
    assert [i["accountingCode"] for i in invoice["invoiceItems"]] == ["4000 Services", "4100 Product Sales"]


def test_rejected_invoice_releases_its_link_so_a_replay_can_post_it(stack: Stack, engine: Engine) -> None:
    stack.zuora.configure(closed_period_end="2024-05-31")
    customer_id = stack.netsuite.seed("customer", {"companyName": "Late Filer LLC"})

    invoice_id = create_invoice(stack, customer_id)

    failed = wait_for(lambda: records(engine, invoice_id, Outcome.FAILED), timeout=20, what="the rejection")[
        0
    ]
    assert failed.error_class == "remote" and "closed accounting period" in (failed.error_message or "")
    link = links.find(engine, integration_id=stack.integration_id, flow="invoice", source_id=invoice_id)
    assert link is not None and (link.target_id, link.claimed_by) == (None, None)

    # Zuora replays a refused request under its key for 24 h; the released link has a fresh one.
    stack.zuora.configure(closed_period_end=None)
    replay_one(engine, failed.id, mode=ReplayMode.PAYLOAD)  # type: ignore[arg-type]

    [replayed] = wait_for(
        lambda: records(engine, invoice_id, Outcome.SUCCEEDED), timeout=20, what="the replay"
    )
    [invoice] = zuora_invoices(stack, invoice_id)
    assert (replayed.action, replayed.target_id, replayed.replay_of) == ("create", invoice["id"], failed.id)
