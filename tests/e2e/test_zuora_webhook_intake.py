"""Zuora callouts into the runner: signed by HMAC-SHA256, stored once per Zuora-Notification-Id, and
refused with a status, an error code and a message that says what to fix, storing nothing runnable.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import runner.flows
from connectors.zuora.callouts import sign
from runner.intake import MAX_BODY
from runner.intake_zuora import accept_zuora
from storage import crud, webhook_secrets
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import InboundEvent, Integration, Job
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import serve, wait_for


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    """The stack with the subscription flow switched off: these tests are about intake (what is stored
    and acknowledged); tests/e2e/test_subscription_flow.py follows the callouts through the flow."""
    with running_stack(engine, vault, settings) as running:
        with session_scope(engine, write=True) as session:
            integration = session.get(Integration, running.integration_id)
            assert integration is not None
            integration.flows = [f for f in integration.flows if f != "subscription_event"]
            session.add(integration)
        yield running


def stored(engine: Engine) -> tuple[int, int]:
    """(inbound events, jobs) in the database."""
    with Session(engine) as session:
        events = session.exec(select(func.count()).select_from(InboundEvent)).one()
        jobs = session.exec(select(func.count()).select_from(Job)).one()
    return int(events), int(jobs)


def zuora_events(engine: Engine) -> list[InboundEvent]:
    with Session(engine) as session:
        query = select(InboundEvent).where(col(InboundEvent.system) == "zuora").order_by(col(InboundEvent.id))
        return list(session.exec(query))


def callout_body(**changes: Any) -> dict[str, Any]:
    """A Subscription Created callout in our documented template shape (connectors/zuora/callouts.py)."""
    body: dict[str, Any] = {
        "event": "Subscription Created",
        "eventCategory": 1210,
        "notification": "Subscription Created",
        "tenantId": "19",
        "accountId": "8ad09be48db5aa07018db6ad3a4a1b32",
        "accountNumber": "A00000001",
        "subscriptionId": "8ad09be48db5aa07018db6ad3c3b1b5a",
        "subscriptionNumber": "A-S00000001",
        "version": 1,
        "subscriptionStatus": "Active",
        "effectiveDate": "2024-07-01",
        "amendmentType": None,
        "orderNumber": None,
        "orderActionType": None,
    }
    body.update(changes)
    return body


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def post_callout(
    url: str, body: bytes, *, secret: str | None, notification_id: str | None = "a1" * 16
) -> httpx2.Response:
    """POST a callout as Zuora would: signed with `secret` (no signature header when None)."""
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Zuora-Signature"] = sign(secret, body)
    if notification_id is not None:
        headers["Zuora-Notification-Id"] = notification_id
    return httpx2.post(url, content=body, headers=headers)


GOOD = raw(callout_body())


# Refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path_key", "signature", "notification_id", "status", "code", "says"),
    [
        (GOOD, "demo", "absent", "n1", 401, "missing_signature", "X-Zuora-Signature"),
        (GOOD, "demo", "sha256=zz", "n1", 401, "bad_signature", "64 hex digits"),
        (GOOD, "demo", "md5=" + "0" * 32, "n1", 401, "bad_signature", "sha256=<64 hex digits>"),
        (GOOD, "demo", "other-secret", "n1", 401, "bad_signature", "copy it again"),
        (GOOD, "demo", "other-body", "n1", 401, "bad_signature", "does not match the body"),
        (b"{not json", "demo", "other-secret", "n1", 401, "bad_signature", "does not match"),
        (GOOD, "no-such-integration", "good", "n1", 404, "unknown_integration", "no-such-integration"),
        (GOOD, "demo", "good", None, 400, "missing_notification_id", "Zuora-Notification-Id"),
        (GOOD, "demo", "good", "has spaces", 400, "invalid_notification_id", "Zuora-Notification-Id"),
        (b"{not json", "demo", "good", "n1", 400, "malformed_json", "not valid JSON"),
        (b"\xff\xfe{}", "demo", "good", "n1", 400, "malformed_json", "UTF-8"),
        (b"[1, 2]", "demo", "good", "n1", 400, "invalid_event", "JSON object"),
        (raw(callout_body(event=None)), "demo", "good", "n1", 400, "invalid_event", "'event'"),
        (
            raw(callout_body(subscriptionNumber=None)),
            "demo",
            "good",
            "n1",
            400,
            "invalid_event",
            "'subscriptionNumber' is required for 'Subscription Created'",
        ),
        (raw(callout_body(version="2")), "demo", "good", "n1", 400, "invalid_event", "'version'"),
        (raw(callout_body(accountId=7)), "demo", "good", "n1", 400, "invalid_event", "'accountId'"),
        (
            raw(callout_body(eventCategory="1210")),
            "demo",
            "good",
            "n1",
            400,
            "invalid_event",
            "'eventCategory'",
        ),
        (b"x" * (MAX_BODY + 1), "demo", "good", "n1", 413, "body_too_large", str(MAX_BODY)),
    ],
)
def test_zuora_webhook_refusals(
    shared_stack: Stack,
    module_engine: Engine,
    body: bytes,
    path_key: str,
    signature: str,
    notification_id: str | None,
    status: int,
    code: str,
    says: str,
) -> None:
    stack, engine = shared_stack, module_engine
    headers = {"Content-Type": "application/json"}
    if signature != "absent":
        headers["X-Zuora-Signature"] = {
            "good": sign(stack.zuora_secret, body),
            "other-secret": sign("not-the-secret", body),
            "other-body": sign(stack.zuora_secret, body + b" "),
        }.get(signature, signature)
    if notification_id is not None:
        headers["Zuora-Notification-Id"] = notification_id
    url = f"{stack.runner_url}/webhooks/zuora/{path_key}"

    response = httpx2.post(url, content=body, headers=headers)

    assert response.status_code == status
    assert response.json()["error"] == code
    assert says in response.json()["message"]
    assert stack.zuora_secret not in response.text
    assert stored(engine) == (0, 0)


def test_zuora_refusals_are_counted_by_verdict(stack: Stack) -> None:
    post_callout(stack.zuora_webhook_url, GOOD, secret="not-the-secret")
    post_callout(stack.zuora_webhook_url, GOOD, secret=None)
    post_callout(stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret)

    metrics = httpx2.get(f"{stack.runner_url}/metrics").text

    assert 'mlc_webhook_events_total{system="zuora",verdict="bad_signature"} 1.0' in metrics
    assert 'mlc_webhook_events_total{system="zuora",verdict="missing_signature"} 1.0' in metrics
    assert 'mlc_webhook_events_total{system="zuora",verdict="accepted"} 1.0' in metrics


def test_zuora_body_over_the_limit_is_refused_without_a_declared_length(stack: Stack, engine: Engine) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the runner counts what arrives
        for _ in range(MAX_BODY // 65536 + 1):
            yield b" " * 65536

    response = httpx2.post(
        stack.zuora_webhook_url,
        content=chunks(),
        headers={"X-Zuora-Signature": "sha256=" + "0" * 64, "Zuora-Notification-Id": "n1"},
    )

    assert (response.status_code, response.json()["error"]) == (413, "body_too_large")
    assert stored(engine) == (0, 0)


def test_zuora_refusal_is_logged_without_the_secret(stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="ml_connector.webhooks")

    post_callout(stack.zuora_webhook_url, GOOD, secret="not-the-secret")

    wait_for(lambda: "bad_signature" in caplog.text, what="the refusal in the log")
    assert "zuora webhook for 'demo'" in caplog.text
    assert stack.zuora_secret not in caplog.text and "not-the-secret" not in caplog.text


# Acceptance and deduplication ---------------------------------------------------------------------


def test_zuora_callout_is_acknowledged_with_200_and_stored(stack: Stack, engine: Engine) -> None:
    response = post_callout(
        stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret, notification_id="b2" * 16
    )

    assert response.status_code == 200
    assert response.json() == {
        "accepted": True,
        "duplicate": False,
        "event_id": response.json()["event_id"],
        "jobs": [],  # no Zuora flow is implemented yet: the event is kept, nothing is queued
        "success": True,
    }
    (event,) = zuora_events(engine)
    assert (event.delivery_key, event.body) == ("b2" * 16, GOOD.decode())
    assert event.headers["zuora-notification-id"] == "b2" * 16
    assert "x-zuora-signature" not in event.headers
    assert stored(engine) == (1, 0)


def test_zuora_redelivery_with_the_same_notification_id_stores_nothing_new(
    stack: Stack, engine: Engine
) -> None:
    first = post_callout(stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret, notification_id="c3" * 16)
    again = post_callout(stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret, notification_id="c3" * 16)
    other = post_callout(stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret, notification_id="d4" * 16)

    assert (first.status_code, again.status_code, other.status_code) == (200, 200, 200)
    assert again.json()["duplicate"] is True and again.json()["accepted"] is True
    assert again.json()["event_id"] == first.json()["event_id"]
    assert other.json()["duplicate"] is False
    assert [e.delivery_key for e in zuora_events(engine)] == ["c3" * 16, "d4" * 16]
    metrics = httpx2.get(f"{stack.runner_url}/metrics").text
    assert 'mlc_webhook_events_total{system="zuora",verdict="duplicate"} 1.0' in metrics


def test_zuora_concurrent_copies_of_one_notification_store_one_event(stack: Stack, engine: Engine) -> None:
    def deliver(_: int) -> httpx2.Response:
        return post_callout(
            stack.zuora_webhook_url, GOOD, secret=stack.zuora_secret, notification_id="e7" * 16
        )

    with ThreadPoolExecutor(max_workers=6) as pool:
        answers = list(pool.map(deliver, range(6)))

    assert [a.status_code for a in answers] == [200] * 6
    assert sorted(a.json()["duplicate"] for a in answers) == [False] + [True] * 5
    assert len({a.json()["event_id"] for a in answers}) == 1
    assert stored(engine) == (1, 0)


# The Zuora emulator's real callouts -----------------------------------------------------------------


def seed_account(stack: Stack) -> str:
    """An Active Zuora account, seeded over HTTP so the emulator learns the loop it sends callouts from."""
    body = {
        "name": "Acme Ltd",
        "currency": "USD",
        "billCycleDay": 1,
        "paymentTerm": "Net 30",
        "billToContact": {"firstName": "Amy", "lastName": "Lawrence", "country": "United States"},
    }
    response = httpx2.post(f"{stack.credentials.zuora_url}/_emulator/seed/accounts", json=body)
    assert response.status_code == 201, response.text
    (account,) = [a for a in stack.zuora.accounts() if a["id"] == response.json()["id"]]
    return str(account["accountNumber"])


def settled(stack: Stack, notifications: int) -> list[dict[str, Any]]:
    """The emulator's callout attempts once `notifications` of them are finished."""
    wait_for(
        lambda: (
            stack.zuora.pending_callouts == 0
            and len({c["notificationId"] for c in stack.zuora.callouts}) >= notifications
        ),
        what=f"{notifications} callout(s) to settle",
    )
    return stack.zuora.callouts


