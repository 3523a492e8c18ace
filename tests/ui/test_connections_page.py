"""The Connections page through Streamlit's AppTest: the real app.py and views/connections.py on SQLite,
its re-ping going over HTTP to the sandbox emulators, rotation and backfill through its buttons."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import pytest
from sqlmodel import Session, select
from streamlit.testing.v1 import AppTest

from connectors.sandbox import build
from demo.wiring import wire
from storage import crud, webhook_secrets
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.models import Connection
from storage.settings import get_settings
from tests.support.live import serve
from tests.ui.conftest import APP_PATH, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
PAGE = "views/connections.py"


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page(PAGE).run()
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


def connection(connection_id: int) -> Connection:
    with Session(get_engine()) as session:
        found = session.get(Connection, connection_id)
        assert found is not None
        return found


@dataclass(frozen=True)
class Sandboxed:
    connection_ids: dict[str, int]  # system → id


@pytest.fixture
def sandboxed(ui_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandboxed]:
    """The emulators on loopback and the demo workspace wired to them, with the app in sandbox mode."""
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    get_settings.cache_clear()
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(sandbox, name).app, sock=sockets[name]))
        engine = get_engine()
        upgrade(engine)
        wire(engine, get_vault(), sandbox.credentials)
        with Session(engine) as session:
            rows = session.exec(select(Connection)).all()
        yield Sandboxed({row.system: row.id for row in rows if row.id is not None})


def test_connections_page_on_an_empty_database_points_to_onboarding(empty_database: str) -> None:
    at = open_page()

    assert [t.value for t in at.title] == ["Connections"]
    assert "No connections yet" in at.info[0].value
    assert [link.proto.page for link in at.page_link] == ["onboarding"]  # the page's URL path


def test_connections_page_lists_each_connection_and_integration(seeded_audit: SeededAudit) -> None:
    at = open_page()

    shown = texts(at)
    assert "NetSuite production" in shown and "Zuora US" in shown
    assert shown.count("never pinged") == 2
    assert "NetSuite shared secret: set" in shown and "Zuora callout HMAC secret: set" in shown
    assert {b.key for b in at.main.button} == {
        *(f"ping_{i}" for i in seeded_audit.connection_ids),
        f"rotate_{seeded_audit.integration_id}",
        f"backfill_{seeded_audit.integration_id}",
    }
    assert "dummy-netsuite-secret" not in shown and not at.code  # no secret on the page


def test_ping_now_reaches_the_sandbox_and_stores_the_verdict(sandboxed: Sandboxed) -> None:
    at = open_page()
    netsuite = sandboxed.connection_ids["netsuite"]

    at.button(key=f"ping_{netsuite}").click().run()

    assert not at.exception
    assert [s.value for s in at.success] and "Connected" in at.success[0].value
    stored = connection(netsuite)
    assert stored.last_ping_ok is True and stored.last_ping_at is not None
    assert "connected" in texts(at)  # the card's badge now says so
    assert not at.button(key=f"ping_{netsuite}").run().success  # the verdict is said once


def test_ping_now_shows_what_to_fix_when_the_connection_fails(seeded_audit: SeededAudit) -> None:
    at = open_page()
    netsuite = seeded_audit.connection_ids[0]  # saved without the fields NetSuite needs

    at.button(key=f"ping_{netsuite}").click().run()

    assert at.error and "required" in at.error[0].value
    assert connection(netsuite).last_ping_ok is False
    assert "failing" in texts(at)


def test_rotating_a_secret_shows_it_once_and_the_old_one_still_works(seeded_audit: SeededAudit) -> None:
    engine, vault, integration_id = seeded_audit.engine, get_vault(), seeded_audit.integration_id
    before = crud.get_integration(engine, integration_id=integration_id)
    assert before is not None
    old = crud.integration_secrets(vault, before)["netsuite_secret"]
    at = open_page()

    at.selectbox(key=f"secret_name_{integration_id}").set_value("netsuite_secret")
    at.button(key=f"rotate_{integration_id}").click().run()

    assert not at.exception
    (shown,) = [c.value for c in at.code]
    after = crud.get_integration(engine, integration_id=integration_id)
    assert after is not None
    assert webhook_secrets.accepted(vault, after, "netsuite_secret") == [shown, old]
    assert "not shown again" in at.warning[0].value and "keeps working until" in at.warning[0].value
    assert "the previous one works until" in texts(at)
    at.run()  # any later render
    assert not at.code and shown not in texts(at)


def test_starting_a_backfill_shows_a_progress_bar(seeded_audit: SeededAudit) -> None:
    at = open_page()
    integration_id = seeded_audit.integration_id

    at.selectbox(key=f"backfill_flow_{integration_id}").set_value("customer_account")
    at.button(key=f"backfill_{integration_id}").click().run()

    assert not at.exception
    assert "Backfill queued" in at.success[0].value
    (bar,) = at.progress
    assert bar.value == 0 and "running" in bar.text and "of ? records" in bar.text
    at.button(key=f"backfill_{integration_id}").click().run()  # a second press while it runs
    assert "already queued" in at.error[0].value
    assert len(at.progress) == 1
