"""The Alerts page through AppTest: integrations paused and resumed by hand, incidents listed open first
with their notices, and the alert settings saved (a refusal naming its field saves nothing; a secret is
kept but never shown back)."""

from __future__ import annotations

from datetime import timedelta

from streamlit.testing.v1 import AppTest

from runner import outage
from storage import alerts as store
from storage.alerts import IncidentKind
from storage.crypto import get_vault
from storage.db import get_engine
from storage.types import utcnow
from tests.ui.conftest import APP_PATH, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
PASSWORD = "pw-Zq81-never-shown"
SIGNING_SECRET = "whsec-Kx7-never-shown"


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT), user="dana").run()
    at.switch_page("views/alerts.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(i.value for i in at.info),
        *(s.value for s in at.success),
        *(w.value for w in at.warning),
        *(x.label for x in at.expander),
    ]
    return "\n".join(str(p) for p in parts).replace("\\", "")  # Markdown escapes away


def everything(at: AppTest) -> str:
    """Every element's protobuf, widget values and placeholders included."""

    def walk(node: object) -> list[str]:
        proto = getattr(node, "proto", None)
        found = [str(proto)] if proto is not None else []
        for child in getattr(node, "children", {}).values():
            found += walk(child)
        return found

    return "\n".join(walk(at.main) + walk(at.sidebar))


def widget(widgets: object, label: str) -> object:
    [found] = [w for w in widgets if w.label == label]  # type: ignore[attr-defined]
    return found


def submit(at: AppTest, key: str) -> AppTest:
    at.button(key=key).click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_alerts_page_is_in_the_sidebar_and_says_when_nothing_happened(ui_database_url: str) -> None:
    at = open_page()

    assert at.title[0].value == "Alerts"
    assert [m.label for m in at.metric][:2] == ["Open now", "Resolved today (UTC)"]
    assert [m.value for m in at.metric][:2] == ["0", "0"]
    assert "No incident so far" in texts(at)
    assert at.button(key="alerts_send_test").disabled  # no channel set up yet


