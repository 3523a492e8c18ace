"""Zoho CRM channel notifications into the runner: checked against the channel's token, stored once per
notification, one fetch-and-sync job per record id, and refused with a status, an error code and a
message that says what to fix, storing nothing runnable.

Every test here runs on SQLite and on PostgreSQL (the `engine` fixture is parametrized).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

import runner.flows
from runner.intake import MAX_BODY
from runner.intake_zoho import accept_zoho
from storage import channels, crud
from storage.crypto import Vault
from storage.models import Channel, InboundEvent, Job
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

CHANNEL_ID = "1000000068001"
TOKEN = "tenant42-7f3a"
MISSING = object()  # a table value meaning "leave this field out"


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


@pytest.fixture
def channel(stack: Stack, engine: Engine, vault: Vault) -> Channel:
    """The demo integration's channel CHANNEL_ID with token TOKEN, notifying the runner."""
    return channels.create_channel(
        engine,
        vault,
        integration_id=stack.integration_id,
        channel_id=CHANNEL_ID,
        token=TOKEN,
        events=["Accounts.all"],
        notify_url=stack.zoho_webhook_url,
    )


@pytest.fixture(scope="module")
def shared_channel(shared_stack: Stack, module_engine: Engine, module_vault: Vault) -> Channel:
    """The channel of the module's shared stack, for the refusal table."""
    return channels.create_channel(
        module_engine,
        module_vault,
        integration_id=shared_stack.integration_id,
        channel_id=CHANNEL_ID,
        token=TOKEN,
        events=["Accounts.all"],
        notify_url=shared_stack.zoho_webhook_url,
    )


def stored(engine: Engine) -> tuple[int, int]:
    """(inbound events, jobs) in the database."""
    with Session(engine) as session:
        events = session.exec(select(func.count()).select_from(InboundEvent)).one()
        jobs = session.exec(select(func.count()).select_from(Job)).one()
    return int(events), int(jobs)


def zoho_events(engine: Engine) -> list[InboundEvent]:
    with Session(engine) as session:
        query = select(InboundEvent).where(col(InboundEvent.system) == "zoho").order_by(col(InboundEvent.id))
        return list(session.exec(query))


def notification(**changes: Any) -> dict[str, Any]:
    """What Zoho POSTs to notify_url (shared/api/zoho.md §3e); MISSING drops a field."""
    body: dict[str, Any] = {
        "server_time": 1718115953625,
        "query_params": {},
        "module": "Accounts",
        "resource_uri": "https://www.zohoapis.com/crm/v2/Accounts",
        "ids": ["5725767000003000010"],
        "affected_fields": [{"5725767000003000010": ["Phone"]}],
        "operation": "update",
        "channel_id": CHANNEL_ID,
        "token": TOKEN,
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not MISSING}