def test_zuora_emulator_callouts_for_create_amend_cancel_are_stored_once_each(
    stack: Stack, engine: Engine
) -> None:
    account = seed_account(stack)
    stack.zuora.register_callout(stack.zuora_webhook_url, secret=stack.zuora_secret)
    plan = next(c["productRatePlanId"] for c in stack.zuora.catalog() if c["name"] == "Consulting")

    created = stack.zuora.create_subscription(account)
    amended = stack.zuora.amend_subscription(
        created["subscriptionNumber"], "NewProduct", add_rate_plans=[{"productRatePlanId": plan}]
    )
    cancelled = stack.zuora.cancel_subscription(created["subscriptionNumber"], reason="churn")

    attempts = settled(stack, 3)
    assert [(a["status"], a["outcome"]) for a in attempts] == [(200, "delivered")] * 3
    events = zuora_events(engine)
    by_key = {e.delivery_key: json.loads(e.body) for e in events}
    assert len(events) == 3
    assert set(by_key) == {a["notificationId"] for a in attempts}
    assert sorted((b["subscriptionId"], b["version"], b["amendmentType"]) for b in by_key.values()) == sorted(
        [
            (created["id"], 1, None),
            (amended["id"], 2, "NewProduct"),
            (cancelled["id"], 3, "Cancellation"),
        ]
    )
    assert stored(engine) == (3, 0)


