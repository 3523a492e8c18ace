"""The walking skeleton end to end over real HTTP: NetSuite emulator → runner → Zuora emulator → audit.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from storage import audit
from storage.crypto import Vault
from storage.models import AuditRecord, InboundEvent, Job, JobStatus, Link, Outcome
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def count(engine: Engine, model: type, *where: object) -> int:
    with Session(engine) as session:
        return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


def test_customer_created_in_netsuite_becomes_zuora_account(stack: Stack, engine: Engine) -> None:
    customer_id = stack.create_customer(
        {
            "companyName": "Acme Ltd",
            "email": "ap@acme.test",
            "phone": "555-0100",
            "currency": {"id": "1", "refName": "EUR"},
        }
    )

    accounts = wait_for(lambda: stack.zuora_accounts(customer_id), timeout=20, what="the Zuora account")

    assert len(accounts) == 1
    account = accounts[0]
    assert account["name"] == "Acme Ltd"
    assert account["currency"] == "EUR"
    assert account["billToContact"]["workEmail"] == "ap@acme.test"
    records = wait_for(
        lambda: audit.list_records(
            engine, filters=audit.AuditFilter(source_id=customer_id, flow="customer_account")
        ),
        what="the audit record",
    )
    record, attempts = audit.get_record(engine, records[0].id)  # type: ignore[arg-type, misc]
    assert record.outcome == Outcome.SUCCEEDED
    assert record.action == "create"
    assert record.target_id == account["id"]
    assert record.source_snapshot["companyName"] == "Acme Ltd"
    assert record.payload["crmId"] == customer_id
    assert record.mapping_version == 0  # the built-in default mapping
    methods = [(a.system, a.method, a.url.rsplit("/", 1)[-1]) for a in attempts]
    assert ("netsuite", "GET", customer_id) in methods
    assert ("zuora", "POST", "accounts") in methods
    assert all(a.status is not None and a.duration_ms >= 0 for a in attempts)


def test_same_webhook_delivered_twice_yields_one_account(stack: Stack, engine: Engine) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Twice Inc"})
    body = {"recordType": "customer", "id": customer_id, "eventType": "create"}
    headers = {"X-Webhook-Secret": stack.webhook_secret}

    for _ in range(2):
        response = httpx2.post(stack.webhook_url, json=body, headers=headers)
        assert response.status_code == 202, response.text

    wait_for(
        lambda: count(engine, Job, col(Job.status) == JobStatus.SUCCEEDED) == 2,
        timeout=20,
        what="both jobs to finish",
    )
    assert len(stack.zuora_accounts(customer_id)) == 1
    succeeded = audit.AuditFilter(source_id=customer_id, outcome=Outcome.SUCCEEDED)
    # The two jobs may overlap; the second then waits for the first's create (audited as `retrying`).
    actions = sorted(r.action or "" for r in audit.list_records(engine, filters=succeeded))
    assert actions == ["create", "update"]
    assert count(engine, Link, col(Link.source_id) == customer_id) == 1


def test_concurrent_deliveries_of_one_customer_yield_one_account(stack: Stack, engine: Engine) -> None:
    customer_id = stack.netsuite.seed("customer", {"companyName": "Racing Co"})
    body = {"recordType": "customer", "id": customer_id, "eventType": "edit"}
    headers = {"X-Webhook-Secret": stack.webhook_secret}

    for _ in range(5):
        assert httpx2.post(stack.webhook_url, json=body, headers=headers).status_code == 202

    wait_for(
        lambda: count(engine, Job, col(Job.status) == JobStatus.SUCCEEDED) == 5,
        timeout=30,
        what="all five jobs",
    )
    assert len(stack.zuora_accounts(customer_id)) == 1


def test_wrong_secret_is_refused_and_nothing_runnable_stored(stack: Stack, engine: Engine) -> None:
    body = {"recordType": "customer", "id": "1000", "eventType": "create"}

    response = httpx2.post(stack.webhook_url, json=body, headers={"X-Webhook-Secret": "not-the-secret"})

    assert response.status_code == 401
    assert response.json()["error"] == "bad_secret"
    assert "secret" in response.json()["message"]
    assert count(engine, InboundEvent) == 0
    assert count(engine, Job) == 0


def test_customer_missing_in_netsuite_is_audited_as_rejected(stack: Stack, engine: Engine) -> None:
    body = {"recordType": "customer", "id": "999999", "eventType": "edit"}

    response = httpx2.post(stack.webhook_url, json=body, headers={"X-Webhook-Secret": stack.webhook_secret})

    assert response.status_code == 202
    records = wait_for(
        lambda: audit.list_records(engine, filters=audit.AuditFilter(source_id="999999")),
        what="the audit record",
    )
    assert records[0].outcome == Outcome.FAILED
    assert records[0].error_class == "remote"
    assert "999999" in (records[0].error_message or "") or "NONEXISTENT" in (records[0].error_message or "")
    # The audit record is written before the job settles, so wait for the job too.
    wait_for(lambda: count(engine, Job, col(Job.status) == JobStatus.DEAD) == 1, what="the job to be dead")
    assert stack.zuora.accounts() == []


def test_audit_records_are_newest_first(stack: Stack, engine: Engine) -> None:
    first = stack.create_customer({"companyName": "First"})
    wait_for(lambda: stack.zuora_accounts(first), what="first account")
    second = stack.create_customer({"companyName": "Second"})
    wait_for(lambda: stack.zuora_accounts(second), what="second account")
    wait_for(lambda: count(engine, AuditRecord) >= 2, what="two audit records")

    listed = audit.list_records(engine)

    assert [r.source_id for r in listed[:2]] == [second, first]


def stored_bytes(engine: Engine, database_url: str) -> bytes:
    """Everything the database holds: the SQLite files byte for byte, or every PostgreSQL row as text."""
    if database_url.startswith("sqlite"):
        path = database_url.removeprefix("sqlite:///")
        return b"".join(Path(p).read_bytes() for p in (path, path + "-wal") if Path(p).exists())
    with engine.connect() as connection:
        tables = sa.inspect(engine).get_table_names()
        rows = [
            str(row).encode()
            for table in tables
            for row in connection.execute(sa.text(f'SELECT * FROM "{table}"'))
        ]
    return b"\n".join(rows)


def test_database_holds_no_plaintext_secret_after_a_sync(
    stack: Stack, engine: Engine, database_url: str
) -> None:
    customer_id = stack.create_customer({"companyName": "Secretive Ltd"})
    wait_for(lambda: stack.zuora_accounts(customer_id), what="the Zuora account")
    wait_for(
        lambda: audit.list_records(
            engine, filters=audit.AuditFilter(source_id=customer_id, flow="customer_account")
        ),
        what="audit",
    )
    issued_tokens = [
        t.token for store in (stack.netsuite.tokens, stack.zuora.tokens) for t in store._tokens.values()
    ]
    assert issued_tokens, "the sync should have minted access tokens"
    key_body = "".join(stack.private_key.splitlines()[1:-1])

    raw = stored_bytes(engine, database_url)

    assert b"Secretive Ltd" in raw  # the check can see plaintext data
    secrets = [
        stack.credentials.zuora_client_secret,
        stack.credentials.zoho_refresh_token,
        stack.webhook_secret,
        key_body[:64],
        key_body[-64:],
        *issued_tokens,
    ]
    leaked = [s[:8] + "…" for s in secrets if s.encode() in raw]
    assert leaked == []


def test_metrics_count_jobs_remote_calls_and_token_expiry(stack: Stack, engine: Engine) -> None:
    customer_id = stack.create_customer({"companyName": "Measured Co"})
    wait_for(lambda: count(engine, Job, col(Job.status) == JobStatus.SUCCEEDED) == 1, what="the job")

    text = httpx2.get(f"{stack.runner_url}/metrics").text

    assert 'mlc_job_duration_seconds_count{flow="customer_account",outcome="succeeded"} 1.0' in text
    assert 'mlc_remote_calls_total{status="200",system="zuora"}' in text
    assert 'mlc_remote_calls_total{status="200",system="netsuite"}' in text
    expiry = [line for line in text.splitlines() if line.startswith("mlc_token_seconds_to_expiry{")]
    assert len(expiry) == 2 and all(3000 < float(line.rsplit(" ", 1)[1]) <= 3600 for line in expiry)
    assert customer_id
