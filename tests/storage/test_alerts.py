"""What alerting keeps: one open incident per (kind, subject), the notice outbox, settings with their
secrets encrypted, and pauses.

The cases share one database per kind (`module_engine`): each works on incidents, integrations and
subjects of its own, and sets every setting it relies on.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from storage import alerts as store
from storage import crud
from storage.alerts import AlertDelivery, AlertSettings, IncidentFilter, IncidentStatus
from storage.crypto import Vault

WEBHOOK = {"webhook_url": "https://hooks.example.com/ml-connector"}
EMAIL = {"smtp_host": "smtp.example.com", "smtp_from": "alerts@example.com", "smtp_to": ["ops@example.com"]}
NO_CHANNELS = {"webhook_url": "", "smtp_host": ""}


def unique(prefix: str) -> str:
    return f"{prefix}:{uuid.uuid4().hex[:8]}"


def integration(engine: Engine, vault: Vault) -> int:
    """A new integration of its own (its own workspace and connections)."""
    workspace = crud.create_workspace(engine, name=unique("Alerts"))
    assert workspace.id is not None
    connections = [
        crud.create_connection(
            engine,
            vault,
            workspace_id=workspace.id,
            system=system,
            name=system,
            base_url=f"https://{system}.test",
        )
        for system in ("netsuite", "zuora")
    ]
    created = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name="Demo", key=unique("alerts").replace(":", "-"),
        source_connection_id=connections[0].id, target_connection_id=connections[1].id, flows=[],
    )  # fmt: skip
    assert created.id is not None
    return created.id


def deliveries(engine: Engine, incident_ids: list[int | None]) -> list[tuple[int, str, str]]:
    with Session(engine) as session:
        rows = session.exec(
            select(AlertDelivery)
            .where(col(AlertDelivery.incident_id).in_(incident_ids))
            .order_by(col(AlertDelivery.id))
        ).all()
        return [(row.incident_id, row.event, row.channel) for row in rows]


def test_open_or_touch_keeps_one_open_incident_per_kind_and_subject(module_engine: Engine) -> None:
    one, two = unique("connection"), unique("connection")

    first, new_first = store.open_or_touch(module_engine, kind="token_refresh_failed", subject=one)
    again, new_again = store.open_or_touch(module_engine, kind="token_refresh_failed", subject=one)
    other, new_other = store.open_or_touch(module_engine, kind="token_refresh_failed", subject=two)

    assert (new_first, new_again, new_other) == (True, False, True)
    assert again.id == first.id and again.count == 2
    assert other.id != first.id
    open_ = [i for i in store.open_incidents(module_engine) if i.subject in (one, two)]
    assert sorted(i.id or 0 for i in open_) == sorted([first.id or 0, other.id or 0])


def test_a_resolved_incident_is_closed_and_the_next_occurrence_opens_another(module_engine: Engine) -> None:
    channel = unique("channel")
    first, _ = store.open_or_touch(module_engine, kind="channel_lapsed", subject=channel, summary="lapsed")

    resolved = store.resolve(module_engine, kind="channel_lapsed", subject=channel, summary="renewed")
    nothing = store.resolve(module_engine, kind="channel_lapsed", subject=channel)
    second, is_new = store.open_or_touch(module_engine, kind="channel_lapsed", subject=channel)

    assert resolved is not None and resolved.id == first.id
    assert resolved.status == IncidentStatus.RESOLVED and resolved.resolved_at is not None
    assert resolved.details["resolution"] == "renewed"
    assert nothing is None
    assert is_new and second.id != first.id


def test_notices_are_queued_on_each_configured_channel_when_opened_and_resolved(
    module_engine: Engine, module_vault: Vault
) -> None:
    engine, subject = module_engine, unique("integration")
    store.save_settings(engine, module_vault, by="admin", changes=NO_CHANNELS)
    unsent, _ = store.open_or_touch(engine, kind="error_rate", subject=subject)  # nowhere to send it
    store.save_settings(engine, module_vault, by="admin", changes={**WEBHOOK, **EMAIL}, webhook_secret="s")

    incident, _ = store.open_or_touch(engine, kind="job_dead", subject=subject)
    store.open_or_touch(engine, kind="job_dead", subject=subject)  # touched: no notice
    store.resolve(engine, kind="job_dead", subject=subject)

    assert deliveries(engine, [unsent.id, incident.id]) == [
        (incident.id, "opened", "email"),
        (incident.id, "opened", "webhook"),
        (incident.id, "resolved", "email"),
        (incident.id, "resolved", "webhook"),
    ]


def test_settings_keep_their_secrets_encrypted_and_show_only_whether_they_are_set(
    module_engine: Engine, module_vault: Vault
) -> None:
    engine, vault = module_engine, module_vault
    shown = store.save_settings(
        engine, vault, by="admin", changes=WEBHOOK, smtp_password="hunter2", webhook_secret="s3cret"
    )
    kept = store.save_settings(engine, vault, by="bob", changes={"check_seconds": 5})  # secrets kept
    cleared = store.save_settings(engine, vault, by="admin", smtp_password="")

    with Session(engine) as session:
        row = session.get(AlertSettings, store.SETTINGS_ID)
    assert row is not None
    assert "hunter2" not in row.smtp_password_encrypted and "s3cret" not in row.webhook_secret_encrypted
    assert store.webhook_secret(vault, row) == "s3cret" and store.smtp_password(vault, row) == ""
    assert shown.smtp_password_set and shown.webhook_secret_set and shown.updated_by == "admin"
    assert kept.smtp_password_set and kept.check_seconds == 5 and kept.updated_by == "bob"
    assert kept.webhook_url == WEBHOOK["webhook_url"]
    assert not cleared.smtp_password_set and cleared.webhook_secret_set
    assert "hunter2" not in repr(shown) and "s3cret" not in repr(shown)


@pytest.mark.parametrize(
    ("changes", "complaint"),
    [
        ({"webhook_url": "ftp://example.com"}, "webhook_url"),
        ({"smtp_port": 0}, "smtp_port"),
        ({"smtp_to": ["not an address"]}, "smtp_to"),
        ({"error_rate_threshold": 1.5}, "error_rate_threshold"),
        ({"check_seconds": 0}, "check_seconds"),
        ({"outage_failures": -1}, "outage_failures"),
        ({"quiet_minutes": {"demo": 5}}, "quiet_minutes"),
        ({"quiet_minutes": {"1/netsuite": 0}}, "quiet_minutes"),
        ({"no_such_setting": 1}, "no_such_setting"),
    ],
)
def test_settings_refuse_values_that_cannot_work_and_save_nothing(
    module_engine: Engine, module_vault: Vault, changes: dict[str, Any], complaint: str
) -> None:
    before = store.public_settings(module_engine).model_dump(exclude={"updated_at"})  # now, when unsaved

    with pytest.raises(ValueError, match=complaint):
        store.save_settings(module_engine, module_vault, by="mallory", changes=changes)

    assert store.public_settings(module_engine).model_dump(exclude={"updated_at"}) == before


def test_an_outgoing_webhook_is_refused_without_a_signing_secret(
    module_engine: Engine, module_vault: Vault
) -> None:
    before = store.public_settings(module_engine).model_dump(exclude={"updated_at"})

    with pytest.raises(ValueError, match="signing secret"):
        store.save_settings(module_engine, module_vault, by="mallory", changes=WEBHOOK, webhook_secret="")

    assert store.public_settings(module_engine).model_dump(exclude={"updated_at"}) == before


def test_list_incidents_filters_by_status_kind_and_integration_newest_first(
    module_engine: Engine, module_vault: Vault
) -> None:
    engine = module_engine
    demo = integration(engine, module_vault)
    for kind in ("job_dead", "error_rate", "token_refresh_failed"):
        store.open_or_touch(engine, kind=kind, subject=f"integration:{demo}", integration_id=demo)
    store.resolve(engine, kind="job_dead", subject=f"integration:{demo}")

    def kinds(**filters: Any) -> list[str]:
        found = store.list_incidents(engine, filters=IncidentFilter(integration_id=demo, **filters))
        return [i.kind for i in found]

    assert kinds() == ["token_refresh_failed", "error_rate", "job_dead"]
    assert kinds(status="open") == ["token_refresh_failed", "error_rate"]
    assert kinds(kind="job_dead") == ["job_dead"]
    assert [
        i.status
        for i in store.list_incidents(engine, filters=IncidentFilter(integration_id=demo, kind="job_dead"))
    ] == ["resolved"]
    assert (
        store.list_incidents(engine, filters=IncidentFilter(integration_id=integration(engine, module_vault)))
        == []
    )


def test_a_pause_by_a_person_is_never_taken_over_or_resumed_by_the_runner(
    module_engine: Engine, module_vault: Vault
) -> None:
    engine = module_engine
    demo = integration(engine, module_vault)

    by_hand = store.set_paused(engine, integration_id=demo, by="alice", reason="month-end close")
    auto = store.set_paused(engine, integration_id=demo, by=store.AUTO, reason="outage", only_if_running=True)
    auto_resume = store.set_resumed(engine, integration_id=demo, by=store.AUTO, only_auto=True)

    row = store.pause_of(engine, integration_id=demo)
    assert (by_hand, auto, auto_resume) == (True, False, False)
    assert row is not None and row.paused and row.by == "alice" and row.reason == "month-end close"
    assert demo in store.paused_ids(engine)
    assert demo not in {p.integration_id for p in store.due_for_ping(engine)}  # a person's: no re-ping
    assert store.set_resumed(engine, integration_id=demo, by="alice") is True
    assert demo not in store.paused_ids(engine)
