"""Zoho change notices written back to NetSuite: the full record fetched by id, only the fields the mapping
marks as flowing back sent, our own writes never echoed back, unlinked records skipped with the reason.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from runner import channels
from runner.flows.zoho_change import MODULES
from runner.services import Services
from storage import audit
from storage import channels as channel_store
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Job, JobStatus, Link, Outcome
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

FORWARD_FLOWS = {"customer": "customer_zoho", "vendor": "vendor_zoho", "contact": "contact_zoho"}


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings, zoho_webhook=True) as running:
        yield running


def open_channel(stack: Stack, engine: Engine, vault: Vault, settings: Settings) -> str:
    """A channel of the NetSuite ↔ Zoho integration on every module, enabled in Zoho by the product's
    own keep-alive (it re-provisions a channel Zoho has never heard of)."""
    channel = channel_store.create_channel(
        engine,
        vault,
        integration_id=stack.zoho_integration_id,
        events=[f"{module}.all" for module in MODULES],
        notify_url=f"{stack.runner_url}/webhooks/zoho/{stack.zoho_integration_key}",
    )
    assert keep_alive(engine, vault, settings) == {channel.channel_id: "re-provisioned"}
    return channel.channel_id


def keep_alive(engine: Engine, vault: Vault, settings: Settings) -> dict[str, str]:
    services = Services(engine=engine, vault=vault, settings=settings)

    async def run() -> dict[str, str]:
        try:
            return await channels.keep_alive(services)
        finally:
            await services.aclose()

    return asyncio.run(run())


def link(engine: Engine, stack: Stack, record_type: str, netsuite_id: str, zoho_id: str) -> None:
    """The link the NetSuite → Zoho flow keeps for a record it wrote a while ago."""
    earlier = utcnow() - timedelta(minutes=10)
    with session_scope(engine, write=True) as session:
        session.add(
            Link(
                integration_id=stack.zoho_integration_id,
                flow=FORWARD_FLOWS[record_type],
                source_system="netsuite",
                source_id=netsuite_id,
                target_system="zoho",
                target_id=zoho_id,
                idempotency_key=uuid.uuid4().hex,
                created_at=earlier,
                updated_at=earlier,
            )
        )


def edit_in_zoho(stack: Stack, module: str, record_id: str, fields: dict[str, Any]) -> None:
    """Change a record as a person in the CRM does (the emulator tells the watching channels)."""
    response = httpx2.patch(
        f"{stack.credentials.zoho_url}/_emulator/records/{module}/{record_id}", json=fields
    )
    assert response.status_code == 200, response.text


def netsuite_record(stack: Stack, record_type: str, record_id: str) -> dict[str, Any]:
    return next(r for r in stack.netsuite.records(record_type) if r["id"] == record_id)


def change_audits(engine: Engine, source_id: str) -> list[AuditRecord]:
    """The zoho_change audit records of one Zoho record, oldest first."""
    filters = AuditFilter(flow="zoho_change", source_id=source_id)
    return list(reversed(audit.list_records(engine, filters=filters)))


def succeeded(engine: Engine, source_id: str) -> list[AuditRecord]:
    return [r for r in change_audits(engine, source_id) if r.outcome == Outcome.SUCCEEDED]


def settled(engine: Engine, stack: Stack) -> bool:
    """No notification or webhook on its way and no job waiting or running."""
    if stack.zoho.pending_deliveries or stack.netsuite.pending_deliveries:
        return False
    with session_scope(engine) as session:
        busy = session.exec(
            select(Job.id).where(col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]))
        ).first()
    return busy is None


def netsuite_patches(stack: Stack) -> list[dict[str, Any]]:
    return [r for r in stack.netsuite.requests if r["method"] == "PATCH"]


@pytest.mark.parametrize(
    ("module", "record_type", "netsuite", "zoho", "edit", "linked_by", "patched"),
    [
        pytest.param(
            "Accounts",
            "customer",
            {"companyName": "Acme Tools", "phone": "555-0100", "url": "acme.example"},
            {"Account_Name": "Acme Tools", "Phone": "555-0100", "Website": "acme.example"},
            {"Phone": "555-0199", "Website": "acme-tools.example", "Account_Name": "Acme Renamed"},
            "link",
            {"phone": "555-0199", "url": "acme-tools.example"},
            id="account-by-link",
        ),
        pytest.param(
            "Contacts",
            "contact",
            {"firstName": "Ada", "lastName": "Byron", "title": "Engineer", "phone": "555-0200"},
            {"First_Name": "Ada", "Last_Name": "Byron", "Title": "Engineer", "Phone": "555-0200"},
            {"Title": "CTO", "Last_Name": "Lovelace", "Department": "R&D"},
            "NetSuite_Id",
            {"title": "CTO"},
            id="contact-by-netsuite-id",
        ),
    ],
)
def test_a_zoho_edit_writes_back_only_the_fields_that_flow_back(
    stack: Stack,
    engine: Engine,
    vault: Vault,
    settings: Settings,
    module: str,
    record_type: str,
    netsuite: dict[str, Any],
    zoho: dict[str, Any],
    edit: dict[str, Any],
    linked_by: str,
    patched: dict[str, str],
) -> None:
    stack.netsuite.clear_webhooks()  # the NetSuite side stays still: no flow reacts to our PATCH
    open_channel(stack, engine, vault, settings)
    netsuite_id = stack.netsuite.seed(record_type, netsuite)
    if linked_by == "link":
        zoho_id = stack.zoho.seed(module, zoho)
        link(engine, stack, record_type, netsuite_id, zoho_id)
    else:
        zoho_id = stack.zoho.seed(module, {**zoho, "NetSuite_Id": netsuite_id})
    before = netsuite_record(stack, record_type, netsuite_id)

    edit_in_zoho(stack, module, zoho_id, edit)

    source_id = f"{module}/{zoho_id}"
    done = wait_for(lambda: succeeded(engine, source_id), timeout=20, what="the change notice's write-back")
    after = netsuite_record(stack, record_type, netsuite_id)
    assert [(r.action, r.target_id) for r in done] == [("update", netsuite_id)]
    assert done[0].response == {
        "record_type": record_type,
        "patched": patched,
        "found_by": linked_by,
        "echo": [],
    }
    assert done[0].source_snapshot is not None and done[0].source_snapshot[module]["id"] == zoho_id
    assert {k: after[k] for k in patched} == patched
    untouched = {k: v for k, v in before.items() if k not in patched and k != "lastModifiedDate"}
    assert {k: after[k] for k in untouched} == untouched  # names and the rest stay NetSuite's
    assert len(netsuite_patches(stack)) == 1


@pytest.mark.parametrize(
    ("linked", "edit", "reason"),
    [
        pytest.param(False, {"Phone": "555-0999"}, "not linked: ", id="unlinked"),
        pytest.param(True, {"Description": "met at the expo"}, "unchanged: ", id="nothing-flowing-changed"),
    ],
)
def test_a_zoho_change_that_writes_nothing_is_skipped_with_the_reason(
    stack: Stack,
    engine: Engine,
    vault: Vault,
    settings: Settings,
    linked: bool,
    edit: dict[str, Any],
    reason: str,
) -> None:
    stack.netsuite.clear_webhooks()
    open_channel(stack, engine, vault, settings)
    netsuite_id = stack.netsuite.seed("customer", {"companyName": "Quiet Co", "phone": "555-0400"})
    zoho_id = stack.zoho.seed("Accounts", {"Account_Name": "Quiet Co", "Phone": "555-0400"})
    if linked:
        link(engine, stack, "customer", netsuite_id, zoho_id)

    edit_in_zoho(stack, "Accounts", zoho_id, edit)

    done = wait_for(lambda: succeeded(engine, f"Accounts/{zoho_id}"), timeout=20, what="the notice's audit")
    assert [r.action for r in done] == ["skip"]
    assert str((done[0].response or {}).get("skipped", "")).startswith(reason), done[0].response
    assert netsuite_patches(stack) == []
    assert netsuite_record(stack, "customer", netsuite_id)["phone"] == "555-0400"


def test_our_own_writes_to_zoho_are_not_echoed_back_and_a_persons_edit_is(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    """The whole loop: a NetSuite customer reaches Zoho (its notice is our echo), a person edits the
    account's phone in Zoho (written back to NetSuite), NetSuite's change reaches Zoho again (an echo)."""
    open_channel(stack, engine, vault, settings)
    netsuite_id = stack.create_customer(
        {"companyName": "Echo Co", "phone": "555-0300", "url": "echo.example"}
    )

    def zoho_account() -> dict[str, Any] | None:
        return next((a for a in stack.zoho.records("Accounts") if a.get("NetSuite_Id") == netsuite_id), None)

    zoho_id = str(wait_for(zoho_account, timeout=20, what="the customer in Zoho")["id"])
    source_id = f"Accounts/{zoho_id}"
    wait_for(lambda: succeeded(engine, source_id), timeout=20, what="the notice of our own write")

    edit_in_zoho(stack, "Accounts", zoho_id, {"Phone": "555-0333"})

    wait_for(lambda: netsuite_record(stack, "customer", netsuite_id)["phone"] == "555-0333", timeout=20,
             what="the person's edit in NetSuite")  # fmt: skip
    wait_for(lambda: len(succeeded(engine, source_id)) >= 3 and settled(engine, stack), timeout=20,
             what="NetSuite's change to reach Zoho and its notice to be handled")  # fmt: skip
    records = succeeded(engine, source_id)
    assert [r.action for r in records] == ["skip", "update", "skip"]
    assert records[0].response is not None and str(records[0].response["skipped"]).startswith("echo: ")
    assert records[1].response is not None and records[1].response["patched"] == {"phone": "555-0333"}
    assert records[2].response is not None and str(records[2].response["skipped"]).startswith("echo: ")
    assert len(netsuite_patches(stack)) == 1  # the person's edit, once; never our own values
    assert netsuite_record(stack, "customer", netsuite_id)["url"] == "echo.example"


def test_the_notice_of_our_own_create_waits_while_the_create_is_in_flight(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    # Zoho tells the channel about a record the moment our upsert creates it, before our forward flow has
    # stored the new record's id in its link: the link, still claimed and without a target, is found by
    # the record's NetSuite_Id, and the notice waits rather than judging our own values a person's.
    open_channel(stack, engine, vault, settings)
    netsuite_id = stack.netsuite.seed("customer", {"companyName": "In Flight Co", "phone": "555-0400"})
    with session_scope(engine, write=True) as session:
        session.add(
            Link(
                integration_id=stack.zoho_integration_id,
                flow=FORWARD_FLOWS["customer"],
                source_system="netsuite",
                source_id=netsuite_id,
                target_system="zoho",
                idempotency_key=uuid.uuid4().hex,
                claimed_by="job:4242",  # the forward flow's create, still waiting for Zoho's answer
                claimed_until=utcnow() + timedelta(minutes=5),
            )
        )
    zoho_id = stack.zoho.seed(
        "Accounts",
        {"Account_Name": "In Flight Co", "Phone": "555-0400", "NetSuite_Id": netsuite_id},
        notify=True,
    )

    waiting = wait_for(lambda: change_audits(engine, f"Accounts/{zoho_id}"), what="the notice's first try")

    assert waiting[0].outcome == Outcome.RETRYING
    assert "not audited yet" in (waiting[0].error_message or "")
    assert not succeeded(engine, f"Accounts/{zoho_id}")  # never judged "unchanged" while ours is in flight