def lossy_proxy(target: str) -> Starlette:
    """Forwards every request to `target`, but answers the first one 503 whatever the runner said, as a
    load balancer timing out after the runner stored the event would, so Zuora retries it."""
    answers: list[int] = []

    async def forward(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in ("host", "content-length")}
        async with httpx2.AsyncClient() as client:
            answer = await client.post(target, content=await request.body(), headers=headers)
        answers.append(answer.status_code)
        if len(answers) == 1:
            return Response("upstream timed out", status_code=503)
        return Response(answer.content, answer.status_code, media_type=answer.headers.get("content-type"))

    return Starlette(routes=[Route("/", forward, methods=["POST"])])


def test_zuora_retry_of_a_delivered_callout_is_acknowledged_as_a_duplicate(
    stack: Stack, engine: Engine
) -> None:
    account = seed_account(stack)
    with serve(lossy_proxy(stack.zuora_webhook_url)) as proxy:
        stack.zuora.register_callout(f"{proxy}/", secret=stack.zuora_secret, retries=3, interval=0)

        stack.zuora.create_subscription(account)

        first, retry = settled(stack, 1)
    assert (first["attempt"], first["status"], first["outcome"]) == (1, 503, "retrying")
    assert (retry["attempt"], retry["status"], retry["outcome"]) == (2, 200, "delivered")
    assert first["notificationId"] == retry["notificationId"]
    assert first["requestId"] != retry["requestId"]
    assert json.loads(retry["response"])["duplicate"] is True
    (event,) = zuora_events(engine)
    assert event.delivery_key == first["notificationId"]


