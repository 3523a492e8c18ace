"""NetSuite → Zuora reads a batch's customers with one SuiteQL query when the mapping reads only fields
SuiteQL gives as the record API does, and syncs them exactly as a GET each would; a mapping reading more
falls back to the GET; a remap replay of a SuiteQL snapshot fetches the record again when the current
mapping reads a field the snapshot never held."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from runner.flows import suiteql_read
from runner.flows.customer_account import DEFAULT_MAPPING
from runner.replay import ReplayMode, replay_one
from storage import audit, crud, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

FLOW = "customer_account"
CUSTOMERS = 30


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def seed(stack: Stack, count: int) -> list[str]:
    """Customers straight into the emulator (no webhook), EUR, every third a person."""
    return [
        stack.netsuite.seed(
            "customer",
            {
                "companyName": f"Bulk Co {n:03d}",
                "email": f"ap{n}@bulk.test",
                "currency": {"id": "2", "refName": "EUR"},
                "isPerson": n % 3 == 0,
                "creditLimit": 1000 + n,
            },
        )
        for n in range(count)
    ]


def sync_together(stack: Stack, engine: Engine, ids: list[str]) -> list[AuditRecord]:
    """Queue one job per customer in one transaction (the worker takes them as batches) and wait for
    every one's audit record."""
    with session_scope(engine, write=True) as session:
        for customer_id in ids:
            queue.enqueue(
                session, integration_id=stack.integration_id, flow=FLOW, payload={"id": customer_id}
            )

    def done() -> list[AuditRecord] | None:
        records = audit.list_records(engine, filters=audit.AuditFilter(flow=FLOW), limit=len(ids) * 3)
        finished = [r for r in records if r.source_id in ids and r.outcome == Outcome.SUCCEEDED]
        return finished if len({r.source_id for r in finished}) == len(ids) else None

    return wait_for(done, timeout=60, interval=0.2, what="every customer's audit record")


def customer_calls(stack: Stack) -> tuple[int, int]:
    """(record API GETs of a customer, SuiteQL POSTs) the NetSuite emulator answered."""
    log = stack.netsuite.requests
    gets = sum(1 for r in log if r["method"] == "GET" and "/record/v1/customer/" in r["path"])
    queries = sum(1 for r in log if r["method"] == "POST" and r["path"].endswith("/suiteql"))
    return gets, queries


def test_a_batch_reads_its_customers_in_one_query_and_syncs_them_as_gets_would(
    stack: Stack, engine: Engine
) -> None:
    ids = seed(stack, CUSTOMERS)
    stack.netsuite.requests.clear()

    records = sync_together(stack, engine, ids)

    gets, queries = customer_calls(stack)
    assert queries >= 1 and gets < CUSTOMERS // 2  # most customers came in bulk
    for customer_id in ids:
        [account] = stack.zuora_accounts(customer_id)
        n = ids.index(customer_id)
        assert account["name"] == f"Bulk Co {n:03d}"
        assert account["currency"] == "EUR"  # BUILTIN.DF(currency): the reference's display name
        assert account["billToContact"]["workEmail"] == f"ap{n}@bulk.test"
    bulk = [r for r in records if suiteql_read.SNAPSHOT_KEY in (r.source_snapshot or {})]
    assert len(bulk) >= CUSTOMERS // 2
    record, attempts = audit.get_record(engine, bulk[0].id)  # type: ignore[arg-type, misc]
    assert ("netsuite", "POST") in {(a.system, a.method) for a in attempts}  # the query is in its trail
    assert record.source_snapshot["currency"] == {"refName": "EUR"}


def test_a_mapping_reading_a_field_suiteql_cannot_give_as_is_reads_each_customer(
    stack: Stack, engine: Engine
) -> None:
    spec = copy.deepcopy(DEFAULT_MAPPING)
    spec["fields"].append({"target": "creditLimit__c", "source": "creditLimit", "transform": "number"})
    crud.save_mapping(engine, integration_id=stack.integration_id, flow=FLOW, spec=spec, created_by="test")
    ids = seed(stack, 10)
    stack.netsuite.requests.clear()

    records = sync_together(stack, engine, ids)

    assert customer_calls(stack) == (10, 0)
    assert all(suiteql_read.SNAPSHOT_KEY not in (r.source_snapshot or {}) for r in records)
    assert sorted(r.payload["creditLimit__c"] for r in records if r.payload) == [1000 + n for n in range(10)]


def test_a_remap_replay_of_a_bulk_snapshot_is_refused_when_the_mapping_reads_more_unless_re_read(
    stack: Stack, engine: Engine
) -> None:
    ids = seed(stack, 6)
    records = sync_together(stack, engine, ids)
    bulk = next(r for r in records if suiteql_read.SNAPSHOT_KEY in (r.source_snapshot or {}))
    assert bulk.id is not None

    stack.netsuite.requests.clear()
    same = replay_and_wait(engine, bulk.id)
    assert customer_calls(stack) == (0, 0)  # the snapshot holds every field the mapping reads
    assert same.outcome == Outcome.SUCCEEDED and same.payload == bulk.payload

    spec: dict[str, Any] = copy.deepcopy(DEFAULT_MAPPING)
    spec["fields"].append({"target": "billToContact.fax", "source": "fax", "default": "none"})
    crud.save_mapping(engine, integration_id=stack.integration_id, flow=FLOW, spec=spec, created_by="test")
    refused = replay_and_wait(engine, bulk.id)
    assert customer_calls(stack) == (0, 0)  # never re-read unless asked (design.md invariant 4)
    assert refused.outcome == Outcome.FAILED and refused.error_class == "config"
    assert "fax" in (refused.error_message or "") and "Re-read" in (refused.error_message or "")

    re_read = replay_and_wait(engine, bulk.id, refetch=True)
    assert customer_calls(stack) == (1, 0)  # asked: the whole record is read again
    assert re_read.outcome == Outcome.SUCCEEDED
    assert re_read.source_snapshot is not None and suiteql_read.SNAPSHOT_KEY not in re_read.source_snapshot


def replay_and_wait(engine: Engine, audit_record_id: int, *, refetch: bool = False) -> AuditRecord:
    job_id = replay_one(engine, audit_record_id, mode=ReplayMode.REMAP, refetch=refetch)

    def replayed() -> AuditRecord | None:
        found = audit.list_records(engine, filters=audit.AuditFilter(flow=FLOW), limit=200)
        return next((r for r in found if r.job_id == job_id and r.outcome != Outcome.RETRYING), None)

    return wait_for(replayed, timeout=30, interval=0.1, what="the replay's audit record")
