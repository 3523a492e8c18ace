"""The workspaces page through Streamlit's AppTest: the real app.py and views/workspaces.py on SQLite."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from storage import crud
from storage.db import get_engine
from tests.ui.conftest import APP_PATH, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
# From views/workspaces.py, which cannot be imported here: a page module draws itself when imported.
NO_WORKSPACES = (
    "No workspaces yet: create one below, or start the New integration wizard, which makes one too."
)


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/workspaces.py").run()
    return check(at)


def check(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_workspaces_page_renders_without_exception_on_an_empty_database(empty_database: str) -> None:
    at = open_page()

    assert [t.value for t in at.title] == ["Workspaces"]
    assert [i.value for i in at.info] == [NO_WORKSPACES]


def test_workspaces_page_lists_workspaces_with_integrations_and_connections(
    seeded_audit: SeededAudit,
) -> None:
    at = open_page()

    assert [s.value for s in at.subheader] == ["Acme Finance"]
    row = next(m.value for m in at.markdown if seeded_audit.integration_name in m.value)
    assert "active" in row
    captions = "\n".join(c.value for c in at.caption)
    assert "NetSuite production → Zuora US" in captions
    assert "customer\\_account, invoice\\_invoice" in captions
    connections = at.dataframe[0].value
    assert list(connections["Name"]) == ["NetSuite production", "Zuora US"]
    assert list(connections["Last ping"]) == ["never", "never"]


def test_workspaces_page_pauses_and_resumes_an_integration(seeded_audit: SeededAudit) -> None:
    at = open_page()
    toggle = f"ws_toggle_{seeded_audit.integration_id}"

    check(at.button(key=toggle).click().run())
    paused = crud.get_integration(seeded_audit.engine, integration_id=seeded_audit.integration_id)
    label_after_pause = at.button(key=toggle).label
    check(at.button(key=toggle).click().run())
    resumed = crud.get_integration(seeded_audit.engine, integration_id=seeded_audit.integration_id)

    assert paused is not None and not paused.active and label_after_pause == "Resume"
    assert resumed is not None and resumed.active and at.button(key=toggle).label == "Pause"


def test_workspaces_page_creates_a_workspace_and_refuses_a_taken_name(empty_database: str) -> None:
    at = open_page()

    at.text_input(key="ws_new_name").input("Globex")
    check(at.button(key="ws_create_submit").click().run())
    at.text_input(key="ws_new_name").input("Globex")
    check(at.button(key="ws_create_submit").click().run())

    assert [w.name for w in crud.list_workspaces(get_engine())] == ["Globex"]
    assert [s.value for s in at.subheader] == ["Globex"]
    assert any("Workspace name 'Globex' is taken" in e.value for e in at.error)


def test_workspaces_page_renames_a_workspace(seeded_audit: SeededAudit) -> None:
    at = open_page()
    key = f"ws_rename_name_{seeded_audit.workspace_id}"

    at.text_input(key=key).input("Acme Holdings")
    check(at.button(key=f"ws_rename_submit_{seeded_audit.workspace_id}").click().run())

    assert [w.name for w in crud.list_workspaces(seeded_audit.engine)] == ["Acme Holdings"]
    assert [s.value for s in at.subheader] == ["Acme Holdings"]


def test_workspaces_page_refuses_an_empty_name(seeded_audit: SeededAudit) -> None:
    at = open_page()

    at.text_input(key=f"ws_rename_name_{seeded_audit.workspace_id}").input("  ")
    check(at.button(key=f"ws_rename_submit_{seeded_audit.workspace_id}").click().run())

    assert [e.value for e in at.error] == ["Workspace name is required"]
    assert [w.name for w in crud.list_workspaces(seeded_audit.engine)] == ["Acme Finance"]
