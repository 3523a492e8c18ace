"""Replay over real HTTP: re-send the stored payload or re-map the stored snapshot, never re-fetching the
source unless asked, through the same guards as any sync (design.md invariants 2 and 4)."""

from __future__ import annotations

import copy
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from runner.flows.customer_account import DEFAULT_MAPPING
from runner.replay import ReplayMode, ReplayRefused, plan, replay_many, replay_one
from storage import audit, crud
from storage.audit import AuditFilter
from storage.crypto import Vault
from storage.models import Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def records(engine: Engine, source_id: str, outcome: str | None = None) -> list:
    return list(audit.list_records(engine, filters=AuditFilter(source_id=source_id, outcome=outcome)))


def fetches_of(stack: Stack, customer_id: str) -> int:
    return sum(1 for r in stack.netsuite.requests if r["path"].endswith(f"/customer/{customer_id}"))


def fail_on_currency(stack: Stack, engine: Engine, name: str) -> str:
    """A customer whose currency Zuora rejects: it fails as a remote error with its payload stored."""
    customer_id = stack.create_customer({"companyName": name, "currency": {"id": "9", "refName": "XXX"}})
    wait_for(lambda: records(engine, customer_id, Outcome.FAILED), timeout=20, what=f"{name} to fail")
    return customer_id


def fix_currency_mapping(engine: Engine, integration_id: int) -> None:
    spec = copy.deepcopy(DEFAULT_MAPPING)
    for rule in spec["fields"]:
        if rule["target"] == "currency":
            rule.pop("source")
            rule["value"] = "USD"
    crud.save_mapping(
        engine, integration_id=integration_id, flow="customer_account", spec=spec, created_by="test"
    )


def test_replay_with_current_mapping_fixes_a_rejected_record_without_refetching(
    stack: Stack, engine: Engine
) -> None:
    customer_id = fail_on_currency(stack, engine, "Wrong Currency Ltd")
    failed = records(engine, customer_id, Outcome.FAILED)[0]
    assert failed.error_class == "remote" and failed.payload["currency"] == "XXX"
    fetches = fetches_of(stack, customer_id)
    fix_currency_mapping(engine, stack.integration_id)

    replay_one(engine, failed.id, mode=ReplayMode.REMAP)

    replayed = wait_for(
        lambda: records(engine, customer_id, Outcome.SUCCEEDED), timeout=20, what="the replay"
    )[0]
    assert replayed.replay_of == failed.id
    assert replayed.mapping_version == 1 and replayed.payload["currency"] == "USD"
    assert replayed.source_snapshot == failed.source_snapshot
    assert fetches_of(stack, customer_id) == fetches  # the source was not read again
    assert len(stack.zuora_accounts(customer_id)) == 1


def test_replaying_the_sent_payload_of_a_synced_record_updates_not_duplicates(
    stack: Stack, engine: Engine
) -> None:
    customer_id = stack.create_customer({"companyName": "Synced Once"})
    original = wait_for(lambda: records(engine, customer_id, Outcome.SUCCEEDED), timeout=20, what="the sync")[
        0
    ]

    replay_one(engine, original.id, mode=ReplayMode.PAYLOAD)

    wait_for(lambda: len(records(engine, customer_id, Outcome.SUCCEEDED)) == 2, timeout=20, what="the replay")
    newest = records(engine, customer_id, Outcome.SUCCEEDED)[0]
    assert newest.replay_of == original.id and newest.action == "update"
    assert newest.payload == original.payload
    assert len(stack.zuora_accounts(customer_id)) == 1


def test_bulk_replay_counts_first_then_replays_each_source_once(stack: Stack, engine: Engine) -> None:
    failing = [fail_on_currency(stack, engine, f"Bulk {n}") for n in range(3)]
    fix_currency_mapping(engine, stack.integration_id)
    selection = AuditFilter(outcome=Outcome.FAILED, flow="customer_account")

    shown = plan(engine, selection)
    jobs = replay_many(engine, selection, mode=ReplayMode.REMAP)

    assert shown.count == 3 and shown.flows == {"customer_account": 3} and not shown.over_limit
    assert len(jobs) == 3
    for customer_id in failing:
        wait_for(lambda c=customer_id: stack.zuora_accounts(c), timeout=20, what=f"{customer_id} replayed")
        assert len(stack.zuora_accounts(customer_id)) == 1


def test_replay_refuses_what_the_record_cannot_support(stack: Stack, engine: Engine) -> None:
    import httpx2

    body = {"recordType": "customer", "id": "424242", "eventType": "edit"}
    httpx2.post(stack.webhook_url, json=body, headers={"X-Webhook-Secret": stack.webhook_secret})
    missing = wait_for(lambda: records(engine, "424242"), timeout=20, what="the failed fetch")[0]

    with pytest.raises(ReplayRefused, match="no stored payload"):
        replay_one(engine, missing.id, mode=ReplayMode.PAYLOAD)
    with pytest.raises(ReplayRefused, match="no stored source snapshot"):
        replay_one(engine, missing.id, mode=ReplayMode.REMAP)
    with pytest.raises(ReplayRefused, match="no audit record"):
        replay_one(engine, 10**9)
    assert replay_one(engine, missing.id, mode=ReplayMode.REMAP, refetch=True) > 0  # re-fetching is allowed
