"""The mappings page through Streamlit's AppTest: the real app.py and views/mappings.py on a SQLite file.

Cell edits reach a data editor the way the browser sends them: as its edit state (edited_rows,
added_rows, deleted_rows) in the session before a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from connectors.sandbox import Sandbox, build
from demo.wiring import wire
from runner.flows.customer_account import DEFAULT_MAPPING
from storage import crud, lookups
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.settings import get_settings
from tests.e2e.stack import create_customer_via_api
from tests.support.live import serve
from tests.ui.conftest import APP_PATH, FAILED_SOURCE_ID, SeededAudit, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
FLOW = "customer_account"  # the seeded integration's first flow, so the page opens on it
TARGETS = [rule["target"] for rule in DEFAULT_MAPPING["fields"]]


def open_page() -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/mappings.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def ran(at: AppTest) -> AppTest:
    """`at` after a run, checked for exceptions the page raised."""
    assert not at.exception, [e.value for e in at.exception]
    return at


def editor_key(at: AppTest, prefix: str) -> str:
    [key] = [e.key for e in at.data_editor if e.key and e.key.startswith(prefix)]
    return key


def edit(
    at: AppTest, prefix: str, *, edited: dict[int, dict[str, Any]] | None = None, **more: Any
) -> AppTest:
    """Apply cell edits to the editor whose key starts with `prefix`, then run."""
    at.session_state[editor_key(at, prefix)] = {
        "edited_rows": edited or {},
        "added_rows": more.get("added", []),
        "deleted_rows": more.get("deleted", []),
    }
    return ran(at.run())


def row_of(target: str) -> int:
    return TARGETS.index(target)


def errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error).replace("\\", "")


def texts(at: AppTest) -> str:
    parts = [*(m.value for m in at.markdown), *(c.value for c in at.caption), *(s.value for s in at.success)]
    return "\n".join(str(p) for p in parts).replace("\\", "")


def test_mappings_page_renders_without_exception_on_an_empty_database(empty_database: str) -> None:
    at = open_page()

    assert [t.value for t in at.title] == ["Mappings"]
    assert "No integration yet" in at.info[0].value


def test_mappings_page_shows_the_built_in_default_of_the_first_flow(seeded_audit: SeededAudit) -> None:
    at = open_page()

    assert "Active: **default (built in)**" in texts(at)
    rules = at.data_editor(key=editor_key(at, "mappings_rules_")).value
    assert list(rules["target"]) == TARGETS
    assert rules["transform"][row_of("name")] == "trim"
    assert at.button(key="mappings_save").disabled  # nothing edited yet
    assert not at.error


def test_editing_a_rule_and_saving_makes_version_1_the_active_mapping(seeded_audit: SeededAudit) -> None:
    at = open_page()

    edit(at, "mappings_rules_", edited={row_of("name"): {"transform": "trim | upper"}})
    assert not at.error
    assert at.button(key="mappings_save").label == "Save as version 1"
    ran(at.button(key="mappings_save").click().run())

    active = crud.active_mapping(seeded_audit.engine, integration_id=seeded_audit.integration_id, flow=FLOW)
    assert active is not None and active.version == 1 and active.created_by == "admin"
    name = next(rule for rule in active.spec["fields"] if rule["target"] == "name")
    assert name["transform"] == ["trim", "upper"]
    untouched = [rule for rule in active.spec["fields"] if rule["target"] != "name"]
    assert untouched == [rule for rule in DEFAULT_MAPPING["fields"] if rule["target"] != "name"]
    assert "Saved NetSuite customer → Zuora account as version 1" in texts(at)
    assert "Active: **version 1**" in texts(at)


def test_an_invalid_edit_shows_the_field_error_and_saves_nothing(seeded_audit: SeededAudit) -> None:
    at = open_page()

    edit(
        at,
        "mappings_rules_",
        edited={row_of("name"): {"transform": "trim | uper"}, row_of("crmId"): {"source": None}},
    )

    shown = errors(at)
    assert "name: unknown transform 'uper' (did you mean 'upper'?)" in shown
    assert "crmId: give a 'source', a 'value' or a 'default'" in shown
    assert at.button(key="mappings_save").disabled
    at.run()
    assert (
        crud.active_mapping(seeded_audit.engine, integration_id=seeded_audit.integration_id, flow=FLOW)
        is None
    )


def test_an_unreadable_cell_names_its_row_and_target(seeded_audit: SeededAudit) -> None:
    at = open_page()

    edit(at, "mappings_rules_", edited={row_of("currency"): {"transform": "trim:x"}})

    assert "row 3 · currency: transform: trim takes no argument" in errors(at)
    assert at.button(key="mappings_save").disabled


def test_rolling_back_saves_the_old_version_as_the_newest(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    edited = {"fields": [*DEFAULT_MAPPING["fields"], {"target": "notes", "value": "from NetSuite"}]}
    crud.save_mapping(engine, integration_id=integration_id, flow=FLOW, spec=edited, created_by="ana")
    at = open_page()
    diff = at.code[0].value  # version 1 against the default
    assert diff.startswith("--- default (built in)\n+++ version 1")
    assert '+      "target": "notes",' in diff

    ran(at.selectbox(key=f"mappings_rollback_{FLOW}").set_value(0).run())
    ran(at.button(key="mappings_rollback").click().run())
    assert "Save default (built in) again" in at.warning[0].value
    assert crud.active_mapping(engine, integration_id=integration_id, flow=FLOW).version == 1
    ran(at.button(key="mappings_rollback_confirm").click().run())

    active = crud.active_mapping(engine, integration_id=integration_id, flow=FLOW)
    assert active is not None and active.version == 2 and active.spec == DEFAULT_MAPPING
    assert "Rolled back: default (built in) is active again, saved as version 2" in texts(at)


def test_editing_a_lookup_table_saves_a_new_version(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    at = open_page()
    ran(at.selectbox(key=f"mappings_lookup_table_{integration_id}").set_value("gl_account_charge").run())

    edit(
        at,
        "mappings_lookup_",
        edited={0: {"value": "4000 Consulting"}},
        added=[{"key": "4200", "value": "4200 Training"}],
    )
    ran(at.button(key="mappings_lookup_save").click().run())

    assert "Saved lookup table gl_account_charge as version 1." in texts(at)
    [saved] = lookups.lookup_versions(engine, integration_id=integration_id, name="gl_account_charge")
    assert saved.version == 1 and saved.created_by == "admin"
    assert saved.spec["rows"] == {
        "4000": "4000 Consulting",
        "4010": "Subscription Revenue",
        "4100": "4100 Product Sales",
        "4200": "4200 Training",
    }
    assert (
        lookups.lookups_for(engine, integration_id=integration_id)["gl_account_charge"]["4200"]
        == "4200 Training"
    )


def test_a_new_lookup_table_is_saved_and_stays_selected(seeded_audit: SeededAudit) -> None:
    engine, integration_id = seeded_audit.engine, seeded_audit.integration_id
    at = open_page()
    ran(at.selectbox(key=f"mappings_lookup_table_{integration_id}").set_value("__new__").run())
    assert "give the new table a name" in errors(at)

    ran(at.text_input(key="mappings_lookup_new_name").input("region_code").run())
    edit(
        at,
        "mappings_lookup_",
        added=[{"key": "EMEA", "value": "E"}, {"key": "AMER", "value": '{"code": "A"}'}],
    )
    ran(at.button(key="mappings_lookup_save").click().run())

    assert lookups.lookups_for(engine, integration_id=integration_id)["region_code"] == {
        "EMEA": "E",
        "AMER": {"code": "A"},
    }
    assert at.selectbox(key=f"mappings_lookup_table_{integration_id}").value == "region_code"
    assert "Saved lookup table region_code as version 1." in texts(at)


def test_preview_of_pasted_json_shows_the_payload_and_a_note_per_field(seeded_audit: SeededAudit) -> None:
    at = open_page()
    edit(at, "mappings_rules_", edited={row_of("name"): {"transform": "trim | upper"}})

    ran(at.radio(key="mappings_sample_source").set_value("Paste JSON").run())
    record = {"id": "77", "companyName": " Hooli ", "email": "ap@hooli.example"}
    ran(at.text_area(key="mappings_paste").input(json.dumps(record)).run())

    assert not at.exception
    payload = at.json[0].value
    assert json.loads(payload)["name"] == "HOOLI"  # the unsaved edit is what the preview runs
    notes = _notes(at)
    assert notes["name"]["note"] == "from companyName"
    assert notes["billToContact.firstName"]["note"] == "default used: source empty"
    assert notes["billToContact.workEmail"]["value"] == "ap@hooli.example"


def test_preview_uses_the_latest_audit_snapshot_by_default(seeded_audit: SeededAudit) -> None:
    at = open_page()

    assert f"netsuite {FAILED_SOURCE_ID}" in texts(at)  # the newest record's snapshot
    assert _notes(at)["name"]["value"] == "Initech"


def _notes(at: AppTest) -> dict[str, dict[str, Any]]:
    """The preview's field notes by target."""
    [table] = [d.value for d in at.dataframe if "note" in d.value.columns]
    return {row["target"]: row for row in table.to_dict("records")}


