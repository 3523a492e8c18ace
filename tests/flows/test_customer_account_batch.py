"""NetSuite customers reach Zuora in batches: one Object Query finds a batch's existing accounts, each
record is still claimed, created or linked, and audited on its own.

Every test runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.registry import build_client
from connectors.sandbox import build
from connectors.zuora.client import QUERY_PAGE, ZuoraClient
from storage import audit, links, queue
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Job, JobStatus, Link, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import serve, wait_for

FLOW = "customer_account"


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def settled(engine: Engine) -> int:
    with Session(engine) as session:
        query = (
            select(func.count())
            .select_from(Job)
            .where(col(Job.flow) == FLOW, col(Job.status).in_([JobStatus.SUCCEEDED, JobStatus.DEAD]))
        )
        return int(session.exec(query).one())


def account_body(name: str, crm_id: str) -> dict[str, object]:
    contact = {"firstName": "Accounts", "lastName": name}
    return {"name": name, "crmId": crm_id, "currency": "USD", "billCycleDay": 1, "billToContact": contact}


def test_a_backlog_is_looked_up_in_few_queries_and_each_record_written_and_audited_alone(
    stack: Stack, engine: Engine
) -> None:
    ids = [stack.netsuite.seed("customer", {"companyName": f"Batch {n:02d} Ltd"}) for n in range(60)]
    made_by_hand = ids[:3]  # accounts already in Zuora, missing from our links: linked, not duplicated
    for customer in made_by_hand:
        status, _body = stack.zuora.account_store.create(account_body(f"Hand {customer}", customer))
        assert status == 200
    twice = ids[5]  # delivered twice: created once, then updated through the link
    stack.zuora.requests.clear()
    stack.netsuite.requests.clear()
    with session_scope(engine) as session:
        for customer in [*ids, twice]:
            queue.enqueue(session, integration_id=stack.integration_id, flow=FLOW, payload={"id": customer})

    wait_for(lambda: settled(engine) == len(ids) + 1, timeout=60, what="every job to settle")

    per_crm_id = Counter(str(a.get("crmId")) for a in stack.zuora.accounts())
    assert all(per_crm_id[customer] == 1 for customer in ids)
    queries = [r for r in stack.zuora.requests if r["path"] == "/object-query/accounts"]
    assert 1 <= len(queries) < 10  # one per batch, not one per record
    reads = [r for r in stack.netsuite.requests if r["path"].endswith("/suiteql")]
    assert 1 <= len(reads) < 10  # the customers too: one SuiteQL query per batch
    records = audit.list_records(engine, filters=audit.AuditFilter(flow=FLOW), limit=200)
    # The second delivery may land in another batch while the first creates: it then waits (retrying).
    assert {(r.source_id, r.outcome) for r in records if r.outcome != Outcome.SUCCEEDED} <= {
        (twice, Outcome.RETRYING)
    }
    actions = Counter((r.source_id, r.action) for r in records if r.outcome == Outcome.SUCCEEDED)
    assert all(actions[(customer, "link")] == 1 for customer in made_by_hand)
    assert actions[(twice, "create")] == 1 and actions[(twice, "update")] == 1
    created = [r for r in records if r.action == "create"]
    assert len(created) == len(ids) - len(made_by_hand)
    for record in created[:5]:
        found = audit.get_record(engine, record.id)  # type: ignore[arg-type]
        assert found is not None
        _record, attempts = found
        posts = [a for a in attempts if a.method == "POST" and a.url.endswith("/v1/accounts")]
        assert len(posts) == 1  # its own create only, not its batch mates'
        # Its NetSuite read: the batch's SuiteQL query (the default mapping reads only fields SuiteQL
        # gives as the record API does), or its own GET when it was read alone.
        reads = [a for a in attempts if a.system == "netsuite"]
        assert any(
            a.url.endswith("/suiteql") or a.url.endswith(f"/customer/{record.source_id}") for a in reads
        )
        assert any("object-query" in a.url for a in attempts)  # the batch's lookup is in every trail
    with Session(engine) as session:
        linked = session.exec(select(func.count()).select_from(Link).where(col(Link.target_id).is_not(None)))
        assert linked.one() == len(ids)


def test_zuora_client_finds_many_accounts_by_crm_id_page_by_page() -> None:
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    zuora = sandbox.zuora
    wanted = [f"NS{n}" for n in range(QUERY_PAGE + 20)]  # more than one IN list
    for crm_id in wanted[::2]:
        assert zuora.account_store.create(account_body(f"Co {crm_id}", crm_id))[0] == 200
    zuora.account_store.create(account_body("Other", "NOT-ASKED"))

    async def find() -> dict[str, dict[str, object]]:
        async with httpx2.AsyncClient() as http:
            client = build_client(
                "zuora",
                base_url=url,
                settings={"client_id": sandbox.credentials.zuora_client_id},
                secrets={"client_secret": sandbox.credentials.zuora_client_secret},
                sandbox=True,
                http=http,
            )
            assert isinstance(client, ZuoraClient)
            return await client.find_accounts_by_crm_ids([*wanted, "a,b", "ns0"])

    with serve(zuora.app, sock=sockets["zuora"]) as url:
        found = asyncio.run(find())

    assert set(found) == {crm_id.lower() for crm_id in wanted[::2]}  # case-insensitive, as Zuora filters
    assert all(str(found[c.lower()]["crmid"]) == c for c in wanted[::2])
    in_lists = [r for r in zuora.requests if r["path"] == "/object-query/accounts"]
    assert len(in_lists) == 3  # two IN lists, and "a,b" (a comma cannot go in a list) on its own


def test_claiming_many_links_follows_the_single_claim_rules(stack: Stack, engine: Engine) -> None:
    def claim(claims: dict[str, str]) -> dict[str, links.LinkState | links.LinkBusy]:
        return links.claim_many(
            engine,
            integration_id=stack.integration_id,
            flow=FLOW,
            source_system="netsuite",
            target_system="zuora",
            claims=claims,
        )

    first = claim({"1": "job:1", "2": "job:2", "3": "job:3"})
    assert all(isinstance(s, links.LinkState) and not s.linked for s in first.values())
    done = first["1"]
    assert isinstance(done, links.LinkState)
    links.store_many(engine, [links.LinkWrite(done.link, "hash", "Z-1")])

    again = claim({"1": "job:9", "2": "job:9", "3": "job:3", "4": "job:4"})

    assert isinstance(again["1"], links.LinkState) and again["1"].linked  # linked: update it
    assert isinstance(again["2"], links.LinkBusy)  # another job holds the create claim
    retried = again["3"]  # the same job again (a retry): takes its own claim over, same key
    assert isinstance(retried, links.LinkState) and not retried.linked
    assert isinstance(first["3"], links.LinkState)
    assert retried.link.idempotency_key == first["3"].link.idempotency_key
    assert isinstance(again["4"], links.LinkState) and not again["4"].linked
    single = links.claim(
        engine,
        integration_id=stack.integration_id,
        flow=FLOW,
        source_system="netsuite",
        source_id="1",
        target_system="zuora",
        worker="job:10",
    )
    assert single.linked and single.link.target_id == "Z-1"


def test_each_record_of_a_large_batch_carries_only_its_own_lookup() -> None:
    # 250 unlinked records: three Object Queries (99, 99, 52 crmIds) go out at once; each record's trail
    # gets the one query its crmId was in, and a failed query fails only its own records.
    from runner.flows.customer_account import CustomerToAccount
    from runner.mapping import Mapped
    from runner.services import current_trail

    class Zuora:
        def __init__(self) -> None:
            self.in_flight = 0
            self.most = 0

        async def find_accounts_by_crm_ids(self, crm_ids: list[str]) -> dict[str, dict[str, str]]:
            trail = current_trail.get()
            assert trail is not None
            trail.append(f"query of {crm_ids[0]}..{crm_ids[-1]}")
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            await asyncio.sleep(0.01)
            self.in_flight -= 1
            if "ns-200" in crm_ids:
                raise RuntimeError("Zuora refused the third query")
            return {c.lower(): {"id": f"A-{c}"} for c in crm_ids if c.endswith("7")}

    items = [(str(n), Mapped(payload={"crmId": f"ns-{n}"}, create_only=frozenset())) for n in range(250)]
    trails: list[list[object] | None] = [[] for _ in items]
    zuora = Zuora()

    async def main() -> dict[int, object]:
        shared: list[object] = []
        current_trail.set(shared)
        found = await CustomerToAccount()._look_up(zuora, items, list(range(250)), trails)  # type: ignore[arg-type]
        assert shared == []  # every call went to the trails of its own records
        return found

    found = asyncio.run(main())

    assert QUERY_PAGE == 99 and zuora.most == 3  # the three queries were in flight together
    assert [len(t or []) for t in trails] == [1] * 250
    assert trails[0] == trails[98] and trails[99] == trails[197] and trails[198] == trails[249]
    assert len({str(trails[0]), str(trails[99]), str(trails[198])}) == 3
    assert found[7] is found[0] and found[7]["ns-7"] == {"id": "A-ns-7"}  # type: ignore[index]
    assert all(isinstance(found[i], RuntimeError) for i in range(198, 250))
    assert not any(isinstance(found[i], Exception) for i in range(198))