def raw(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


# Refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "path_key", "channel_status", "status", "code", "says"),
    [
        (
            raw(notification()),
            "no-such-integration",
            "active",
            404,
            "unknown_integration",
            "no-such-integration",
        ),
        (b'{"channel_id": ', "demo", "active", 400, "malformed_json", "not valid JSON"),
        (b'["not", "an", "object"]', "demo", "active", 400, "invalid_event", "JSON object"),
        (raw(notification(channel_id=MISSING)), "demo", "active", 400, "invalid_event", "'channel_id'"),
        (raw(notification(channel_id="abc")), "demo", "active", 400, "invalid_event", "'channel_id'"),
        (raw(notification(token=MISSING)), "demo", "active", 401, "missing_token", "'token'"),
        (raw(notification(token="")), "demo", "active", 401, "missing_token", "'token'"),
        (
            raw(notification(channel_id="1000000068999")),
            "demo",
            "active",
            401,
            "unknown_channel",
            "1000000068999",
        ),
        (
            raw(notification(token="tenant42-guess")),
            "demo",
            "active",
            401,
            "bad_token",
            "re-enable the channel",
        ),
        (raw(notification()), "demo", "disabled", 410, "channel_disabled", "is disabled"),
        (raw(notification(token="tenant42-guess")), "demo", "disabled", 401, "bad_token", "does not match"),
        (raw(notification(module=MISSING)), "demo", "active", 400, "invalid_event", "'module'"),
        (raw(notification(operation="upsert")), "demo", "active", 400, "invalid_event", "'operation'"),
        (raw(notification(ids=[])), "demo", "active", 400, "invalid_event", "'ids'"),
        (raw(notification(ids=["1", {"id": "2"}])), "demo", "active", 400, "invalid_event", "'ids[1]'"),
        (raw(notification(server_time=MISSING)), "demo", "active", 400, "invalid_event", "'server_time'"),
        (raw(notification(server_time="yesterday")), "demo", "active", 400, "invalid_event", "'server_time'"),
        (b"x" * (MAX_BODY + 1), "demo", "active", 413, "body_too_large", str(MAX_BODY)),
    ],
)
def test_zoho_webhook_refusals(
    shared_stack: Stack,
    module_engine: Engine,
    shared_channel: Channel,
    body: bytes,
    path_key: str,
    channel_status: str,
    status: int,
    code: str,
    says: str,
) -> None:
    stack, engine = shared_stack, module_engine
    channels.set_status(engine, channel_id=shared_channel.channel_id, status=channel_status)
    url = f"{stack.runner_url}/webhooks/zoho/{path_key}"

    response = httpx2.post(url, content=body, headers={"Content-Type": "application/json"})

    assert response.status_code == status
    assert response.json()["error"] == code
    assert says in response.json()["message"]
    assert TOKEN not in response.text
    assert stored(engine) == (0, 0)


def test_zoho_channel_of_another_integration_is_refused(
    stack: Stack, engine: Engine, vault: Vault, channel: Channel
) -> None:
    demo = crud.get_integration(engine, integration_id=stack.integration_id)
    assert demo is not None
    other = crud.create_integration(
        engine,
        vault,
        workspace_id=demo.workspace_id,
        name="Another",
        source_connection_id=demo.source_connection_id,
        target_connection_id=demo.target_connection_id,
        flows=[],
        key="another",
    )

    response = httpx2.post(f"{stack.runner_url}/webhooks/zoho/{other.key}", content=raw(notification()))

    assert (response.status_code, response.json()["error"]) == (401, "unknown_channel")
    assert stored(engine) == (0, 0)


# Acceptance and deduplication ---------------------------------------------------------------------


def test_zoho_notification_is_acknowledged_with_200_and_stored_once(
    stack: Stack, engine: Engine, channel: Channel
) -> None:
    first = httpx2.post(stack.zoho_webhook_url, content=raw(notification()))
    again = httpx2.post(stack.zoho_webhook_url, content=raw(notification()))
    later = httpx2.post(stack.zoho_webhook_url, content=raw(notification(server_time=1718115999999)))

    assert (first.status_code, again.status_code, later.status_code) == (200, 200, 200)
    assert first.json()["duplicate"] is False and first.json()["jobs"] == []
    assert json.loads(zoho_events(engine)[0].body) == notification(token="[redacted]")
    assert again.json()["duplicate"] is True and again.json()["event_id"] == first.json()["event_id"]
    assert later.json()["duplicate"] is False
    assert stored(engine) == (2, 0)
    metrics = httpx2.get(f"{stack.runner_url}/metrics").text
    assert 'mlc_webhook_events_total{system="zoho",verdict="accepted"} 2.0' in metrics
    assert 'mlc_webhook_events_total{system="zoho",verdict="duplicate"} 1.0' in metrics


def test_zoho_lapsed_channel_still_delivers(stack: Stack, engine: Engine, channel: Channel) -> None:
    # A notification sent just before expiry may arrive after the renewal job marked the channel lapsed.
    channels.set_status(engine, channel_id=channel.channel_id, status="lapsed")

    response = httpx2.post(stack.zoho_webhook_url, content=raw(notification()))

    assert response.status_code == 200
    assert stored(engine) == (1, 0)


