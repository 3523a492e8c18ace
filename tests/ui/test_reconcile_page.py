"""The Reconciliation page through Streamlit's AppTest, on SQLite and on PostgreSQL; and the audit page's
replay, which asks the same update / link / skip question before it would create a record.

A finished run and its drifts are stored directly through storage.reconcile (what a runner leaves
behind); the page is then driven as a person would: read the totals and the drift list, export it, accept
a drift, link one, re-sync one that a target record already carries, and ask for a new run. Link,
re-sync and the replay's look-up talk to the Zuora emulator on loopback, as they would to Zuora.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import col, select
from streamlit.testing.v1 import AppTest

from connectors.sandbox import Sandbox, build
from demo.wiring import wire
from runner.reconcile.service import Choice, drift_csv
from storage import links
from storage import reconcile as store
from storage.audit import AuditFilter, list_records, write_record
from storage.crypto import get_vault
from storage.db import get_engine, session_scope
from storage.migrate import upgrade
from storage.models import AuditRecord, Job, JobKind, JobStatus, Outcome
from storage.reconcile import DriftKind, DriftStatus, Found, RunStatus
from storage.settings import get_settings
from tests.conftest import DATABASES
from tests.support.live import serve
from tests.ui.conftest import APP_PATH, SeededAudit, _clear_caches, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
PAGE = "views/reconcile.py"
WORKER = "test-runner"

# The run the tests store: two customers whose fields differ or are missing in Zuora, an account only
# Zuora has, and an invoice whose amount differs.
TOTALS: dict[str, Any] = {
    "flows": [
        {
            "flow": "customer_account",
            "title": "NetSuite customer → Zuora account",
            "target_system": "zuora",
            "netsuite": 120,
            "target": 118,
            "matched": 117,
            "missing_in_target": 1,
            "missing_in_source": 1,
            "field_mismatch": 1,
            "target_without_netsuite_id": 0,
            "not_compared": 0,
        },
        {
            "flow": "invoice",
            "title": "NetSuite invoice → Zuora invoice",
            "target_system": "zuora",
            "netsuite": 40,
            "target": 40,
            "matched": 40,
            "missing_in_target": 0,
            "missing_in_source": 0,
            "amount_mismatch": 1,
            "status_mismatch": 0,
        },
    ],
    "invoices": {
        "by_period": [
            {
                "period": "2026-09",
                "netsuite_count": 20,
                "netsuite_amount": "15000.00",
                "target_count": 20,
                "target_amount": "15000.00",
                "agrees": True,
            },
            {
                "period": "2026-10",
                "netsuite_count": 20,
                "netsuite_amount": "18250.50",
                "target_count": 20,
                "target_amount": "18200.50",
                "agrees": False,
            },
        ],
        "by_customer": [
            {
                "customer_id": "2042",
                "netsuite_count": 3,
                "netsuite_amount": "950.00",
                "target_count": 3,
                "target_amount": "900.00",
                "agrees": False,
            },
        ],
    },
}
PHONE = {"field": "billToContact.workPhone", "netsuite": "555-0101", "target": "555-9999"}
EMAIL = {"field": "billToContact.workEmail", "netsuite": "ap@initech.test", "target": None}
FOUND = [
    Found("customer_account", DriftKind.FIELD_MISMATCH, "2042", "A00000042", "Initech", (PHONE, EMAIL)),
    Found("customer_account", DriftKind.MISSING_IN_TARGET, "4004", None, "Hooli"),
    Found("customer_account", DriftKind.MISSING_IN_SOURCE, "9009", "A00000099", "Stray account"),
    Found(
        "invoice",
        DriftKind.AMOUNT_MISMATCH,
        "7001",
        "INV0001",
        "INV-7001",
        ({"field": "amount", "netsuite": "950.00", "target": "900.00"},),
    ),
]


@dataclass(frozen=True)
class SeededRun:
    integration_id: int
    run_id: int
    drift_ids: dict[str, int]  # source id → drift id


@pytest.fixture(params=DATABASES)
def ui_database_url(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """conftest's database for the app, here on SQLite and on PostgreSQL (its `seeded_audit` uses it)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ui.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("ML_CONNECTOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ML_CONNECTOR_KEYS", raising=False)
    _clear_caches()
    try:
        yield url
    finally:
        _clear_caches()


