"""The Health page (the app's default page) through Streamlit's AppTest, on an empty and on a seeded SQLite."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from streamlit.testing.v1 import AppTest

from storage import channels as channel_store
from storage import leases
from storage.crypto import get_vault
from storage.db import session_scope
from storage.models import ChannelRenewal, Heartbeat, Payment, Token
from storage.queue import enqueue
from storage.types import utcnow
from tests.ui.conftest import APP_PATH, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
RUNNER = "runner-host-1234"
PAYMENTS = 30  # more than one page of 25


def open_app() -> AppTest:
    """The app as a browser first sees it: Health is the default page."""
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts: list[Any] = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(w.value for w in at.warning),
        *(i.value for i in at.info),
    ]
    return "\n".join(str(p) for p in parts)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart")) + len(at.get("arrow_vega_lite_chart"))


@pytest.fixture
def busy(seeded_audit: SeededAudit) -> SeededAudit:
    """The seeded audit records plus what a running runner leaves: a heartbeat, waiting jobs, a token,
    a Zoho channel with its renewals, and mirrored payments."""
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    now = utcnow()
    leases.beat(engine, RUNNER, details={"completed": 42})
    channel = channel_store.create_channel(
        engine, get_vault(), integration_id=integration_id, events=["Accounts.all"],
        notify_url="https://runner.test/webhooks/zoho/acme", expires_at=now + timedelta(hours=5),
    )  # fmt: skip
    with session_scope(engine) as session:
        for minutes in (7, 2):
            enqueue(
                session, integration_id=integration_id, flow="customer_account", payload={"id": "1"},
                run_after=now - timedelta(minutes=minutes),
            )  # fmt: skip
        session.add(
            Token(
                connection_id=seeded_audit.connection_ids[1], access_token_encrypted=get_vault().encrypt("tok-xyz"),
                expires_at=now + timedelta(minutes=45), refreshed_at=now - timedelta(minutes=15), reason="expiring",
            )
        )  # fmt: skip
        session.add(ChannelRenewal(channel_id=channel.id, action="renewed", expires_at=channel.expires_at))
        for n in range(PAYMENTS):
            session.add(
                Payment(
                    integration_id=integration_id, zuora_id=f"8a8{n:03d}", number=f"P-{n:05d}", amount=100.0 + n,
                    currency="USD", status="Processed", effective_date=f"2026-01-{1 + n % 28:02d}",
                )
            )  # fmt: skip
    return seeded_audit


def test_health_page_on_an_empty_database_says_how_to_start_the_runner(empty_database: str) -> None:
    at = open_app()

    assert [t.value for t in at.title] == ["Health"]
    assert "python -m runner" in at.warning[0].value
    assert metrics(at)["Queue depth"] == "0" and metrics(at)["Heartbeat age"] == "no runner"
    shown = texts(at)
    assert "No records synced" in shown and "No payments mirrored yet" in shown
    assert "No Zoho notification channels yet" in shown and "No connections yet" in shown


def test_health_page_shows_runner_queue_charts_tokens_channels_and_payments(busy: SeededAudit) -> None:
    at = open_app()

    shown = texts(at)
    assert not at.warning and not at.error
    assert "alive" in shown and RUNNER in shown and "42 jobs done" in shown
    assert metrics(at)["Queue depth"] == "2" and metrics(at)["Oldest job waiting"] == "7 min"
    assert charts(at) == 2  # throughput bars, error-rate line
    tokens, channels, renewals, payments = (frame.value for frame in at.dataframe)
    assert list(tokens["state"]) == ["none", "valid"]
    assert list(tokens["connection"]) == ["NetSuite production", "Zuora US"]
    assert "tok-xyz" not in tokens.to_string()
    assert list(channels["health"]) == ["expiring"] and channels["time_to_expiry"][0].startswith("in 4 h")
    assert list(renewals["action"]) == ["renewed"]
    assert len(payments) == 25 and "Showing 1–25 of 30" in shown


def test_health_page_flags_a_runner_that_stopped_beating(busy: SeededAudit) -> None:
    with session_scope(busy.engine) as session:
        session.execute(update(Heartbeat).values(seen_at=utcnow() - timedelta(minutes=5)))

    at = open_app()

    assert "No runner has reported for 5 min" in at.error[0].value
    assert "stale" in texts(at)


def test_health_page_window_and_payment_pages_can_be_changed(busy: SeededAudit) -> None:
    at = open_app()

    at.segmented_control(key="health_window").set_value("Last hour").run()
    at.pagination(key="health_payments_page").select(2).run()

    assert not at.exception
    assert "Records per minute: 2 in the window" in texts(at)  # the 3-hour-old record is outside
    assert len(at.dataframe[-1].value) == PAYMENTS - 25


def test_health_page_leaves_out_runners_that_stopped_long_ago(busy: SeededAudit) -> None:
    leases.beat(busy.engine, "old-runner", details={})
    with session_scope(busy.engine) as session:
        session.execute(
            update(Heartbeat)
            .where(Heartbeat.runner == "old-runner")  # type: ignore[arg-type]
            .values(seen_at=utcnow() - timedelta(days=2))
        )

    at = open_app()

    shown = texts(at)
    assert RUNNER in shown and "old-runner" not in shown
    assert "1 runner that stopped more than an hour ago is not listed" in shown
    assert not at.error  # the freshest runner is alive
