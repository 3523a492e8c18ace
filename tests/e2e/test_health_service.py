"""The read models behind the Health and Connections pages (runner.health, runner.connection_admin), on
SQLite and PostgreSQL: heartbeats, queue, throughput buckets, channels with their renewal history, token
status, payments; re-ping against the emulators and webhook-secret rotation against the running runner."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import asdict, fields
from datetime import UTC, datetime, timedelta

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from runner import channels
from runner.connection_admin import (
    connection_overview,
    integration_overview,
    reping,
    rotate_secret,
)
from runner.health import (
    MAX_BUCKETS,
    STALE_AFTER_BEATS,
    TokenStatus,
    channel_overview,
    payments_page,
    queue_summary,
    renewal_history,
    runner_heartbeats,
    throughput,
    token_overview,
)
from runner.services import Services
from storage import channels as channel_store
from storage import crud, leases, webhook_secrets
from storage.audit import write_record
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import AuditRecord, ChannelRenewal, Connection, Outcome, Payment, Token
from storage.queue import enqueue
from storage.settings import Settings
from storage.types import utcnow
from tests.e2e.stack import Stack, running_stack

NOW = datetime(2026, 3, 2, 12, 30, 30, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


def integration(engine: Engine, vault: Vault) -> tuple[int, int, int]:
    """A workspace with a NetSuite and a Zuora connection and one integration; returns their ids."""
    workspace = crud.create_workspace(engine, name="Health Co")
    assert workspace.id is not None
    netsuite = crud.create_connection(
        engine, vault, workspace_id=workspace.id, system="netsuite", name="NetSuite",
        base_url="https://1234567.suitetalk.api.netsuite.com", secrets={"private_key": "never-shown"},
    )  # fmt: skip
    zuora = crud.create_connection(
        engine, vault, workspace_id=workspace.id, system="zuora", name="Zuora",
        base_url="https://rest.zuora.com", secrets={"client_secret": "never-shown"},
    )  # fmt: skip
    created = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name="NetSuite → Zuora", source_connection_id=netsuite.id,
        target_connection_id=zuora.id, flows=["customer_account", "subscription_event"],
    )  # fmt: skip
    return created.id, netsuite.id, zuora.id


def audit(engine: Engine, integration_id: int, at: datetime, outcome: Outcome) -> None:
    record = AuditRecord(
        integration_id=integration_id, flow="customer_account", source_system="netsuite", source_id="1",
        target_system="zuora", outcome=outcome, started_at=at, finished_at=at,
    )  # fmt: skip
    write_record(engine, record, [])


# --- runners and queue ------------------------------------------------------------------------


def test_runner_heartbeats_are_empty_before_any_runner_started(engine: Engine) -> None:
    assert runner_heartbeats(engine, heartbeat_interval=10.0) == []


def test_runner_heartbeats_turn_stale_after_three_missed_beats(engine: Engine) -> None:
    leases.beat(engine, "runner-a", details={"completed": 12, "jobs": {"queued": 1}})
    seen = runner_heartbeats(engine, heartbeat_interval=10.0)[0].seen_at

    fresh = runner_heartbeats(engine, heartbeat_interval=10.0, now=seen + timedelta(seconds=5))
    stale = runner_heartbeats(
        engine, heartbeat_interval=10.0, now=seen + timedelta(seconds=STALE_AFTER_BEATS * 10 + 1)
    )

    assert [(r.runner, r.stale, r.completed, r.age) for r in fresh] == [("runner-a", False, 12, 5.0)]
    assert [r.stale for r in stale] == [True]


def test_queue_summary_counts_depth_and_oldest_waiting_job(engine: Engine, vault: Vault) -> None:
    integration_id, _, _ = integration(engine, vault)
    with session_scope(engine) as session:
        for minutes in (5, 1):
            enqueue(
                session, integration_id=integration_id, flow="customer_account", payload={},
                run_after=utcnow() - timedelta(minutes=minutes),
            )  # fmt: skip
        dead = enqueue(session, integration_id=integration_id, flow="customer_account", payload={})
        dead.status = "dead"

    summary = queue_summary(engine)

    assert (summary.queued, summary.running, summary.dead, summary.depth) == (2, 0, 1, 2)
    assert summary.oldest_queued_age is not None and 300 <= summary.oldest_queued_age < 330


# --- throughput -------------------------------------------------------------------------------


def test_throughput_counts_outcomes_per_minute_with_quiet_minutes_as_zero(
    engine: Engine, vault: Vault
) -> None:
    integration_id, _, _ = integration(engine, vault)
    for at, outcome in [
        (datetime(2026, 3, 2, 12, 29, 10, tzinfo=UTC), Outcome.SUCCEEDED),
        # A fraction of a second before the minute ends stays in its minute (a cast would round it up).
        (datetime(2026, 3, 2, 12, 29, 59, 900_000, tzinfo=UTC), Outcome.FAILED),
        (datetime(2026, 3, 2, 12, 30, 5, tzinfo=UTC), Outcome.SUCCEEDED),
        (datetime(2026, 3, 2, 12, 25, 0, tzinfo=UTC), Outcome.RETRYING),
        (datetime(2026, 3, 2, 11, 0, 0, tzinfo=UTC), Outcome.FAILED),  # before the window
    ]:
        audit(engine, integration_id, at, outcome)

    buckets = throughput(engine, window=timedelta(minutes=10), bucket=MINUTE, now=NOW)

    assert [b.start.strftime("%H:%M") for b in buckets] == [f"12:{m}" for m in range(20, 31)]
    by_minute = {b.start.minute: (b.succeeded, b.retrying, b.failed, b.error_rate) for b in buckets}
    assert by_minute[29] == (1, 0, 1, 0.5)
    assert by_minute[30] == (1, 0, 0, 0.0)
    assert by_minute[25] == (0, 1, 0, 1.0)
    assert by_minute[21] == (0, 0, 0, None)
    assert sum(b.total for b in buckets) == 4


def test_throughput_by_hour_puts_each_record_in_its_hour(engine: Engine, vault: Vault) -> None:
    integration_id, _, _ = integration(engine, vault)
    for at in (datetime(2026, 3, 2, 10, 59, 59, tzinfo=UTC), datetime(2026, 3, 2, 11, 0, 0, tzinfo=UTC)):
        audit(engine, integration_id, at, Outcome.SUCCEEDED)

    buckets = throughput(engine, window=timedelta(hours=2), bucket=timedelta(hours=1), now=NOW)

    assert [(b.start.hour, b.total) for b in buckets] == [(10, 1), (11, 1), (12, 0)]


@pytest.mark.parametrize(
    ("window", "bucket"),
    [(timedelta(days=30), MINUTE), (timedelta(hours=1), timedelta(milliseconds=500))],
)
def test_throughput_refuses_unbounded_or_sub_second_buckets(
    engine: Engine, window: timedelta, bucket: timedelta
) -> None:
    with pytest.raises(ValueError, match="bucket"):
        throughput(engine, window=window, bucket=bucket, now=NOW)
    assert MAX_BUCKETS >= 24 * 60  # a day by the minute stays allowed


# --- tokens and payments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expires_in", "failures", "cooldown_in", "state"),
    [
        (3600, 0, None, "valid"),
        (300, 0, None, "expiring"),
        (-60, 0, None, "expired"),
        (3600, 2, 120, "cooling down"),
        (3600, 1, -5, "failing"),
        (None, 0, None, "none"),
    ],
)
def test_token_overview_describes_each_connection_without_the_token(
    engine: Engine,
    vault: Vault,
    expires_in: float | None,
    failures: int,
    cooldown_in: float | None,
    state: str,
) -> None:
    _, netsuite_id, zuora_id = integration(engine, vault)
    now = utcnow()
    with session_scope(engine) as session:
        session.add(
            Token(
                connection_id=netsuite_id,
                access_token_encrypted=vault.encrypt("plain-access-token") if expires_in is not None else "",
                expires_at=None if expires_in is None else now + timedelta(seconds=expires_in),
                refreshed_at=now,
                reason="pre-refresh before expiry",
                failures=failures,
                cooldown_until=None if cooldown_in is None else now + timedelta(seconds=cooldown_in),
            )
        )

    statuses = {t.connection_id: t for t in token_overview(engine, now=now)}

    assert statuses[netsuite_id].state == state
    assert statuses[zuora_id].state == "none"  # no token row at all
    assert "plain-access-token" not in repr(statuses) and "token" not in {f.name for f in fields(TokenStatus)}


def test_payments_page_pages_newest_first_per_integration(engine: Engine, vault: Vault) -> None:
    integration_id, _, _ = integration(engine, vault)
    with session_scope(engine) as session:
        for day in range(1, 8):
            session.add(
                Payment(
                    integration_id=integration_id, zuora_id=f"P{day}", number=f"P-0000{day}", amount=10.0 * day,
                    currency="USD", status="Processed", effective_date=f"2026-03-0{day}",
                )
            )  # fmt: skip

    first = payments_page(engine, integration_id=integration_id, limit=3)
    last = payments_page(engine, integration_id=integration_id, limit=3, offset=6)

    assert first.total == 7 and [p.number for p in first.rows] == ["P-00007", "P-00006", "P-00005"]
    assert [p.number for p in last.rows] == ["P-00001"]
    assert payments_page(engine, integration_id=integration_id + 1).total == 0


# --- channels ---------------------------------------------------------------------------------


def keep_alive(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings, *, days: float = 0
) -> dict[str, str]:
    services = Services(engine=engine, vault=vault, settings=settings)

    async def run() -> dict[str, str]:
        try:
            return await channels.keep_alive(services, now=utcnow() + timedelta(days=days))
        finally:
            await services.aclose()

    return asyncio.run(run())


def test_channel_keep_alive_records_renewal_history_the_page_lists(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    notify_url = f"{stack.runner_url}/webhooks/zoho/{stack.zoho_integration_key}"
    good = channel_store.create_channel(
        engine,
        vault,
        integration_id=stack.zoho_integration_id,
        events=["Accounts.all"],
        notify_url=notify_url,
    )
    # Zoho refuses this one both ways (an unknown module): it fails, keeping the expiry it had (none).
    bad = channel_store.create_channel(
        engine, vault, integration_id=stack.zoho_integration_id, events=["Widgets.all"], notify_url=notify_url
    )

    keep_alive(stack, engine, vault, settings)  # Zoho never heard of the good one: re-provisioned
    first = {c.channel: c for c in channel_overview(engine)}
    keep_alive(stack, engine, vault, settings, days=6.5)  # within a day of expiry: renewed
    later = {c.channel: c for c in channel_overview(engine)}
    history = renewal_history(engine, channel_id=good.id)

    live = first[good.channel_id]
    assert (live.status, live.health, live.integration) == ("active", "ok", "NetSuite ↔ Zoho CRM (demo)")
    assert live.time_to_expiry is not None and live.time_to_expiry > timedelta(days=6).total_seconds()
    assert [c.channel for c in first.values()] == [good.channel_id, bad.channel_id]  # never-enabled last
    assert [r.action for r in history] == ["renewed", "re-provisioned"]
    assert history[0].expires_at == later[good.channel_id].expires_at
    assert [r.action for r in later[good.channel_id].recent] == ["renewed", "re-provisioned"]
    failed = later[bad.channel_id]
    assert (failed.status, failed.health, failed.time_to_expiry) == ("failed", "problem", None)
    assert [(r.action, r.expires_at) for r in failed.recent] == [("failed", None), ("failed", None)]
    assert failed.recent[0].detail and "INVALID_DATA" in failed.recent[0].detail


def test_channel_overview_keeps_only_the_latest_renewals_per_channel(engine: Engine, vault: Vault) -> None:
    integration_id, _, _ = integration(engine, vault)
    channel = channel_store.create_channel(
        engine, vault, integration_id=integration_id, events=["Accounts.all"], notify_url="https://x.test/",
        expires_at=NOW + timedelta(hours=5),
    )  # fmt: skip
    with session_scope(engine) as session:
        for hour in range(8):
            at = NOW - timedelta(hours=8 - hour)
            session.add(ChannelRenewal(channel_id=channel.id, action="renewed", expires_at=at, at=at))

    (status,) = channel_overview(engine, now=NOW)

    assert len(status.recent) == 5 and status.recent[0].at == NOW - timedelta(hours=1)
    assert status.health == "expiring" and status.time_to_expiry == 5 * 3600
    assert len(renewal_history(engine)) == 8


# --- connections: re-ping and secret rotation -------------------------------------------------


def test_reping_stores_the_verdict_on_the_connection(stack: Stack, engine: Engine, vault: Vault) -> None:
    with Session(engine) as session:
        ids = {c.system: c.id for c in session.exec(select(Connection)).all()}
    zuora = crud.get_connection(engine, connection_id=ids["zuora"])
    assert zuora is not None
    secrets = crud.connection_secrets(vault, zuora)

    good = reping(engine, vault, connection_id=ids["netsuite"], sandbox=True)
    with session_scope(engine) as session:  # a wrong client secret: the ping fails, saying why
        row = session.get(Connection, ids["zuora"])
        assert row is not None
        row.secrets_encrypted = vault.encrypt({**secrets, "client_secret": "wrong-secret-value"})
    bad = reping(engine, vault, connection_id=ids["zuora"], sandbox=True)

    statuses = {s.id: s for s in connection_overview(engine)}
    assert good.ok and statuses[ids["netsuite"]].ping_state == "ok"
    assert statuses[ids["netsuite"]].last_ping_message == good.message
    assert not bad.ok and statuses[ids["zuora"]].ping_state == "failed"
    assert "wrong-secret-value" not in (statuses[ids["zuora"]].last_ping_message or "")
    assert statuses[ids["zoho"]].ping_state == "never"
    assert statuses[ids["netsuite"]].integrations == ["NetSuite ↔ Zoho CRM (demo)", "NetSuite ↔ Zuora (demo)"]
    assert "never-shown" not in repr(statuses) and "private_key" not in repr(
        asdict(statuses[ids["netsuite"]])
    )


def test_reping_of_each_demo_connection_succeeds(stack: Stack, engine: Engine, vault: Vault) -> None:
    # The demo's connections are complete forms (the Zuora one names its environment), so the app's
    # re-ping and the runner's outage re-ping of them succeed against the emulators.
    with Session(engine) as session:
        ids = {c.system: c.id for c in session.exec(select(Connection)).all()}
    results = {system: reping(engine, vault, connection_id=i or 0, sandbox=True) for system, i in ids.items()}
    assert {system: (r.ok, r.message if not r.ok else "") for system, r in results.items()} == {
        system: (True, "") for system in ids
    }


def test_reping_of_an_unknown_connection_is_refused(engine: Engine, vault: Vault) -> None:
    with pytest.raises(LookupError, match="no connection 999"):
        reping(engine, vault, connection_id=999, sandbox=True)


def test_rotated_secret_is_new_and_the_old_one_still_works_during_grace(
    stack: Stack, engine: Engine, vault: Vault
) -> None:
    old = stack.webhook_secret

    rotated = rotate_secret(engine, vault, integration_id=stack.integration_id, name="netsuite_secret")
    answers = {
        label: post_netsuite_event(stack, secret)
        for label, secret in (("old", old), ("new", rotated.secret), ("wrong", "nope"))
    }

    assert rotated.secret != old and len(rotated.secret) >= 40
    assert answers == {"old": 202, "new": 202, "wrong": 401}
    assert rotated.previous_valid_until is not None
    assert timedelta(hours=23) < rotated.previous_valid_until - utcnow() <= timedelta(hours=24)
    (admin,) = [i for i in integration_overview(engine, vault) if i.id == stack.integration_id]
    (status,) = [s for s in admin.secrets if s.name == "netsuite_secret"]
    assert status.is_set and status.previous_valid_until == rotated.previous_valid_until
    assert old not in repr(admin) and rotated.secret not in repr(admin)


def test_rotation_with_no_grace_revokes_the_old_secret_at_once(engine: Engine, vault: Vault) -> None:
    integration_id, _, _ = integration(engine, vault)
    found = crud.get_integration(engine, integration_id=integration_id)
    assert found is not None
    old = crud.integration_secrets(vault, found)["zuora_hmac_secret"]

    rotated = rotate_secret(
        engine, vault, integration_id=integration_id, name="zuora_hmac_secret", grace_seconds=0
    )

    after = crud.get_integration(engine, integration_id=integration_id)
    assert after is not None
    assert webhook_secrets.accepted(vault, after, "zuora_hmac_secret") == [rotated.secret]
    assert old != rotated.secret and rotated.previous_valid_until is None


@pytest.mark.parametrize(("name", "error"), [("private_key", ValueError), ("netsuite_secret", LookupError)])
def test_rotation_refuses_unknown_secrets_and_integrations(
    engine: Engine, vault: Vault, name: str, error: type[Exception]
) -> None:
    with pytest.raises(error):
        rotate_secret(engine, vault, integration_id=999, name=name)


def test_integration_overview_lists_secrets_of_its_senders_and_backfillable_flows(
    engine: Engine, vault: Vault
) -> None:
    integration_id, _, _ = integration(engine, vault)

    (admin,) = integration_overview(engine, vault)

    assert admin.id == integration_id and admin.systems == ("netsuite", "zuora")
    assert [s.name for s in admin.secrets] == ["netsuite_secret", "zuora_hmac_secret"]
    assert all(s.is_set and s.previous_valid_until is None for s in admin.secrets)
    assert list(admin.backfillable) == ["customer_account"]  # subscription events come from Zuora
    assert admin.default_grace == 24 * 3600


def post_netsuite_event(stack: Stack, secret: str) -> int:
    """POST a change notice as the User Event script does; returns the runner's status code."""
    response = httpx2.post(
        stack.webhook_url,
        json={"recordType": "customer", "id": "999999", "eventType": "edit"},
        headers={"X-Webhook-Secret": secret},
        timeout=10,
    )
    return response.status_code