@pytest.fixture
def sandbox(ui_database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandbox]:
    """The emulators on loopback and the demo integrations wired to them in the app's database."""
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "true")  # loopback base URLs are allowed
    get_settings.cache_clear()
    engine = get_engine()
    upgrade(engine)
    emulators, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for system in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(emulators, system).app, sock=sockets[system]))
        wire(engine, get_vault(), emulators.credentials)
        yield emulators


def test_preview_fetches_a_record_by_id_from_the_source_system(sandbox: Sandbox) -> None:
    c = sandbox.credentials
    customer_id = create_customer_via_api(
        c.netsuite_url,
        client_id=c.netsuite_client_id,
        certificate_id=c.netsuite_certificate_id,
        private_key=c.netsuite_private_key,
        fields={"companyName": "Fetched Ltd"},
    )
    at = open_page()  # the demo's NetSuite ↔ Zuora integration, its customer flow

    ran(at.radio(key="mappings_sample_source").set_value("Fetch by id").run())
    ran(at.text_input(key=f"mappings_fetch_id_{FLOW}").input(customer_id).run())
    ran(at.button(key="mappings_fetch").click().run())

    assert f"netsuite customer {customer_id}, fetched live" in texts(at)
    assert _notes(at)["name"]["value"] == "Fetched Ltd"
    ran(at.text_input(key=f"mappings_fetch_id_{FLOW}").input("999999").run())
    ran(at.button(key="mappings_fetch").click().run())
    assert "netsuite" in errors(at) and "999999" in errors(at)