def seed_run(integration_id: int, found: list[Found] = FOUND) -> SeededRun:
    """A finished run with TOTALS and `found`, stored as a runner stores it."""
    engine = get_engine()
    run = store.create_run(
        engine, integration_id=integration_id, requested_by="schedule", trigger="scheduled"
    )
    assert run.id is not None
    claimed = store.claim_run(engine, worker=WORKER, lease=60.0)
    assert claimed is not None and claimed.id == run.id
    assert store.finish_run(engine, run_id=run.id, worker=WORKER, totals=TOTALS, found=found)
    drifts = store.list_drifts(engine, filters=store.DriftFilter(run_id=run.id))
    return SeededRun(integration_id, run.id, {d.source_id: d.id or 0 for d in drifts})


@pytest.fixture
def seeded_run(seeded_audit: SeededAudit) -> SeededRun:
    return seed_run(seeded_audit.integration_id)


@dataclass(frozen=True)
class Sandboxed:
    sandbox: Sandbox
    run: SeededRun


@pytest.fixture
def sandboxed_run(ui_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandboxed]:
    """The emulators on loopback, the demo integration wired to them, and a finished run of it."""
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    get_settings.cache_clear()
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(sandbox, name).app, sock=sockets[name]))
        engine = get_engine()
        upgrade(engine)
        wiring = wire(engine, get_vault(), sandbox.credentials)
        yield Sandboxed(sandbox, seed_run(wiring.integration_id))


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page(PAGE).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def pick(at: AppTest, integration_id: int) -> AppTest:
    """Choose the integration when the page offers a choice (the demo wiring makes two)."""
    if any(s.key == "reconcile_integration" for s in at.selectbox):
        at.selectbox(key="reconcile_integration").set_value(integration_id).run()
    return at


def open_drift(at: AppTest, drift_id: int) -> AppTest:
    at.number_input(key="drift").set_value(drift_id).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts: list[Any] = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(w.value for w in at.warning),
        *(i.value for i in at.info),
        *(s.value for s in at.success),
    ]
    return "\n".join(str(p) for p in parts)


def drift_table(at: AppTest) -> Any:
    return next(d.value for d in at.dataframe if "field" in d.value.columns and "drift" in d.value.columns)


def jobs() -> list[Job]:
    with session_scope(get_engine()) as session:
        return list(
            session.exec(select(Job).where(col(Job.kind) == JobKind.SYNC).order_by(col(Job.id))).all()
        )


def decisions(source_id: str) -> list[str]:
    """The actions of the audit records written for `source_id`, oldest first."""
    records = list_records(get_engine(), filters=AuditFilter(source_id=source_id), limit=50)
    return [r.action or "" for r in reversed(records)]


# --- reading ------------------------------------------------------------------------------------------


def test_reconcile_page_without_a_run_says_how_to_start_one(seeded_audit: SeededAudit) -> None:
    at = open_page()

    assert [t.value for t in at.title] == ["Reconciliation"]
    assert "No reconciliation has finished for this integration yet" in texts(at)
    assert "**No reconciliation yet** for this integration." in texts(at)


def test_reconcile_page_shows_the_totals_side_by_side(seeded_run: SeededRun) -> None:
    at = open_page()

    metrics = {(m.label, m.value) for m in at.metric}
    assert {("NetSuite", "120"), ("Zuora", "118"), ("NetSuite", "40"), ("Zuora", "40")} <= metrics
    shown = texts(at)
    assert f"**Last run #{seeded_run.run_id}** :green-badge[:material/check_circle: succeeded]" in shown
    assert "scheduled, by the daily schedule" in shown
    assert "117 matched · 1 missing in Zuora · 1 only in Zuora · 1 with fields that differ" in shown
    periods = next(d.value for d in at.dataframe if "period" in d.value.columns)
    assert list(periods["period"]) == ["2026-09", "2026-10"]
    assert list(periods["difference"]) == [0.0, -50.0]
    assert list(periods["verdict"]) == ["✓ agree", "✗ differ"]
    [chart] = at.get("vega_lite_chart")  # the amounts per period, both sides' bars next to each other
    assert '"NetSuite"' in chart.proto.spec and '"Zuora"' in chart.proto.spec


