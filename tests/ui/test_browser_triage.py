"""Error triage in headless Chromium: a customer Zuora rejects for its currency shows up as a failure
group; a person acknowledges it, assigns it with a note, corrects the failed record's payload in the
app and replays it, and sees the replay succeed. The emulators and the runner run in this process (the
demo wiring, as tests/e2e/stack.py), the app is a real `streamlit run app.py` on the same SQLite file.
Screenshots go to the test's tmp_path and /tmp/ml-connector-triage/ for a person to look at."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Locator, Page, expect
from sqlmodel import select

from storage import audit
from storage.audit import AuditFilter
from storage.crypto import get_vault
from storage.db import get_engine, session_scope
from storage.migrate import upgrade
from storage.models import AuditRecord, Outcome
from storage.settings import get_settings
from storage.triage import TriageGroup, edits_of
from storage.users import create_user
from tests.e2e.stack import Stack, running_stack
from tests.support.browser import (
    chromium_page,
    grid_cell,
    require_chromium,
    screenshot_whole_page,
    sign_in_and_follow,
    streamlit_app,
)
from tests.support.live import wait_for
from tests.ui.conftest import APP_PATH

pytestmark = pytest.mark.browser

ADMIN = "admin"
ADMIN_PASSWORD = "a long triage-test passphrase"  # a throwaway account in a throwaway database
CUSTOMER = "Triage Labs"
UI_TIMEOUT = 30_000  # milliseconds Playwright waits for the page to show something
SYNC_DEADLINE = 30.0  # seconds for the runner to sync (or fail) a record
VIEWPORT = (1440, 1000)
SHOTS_COPY = Path("/tmp/ml-connector-triage")
GRID_HEADER_HEIGHT = 35  # CSS pixels of a st.dataframe's header row (Glide data grid)
GRID_ROW_HEIGHT = 35
GRID_CHECKBOX_X = 15  # the row-selection checkbox of a selectable st.dataframe


@dataclass
class Triage:
    page: Page
    url: str
    stack: Stack
    shots: Path
    taken: int = 0

    def shoot(self, name: str) -> None:
        self.settle()
        self.taken += 1
        path = self.shots / f"{self.taken:02d}-{name}.png"
        screenshot_whole_page(self.page, path)
        shutil.copy(path, SHOTS_COPY / path.name)

    def key(self, key: str) -> Locator:
        return self.page.locator(f".st-key-{key}")

    def settle(self) -> None:
        expect(self.page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")


@pytest.fixture
def triage(ui_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Triage]:
    require_chromium()
    monkeypatch.setenv("ML_CONNECTOR_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    monkeypatch.setenv("ML_CONNECTOR_POLL_INTERVAL", "0.5")
    get_settings.cache_clear()
    get_vault.cache_clear()
    engine = get_engine()
    upgrade(engine)
    create_user(engine, username=ADMIN, password=ADMIN_PASSWORD, is_admin=True)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    shutil.rmtree(SHOTS_COPY, ignore_errors=True)
    SHOTS_COPY.mkdir(parents=True)
    with ExitStack() as stack:
        running = stack.enter_context(running_stack(engine, get_vault(), get_settings()))
        url = stack.enter_context(streamlit_app(APP_PATH, tmp_path / "streamlit.log"))
        page = stack.enter_context(chromium_page(VIEWPORT))
        page.set_default_timeout(UI_TIMEOUT)
        expect.set_options(timeout=UI_TIMEOUT)
        yield Triage(page, url, running, shots)


def test_browser_triage_acknowledges_assigns_and_replays_an_edited_payload(triage: Triage) -> None:
    try:
        walk(triage)
    except BaseException:
        triage.page.screenshot(path=str(SHOTS_COPY / "failure.png"))
        raise


def walk(triage: Triage) -> None:
    page = triage.page
    customer_id = create_rejected_customer(triage.stack)
    [failed] = wait_for(
        lambda: records(customer_id, Outcome.FAILED), timeout=SYNC_DEADLINE, what="the failure"
    )

    sign_in_and_follow(page, triage.url, username=ADMIN, password=ADMIN_PASSWORD, link="Error triage")
    expect(page.get_by_role("heading", name="Error triage", exact=True)).to_be_visible()
    table = page.get_by_test_id("stDataFrame").first
    expect(grid_cell(table, "remote")).to_have_count(1)
    expect(grid_cell(table, "● open")).to_have_count(1)
    triage.shoot("groups")

    # Open the group by clicking its row.
    table.locator(".stDataFrameGlideDataEditor").first.click(
        position={"x": GRID_CHECKBOX_X, "y": GRID_HEADER_HEIGHT + GRID_ROW_HEIGHT // 2}
    )
    group = only_group()
    expect(page.get_by_text(f"Group #{group.id} · NetSuite customer → Zuora account")).to_be_visible()

    triage.key("triage_ack").get_by_role("button", name="Acknowledge").click()
    expect(page.get_by_text("Acknowledged.")).to_be_visible()
    assert only_group().status == "acknowledged"

    page.get_by_role("button", name="Assign…").click()
    triage.key(f"triage_assignee_{group.id}").locator("input").fill("Dana Ops")
    triage.key(f"triage_note_{group.id}").locator("textarea").fill("Zuora has no XXX currency: use USD")
    triage.key("triage_assign").get_by_role("button", name="Assign").click()
    expect(grid_cell(table, "Dana Ops")).to_have_count(1)
    assigned = only_group()
    assert (assigned.status, assigned.assignee, assigned.updated_by) == ("assigned", "Dana Ops", ADMIN)
    triage.shoot("group-assigned")

    # Correct the failed record's payload and replay it.
    page.keyboard.press("Escape")  # close the Assign popover
    triage.settle()  # a click while the page is drawn again would be lost
    picker = triage.key("triage_record").get_by_role("combobox")
    picker.press_sequentially(f"#{failed.id}")  # typing opens the picker's list, filtered
    page.get_by_role("option", name=f"#{failed.id} · source {customer_id}", exact=False).click()
    editor = triage.key(f"triage_payload_{failed.id}").locator("textarea")
    expect(editor).to_contain_text('"currency": "XXX"')
    editor.fill(json.dumps({**failed.payload, "currency": "USD"}, indent=2))
    triage.shoot("payload-edited")
    triage.key("triage_edit_replay").get_by_role("button").click()
    ran = page.get_by_test_id("stAlertContentSuccess").filter(
        has_text=f"Record #{failed.id} edited (currency)"
    )
    expect(ran).to_contain_text("succeeded", timeout=int(SYNC_DEADLINE * 1000))
    triage.shoot("edited-replay-succeeded")

    [account] = triage.stack.zuora_accounts(customer_id)
    assert account["currency"] == "USD"
    [replayed] = records(customer_id, Outcome.SUCCEEDED)
    [edit] = edits_of(get_engine(), failed.id)
    assert replayed.replay_of == failed.id and replayed.job_id == edit.job_id and edit.edited_by == ADMIN
    expect(page.get_by_text("Nothing to triage")).to_be_visible()  # the group resolved itself
    assert (only_group().status, only_group().resolution) == ("resolved", "auto_synced")


def create_rejected_customer(stack: Stack) -> str:
    """A customer whose currency Zuora refuses; created in a thread of its own (Playwright's sync API
    keeps an event loop running in this one)."""
    fields = {"companyName": CUSTOMER, "currency": {"id": "9", "refName": "XXX"}}
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(stack.create_customer, fields).result()


def records(source_id: str, outcome: str) -> list[AuditRecord]:
    return list(audit.list_records(get_engine(), filters=AuditFilter(source_id=source_id, outcome=outcome)))


def only_group() -> TriageGroup:
    with session_scope(get_engine()) as session:
        [group] = session.exec(select(TriageGroup)).all()
        return group