def test_zoho_emulator_watch_channel_notification_is_stored(
    stack: Stack, engine: Engine, vault: Vault
) -> None:
    channel = channels.create_channel(
        engine,
        vault,
        integration_id=stack.integration_id,
        events=["Accounts.all"],
        notify_url=stack.zoho_webhook_url,
    )
    token = channels.channel_token(vault, channel)
    enabled = stack.enable_zoho_watch(
        {
            "channel_id": channel.channel_id,
            "events": ["Accounts.all"],
            "token": token,
            "notify_url": stack.zoho_webhook_url,
        }
    )
    assert enabled[0]["code"] == "SUCCESS"

    record_id = stack.zoho.seed("Accounts", {"Account_Name": "Acme Ltd"}, notify=True)
    stack.zoho.update_record("Accounts", record_id, {"Phone": "555-0100"})

    deliveries = wait_for(
        lambda: len(stack.zoho.deliveries) == 2 and stack.zoho.deliveries, what="two Zoho notifications"
    )
    assert [d.get("status") for d in deliveries] == [200, 200]
    events = zoho_events(engine)
    # The two deliveries race each other, as Zoho's would: compare without order.
    assert sorted((json.loads(e.body)["operation"], json.loads(e.body)["ids"]) for e in events) == [
        ("insert", [record_id]),
        ("update", [record_id]),
    ]
    assert all(e.delivery_key.startswith(f"{channel.channel_id}/") for e in events)
    # Zoho's redelivery of the same notification changes nothing.
    redelivered = httpx2.post(stack.zoho_webhook_url, json=deliveries[0]["body"])
    assert redelivered.json()["duplicate"] is True
    assert stored(engine) == (2, 0)


# Which flows get jobs -------------------------------------------------------------------------------


@pytest.fixture
def integration_key(engine: Engine, vault: Vault) -> str:
    """An integration with the Zoho flow enabled and channel CHANNEL_ID, and no runner: queued jobs
    stay put for inspection."""
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
        for system in ("zoho", "netsuite")
    ]
    integration = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="Zoho → NetSuite",
        source_connection_id=connections[0],
        target_connection_id=connections[1],
        flows=["zoho_change"],
        key="jobs",
    )
    channels.create_channel(
        engine,
        vault,
        integration_id=integration.id,
        channel_id=CHANNEL_ID,
        token=TOKEN,
        events=["Accounts.all"],
        notify_url="https://runner.example.test/webhooks/zoho/jobs",
    )
    return integration.key


@pytest.mark.parametrize(
    ("implemented", "operation", "jobs"),
    [
        ({"zoho_change"}, "update", 2),  # one fetch-and-sync job per id
        ({"zoho_change"}, "insert", 2),
        ({"zoho_change"}, "delete", 0),  # deletions are kept but never synchronised
        (set(), "update", 0),  # enabled but its code has not landed: no job nobody can run
    ],
)
def test_zoho_intake_queues_one_job_per_id_for_enabled_and_implemented_flows(
    engine: Engine,
    vault: Vault,
    integration_key: str,
    monkeypatch: pytest.MonkeyPatch,
    implemented: set[str],
    operation: str,
    jobs: int,
) -> None:
    monkeypatch.setattr(runner.flows, "registry", lambda: dict.fromkeys(implemented))
    body = raw(notification(ids=["111", "222", "111"], operation=operation))

    accepted = accept_zoho(engine, vault, key=integration_key, body=body, headers={}, remote_addr="127.0.0.1")

    assert len(accepted.job_ids) == jobs
    assert stored(engine) == (1, jobs)
    with Session(engine) as session:
        payloads = [job.payload for job in session.exec(select(Job).order_by(col(Job.id)))]
    assert (
        payloads
        == [
            {
                "module": "Accounts",
                "id": record_id,
                "operation": operation,
                "channel_id": CHANNEL_ID,
                "server_time": 1718115953625,
            }
            for record_id in ("111", "222")
        ][:jobs]
    )
