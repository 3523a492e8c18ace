"""The runner's cache of integrations for webhook intake (storage.intake.IntegrationCache): it saves the
lookup, never a check. Whatever the app saves after an integration was cached (a rotated or revoked
secret, a tightened allowlist, other flows, a deleted integration) decides the very next delivery."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from connectors.zuora.callouts import sign
from runner.intake import IntakeError, accept_netsuite
from runner.intake_zuora import accept_zuora
from storage import crud, webhook_secrets
from storage.crypto import Vault
from storage.db import session_scope
from storage.intake import IntegrationCache
from storage.models import InboundEvent, Integration, Job
from storage.settings import Settings
from tests.e2e.stack import running_stack

KEY = "cached"
NETSUITE_BODY = b'{"recordType": "customer", "id": "1000", "eventType": "edit"}'
ZUORA_BODY = (
    b'{"event": "Subscription Created", "eventCategory": 1210, "notification": "Subscription Created", '
    b'"tenantId": "19", "accountId": "8ad0", "accountNumber": "A00000001", "subscriptionId": "8ad1", '
    b'"subscriptionNumber": "A-S00000001", "version": 1, "subscriptionStatus": "Active", '
    b'"effectiveDate": "2026-11-01", "amendmentType": null, "orderNumber": null, "orderActionType": null}'
)


@pytest.fixture
def integration_id(engine: Engine, vault: Vault) -> int:
    """An integration under KEY with the NetSuite customer and Zuora flows and known secrets."""
    workspace = crud.create_workspace(engine, name="Cache")
    assert workspace.id is not None
    connections = [
        crud.create_connection(
            engine,
            vault,
            workspace_id=workspace.id,
            system=system,
            name=system,
            base_url="https://example.test",
        ).id
        for system in ("netsuite", "zuora")
    ]
    created = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="NetSuite ↔ Zuora",
        source_connection_id=connections[0],
        target_connection_id=connections[1],
        flows=["customer_account", "subscription_event"],
        key=KEY,
        webhook_secrets={"netsuite_secret": "first", "zuora_hmac_secret": "first-hmac"},
    )
    return created.id


@pytest.fixture
def integrations(engine: Engine, vault: Vault) -> IntegrationCache:
    return IntegrationCache(engine, vault)


def netsuite(engine: Engine, vault: Vault, integrations: IntegrationCache, secret: str) -> int:
    """Deliver one NetSuite event through `integrations`: the HTTP status it would get."""
    try:
        accept_netsuite(
            engine,
            vault,
            key=KEY,
            secret=secret,
            body=NETSUITE_BODY,
            headers={},
            remote_addr="127.0.0.1",
            integrations=integrations,
        )
    except IntakeError as refusal:
        return refusal.status
    return 202


def zuora(
    engine: Engine, vault: Vault, integrations: IntegrationCache, secret: str, notification: str
) -> int:
    try:
        accept_zuora(
            engine,
            vault,
            key=KEY,
            signature=sign(secret, ZUORA_BODY),
            notification_id=notification,
            body=ZUORA_BODY,
            headers={},
            remote_addr="127.0.0.1",
            integrations=integrations,
        )
    except IntakeError as refusal:
        return refusal.status
    return 200


def stored(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        events = session.exec(select(func.count()).select_from(InboundEvent)).one()
        jobs = session.exec(select(func.count()).select_from(Job)).one()
    return int(events), int(jobs)


def update(engine: Engine, integration_id: int, **values: Any) -> None:
    """Change the integration as the app would, in another transaction than the intake's."""
    with session_scope(engine, write=True) as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        for name, value in values.items():
            setattr(integration, name, value)
        session.add(integration)


def test_intake_cache_reads_an_integration_once_while_it_is_unchanged(
    engine: Engine, vault: Vault, integration_id: int, integrations: IntegrationCache
) -> None:
    assert integrations.cached(KEY) is None

    assert netsuite(engine, vault, integrations, "first") == 202
    first = integrations.cached(KEY)
    assert zuora(engine, vault, integrations, "first-hmac", "n1") == 200
    assert netsuite(engine, vault, integrations, "first") == 202

    assert first is not None and first.id == integration_id
    assert integrations.cached(KEY) is first
    assert stored(engine) == (3, 3)


