"""Editing a mapping changes the next sync, and never a past audit record."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from runner.flows.customer_account import DEFAULT_MAPPING
from storage import audit, crud, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def synced(engine: Engine, customer_id: str) -> list[audit.AuditRecord]:
    filters = audit.AuditFilter(source_id=customer_id, flow="customer_account", outcome=Outcome.SUCCEEDED)
    return sorted(audit.list_records(engine, filters=filters), key=lambda r: r.id or 0)


def test_an_edited_mapping_drives_the_next_sync_and_leaves_past_audit_records_alone(
    stack: Stack, engine: Engine
) -> None:
    customer_id = stack.create_customer({"companyName": "Edited Mapping Ltd"})
    [first] = wait_for(lambda: synced(engine, customer_id), timeout=20, what="the first sync")
    spec = copy.deepcopy(DEFAULT_MAPPING)
    for rule in spec["fields"]:
        if rule["target"] == "name":
            rule["transform"] = ["trim", "upper"]
    saved = crud.save_mapping(
        engine, integration_id=stack.integration_id, flow="customer_account", spec=spec, created_by="test"
    )

    with session_scope(engine) as session:
        queue.enqueue(
            session, integration_id=stack.integration_id, flow="customer_account", payload={"id": customer_id}
        )
    records = wait_for(lambda: synced(engine, customer_id)[1:], timeout=20, what="the second sync")

    second = records[0]
    assert first.mapping_version == 0 and first.payload is not None
    assert first.payload["name"] == "Edited Mapping Ltd"  # the past record is as it was
    assert second.mapping_version == saved.version == 1
    assert second.payload is not None and second.payload["name"] == "EDITED MAPPING LTD"
    [account] = stack.zuora_accounts(customer_id)
    assert account["name"] == "EDITED MAPPING LTD"
