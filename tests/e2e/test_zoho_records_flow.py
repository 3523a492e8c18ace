"""NetSuite customers, vendors and contacts reach Zoho CRM in upsert batches, over real HTTP.

Every test runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from storage import audit, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobStatus, Link, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings, zoho_webhook=True) as running:
        yield running


def zoho_by_netsuite_id(stack: Stack, module: str) -> dict[str, dict[str, Any]]:
    return {str(r.get("NetSuite_Id")): r for r in stack.zoho.records(module) if r.get("NetSuite_Id")}


def upsert_calls(stack: Stack, module: str) -> int:
    return sum(
        1 for r in stack.zoho.requests if r["method"] == "POST" and r["path"].endswith(f"/{module}/upsert")
    )


def settled(engine: Engine, flow: str) -> int:
    with Session(engine) as session:
        query = (
            select(func.count())
            .select_from(Job)
            .where(col(Job.flow) == flow, col(Job.status).in_([JobStatus.SUCCEEDED, JobStatus.DEAD]))
        )
        return int(session.exec(query).one())


def enqueue(engine: Engine, integration_id: int, flow: str, ids: list[str]) -> None:
    with session_scope(engine) as session:
        for record_id in ids:
            queue.enqueue(session, integration_id=integration_id, flow=flow, payload={"id": record_id})


ADDRESS = {"items": [{"defaultBilling": True, "addressBookAddress": {
    "addr1": "1 Main St", "city": "Austin", "state": "TX", "zip": "73301", "country": "US",
}}]}  # fmt: skip


def test_customer_vendor_and_contact_created_in_netsuite_reach_zoho_linked(
    stack: Stack, engine: Engine
) -> None:
    customer = stack.create_record(
        "customer",
        {"companyName": "Acme Ltd", "entityId": "CUST-1", "phone": "555-0100", "addressBook": ADDRESS},
    )
    vendor = stack.create_record("vendor", {"companyName": "Parts Co", "email": "ap@parts.test"})
    accounts = wait_for(lambda: zoho_by_netsuite_id(stack, "Accounts").get(customer), what="the Zoho account")
    contact = stack.create_record(
        "contact",
        {"firstName": "Ada", "lastName": "Lovelace", "email": "ADA@acme.test", "company": {"id": customer}},
    )

    zoho_contact = wait_for(
        lambda: zoho_by_netsuite_id(stack, "Contacts").get(contact), what="the Zoho contact"
    )
    zoho_vendor = wait_for(lambda: zoho_by_netsuite_id(stack, "Vendors").get(vendor), what="the Zoho vendor")

    assert accounts["Account_Name"] == "Acme Ltd"
    assert accounts["Account_Number"] == "CUST-1"
    assert accounts["Billing_City"] == "Austin" and accounts["Billing_Code"] == "73301"
    assert accounts["NetSuite_Inactive"] is False
    assert zoho_vendor["Vendor_Name"] == "Parts Co" and zoho_vendor["Email"] == "ap@parts.test"
    assert zoho_contact["Last_Name"] == "Lovelace" and zoho_contact["Email"] == "ada@acme.test"
    assert zoho_contact["Account_Name"]["id"] == accounts["id"]  # linked to the account it belongs to
    # The audit record is written after the links, so once it is there the links are too.
    [record] = wait_for(
        lambda: audit.list_records(engine, filters=audit.AuditFilter(flow="contact_zoho")), what="the audit"
    )
    with Session(engine) as session:
        link_rows = session.exec(select(Link).where(col(Link.target_system) == "zoho")).all()
    assert {(link.flow, link.source_id, link.target_id) for link in link_rows} == {
        ("customer_zoho", customer, accounts["id"]),
        ("vendor_zoho", vendor, zoho_vendor["id"]),
        ("contact_zoho", contact, zoho_contact["id"]),
    }
    assert record.outcome == Outcome.SUCCEEDED and record.action == "create"
    assert record.target_id == zoho_contact["id"] and record.mapping_version == 0
    assert record.payload is not None and record.payload["Last_Name"] == "Lovelace"


def test_a_backlog_goes_out_in_full_batches_with_one_audit_record_per_record(
    stack: Stack, engine: Engine
) -> None:
    ids = [stack.netsuite.seed("customer", {"companyName": f"Batch {n}"}) for n in range(250)]

    enqueue(engine, stack.zoho_integration_id, "customer_zoho", ids)
    wait_for(lambda: settled(engine, "customer_zoho") == 250, timeout=60, what="250 customer jobs")

    assert set(zoho_by_netsuite_id(stack, "Accounts")) == set(ids)
    assert upsert_calls(stack, "Accounts") == 3  # 100 + 100 + 50
    with Session(engine) as session:
        outcomes = session.exec(
            select(AuditRecord.outcome, func.count()).where(col(AuditRecord.flow) == "customer_zoho")
            .group_by(AuditRecord.outcome)
        ).all()  # fmt: skip
    assert dict(outcomes) == {Outcome.SUCCEEDED: 250}


def test_a_record_zoho_rejects_fails_alone_and_names_the_field(stack: Stack, engine: Engine) -> None:
    good = [stack.netsuite.seed("vendor", {"companyName": f"Vendor {n}"}) for n in range(3)]
    bad = stack.netsuite.seed("vendor", {"companyName": "Broken Ltd", "email": "not-an-email"})

    enqueue(engine, stack.zoho_integration_id, "vendor_zoho", [*good, bad])
    wait_for(lambda: settled(engine, "vendor_zoho") == 4, timeout=30, what="the vendor jobs")

    assert set(zoho_by_netsuite_id(stack, "Vendors")) == set(good)
    [failed] = audit.list_records(
        engine, filters=audit.AuditFilter(flow="vendor_zoho", outcome=Outcome.FAILED)
    )
    assert failed.source_id == bad
    assert failed.error_class == "remote"
    assert "INVALID_DATA" in (failed.error_message or "") and "field Email" in (failed.error_message or "")
    assert upsert_calls(stack, "Vendors") == 1


def test_an_inactive_netsuite_record_is_marked_inactive_and_a_resend_updates_in_place(
    stack: Stack, engine: Engine
) -> None:
    customer = stack.netsuite.seed("customer", {"companyName": "Old Co", "isInactive": True})

    enqueue(engine, stack.zoho_integration_id, "customer_zoho", [customer])
    wait_for(lambda: settled(engine, "customer_zoho") == 1, what="the first sync")
    enqueue(engine, stack.zoho_integration_id, "customer_zoho", [customer])
    wait_for(lambda: settled(engine, "customer_zoho") == 2, what="the second sync")

    [account] = [r for r in stack.zoho.records("Accounts") if r.get("NetSuite_Id") == customer]
    assert account["NetSuite_Inactive"] is True
    actions = sorted(
        r.action or "" for r in audit.list_records(engine, filters=audit.AuditFilter(flow="customer_zoho"))
    )
    assert actions == ["create", "update"]


def test_a_contact_whose_company_is_not_in_zoho_yet_waits_for_it(stack: Stack, engine: Engine) -> None:
    customer = stack.netsuite.seed("customer", {"companyName": "Late Co"})
    contact = stack.netsuite.seed(
        "contact", {"firstName": "Bo", "lastName": "Late", "company": {"id": customer}}
    )

    enqueue(engine, stack.zoho_integration_id, "contact_zoho", [contact])  # the customer was never synced

    zoho_contact = wait_for(
        lambda: zoho_by_netsuite_id(stack, "Contacts").get(contact),
        timeout=30,
        what="the contact, after its account",
    )
    account = zoho_by_netsuite_id(stack, "Accounts")[customer]
    assert zoho_contact["Account_Name"]["id"] == account["id"]
    waits = audit.list_records(
        engine, filters=audit.AuditFilter(flow="contact_zoho", outcome=Outcome.RETRYING)
    )
    assert waits and "not in Zoho yet" in (waits[0].error_message or "")