def test_reconcile_page_lists_each_field_difference(seeded_run: SeededRun) -> None:
    at = open_page()

    table = drift_table(at)
    initech = table[table["source_id"] == "2042"]
    assert list(initech["field"]) == ["billToContact.workPhone", "billToContact.workEmail"]
    assert list(initech["netsuite"]) == ["555-0101", "ap@initech.test"]
    assert list(initech["target"]) == ["555-9999", "—"]
    hooli = table[table["source_id"] == "4004"].iloc[0]
    assert (hooli["kind"], hooli["netsuite"], hooli["target"]) == ("missing in Zuora", "present", "missing")
    assert set(table["status"]) == {"open"}
    assert {(m.label, m.value) for m in at.metric} >= {("Found by this run", "4"), ("Open", "4")}


def test_reconcile_page_filters_the_drift_list(seeded_run: SeededRun) -> None:
    at = open_page()

    at.selectbox(key="reconcile_flow").set_value("invoice").run()
    assert list(drift_table(at)["source_id"]) == ["7001"]

    at.selectbox(key="reconcile_flow").set_value("all").run()
    at.selectbox(key="reconcile_kind").set_value(DriftKind.MISSING_IN_SOURCE).run()
    assert list(drift_table(at)["source_id"]) == ["9009"]

    at.selectbox(key="reconcile_status").set_value(DriftStatus.ACCEPTED).run()
    assert "No drift matches these filters" in texts(at)


def test_reconcile_page_exports_the_drift_list_as_csv(seeded_run: SeededRun) -> None:
    at = open_page()

    [button] = [b for b in at.get("download_button") if b.proto.label == "Download CSV"]
    assert button.proto.disabled is False
    rows = list(csv.DictReader(io.StringIO(drift_csv(get_engine(), run_id=seeded_run.run_id))))
    assert [(r["source_id"], r["field"], r["netsuite"], r["target"]) for r in rows] == [
        ("2042", "billToContact.workPhone", "555-0101", "555-9999"),
        ("2042", "billToContact.workEmail", "ap@initech.test", ""),
        ("4004", "", "", ""),
        ("9009", "", "", ""),
        ("7001", "amount", "950.00", "900.00"),
    ]


# --- fixing ---------------------------------------------------------------------------------------------


def test_accept_without_a_reason_is_refused_naming_the_reason(seeded_run: SeededRun) -> None:
    drift_id = seeded_run.drift_ids["2042"]
    at = open_drift(open_page(), drift_id)

    at.button(key=f"reconcile_accept_{drift_id}").click().run()

    [refusal] = at.error
    shown = refusal.value.replace("\\", "")  # as drawn: Markdown escapes removed
    assert shown == "Not done — reason: say why this difference is acceptable (the reason is required)."
    drift = store.get_drift(get_engine(), drift_id=drift_id)
    assert drift is not None and drift.status == DriftStatus.OPEN
    assert "accept" not in decisions("2042")


def test_accept_with_a_reason_marks_the_drift_accepted_and_audits_it(seeded_run: SeededRun) -> None:
    drift_id = seeded_run.drift_ids["2042"]
    at = open_drift(open_page(), drift_id)

    at.text_area(key=f"reconcile_reason_{drift_id}").input("Zuora keeps the billing phone")
    at.button(key=f"reconcile_accept_{drift_id}").click().run()

    assert "Accepted: the reason is in the audit trail" in at.success[0].value
    drift = store.get_drift(get_engine(), drift_id=drift_id)
    assert drift is not None
    assert (drift.status, drift.decided_by, drift.reason) == (
        DriftStatus.ACCEPTED,
        "admin",
        "Zuora keeps the billing phone",
    )
    assert decisions("2042")[-1] == "accept"
    table = drift_table(at)
    assert set(table[table["source_id"] == "2042"]["status"]) == {"accepted"}
    assert ("Accepted", "1") in {(m.label, m.value) for m in at.metric}


def test_resync_of_a_record_found_only_in_zuora_is_not_offered(seeded_run: SeededRun) -> None:
    drift_id = seeded_run.drift_ids["9009"]
    at = open_drift(open_page(), drift_id)

    assert at.button(key=f"reconcile_resync_{drift_id}").disabled
    assert at.button(key=f"reconcile_link_{drift_id}").disabled
    assert "The record is not in NetSuite, so there is nothing to sync from" in texts(at)