def test_incidents_are_listed_open_first_with_their_status_and_notices(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    store.save_settings(
        engine, get_vault(), by="test", changes={"webhook_url": "https://hooks.test/x"}, webhook_secret="s3"
    )
    earlier = utcnow() - timedelta(hours=1)
    store.open_or_touch(
        engine,
        kind=IncidentKind.ERROR_RATE,
        subject=f"integration:{integration_id}",
        integration_id=integration_id,
        summary="8 of the last 10 records failed",
        now=earlier,
    )
    store.resolve(
        engine, kind=IncidentKind.ERROR_RATE, subject=f"integration:{integration_id}", summary="back"
    )
    incident, _ = store.open_or_touch(
        engine,
        kind=IncidentKind.JOB_DEAD,
        subject=f"integration:{integration_id}:customer_account",
        integration_id=integration_id,
        summary="3 customer_account jobs died",
        count=3,
    )
    [delivery] = store.deliveries_of(engine, incident_id=incident.id or 0)
    store.record_delivery(
        engine, delivery_id=delivery.id or 0, ok=False, attempts=3, error="HTTP 502 from hooks"
    )

    at = open_page()

    shown = texts(at)
    assert shown.index("Jobs are dying") < shown.index("Error rate is high")  # open ones first
    assert "3 customer_account jobs died" in shown and "seen 3 times" in shown
    assert "How it cleared: back" in shown
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Open now"] == "1" and metrics["Resolved today (UTC)"] == "1"
    assert metrics["Notices that failed"] == "1"
    labels = [e.label for e in at.expander]
    assert any("1 failed" in label for label in labels)  # the dead-jobs incident's webhook notice
    assert "HTTP 502 from hooks" in [c.value for c in at.code]

    at.selectbox(key="alerts_status").set_value("resolved").run()
    shown = texts(at)
    assert "Error rate is high" in shown and "Jobs are dying" not in shown
    at.selectbox(key="alerts_status").set_value("All").run()
    at.selectbox(key="alerts_kind").set_value(IncidentKind.JOB_DEAD.value).run()
    shown = texts(at)
    assert "Jobs are dying" in shown and "Error rate is high" not in shown


def test_pause_then_resume_by_hand(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    at = open_page()
    assert "running" in texts(at)

    at.text_input(key=f"alerts_pause_reason_{integration_id}").input("Zuora maintenance")
    submit(at, f"alerts_pause_{integration_id}")

    status = outage.status(engine, integration_id=integration_id)
    assert status.paused and status.by == "dana" and status.reason == "Zuora maintenance"
    shown = texts(at)
    assert "Paused by dana" in shown and "Zuora maintenance" in shown

    submit(at, f"alerts_resume_{integration_id}")

    assert not outage.status(engine, integration_id=integration_id).paused
    assert "Resumed" in texts(at)
    assert at.button(key=f"alerts_pause_{integration_id}")  # it can be paused again


def test_a_pause_by_the_runner_says_why_and_what_happens_next(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    store.set_paused(
        engine,
        integration_id=integration_id,
        by=store.AUTO,
        reason="5 calls in a row to zuora failed (transient)",
        systems=["zuora"],
        next_ping_at=utcnow() + timedelta(seconds=45),
    )
    store.record_ping(
        engine,
        integration_id=integration_id,
        error="Zuora: service unavailable (503)",
        next_ping_at=utcnow() + timedelta(seconds=45),
    )

    at = open_page()

    shown = texts(at)
    assert "Paused by the runner because of an outage" in shown
    assert "5 calls in a row to zuora failed" in shown and "resumes by itself when the ping succeeds" in shown
    assert "Zuora" in shown and "Next re-ping" in shown
    assert "Zuora: service unavailable (503)" in [c.value for c in at.code]


def test_a_bad_webhook_url_names_the_field_and_saves_nothing(ui_database_url: str) -> None:
    at = open_page()
    before = store.public_settings(get_engine())

    widget(at.text_input, "SMTP host").input("smtp.example.com")
    widget(at.text_input, "Webhook URL").input("ftp://hooks.example.com")
    widget(at.text_input, "Signing secret").input(SIGNING_SECRET)
    submit(at, "alerts_delivery_save")

    [error] = at.error
    assert "webhook_url" in error.value.replace("\\", "")
    after = store.public_settings(get_engine())
    assert after.model_dump(exclude={"updated_at"}) == before.model_dump(exclude={"updated_at"})
    assert not after.webhook_secret_set and after.smtp_host == "" and store.load_settings(get_engine()).id


def test_saved_secrets_show_as_set_and_are_never_shown_back(ui_database_url: str) -> None:
    at = open_page()

    widget(at.text_input, "SMTP host").input("smtp.example.com")
    widget(at.number_input, "Port").set_value(2525)
    widget(at.text_input, "SMTP password").input(PASSWORD)
    widget(at.text_input, "From").input("alerts@example.com")
    widget(at.text_input, "To").input("ops@example.com, finance@example.com")
    widget(at.text_input, "Webhook URL").input("https://hooks.example.com/ml")
    widget(at.text_input, "Signing secret").input(SIGNING_SECRET)
    submit(at, "alerts_delivery_save")

    saved = store.public_settings(get_engine())
    assert saved.smtp_password_set and saved.webhook_secret_set and saved.updated_by == "dana"
    assert saved.smtp_to == ["ops@example.com", "finance@example.com"] and saved.smtp_port == 2525
    row = store.load_settings(get_engine())
    assert store.smtp_password(get_vault(), row) == PASSWORD
    assert store.webhook_secret(get_vault(), row) == SIGNING_SECRET
    assert "Saved." in texts(at)
    password = widget(at.text_input, "SMTP password")
    assert password.value == "" and password.placeholder == "(set — leave empty to keep)"
    assert widget(at.text_input, "Signing secret").value == ""
    assert not at.button(key="alerts_send_test").disabled
    page = everything(at)
    assert PASSWORD not in page and SIGNING_SECRET not in page

    # Saved again with the secret fields left empty: both are kept.
    widget(at.text_input, "SMTP user").input("mailer")
    submit(at, "alerts_delivery_save")
    row = store.load_settings(get_engine())
    assert row.smtp_user == "mailer" and store.smtp_password(get_vault(), row) == PASSWORD
    assert store.webhook_secret(get_vault(), row) == SIGNING_SECRET

    # A fresh session on the page shows them as set, and never their values.
    fresh = open_page()
    page = everything(fresh)
    assert "(set — leave empty to keep)" in page
    assert PASSWORD not in page and SIGNING_SECRET not in page


def test_thresholds_save_and_keep_the_quiet_sources(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    store.save_settings(
        engine, get_vault(), by="test", changes={"quiet_minutes": {f"{integration_id}/netsuite": 30}}
    )
    at = open_page()

    widget(at.number_input, "Pause after failures in a row").set_value(3)
    widget(at.number_input, "Error rate threshold (share)").set_value(0.25)
    submit(at, "alerts_thresholds_save")

    saved = store.public_settings(engine)
    assert saved.outage_failures == 3 and saved.error_rate_threshold == 0.25
    assert saved.quiet_minutes == {f"{integration_id}/netsuite": 30.0}

    widget(at.number_input, "Check every (seconds)").set_value(0.0)
    submit(at, "alerts_thresholds_save")

    assert "check_seconds must be above 0" in "\n".join(e.value for e in at.error).replace("\\", "")
    assert store.public_settings(engine).check_seconds == saved.check_seconds