@pytest.mark.parametrize(
    ("grace_seconds", "old_status"),
    [
        (None, 202),  # the default grace: the old secret keeps working while senders switch over
        (0, 401),  # revoked at once (a leaked secret), although the cached copy still held it as current
    ],
)
def test_intake_cache_honours_a_netsuite_secret_rotated_after_it_was_cached(
    engine: Engine,
    vault: Vault,
    integration_id: int,
    integrations: IntegrationCache,
    grace_seconds: float | None,
    old_status: int,
) -> None:
    assert netsuite(engine, vault, integrations, "first") == 202  # cached now
    webhook_secrets.rotate(
        engine,
        vault,
        integration_id=integration_id,
        name="netsuite_secret",
        new_secret="second",
        grace_seconds=grace_seconds,
    )

    assert netsuite(engine, vault, integrations, "second") == 202
    assert netsuite(engine, vault, integrations, "first") == old_status
    assert netsuite(engine, vault, integrations, "neither") == 401
    assert stored(engine) == (2 + (old_status == 202),) * 2


def test_intake_cache_honours_a_revoked_zuora_hmac_secret(
    engine: Engine, vault: Vault, integration_id: int, integrations: IntegrationCache
) -> None:
    assert zuora(engine, vault, integrations, "first-hmac", "n1") == 200
    webhook_secrets.rotate(
        engine,
        vault,
        integration_id=integration_id,
        name="zuora_hmac_secret",
        new_secret="second-hmac",
        grace_seconds=0,
    )

    assert zuora(engine, vault, integrations, "first-hmac", "n2") == 401
    assert zuora(engine, vault, integrations, "second-hmac", "n3") == 200
    assert zuora(engine, vault, integrations, "second-hmac", "n3") == 200  # a retry: a duplicate
    with Session(engine) as session:
        keys = session.exec(select(InboundEvent.delivery_key).order_by(col(InboundEvent.id))).all()
    assert keys == ["n1", "n3"]


def test_intake_cache_applies_a_tightened_ip_allowlist_to_the_next_delivery(
    engine: Engine, vault: Vault, integration_id: int, integrations: IntegrationCache
) -> None:
    assert netsuite(engine, vault, integrations, "first") == 202
    update(engine, integration_id, settings={"ip_allowlist": ["203.0.113.0/24"]})

    assert netsuite(engine, vault, integrations, "first") == 403
    assert stored(engine) == (1, 1)


def test_intake_cache_queues_jobs_for_the_flows_enabled_now(
    engine: Engine, vault: Vault, integration_id: int, integrations: IntegrationCache
) -> None:
    assert netsuite(engine, vault, integrations, "first") == 202
    update(engine, integration_id, flows=["subscription_event"])  # customer_account switched off

    assert netsuite(engine, vault, integrations, "first") == 202
    assert stored(engine) == (2, 1)


def test_intake_cache_refuses_a_deleted_integration_at_once(
    engine: Engine, vault: Vault, integration_id: int, integrations: IntegrationCache
) -> None:
    assert netsuite(engine, vault, integrations, "first") == 202
    with session_scope(engine, write=True) as session:
        session.execute(delete(Job))
        session.execute(delete(InboundEvent))
        session.execute(delete(Integration).where(col(Integration.id) == integration_id))

    assert netsuite(engine, vault, integrations, "first") == 404
    assert zuora(engine, vault, integrations, "first-hmac", "n1") == 404
    assert integrations.cached(KEY) is None
    assert stored(engine) == (0, 0)


def test_intake_cache_serves_an_integration_created_after_its_key_was_refused(
    engine: Engine, vault: Vault, integrations: IntegrationCache, request: pytest.FixtureRequest
) -> None:
    assert netsuite(engine, vault, integrations, "first") == 404

    request.getfixturevalue("integration_id")

    assert netsuite(engine, vault, integrations, "first") == 202


def test_runner_honours_a_secret_rotated_while_it_runs(
    engine: Engine, vault: Vault, settings: Settings
) -> None:
    """The same through the running runner's own cache, over HTTP."""
    with running_stack(engine, vault, settings) as stack:

        def post(secret: str) -> int:
            return httpx2.post(
                stack.webhook_url, content=NETSUITE_BODY, headers={"X-Webhook-Secret": secret}
            ).status_code

        assert post(stack.webhook_secret) == 202
        new = webhook_secrets.rotate(
            engine, vault, integration_id=stack.integration_id, name="netsuite_secret", grace_seconds=0
        )

        assert (post(stack.webhook_secret), post(new)) == (401, 202)