# Secret rotation --------------------------------------------------------------------------------


def test_zuora_previous_hmac_secret_is_accepted_during_the_grace_period(
    stack: Stack, engine: Engine, vault: Vault
) -> None:
    old = stack.zuora_secret
    new = webhook_secrets.rotate(engine, vault, integration_id=stack.integration_id, name="zuora_hmac_secret")

    with_old = post_callout(stack.zuora_webhook_url, GOOD, secret=old, notification_id="e5" * 16)
    with_new = post_callout(stack.zuora_webhook_url, GOOD, secret=new, notification_id="f6" * 16)

    assert (with_old.status_code, with_new.status_code) == (200, 200)
    assert stored(engine) == (2, 0)


def test_zuora_previous_hmac_secret_is_refused_once_the_grace_period_is_over(
    stack: Stack, engine: Engine, vault: Vault
) -> None:
    old = stack.zuora_secret
    new = webhook_secrets.rotate(
        engine, vault, integration_id=stack.integration_id, name="zuora_hmac_secret", grace_seconds=0
    )

    with_old = post_callout(stack.zuora_webhook_url, GOOD, secret=old, notification_id="e5" * 16)
    with_new = post_callout(stack.zuora_webhook_url, GOOD, secret=new, notification_id="f6" * 16)

    assert (with_old.status_code, with_old.json()["error"]) == (401, "bad_signature")
    assert with_new.status_code == 200
    assert [e.delivery_key for e in zuora_events(engine)] == ["f6" * 16]


# Which flows get jobs -------------------------------------------------------------------------------


@pytest.fixture
def integration_key(engine: Engine, vault: Vault) -> str:
    """An integration with the Zuora flow enabled, and no runner: queued jobs stay put for inspection."""
    workspace = crud.create_workspace(engine, name="Jobs")
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
        for system in ("zuora", "netsuite")
    ]
    crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="Zuora → NetSuite",
        source_connection_id=connections[0],
        target_connection_id=connections[1],
        flows=["subscription_event"],
        key="jobs",
        webhook_secrets={"zuora_hmac_secret": "s3cret"},
    )
    return "jobs"


@pytest.mark.parametrize(
    ("implemented", "jobs"),
    [
        ({"subscription_event"}, 1),
        (set(), 0),  # enabled but its code has not landed: the event is kept, no job nobody can run
    ],
)
def test_zuora_intake_queues_jobs_only_for_enabled_and_implemented_flows(
    engine: Engine,
    vault: Vault,
    integration_key: str,
    monkeypatch: pytest.MonkeyPatch,
    implemented: set[str],
    jobs: int,
) -> None:
    monkeypatch.setattr(runner.flows, "registry", lambda: dict.fromkeys(implemented))

    accepted = accept_zuora(
        engine,
        vault,
        key=integration_key,
        signature=sign("s3cret", GOOD),
        notification_id="a7" * 16,
        body=GOOD,
        headers={},
        remote_addr="127.0.0.1",
    )

    assert len(accepted.job_ids) == jobs
    assert stored(engine) == (1, jobs)
    with Session(engine) as session:
        payloads = [job.payload for job in session.exec(select(Job))]
    assert (
        payloads
        == [
            {
                "notification_id": "a7" * 16,
                "event": "Subscription Created",
                "notification": "Subscription Created",
                "account_id": "8ad09be48db5aa07018db6ad3a4a1b32",
                "subscription_id": "8ad09be48db5aa07018db6ad3c3b1b5a",
                "subscription_number": "A-S00000001",
                "version": 1,
            }
        ][:jobs]
    )


def test_flows_for_event_needs_the_flow_enabled_and_implemented(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner.flows, "registry", lambda: {"subscription_event": None, "zoho_change": None})

    assert runner.flows.flows_for_event("zuora", ["subscription_event"]) == ["subscription_event"]
    assert runner.flows.flows_for_event("zuora", ["zoho_change"]) == []
    assert runner.flows.flows_for_event("netsuite", ["subscription_event"]) == []
