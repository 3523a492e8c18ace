"""The link table's create claims and bulk upserts, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from storage import links
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Link
from storage.types import utcnow
from tests.storage.test_queue import make_integration

FLOW = "customer_account"


def claim(
    engine: Engine, integration_id: int, worker: str, source_id: str = "42", **kw: float
) -> links.LinkState:
    return links.claim(
        engine,
        integration_id=integration_id,
        flow=FLOW,
        source_system="netsuite",
        source_id=source_id,
        target_system="zuora",
        worker=worker,
        **kw,
    )


def stored(engine: Engine, source_id: str = "42") -> Link:
    with session_scope(engine) as session:
        return session.exec(select(Link).where(Link.source_id == source_id)).one()


def test_claim_inserts_a_link_held_by_the_worker(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)

    state = claim(engine, integration, "job:1")

    assert state.linked is False and state.link.id is not None
    assert state.link.claimed_by == "job:1" and state.link.target_id is None
    assert len(state.link.idempotency_key) == 32
    row = stored(engine)
    assert (row.id, row.claimed_by, row.idempotency_key) == (
        state.link.id,
        "job:1",
        state.link.idempotency_key,
    )


def test_a_second_worker_backs_off_while_the_claim_is_live(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    claim(engine, integration, "job:1")

    with pytest.raises(links.LinkBusy, match="job:1"):
        claim(engine, integration, "job:2")

    assert stored(engine).claimed_by == "job:1"


def test_the_same_worker_retakes_its_claim_under_the_same_key(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    first = claim(engine, integration, "job:1")

    again = claim(engine, integration, "job:1")

    assert again.linked is False and again.link.id == first.link.id
    assert again.link.idempotency_key == first.link.idempotency_key


def test_an_expired_claim_is_taken_over_under_the_same_key(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    first = claim(engine, integration, "job:1", lease=0.0)

    taken = claim(engine, integration, "job:2")

    assert taken.linked is False and taken.link.claimed_by == "job:2"
    assert taken.link.idempotency_key == first.link.idempotency_key
    assert taken.link.claimed_until is not None and taken.link.claimed_until > utcnow() + timedelta(
        seconds=60
    )


def test_a_completed_link_is_linked_for_everyone(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    state = claim(engine, integration, "job:1")

    links.complete(engine, state.link, target_id="Z-1", payload_hash="h1")

    later = claim(engine, integration, "job:2")
    assert later.linked is True and later.link.target_id == "Z-1" and later.link.payload_hash == "h1"
    row = stored(engine)
    assert (row.claimed_by, row.claimed_until) == (None, None)


def test_release_frees_the_claim_and_renews_the_key_only_after_a_rejection(
    engine: Engine, vault: Vault
) -> None:
    integration = make_integration(engine, vault)
    state = claim(engine, integration, "job:1")
    key = state.link.idempotency_key

    links.release(engine, state.link, worker="job:1", rejected=False)
    assert (stored(engine).claimed_by, stored(engine).idempotency_key) == (None, key)

    state = claim(engine, integration, "job:2")  # free again: no wait for the old claim to expire
    links.release(engine, state.link, worker="job:2", rejected=True)
    assert stored(engine).claimed_by is None and stored(engine).idempotency_key != key


def test_release_by_another_worker_changes_nothing(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    state = claim(engine, integration, "job:1")

    links.release(engine, state.link, worker="job:2", rejected=True)

    row = stored(engine)
    assert (row.claimed_by, row.idempotency_key) == ("job:1", state.link.idempotency_key)


def test_touch_remembers_the_payload_hash(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    state = claim(engine, integration, "job:1")
    links.complete(engine, state.link, target_id="Z-1", payload_hash="h1")

    links.touch(engine, state.link, payload_hash="h2")

    assert (stored(engine).target_id, stored(engine).payload_hash) == ("Z-1", "h2")


def test_record_targets_inserts_new_links_and_updates_existing_ones(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    held = claim(engine, integration, "job:1", source_id="1")

    links.record_targets(
        engine,
        integration_id=integration,
        flow=FLOW,
        source_system="netsuite",
        target_system="zuora",
        targets={"1": ("Z-1", "h1"), "2": ("Z-2", None)},
    )

    assert links.targets_of(engine, integration_id=integration, flow=FLOW, source_ids=["1", "2", "3"]) == {
        "1": "Z-1",
        "2": "Z-2",
    }
    one, two = stored(engine, "1"), stored(engine, "2")
    assert one.id == held.link.id and one.idempotency_key == held.link.idempotency_key
    assert one.payload_hash == "h1" and one.claimed_by == "job:1"  # its claim is left as it was
    assert two.source_system == "netsuite" and two.target_system == "zuora" and len(two.idempotency_key) == 32


def test_concurrent_claims_of_one_record_leave_exactly_one_holder(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    outcomes: dict[str, str] = {}

    def worker(name: str) -> None:
        try:
            claim(engine, integration, name)
            outcomes[name] = "held"
        except links.LinkBusy:
            outcomes[name] = "busy"

    threads = [threading.Thread(target=worker, args=(f"job:{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    holders = [name for name, outcome in outcomes.items() if outcome == "held"]
    assert len(outcomes) == 6 and len(holders) == 1
    assert stored(engine).claimed_by == holders[0]


def test_claim_many_answers_each_record_as_claim_would(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    linked = claim(engine, integration, "job:0", source_id="linked")
    links.complete(engine, linked.link, target_id="Z-0", payload_hash=None)
    claim(engine, integration, "job:other", source_id="busy")
    expired = claim(engine, integration, "job:gone", source_id="expired", lease=0.0)
    mine = claim(engine, integration, "job:3", source_id="mine")

    answers = links.claim_many(
        engine,
        integration_id=integration,
        flow=FLOW,
        source_system="netsuite",
        target_system="zuora",
        claims={"new": "job:1", "linked": "job:2", "busy": "job:2", "expired": "job:2", "mine": "job:3"},
    )

    new, done, busy, taken, again = (answers[k] for k in ("new", "linked", "busy", "expired", "mine"))
    assert isinstance(new, links.LinkState) and not new.linked and new.link.claimed_by == "job:1"
    assert isinstance(done, links.LinkState) and done.linked and done.link.target_id == "Z-0"
    assert isinstance(busy, links.LinkBusy) and "job:other" in str(busy)
    assert isinstance(taken, links.LinkState) and not taken.linked and taken.link.claimed_by == "job:2"
    assert taken.link.idempotency_key == expired.link.idempotency_key
    assert isinstance(again, links.LinkState) and again.link.idempotency_key == mine.link.idempotency_key
    assert (stored(engine, "busy").claimed_by, stored(engine, "new").claimed_by) == ("job:other", "job:1")


def test_store_many_completes_and_touches_links_in_one_go(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    created = claim(engine, integration, "job:1", source_id="1").link
    existing = claim(engine, integration, "job:2", source_id="2").link
    links.complete(engine, existing, target_id="Z-2", payload_hash="old")

    links.store_many(
        engine,
        [
            links.LinkWrite(created, payload_hash="h1", target_id="Z-1"),
            links.LinkWrite(existing, payload_hash="h2"),
        ],
    )

    one, two = stored(engine, "1"), stored(engine, "2")
    assert (one.target_id, one.payload_hash, one.claimed_by, one.claimed_until) == ("Z-1", "h1", None, None)
    assert (two.target_id, two.payload_hash) == ("Z-2", "h2")


def test_store_many_refuses_to_complete_a_vanished_link(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)
    kept = claim(engine, integration, "job:1", source_id="1").link
    gone = claim(engine, integration, "job:2", source_id="2").link
    with session_scope(engine) as session:
        row = session.get(Link, gone.id)
        session.delete(row)

    with pytest.raises(LookupError, match=str(gone.id)):
        links.store_many(
            engine, [links.LinkWrite(kept, "h", target_id="Z-1"), links.LinkWrite(gone, "h", target_id="Z-2")]
        )

    assert stored(engine, "1").target_id is None  # nothing stored