def test_run_now_requests_a_run_and_follows_it(seeded_run: SeededRun) -> None:
    at = open_page()

    at.button(key="reconcile_run_now").click().run()

    latest = store.latest_run(get_engine(), integration_id=seeded_run.integration_id)
    assert latest is not None and latest.id != seeded_run.run_id
    assert (latest.status, latest.trigger, latest.requested_by) == (RunStatus.REQUESTED, "manual", "admin")
    assert at.button(key="reconcile_run_now").disabled  # one run at a time
    [bar] = at.progress
    assert bar.text == f"Run #{latest.id} is waiting for a runner to pick it up…"
    store.claim_run(get_engine(), worker=WORKER, lease=60.0)
    store.progress(
        get_engine(),
        run_id=latest.id or 0,
        worker=WORKER,
        lease=60.0,
        phase="comparing NetSuite customer → Zuora account",
        done=30,
        total=120,
    )

    at.run()

    [bar] = at.progress
    assert (
        bar.text
        == f"Run #{latest.id}: Comparing NetSuite customer → Zuora account · 30 of 120 NetSuite records"
    )
    assert bar.value == 25
    # Until it finishes, the totals and drifts are the last finished run's.
    assert f"From run #{seeded_run.run_id}" in texts(at)


def test_a_failed_run_says_why_and_keeps_the_last_finished_report(seeded_run: SeededRun) -> None:
    engine = get_engine()
    failed = store.create_run(engine, integration_id=seeded_run.integration_id, requested_by="admin")
    store.claim_run(engine, worker=WORKER, lease=60.0)
    store.fail_run(engine, run_id=failed.id or 0, worker=WORKER, error="zuora: the client id was refused")

    at = open_page()

    [error] = at.error
    assert error.value.replace("\\", "").startswith(
        f"Run #{failed.id} failed: zuora: the client id was refused. Fix what it names"
    )
    assert f"From run #{seeded_run.run_id}" in texts(at)
    assert not at.button(key="reconcile_run_now").disabled


# --- against the Zuora emulator ------------------------------------------------------------------------


def test_link_sets_the_netsuite_id_on_the_account_and_queues_a_sync(sandboxed_run: Sandboxed) -> None:
    run = sandboxed_run.run
    zuora = sandboxed_run.sandbox.zuora
    account = zuora.seed("accounts", {"name": "Hooli Inc", "currency": "USD", "billCycleDay": 1})
    drift_id = run.drift_ids["4004"]
    at = open_drift(pick(open_page(), run.integration_id), drift_id)

    at.text_input(key=f"reconcile_link_target_{drift_id}").input(account)
    at.button(key=f"reconcile_link_{drift_id}").click().run()

    [job] = jobs()
    assert (job.flow, job.status, job.payload["id"]) == ("customer_account", JobStatus.QUEUED, "4004")
    assert at.success[0].value == (
        f"Queued a sync of NetSuite `4004` onto Zuora `{account}` (job #{job.id}); it will show in the Audit "
        "log once the runner has run it. Run reconciliation again to confirm the drift is gone."
    )
    assert zuora.find_account(account)["crmId"] == "4004"
    link = links.find(
        get_engine(), integration_id=run.integration_id, flow="customer_account", source_id="4004"
    )
    assert link is not None and link.target_id == account
    assert decisions("4004")[-1] == "link"


def test_resync_asks_before_creating_when_zuora_already_has_the_record(sandboxed_run: Sandboxed) -> None:
    run = sandboxed_run.run
    account = sandboxed_run.sandbox.zuora.seed(
        "accounts", {"name": "Hooli Inc", "crmId": "4004", "currency": "USD", "billCycleDay": 1}
    )
    drift_id = run.drift_ids["4004"]
    at = open_drift(pick(open_page(), run.integration_id), drift_id)

    at.button(key=f"reconcile_resync_{drift_id}").click().run()

    [question] = at.warning
    assert f"Zuora already has **Hooli Inc** (`{account}`) carrying NetSuite id `4004`" in question.value
    assert jobs() == []  # nothing is done before the person chooses
    at.button(key=f"reconcile_choice_link_{drift_id}").click().run()

    assert at.success[0].value.startswith(f"Linked NetSuite `4004` to Zuora `{account}`.")
    assert not at.warning
    assert jobs() == []  # link only: nothing queued
    link = links.find(
        get_engine(), integration_id=run.integration_id, flow="customer_account", source_id="4004"
    )
    assert link is not None and link.target_id == account
    drift = store.get_drift(get_engine(), drift_id=drift_id)
    assert drift is not None and (drift.status, drift.resolution) == (DriftStatus.FIXING, "link")
    assert decisions("4004")[-1] == "link"


