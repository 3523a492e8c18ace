"""Error triage over real HTTP: a record Zuora rejects for a field value is corrected in its payload and
replayed, and a whole failure group is replayed once its mapping is fixed; both through the runner's
normal write path, so nothing is posted twice and the groups resolve themselves once synced."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from runner.replay import ReplayMode, replay_one
from runner.scheduled import ScheduledWork
from runner.services import Services
from runner.triage import EditRefused, GroupFilter, edit_and_replay, list_groups, replay_group
from runner.worker import WorkerPool
from storage.crypto import Vault
from storage.models import Outcome
from storage.settings import Settings
from storage.triage import GroupStatus, Resolution, edit_for_job, get_group
from tests.e2e.stack import Stack, running_stack
from tests.e2e.test_replay import fail_on_currency, fix_currency_mapping, records
from tests.support.live import wait_for

SYNC_DEADLINE = 20.0  # seconds for the runner to run a job


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def test_an_edited_payload_fixes_a_rejected_record_and_posts_it_once(stack: Stack, engine: Engine) -> None:
    customer_id = fail_on_currency(stack, engine, "Edited Currency Ltd")
    [failed] = records(engine, customer_id, Outcome.FAILED)
    [group] = list_groups(engine, GroupFilter(integration_id=stack.integration_id)).groups
    assert group.source_ids == [customer_id] and group.error_class == "remote"
    assert "Currency <value> is invalid" in group.pattern
    assert not stack.zuora_accounts(customer_id)

    edited = {**failed.payload, "currency": "USD"}
    result = edit_and_replay(engine, failed.id, edited, by="dana")

    [replayed] = wait_for(
        lambda: records(engine, customer_id, Outcome.SUCCEEDED),
        timeout=SYNC_DEADLINE,
        what="the edited replay",
    )
    assert replayed.job_id == result.job_id and replayed.replay_of == failed.id
    assert replayed.payload == edited and replayed.action == "create"
    [account] = stack.zuora_accounts(customer_id)
    assert account["currency"] == "USD" and account["name"] == "Edited Currency Ltd"
    edit = edit_for_job(engine, result.job_id)
    assert edit is not None and edit.edited_by == "dana"
    assert edit.diff == [{"field": "currency", "before": "XXX", "after": "USD"}]

    # The group resolved itself: its only record synced.
    assert list_groups(engine, GroupFilter(integration_id=stack.integration_id)).groups == []
    stored = get_group(engine, group.id)
    assert stored is not None and (stored.status, stored.resolution) == (
        GroupStatus.RESOLVED,
        Resolution.AUTO_SYNCED,
    )

    # Editing the old failure again is refused (a newer record moved past it); replaying the success
    # updates the account it made instead of creating a second one.
    with pytest.raises(EditRefused, match="is newer"):
        edit_and_replay(engine, failed.id, {**edited, "name": "Again"}, by="dana")
    replay_one(engine, replayed.id, mode=ReplayMode.PAYLOAD)
    wait_for(
        lambda: len(records(engine, customer_id, Outcome.SUCCEEDED)) == 2,
        timeout=SYNC_DEADLINE,
        what="replay",
    )
    assert records(engine, customer_id, Outcome.SUCCEEDED)[0].action == "update"
    assert len(stack.zuora_accounts(customer_id)) == 1


def test_a_failure_group_replays_each_record_once_after_the_mapping_is_fixed(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    failing = [fail_on_currency(stack, engine, f"Group {n}") for n in range(3)]
    [group] = list_groups(engine, GroupFilter(integration_id=stack.integration_id)).groups
    assert sorted(group.source_ids) == sorted(failing)
    fix_currency_mapping(engine, stack.integration_id)

    result = replay_group(engine, group.id, by="dana", mode=ReplayMode.REMAP)

    assert len(result.job_ids) == 3 and result.refused == 0
    for customer_id in failing:
        wait_for(lambda c=customer_id: stack.zuora_accounts(c), timeout=SYNC_DEADLINE, what=f"{customer_id}")
    wait_for(
        lambda: all(records(engine, c, Outcome.SUCCEEDED) for c in failing),
        timeout=SYNC_DEADLINE,
        what="audit",
    )
    assert all(len(stack.zuora_accounts(c)) == 1 for c in failing)

    # The runner's scheduled work resolves the group, before anyone opens the page.
    asyncio.run(resolve_on_schedule(engine, vault, settings))
    stored = get_group(engine, group.id)
    assert (
        stored is not None
        and stored.resolution == Resolution.AUTO_SYNCED
        and stored.updated_by == "ml-connector"
    )
    assert list_groups(engine, GroupFilter(integration_id=stack.integration_id)).groups == []


async def resolve_on_schedule(engine: Engine, vault: Vault, settings: Settings) -> None:
    """One run of the runner's scheduled triage sweep."""
    services = Services(engine=engine, vault=vault, settings=settings)
    work = ScheduledWork(services, WorkerPool(services, concurrency=1, lease=30, idle_wait=1, name="triage"))
    try:
        await work.resolve_synced_failures()
    finally:
        await services.aclose()
