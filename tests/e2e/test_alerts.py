"""Alerts end to end: each kind is driven by a real emulator condition through the running stack, and
arrives once as a signed webhook and an email, then once more as a resolved notice when it clears.

The cases share one stack per database (a stack costs more than most cases): before each case the stack
is calmed (faults off, quick-clearing thresholds, every incident resolved and its notices delivered) and
the sinks emptied, so each case sees only its own incident's notices.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from runner.alerts import (
    MAX_ATTEMPTS,
    TITLES,
    DeliveryPolicy,
    IncidentView,
    deliver_pending,
    incident_overview,
    send_test,
    sign,
    verify_signature,
)
from storage import alerts as store
from storage import channels as channel_store
from storage import crud
from storage.alerts import IncidentFilter, IncidentKind
from storage.crypto import Vault
from storage.models import Channel, Connection
from storage.settings import Settings
from tests.e2e.alert_sinks import SmtpSink, WebhookReceiver, smtp_sink, webhook_receiver
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for

SECRET = "alert-signing-secret"
SWEEP = 0.3  # seconds between alert sweeps in these tests
CALM = {  # between cases: thresholds that clear at once, and no error-rate or quiet-source watch
    "dead_window_minutes": 0.02,
    "quiet_minutes": {},
    "error_rate_threshold": 0.5,
    "error_rate_window_minutes": 5,
    "error_rate_min_records": 10_000,
}


@dataclass
class Alerting:
    stack: Stack
    receiver: WebhookReceiver
    sink: SmtpSink
    engine: Engine
    vault: Vault

    def configure(self, **changes: Any) -> None:
        configure(self.engine, self.vault, self.receiver, self.sink, **changes)

    def calm(self) -> None:
        """Back to a quiet stack: faults off, every incident resolved and its notices sent, sinks empty."""
        for emulator in (self.stack.netsuite, self.stack.zuora, self.stack.zoho):
            emulator.faults.reset()
        self.configure(**CALM)
        wait_for(
            lambda: (
                not store.open_incidents(self.engine)
                and not store.due_deliveries(self.engine, max_attempts=MAX_ATTEMPTS)
            ),
            timeout=20,
            what="the previous case's incidents to clear",
        )
        self.receiver.clear()
        self.sink.clear()

    def assert_one_incident(self, kind: str, *, timeout: float = 20.0) -> dict[str, Any]:
        """Wait for `kind`'s resolved notice; then exactly one opened and one resolved notice of one
        incident arrived, signed, by webhook and by email. Returns the incident as the webhook told it."""
        opened = self.receiver.wait(kind, "opened", timeout=timeout)
        resolved = self.receiver.wait(kind, "resolved", timeout=timeout)
        title = TITLES[IncidentKind(kind)]
        emails = wait_for(
            lambda: len(self.sink.subjects(title)) >= 2 and self.sink.subjects(title), timeout=10
        )
        assert len(self.receiver.of(kind, "opened")) == 1
        assert len(self.receiver.of(kind, "resolved")) == 1
        assert opened.incident["id"] == resolved.incident["id"]
        assert opened.verified and resolved.verified
        assert resolved.incident["status"] == "resolved" and opened.payload["text"]
        assert sorted(s.startswith("[ml-connector] Resolved:") for s in emails) == [False, True]
        return opened.incident


def configure(
    engine: Engine, vault: Vault, receiver: WebhookReceiver, sink: SmtpSink, **changes: Any
) -> None:
    store.save_settings(
        engine,
        vault,
        by="test",
        changes={
            "webhook_url": receiver.url,
            "smtp_host": "127.0.0.1",
            "smtp_port": sink.port,
            "smtp_from": "alerts@example.com",
            "smtp_to": ["ops@example.com"],
            "smtp_starttls": False,
            "check_seconds": SWEEP,
            "outage_failures": 0,  # pausing has tests of its own (test_outage_pause)
            **changes,
        },
        webhook_secret=SECRET,
    )


@pytest.fixture(scope="module")
def shared(module_engine: Engine, module_vault: Vault, module_settings: Settings) -> Iterator[Alerting]:
    quick = module_settings.model_copy(update={"token_check_interval": 0.5, "channel_check_interval": 0.5})
    with webhook_receiver(SECRET) as receiver, smtp_sink() as sink:
        # Before the runner starts: it reads the sweep cadence at start.
        configure(module_engine, module_vault, receiver, sink, **CALM)
        with running_stack(module_engine, module_vault, quick) as stack:
            yield Alerting(stack, receiver, sink, module_engine, module_vault)


@pytest.fixture
def alerting(shared: Alerting) -> Alerting:
    shared.calm()
    return shared


# --- the signature ------------------------------------------------------------------------------


def test_verify_signature_accepts_our_signature_and_refuses_any_change() -> None:
    body, now = b'{"text":"hello"}', time.time()
    stamp = str(int(now))
    good = sign(SECRET, body, stamp)

    assert good.startswith("sha256=") and len(good) == len("sha256=") + 64
    assert verify_signature(SECRET, body, stamp, good, now=now)
    assert not verify_signature(SECRET, body + b" ", stamp, good, now=now)  # body changed
    assert not verify_signature("another secret", body, stamp, good, now=now)
    assert not verify_signature(SECRET, body, str(int(now) + 1), good, now=now)  # timestamp changed
    assert not verify_signature(SECRET, body, stamp, good, now=now + 3600)  # replayed an hour later
    assert not verify_signature(SECRET, body, "yesterday", good, now=now)


# --- delivery without the stack ---------------------------------------------------------------


def test_a_notice_the_receiver_cannot_take_is_kept_as_failed_with_its_error(
    engine: Engine, vault: Vault
) -> None:
    store.save_settings(
        engine,
        vault,
        by="test",
        changes={"webhook_url": "http://127.0.0.1:9/nobody-listens"},
        webhook_secret="s",
    )
    incident, _ = store.open_or_touch(engine, kind="error_rate", subject="integration:1", summary="too many")

    sent = asyncio.run(deliver_pending(engine, vault, policy=DeliveryPolicy(tries=2, base=0.0)))

    [delivery] = store.deliveries_of(engine, incident_id=incident.id or 0)
    assert sent == 0
    assert (delivery.status, delivery.attempts) == ("failed", 2)
    assert delivery.error and "Connect" in delivery.error
    assert store.list_incidents(engine)[0].status == "open"  # still visible in the app


# --- each kind from its emulator condition ----------------------------------------------------------


def test_a_high_error_rate_alerts_once_then_resolves_when_records_go_through_again(
    alerting: Alerting,
) -> None:
    # First of the stack's cases (pytest keeps file order within a database), so the audit trail holds
    # only this case's records.
    stack = alerting.stack
    alerting.configure(error_rate_threshold=0.5, error_rate_min_records=3, error_rate_window_minutes=5)
    stack.zuora.faults.fail_next(400, 1_000)  # Zuora refuses every record
    for n in range(3):
        stack.create_customer({"companyName": f"Refused {n}"})
    alerting.receiver.wait(IncidentKind.ERROR_RATE, "opened")
    stack.zuora.faults.reset()  # and takes them again

    customers = [stack.create_customer({"companyName": f"Accepted {n}"}) for n in range(4)]
    wait_for(lambda: all(stack.zuora_accounts(c) for c in customers), timeout=20, what="the accepted records")

    incident = alerting.assert_one_incident(IncidentKind.ERROR_RATE)
    assert incident["details"]["failed"] == 3


def test_a_record_the_target_rejects_alerts_once_then_resolves_when_no_more_jobs_die(
    alerting: Alerting,
) -> None:
    # CALM's dead_window_minutes (1.2 s): resolved once that passes without another dead job.
    alerting.stack.zuora.faults.fail_next(400)  # Zuora refuses the next record

    alerting.stack.create_customer({"companyName": "Rejected Co"})

    incident = alerting.assert_one_incident(IncidentKind.JOB_DEAD)
    assert incident["details"]["flow"] == "customer_account" and incident["count"] == 1

    def shown() -> IncidentView:  # as the alerts page shows it
        views = incident_overview(alerting.engine, filters=IncidentFilter(kind=IncidentKind.JOB_DEAD))
        return next(v for v in views if v.id == incident["id"])

    wait_for(
        lambda: sorted((n.event, n.channel, n.status) for n in shown().notices) == ALL_SENT,
        timeout=10,
        what="every notice recorded as sent",
    )
    view = shown()
    assert view.status == "resolved" and view.integration == "NetSuite ↔ Zuora (demo)"
    assert view.title == "Jobs are dying" and view.summary.startswith("1 NetSuite customer")


ALL_SENT = [
    ("opened", "email", "sent"),
    ("opened", "webhook", "sent"),
    ("resolved", "email", "sent"),
    ("resolved", "webhook", "sent"),
]


def test_a_token_refresh_the_system_refuses_alerts_once_then_resolves_when_the_credentials_are_fixed(
    alerting: Alerting,
) -> None:
    engine, vault = alerting.engine, alerting.vault
    with Session(engine) as session:
        zuora = session.exec(select(Connection).where(col(Connection.system) == "zuora")).one()
    good = crud.connection_secrets(vault, zuora)

    def save(secrets: dict[str, Any]) -> None:
        crud.update_connection(
            engine, vault, connection_id=zuora.id or 0, name=zuora.name, base_url=zuora.base_url,
            environment=zuora.environment, settings=zuora.settings, secrets=secrets,
        )  # fmt: skip

    save({**good, "client_secret": "not-the-secret"})
    alerting.stack.create_customer({"companyName": "Needs A Token"})  # the job asks for a token
    alerting.receiver.wait(IncidentKind.TOKEN_REFRESH_FAILED, "opened")
    save(good)  # a person fixes the connection

    incident = alerting.assert_one_incident(IncidentKind.TOKEN_REFRESH_FAILED)
    assert incident["subject"] == f"connection:{zuora.id}"
    assert "not-the-secret" not in str(alerting.receiver.received) + str(alerting.sink.messages)


def test_a_channel_zoho_refuses_to_renew_alerts_once_then_resolves_when_renewed(alerting: Alerting) -> None:
    stack = alerting.stack
    stack.zoho.faults.fail_next(400, 100_000)  # every renewal and re-provisioning is refused
    channel_store.create_channel(
        alerting.engine,
        alerting.vault,
        integration_id=stack.zoho_integration_id,
        events=["Accounts.all"],
        notify_url=f"{stack.runner_url}/webhooks/zoho/{stack.zoho_integration_key}",
    )
    alerting.receiver.wait(IncidentKind.CHANNEL_LAPSED, "opened")

    stack.zoho.faults.reset()  # Zoho takes renewals again

    incident = alerting.assert_one_incident(IncidentKind.CHANNEL_LAPSED)
    with Session(alerting.engine) as session:
        channel = session.exec(select(Channel)).one()
    assert incident["subject"] == f"channel:{channel.channel_id}"
    assert channel.status == "active" and channel.last_error is None


def test_a_quiet_webhook_source_alerts_once_then_resolves_when_webhooks_arrive(alerting: Alerting) -> None:
    stack = alerting.stack
    alerting.configure(quiet_minutes={f"{stack.integration_id}/netsuite": 0.03})  # quiet after 1.8 s

    alerting.receiver.wait(IncidentKind.SOURCE_QUIET, "opened")
    stack.create_customer({"companyName": "Breaks The Silence"})

    incident = alerting.assert_one_incident(IncidentKind.SOURCE_QUIET)
    assert incident["subject"] == f"source:{stack.integration_id}:netsuite"


def test_a_test_notice_reaches_every_configured_channel_and_opens_no_incident(alerting: Alerting) -> None:
    results = send_test(alerting.engine, alerting.vault)

    assert [(r.channel, r.ok) for r in results] == [("email", True), ("webhook", True)]
    [received] = alerting.receiver.received
    assert received.verified and received.incident["kind"] == "test"
    assert [m["To"] for m in alerting.sink.messages] == ["ops@example.com"]
    assert store.open_incidents(alerting.engine) == []
