"""Every way a NetSuite delivery can be refused (status, an error body that says what to fix, and
nothing runnable stored), the optional IP allowlist, and shared-secret rotation with a grace period."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from runner.intake import MAX_BODY
from storage import crud, webhook_secrets
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import InboundEvent, Integration, Job
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def stored(engine: Engine) -> tuple[int, int]:
    with Session(engine) as session:
        events = session.exec(select(func.count()).select_from(InboundEvent)).one()
        jobs = session.exec(select(func.count()).select_from(Job)).one()
    return int(events), int(jobs)


GOOD = b'{"recordType": "customer", "id": "1000", "eventType": "create"}'


@pytest.mark.parametrize(
    ("body", "path_key", "secret", "status", "code", "says"),
    [
        (GOOD, "demo", None, 401, "missing_secret", "X-Webhook-Secret"),
        (GOOD, "demo", "wrong", 401, "bad_secret", "copy it again"),
        (GOOD, "no-such-integration", "any", 404, "unknown_integration", "no-such-integration"),
        (b'{"recordType": "customer", "id": ', "demo", "ok", 400, "malformed_json", "not valid JSON"),
        (b"[1, 2]", "demo", "ok", 400, "invalid_event", "JSON object"),
        (b'{"id": "1"}', "demo", "ok", 400, "invalid_event", "'recordType'"),
        (b'{"recordType": "invoice!", "id": "1"}', "demo", "ok", 400, "invalid_event", "'recordType'"),
        (b'{"recordType": "customer"}', "demo", "ok", 400, "invalid_event", "'id'"),
        (
            b'{"recordType": "customer", "id": "1", "eventType": "?"}',
            "demo",
            "ok",
            400,
            "invalid_event",
            "'eventType'",
        ),
        (b"x" * (MAX_BODY + 1), "demo", "ok", 413, "body_too_large", str(MAX_BODY)),
    ],
)
def test_netsuite_webhook_refusals(
    shared_stack: Stack,
    module_engine: Engine,
    body: bytes,
    path_key: str,
    secret: str | None,
    status: int,
    code: str,
    says: str,
) -> None:
    stack, engine = shared_stack, module_engine
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = stack.webhook_secret if secret == "ok" else secret
    url = stack.webhook_url.rsplit("/", 1)[0] + f"/{path_key}"

    response = httpx2.post(url, content=body, headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == code
    assert says in response.json()["message"]
    assert stored(engine) == (0, 0)


def test_netsuite_webhook_accepts_the_secret_as_a_query_parameter(stack: Stack, engine: Engine) -> None:
    response = httpx2.post(f"{stack.webhook_url}?secret={stack.webhook_secret}", content=GOOD)

    assert response.status_code == 202
    assert response.json()["accepted"] is True
    assert stored(engine) == (1, 1)


def test_netsuite_delete_event_is_kept_but_not_synced(stack: Stack, engine: Engine) -> None:
    body = b'{"recordType": "customer", "id": "1000", "eventType": "delete"}'

    response = httpx2.post(
        stack.webhook_url, content=body, headers={"X-Webhook-Secret": stack.webhook_secret}
    )

    assert response.status_code == 202
    assert response.json()["jobs"] == []
    assert stored(engine) == (1, 0)


def test_runner_health_and_metrics_report_the_queue(stack: Stack) -> None:
    assert (
        httpx2.post(stack.webhook_url, content=b"{", headers={"X-Webhook-Secret": "wrong"}).status_code == 401
    )

    health = httpx2.get(f"{stack.runner_url}/healthz")
    metrics = httpx2.get(f"{stack.runner_url}/metrics")

    assert health.status_code == 200
    assert health.json()["ok"] is True and health.json()["database"] == "ok"
    assert health.json()["scheduler"] == "running"
    assert metrics.status_code == 200
    assert 'mlc_webhook_events_total{system="netsuite",verdict="bad_secret"} 1.0' in metrics.text
    for family in ("mlc_job_duration_seconds", "mlc_remote_calls_total", "mlc_token_seconds_to_expiry"):
        assert f"# TYPE {family}" in metrics.text


# IP allowlist ----------------------------------------------------------------------------------------


def configure(engine: Engine, integration_id: int, **settings: Any) -> None:
    """Merge `settings` into the integration's non-secret settings, as the app's settings page does."""
    with session_scope(engine, write=True) as session:
        integration = session.get(Integration, integration_id)
        assert integration is not None
        integration.settings = {**(integration.settings or {}), **settings}
        session.add(integration)


def remote_addrs(engine: Engine) -> list[str]:
    with Session(engine) as session:
        return [e.remote_addr for e in session.exec(select(InboundEvent).order_by(col(InboundEvent.id)))]


# Requests below come from SENDER, not 127.0.0.1: uvicorn (proxy_headers, on by default) rewrites the
# client of requests from 127.0.0.1 to their X-Forwarded-For address before the runner sees them, and
# these tests are about the runner's own, per-integration, decision.
SENDER = "127.0.0.3"


def post_from_sender(url: str, body: bytes, headers: dict[str, str]) -> httpx2.Response:
    with httpx2.Client(transport=httpx2.HTTPTransport(local_address=SENDER)) as client:
        return client.post(url, content=body, headers=headers)


@pytest.mark.parametrize(
    ("allowlist", "trusted", "forwarded_for", "status", "recorded_or_says"),
    [
        ([], False, None, 202, "127.0.0.3"),
        (["127.0.0.0/8"], False, None, 202, "127.0.0.3"),
        (["2001:db8::/32", "127.0.0.3/32"], False, None, 202, "127.0.0.3"),
        (["203.0.113.0/24"], False, None, 403, "requests from 127.0.0.3 are not allowed"),
        (["203.0.113.0/24"], False, None, 403, "add 127.0.0.3 (or its network, e.g. 127.0.0.3/32)"),
        # X-Forwarded-For counts only when the integration trusts its proxy...
        (["203.0.113.0/24"], False, "203.0.113.9", 403, "set trust_forwarded_for"),
        (["203.0.113.0/24"], True, "203.0.113.9", 202, "203.0.113.9"),
        (["203.0.113.0/24"], True, "203.0.113.9:51234", 202, "203.0.113.9"),
        # ...and then its left-most address is the sender.
        (["203.0.113.0/24"], True, "198.51.100.1, 203.0.113.9", 403, "requests from 198.51.100.1"),
        (["2001:db8::/32"], True, "2001:db8::5", 202, "2001:db8::5"),
        (["2001:db8::/32"], True, "[2001:db8::5]:443", 202, "2001:db8::5"),
        (["2001:db8::/32"], True, "2001:db9::5", 403, "requests from 2001:db9::5"),
        (["203.0.113.0/24"], True, "unknown", 403, "'unknown' is not an IP address"),
        (["127.0.0.0/8"], True, None, 202, "127.0.0.3"),  # trusted but no header: the socket peer
        (["10.0.0.300/8"], False, None, 403, "'10.0.0.300/8'"),  # a typo fails closed, and is named
    ],
)
def test_netsuite_ip_allowlist(
    stack: Stack,
    engine: Engine,
    allowlist: list[str],
    trusted: bool,
    forwarded_for: str | None,
    status: int,
    recorded_or_says: str,
) -> None:
    configure(engine, stack.integration_id, ip_allowlist=allowlist, trust_forwarded_for=trusted)
    headers = {"X-Webhook-Secret": stack.webhook_secret}
    if forwarded_for is not None:
        headers["X-Forwarded-For"] = forwarded_for

    response = post_from_sender(stack.webhook_url, GOOD, headers)

    assert response.status_code == status
    if status == 202:
        assert remote_addrs(engine) == [recorded_or_says]
    else:
        assert response.json()["error"] == "ip_not_allowed"
        assert recorded_or_says in response.json()["message"]
        assert "ip_allowlist" in response.json()["message"]
        assert stored(engine) == (0, 0)


def test_netsuite_ip_allowlist_is_checked_before_the_secret(stack: Stack, engine: Engine) -> None:
    configure(engine, stack.integration_id, ip_allowlist=["203.0.113.0/24"])

    response = post_from_sender(stack.webhook_url, GOOD, {"X-Webhook-Secret": "wrong"})

    assert (response.status_code, response.json()["error"]) == (403, "ip_not_allowed")
    metrics = httpx2.get(f"{stack.runner_url}/metrics").text
    assert 'mlc_webhook_events_total{system="netsuite",verdict="ip_not_allowed"} 1.0' in metrics


# Shared secret rotation ------------------------------------------------------------------------------


def post_with(stack: Stack, secret: str) -> int:
    return httpx2.post(stack.webhook_url, content=GOOD, headers={"X-Webhook-Secret": secret}).status_code


def test_netsuite_previous_secret_is_accepted_during_the_grace_period(
    stack: Stack, engine: Engine, vault: Vault
) -> None:
    old = stack.webhook_secret
    new = webhook_secrets.rotate(engine, vault, integration_id=stack.integration_id, name="netsuite_secret")

    assert (post_with(stack, old), post_with(stack, new), post_with(stack, "neither")) == (202, 202, 401)
    assert new != old


@pytest.mark.parametrize(
    ("integration_settings", "grace_seconds"),
    [
        ({}, 0),  # the rotation's own grace: revoke a leaked secret at once
        ({"secret_grace_seconds": 0}, None),  # the integration's setting
    ],
)
def test_netsuite_previous_secret_is_refused_after_the_grace_period(
    stack: Stack,
    engine: Engine,
    vault: Vault,
    integration_settings: dict[str, Any],
    grace_seconds: float | None,
) -> None:
    configure(engine, stack.integration_id, **integration_settings)
    old = stack.webhook_secret
    new = webhook_secrets.rotate(
        engine,
        vault,
        integration_id=stack.integration_id,
        name="netsuite_secret",
        grace_seconds=grace_seconds,
    )

    assert (post_with(stack, old), post_with(stack, new)) == (401, 202)
    assert stored(engine) == (1, 1)


@pytest.mark.parametrize(
    ("integration_settings", "elapsed", "previous_accepted"),
    [
        ({}, timedelta(hours=23, minutes=59), True),
        ({}, timedelta(hours=24), False),  # the default grace is 24 hours
        ({"secret_grace_seconds": 600}, timedelta(seconds=599), True),
        ({"secret_grace_seconds": 600}, timedelta(seconds=600), False),
        ({"secret_grace_seconds": "not a number"}, timedelta(hours=23), True),  # a bad value: the default
    ],
)
def test_webhook_secrets_accepted_keeps_the_previous_secret_for_the_grace_period(
    engine: Engine,
    vault: Vault,
    integration_id: int,
    integration_settings: dict[str, Any],
    elapsed: timedelta,
    previous_accepted: bool,
) -> None:
    configure(engine, integration_id, **integration_settings)
    rotated_at = utcnow()
    new = webhook_secrets.rotate(
        engine, vault, integration_id=integration_id, name="netsuite_secret", new_secret="new", now=rotated_at
    )
    integration = crud.get_integration(engine, integration_id=integration_id)
    assert integration is not None

    accepted = webhook_secrets.accepted(vault, integration, "netsuite_secret", now=rotated_at + elapsed)

    assert accepted == (["new", "old"] if previous_accepted else ["new"])
    assert new == "new"
    assert crud.integration_secrets(vault, integration)["netsuite_secret"] == "new"


def test_webhook_secrets_rotating_twice_keeps_only_the_latest_previous(
    engine: Engine, vault: Vault, integration_id: int
) -> None:
    webhook_secrets.rotate(
        engine, vault, integration_id=integration_id, name="netsuite_secret", new_secret="two"
    )
    webhook_secrets.rotate(
        engine, vault, integration_id=integration_id, name="netsuite_secret", new_secret="three"
    )
    integration = crud.get_integration(engine, integration_id=integration_id)
    assert integration is not None

    assert webhook_secrets.accepted(vault, integration, "netsuite_secret") == ["three", "two"]
    assert webhook_secrets.accepted(vault, integration, "zuora_hmac_secret") == ["zuora-old"]


@pytest.mark.parametrize(
    ("changes", "error", "says"),
    [
        ({"name": "api_key"}, ValueError, "unknown webhook secret"),
        ({"new_secret": "old"}, ValueError, "is the current one"),
        ({"new_secret": "  "}, ValueError, "cannot be empty"),
        ({"grace_seconds": -1}, ValueError, "grace_seconds"),
        ({"integration_id": 999_999}, LookupError, "999999"),
    ],
)
def test_webhook_secrets_rotate_refuses_bad_requests(
    engine: Engine,
    vault: Vault,
    integration_id: int,
    changes: dict[str, Any],
    error: type[Exception],
    says: str,
) -> None:
    arguments: dict[str, Any] = {"integration_id": integration_id, "name": "netsuite_secret", **changes}

    with pytest.raises(error, match=says):
        webhook_secrets.rotate(engine, vault, **arguments)

    integration = crud.get_integration(engine, integration_id=integration_id)
    assert integration is not None
    assert webhook_secrets.accepted(vault, integration, "netsuite_secret") == ["old"]


@pytest.fixture
def integration_id(engine: Engine, vault: Vault) -> int:
    """An integration whose netsuite_secret is "old" and zuora_hmac_secret "zuora-old" (no runner)."""
    workspace = crud.create_workspace(engine, name="Rotation")
    assert workspace.id is not None
    connection = crud.create_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="netsuite",
        name="ns",
        base_url="https://example.test",
    )
    integration = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="Rotation",
        source_connection_id=connection.id,
        target_connection_id=connection.id,
        flows=[],
        webhook_secrets={"netsuite_secret": "old", "zuora_hmac_secret": "zuora-old"},
    )
    return integration.id