def test_resync_without_a_record_in_zuora_queues_a_sync(sandboxed_run: Sandboxed) -> None:
    run = sandboxed_run.run
    drift_id = run.drift_ids["4004"]
    at = open_drift(pick(open_page(), run.integration_id), drift_id)

    at.button(key=f"reconcile_resync_{drift_id}").click().run()

    [job] = jobs()
    assert job.payload == {"id": "4004", "reconcile_drift": drift_id}
    assert f"Queued a sync of NetSuite `4004` (job #{job.id})" in at.success[0].value
    assert decisions("4004")[-1] == "resync"


# --- the audit page's replay, before it would create ---------------------------------------------------


def failed_create(integration_id: int, source_id: str) -> int:
    """A failed first sync of customer `source_id`: no target yet, so replaying it would create one."""
    record = write_record(
        get_engine(),
        AuditRecord(
            integration_id=integration_id,
            flow="customer_account",
            source_system="netsuite",
            source_id=source_id,
            target_system="zuora",
            action="create",
            payload={"name": "Hooli Inc", "crmId": source_id, "currency": "USD"},
            source_snapshot={"id": source_id, "companyName": "Hooli Inc"},
            outcome=Outcome.FAILED,
            error_class="transient",
            error_message="zuora: service unavailable",
        ),
        [],
    )
    assert record.id is not None
    return record.id


def replay_jobs() -> list[Job]:
    with session_scope(get_engine()) as session:
        return list(session.exec(select(Job).where(col(Job.kind) == JobKind.REPLAY)).all())


@pytest.mark.parametrize(
    ("choice", "linked", "replayed"),
    [(Choice.UPDATE, True, True), (Choice.LINK, True, False), (Choice.SKIP, False, False)],
)
def test_audit_replay_asks_update_link_or_skip_when_zuora_already_has_the_account(
    sandboxed_run: Sandboxed, choice: Choice, linked: bool, replayed: bool
) -> None:
    integration_id = sandboxed_run.run.integration_id
    record_id = failed_create(integration_id, "4004")
    account = sandboxed_run.sandbox.zuora.seed(
        "accounts", {"name": "Hooli Inc", "crmId": "4004", "currency": "USD", "billCycleDay": 1}
    )
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/audit.py").run()
    at.number_input(key="record").set_value(record_id).run()

    at.button(key=f"audit_replay_{record_id}").click().run()

    [question] = at.warning
    assert f"Zuora already has **Hooli Inc** (`{account}`) carrying source id `4004`" in question.value
    assert replay_jobs() == []  # nothing is sent before the person chooses
    at.button(key=f"audit_replay_choice_{choice}_{record_id}").click().run()

    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning
    link = links.find(get_engine(), integration_id=integration_id, flow="customer_account", source_id="4004")
    assert (link is not None and link.target_id == account) is linked
    jobs_now = replay_jobs()
    assert [j.payload["replay_of"] for j in jobs_now] == ([record_id] if replayed else [])
    if replayed:
        assert f"Replay queued as job #{jobs_now[0].id}" in texts(at)
    assert decisions("4004")[-1] == choice.value


def test_audit_replay_goes_ahead_when_zuora_has_no_such_account(sandboxed_run: Sandboxed) -> None:
    record_id = failed_create(sandboxed_run.run.integration_id, "4004")
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/audit.py").run()
    at.number_input(key="record").set_value(record_id).run()

    at.button(key=f"audit_replay_{record_id}").click().run()

    [job] = replay_jobs()
    assert job.payload["replay_of"] == record_id
    assert not at.warning
    assert decisions("4004") == ["create"]  # no choice was asked, so none was recorded
