"""The whole product as a person meets it, in headless Chromium: sign in, onboard NetSuite ↔ Zuora against
the emulators, ping, break a mapping, find the failure in the audit log, fix the mapping and replay.

The emulators and the runner are served on loopback from this process (tests.support.live.serve); the
app is a real `streamlit run app.py` on the same SQLite file, in sandbox mode, told the runner's address
so the wizard shows the webhook URL NetSuite must call. The NetSuite emulator's User Event script is
"deployed" with the URL and secret read off the wizard's page, as a person would paste them. Every page
is photographed into the test's tmp_path and copied to /tmp/ml-connector-journey/ for a person to look
at. Needs Debian's chromium (tests.support.browser): skipped without it, failed without it under CI.
"""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Locator, Page, expect

from connectors.sandbox import Sandbox, build
from runner.app import create_app
from storage import audit, crud
from storage.audit import AuditFilter
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.models import AuditRecord, Mapping, Outcome
from storage.settings import get_settings
from storage.users import create_user
from tests.e2e.stack import create_customer_via_api
from tests.support.browser import (
    chromium_page,
    grid_cell,
    require_chromium,
    screenshot_whole_page,
    streamlit_app,
    wait_until_settled,
)
from tests.support.live import serve, wait_for
from tests.ui.conftest import APP_PATH

pytestmark = pytest.mark.browser

ADMIN = "admin"
ADMIN_PASSWORD = "a long journey-test passphrase"  # a throwaway account in a throwaway database
WORKSPACE = "Acme Corp"
INTEGRATION = "Acme billing"
CUSTOMER = "Journey Labs"
ZUORA_ENVIRONMENT = "US API Sandbox (Cloud 1)"
BAD_CURRENCY = "XXX"  # not one of the Zuora emulator's tenant currencies, so the account is refused
FIRST_LOAD = 60_000  # milliseconds for the first page: Streamlit imports pandas and migrates
UI_TIMEOUT = 30_000  # milliseconds Playwright waits for the page to show something
SYNC_DEADLINE = 60.0  # seconds for the runner to sync (or fail) a record
VIEWPORT = (1440, 1000)
SHOTS_COPY = Path("/tmp/ml-connector-journey")
# Glide data grid (behind st.dataframe and st.data_editor) paints rows on a canvas: clicks are placed in
# CSS pixels from the grid's top-left corner.
GRID_HEADER_HEIGHT = 35
GRID_ROW_HEIGHT = 35
GRID_CHECKBOX_X = 15  # the row-selection checkbox of a selectable st.dataframe
GRID_FIRST_COLUMN_X = 60  # inside the first column of a data editor, right of its row markers
NETSUITE_FORM = "onb_netsuite_0_m2m_0_"  # widget keys of a new NetSuite connection's form, M2M mode
ZUORA_FORM = "onb_zuora_0_None_0_"


@dataclass
class Journey:
    """What the steps share: the browser page, the app's URL, the emulators and where shots go."""

    page: Page
    url: str
    sandbox: Sandbox
    runner_url: str
    shots: Path
    taken: int = 0

    def shoot(self, name: str) -> None:
        """A whole-page screenshot, numbered in the order taken, once the page is drawn."""
        self.settle()
        self.taken += 1
        path = self.shots / f"{self.taken:02d}-{name}.png"
        screenshot_whole_page(self.page, path)
        shutil.copy(path, SHOTS_COPY / path.name)

    @contextmanager
    def shot_on_failure(self) -> Iterator[None]:
        """Keep what the page showed when a step failed, beside the steps' screenshots."""
        try:
            yield
        except BaseException:
            self.page.screenshot(path=str(SHOTS_COPY / "failure.png"))
            raise

    def key(self, key: str) -> Locator:
        """The element of the widget Streamlit drew with `key` (it carries the class st-key-<key>)."""
        return self.page.locator(f".st-key-{key}")

    def settle(self) -> None:
        """Wait for the app's script run to finish: widgets drawn again mid-run lose what was typed."""
        app = self.page.get_by_test_id("stApp")
        expect(app).to_have_attribute("data-test-script-state", "notRunning")

    def go_to(self, link: str, heading: str) -> None:
        """Follow a sidebar link within the signed-in session (a new page load would sign out)."""
        self.page.get_by_test_id("stSidebarNav").get_by_role("link", name=link).click()
        expect(self.page.get_by_role("heading", name=heading, exact=True)).to_be_visible()


@pytest.fixture
def product(ui_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Journey]:
    """Emulators and runner in this process, the app in its own, and a signed-out browser page."""
    require_chromium()
    runner_socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    runner_socket.bind(("127.0.0.1", 0))
    runner_url = f"http://127.0.0.1:{runner_socket.getsockname()[1]}"
    # The app's process inherits these: the same database, key and runner address as the runner here.
    monkeypatch.setenv("ML_CONNECTOR_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    monkeypatch.setenv("ML_CONNECTOR_PUBLIC_URL", runner_url)
    monkeypatch.setenv("ML_CONNECTOR_POLL_INTERVAL", "0.5")
    monkeypatch.setenv("ML_CONNECTOR_WORKERS", "4")
    get_settings.cache_clear()
    get_vault.cache_clear()
    engine = get_engine()
    upgrade(engine)  # before either process starts, so they do not race to migrate
    create_user(engine, username=ADMIN, password=ADMIN_PASSWORD, is_admin=True)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    shutil.rmtree(SHOTS_COPY, ignore_errors=True)
    SHOTS_COPY.mkdir(parents=True)
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(sandbox, name).app, sock=sockets[name]))
        runner = create_app(engine=engine, settings=get_settings(), vault=get_vault())
        stack.enter_context(serve(runner, sock=runner_socket))
        url = stack.enter_context(streamlit_app(APP_PATH, tmp_path / "streamlit.log"))
        page = stack.enter_context(chromium_page(VIEWPORT))
        page.set_default_timeout(UI_TIMEOUT)
        expect.set_options(timeout=UI_TIMEOUT)
        yield Journey(page, url, sandbox, runner_url, shots)


def test_browser_journey_onboards_syncs_fails_and_replays(product: Journey) -> None:
    with product.shot_on_failure():
        walk(product)


def walk(product: Journey) -> None:
    sign_in(product)
    onboard(product)
    ping_every_connection(product)
    set_currency_default(product, BAD_CURRENCY)

    customer_id = create_customer(product.sandbox, CUSTOMER)
    failed = wait_for(
        lambda: records(customer_id, Outcome.FAILED), timeout=SYNC_DEADLINE, what="the sync to fail"
    )[0]
    assert failed.error_class == "remote" and failed.payload["currency"] == BAD_CURRENCY
    assert not zuora_accounts(product.sandbox, customer_id)
    open_failed_record(product, customer_id, failed)
    product.shoot("audit-failed-record")

    roll_back_mapping(product)
    replay(product, failed)
    [account] = wait_for(
        lambda: zuora_accounts(product.sandbox, customer_id), timeout=SYNC_DEADLINE, what="the account"
    )
    assert account["name"] == CUSTOMER and account["currency"] == "USD"
    [replayed] = records(customer_id, Outcome.SUCCEEDED)
    assert replayed.replay_of == failed.id and replayed.mapping_version == 2

    product.go_to("Health", "Health")
    product.shoot("health")
    product.go_to("Workspaces", "Workspaces")
    expect(product.page.get_by_text(WORKSPACE).first).to_be_visible()
    expect(product.page.get_by_text(INTEGRATION).first).to_be_visible()
    product.shoot("workspaces")


# --- the steps ------------------------------------------------------------------------------------------


def sign_in(journey: Journey) -> None:
    page = journey.page
    page.goto(journey.url)
    button = page.get_by_role("button", name="Sign in")
    expect(button).to_be_visible(timeout=FIRST_LOAD)
    page.get_by_role("textbox", name="Username").fill(ADMIN)
    page.get_by_role("textbox", name="Password").fill(ADMIN_PASSWORD)
    journey.shoot("sign-in")
    button.click()
    expect(page.get_by_text(f"Signed in as {ADMIN}")).to_be_visible()
    journey.go_to("New integration", "New integration")


def onboard(journey: Journey) -> None:
    """The six wizard steps, a screenshot of each."""
    page, credentials = journey.page, journey.sandbox.credentials

    expect_step(page, 1, "Pair")
    expect(journey.key("onb_pair").get_by_role("radio", name="NetSuite ↔ Zuora")).to_be_checked()
    type_into(journey.key("onb_workspace_name"), WORKSPACE)
    type_into(journey.key("onb_name"), INTEGRATION)
    journey.shoot("onboarding-1-pair")
    next_step(journey, 1)

    expect_step(page, 2, "Credentials")
    netsuite = page.get_by_test_id("stForm").filter(has=journey.key(f"{NETSUITE_FORM}account_id"))
    journey.key(f"{NETSUITE_FORM}name").locator("input").fill("NetSuite SB1")
    journey.key(f"{NETSUITE_FORM}account_id").locator("input").fill(credentials.netsuite_account_id)
    journey.key(f"{NETSUITE_FORM}client_id").locator("input").fill(credentials.netsuite_client_id)
    journey.key(f"{NETSUITE_FORM}certificate_id").locator("input").fill(credentials.netsuite_certificate_id)
    journey.key(f"{NETSUITE_FORM}private_key").locator("textarea").fill(credentials.netsuite_private_key)
    netsuite.get_by_text("Advanced: base URL").click()
    journey.key(f"{NETSUITE_FORM}base_url").locator("input").fill(credentials.netsuite_url)
    journey.key("onb_netsuite_save").get_by_role("button").click()
    saved = page.get_by_text(re.compile(r"^Saved · .* · never pinged$"))
    expect(saved.filter(has_text=credentials.netsuite_account_id)).to_be_visible()
    journey.settle()

    zuora = page.get_by_test_id("stForm").filter(has=journey.key(f"{ZUORA_FORM}client_id"))
    journey.key(f"{ZUORA_FORM}name").locator("input").fill("Zuora US sandbox")
    environment = journey.key(f"{ZUORA_FORM}environment").get_by_role("combobox")
    environment.press_sequentially(ZUORA_ENVIRONMENT)  # typing opens the picker's list, filtered
    page.get_by_role("option", name=ZUORA_ENVIRONMENT, exact=True).click()
    expect(environment).to_have_value(ZUORA_ENVIRONMENT)
    journey.key(f"{ZUORA_FORM}client_id").locator("input").fill(credentials.zuora_client_id)
    journey.key(f"{ZUORA_FORM}client_secret").locator("input").fill(credentials.zuora_client_secret)
    zuora.get_by_text("Advanced: base URL").click()
    journey.key(f"{ZUORA_FORM}base_url").locator("input").fill(credentials.zuora_url)
    journey.key("onb_zuora_save").get_by_role("button").click()
    expect(saved).to_have_count(2)
    journey.shoot("onboarding-2-credentials")
    next_step(journey, 2)

    expect_step(page, 3, "Ping")
    journey.key("onb_ping_all").get_by_role("button").click()
    passed = page.get_by_test_id("stAlertContentSuccess")
    expect(passed.filter(has_text=re.compile(r"NetSuite answered in \d+ ms"))).to_have_count(1)
    expect(passed.filter(has_text=re.compile(r"Zuora answered in \d+ ms"))).to_have_count(1)
    journey.shoot("onboarding-3-ping")
    next_step(journey, 3)

    expect_step(page, 4, "Mappings")
    expect(page.get_by_text("NetSuite customer → Zuora account")).to_be_visible()
    journey.shoot("onboarding-4-mappings")
    expect(journey.key("onb_next_4").get_by_role("button")).to_have_text("Create the integration (paused)")
    next_step(journey, 4)

    expect_step(page, 5, "Webhooks")
    webhook_url = code_after(
        page, "Runner URL (custscript_ml_connector_url)", starting=f"{journey.runner_url}/webhooks/netsuite/"
    )
    assert webhook_url.startswith(f"{journey.runner_url}/webhooks/netsuite/"), webhook_url
    secret = code_after(page, "Shared secret (custscript_ml_connector_secret)")
    assert secret
    journey.sandbox.netsuite.add_webhook(webhook_url, secret)  # what installing the SuiteScript does
    journey.shoot("onboarding-5-webhooks")
    next_step(journey, 5)

    expect_step(page, 6, "Activate")
    expect(journey.key("onb_next_6").get_by_role("button")).to_have_text("Activate")
    next_step(journey, 6)
    expect(page.get_by_text("Active: the runner syncs changes from now on.")).to_be_visible()
    journey.shoot("onboarding-6-active")
    [integration] = crud.list_integrations(get_engine())
    assert integration.active and integration.name == INTEGRATION


def ping_every_connection(journey: Journey) -> None:
    journey.go_to("Connections", "Connections")
    connections = crud.list_connections(get_engine())
    assert sorted(c.system for c in connections) == ["netsuite", "zuora"]
    for connection in connections:
        button = journey.key(f"ping_{connection.id}")
        button.get_by_role("button", name="Ping now").click()
        # The verdict is drawn in the connection's card, right below its button.
        verdict = button.locator("xpath=following::*[@data-testid='stAlertContentSuccess'][1]")
        expect(verdict).to_contain_text(re.compile(r"Connected.* in \d+ ms\.$"))
    badges = journey.page.get_by_role("heading", level=4).filter(has_text="connected")
    expect(badges).to_have_count(len(connections))
    journey.shoot("connections")
    assert all(c.last_ping_ok for c in crud.list_connections(get_engine()))


def set_currency_default(journey: Journey, currency: str) -> None:
    """Edit the customer → account mapping's currency default in the rules table; save version 1."""
    page = journey.page
    journey.go_to("Mappings", "Mappings")
    integration_id = active_integration_id()
    flow = journey.key(f"mappings_flow_{integration_id}").get_by_role("combobox")
    expect(flow).to_have_value("NetSuite customer → Zuora account")  # the version is shown beside it
    rules = page.locator("[class*='st-key-mappings_rules_'] [data-testid='stDataFrame']").first
    expect(grid_cell(rules, "currency")).to_have_count(1)
    edit_cell(page, rules, row_named="currency", column="Default", text=currency)
    save = journey.key("mappings_save").get_by_role("button")
    expect(save).to_have_text("Save as version 1")
    expect(save).to_be_enabled()
    save.click()
    saved = "Saved NetSuite customer → Zuora account as version 1: the next sync uses it."
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text=saved)).to_be_visible()
    expect(grid_cell(rules, currency)).to_have_count(1)
    journey.shoot("mappings-edited")
    active = active_customer_mapping()
    assert active.version == 1 and active.created_by == ADMIN
    assert rule_for(active.spec, "currency")["default"] == currency


def open_failed_record(journey: Journey, customer_id: str, failed: AuditRecord) -> None:
    """The audit log filtered to failures; click the one row and see the record in detail."""
    page = journey.page
    journey.go_to("Audit log", "Audit log")
    journey.key("audit_outcome").get_by_role("radio", name="Failed").click()
    journey.settle()  # a click on the list as it was before the filter would be lost
    table = page.get_by_test_id("stDataFrame").first
    expect(grid_cell(table, customer_id)).to_have_count(1)
    grid = table.locator(".stDataFrameGlideDataEditor").first
    grid.click(position={"x": GRID_CHECKBOX_X, "y": GRID_HEADER_HEIGHT + GRID_ROW_HEIGHT // 2})
    expect(page.get_by_text(f"Record #{failed.id} · customer_account")).to_be_visible()
    expect(page).to_have_url(re.compile(rf"/audit\?record={failed.id}$"))
    expect(page.get_by_test_id("stAlertContentError")).to_contain_text("remote")


def roll_back_mapping(journey: Journey) -> None:
    """Make the built-in default active again from the mapping's history (it is saved as version 2)."""
    page = journey.page
    journey.go_to("Mappings", "Mappings")
    page.get_by_role("tab", name="History").click()
    version = journey.key("mappings_rollback_customer_account").get_by_role("combobox")
    expect(version).to_have_value("default (built in)")
    journey.key("mappings_rollback").get_by_role("button", name="Roll back…").click()
    journey.key("mappings_rollback_confirm").get_by_role("button", name="Yes, roll back").click()
    rolled = "Rolled back: default (built in) is active again, saved as version 2."
    expect(page.get_by_test_id("stAlertContentSuccess").filter(has_text=rolled)).to_be_visible()
    journey.shoot("mappings-rolled-back")
    active = active_customer_mapping()
    assert active.version == 2 and rule_for(active.spec, "currency")["default"] == "USD"


def replay(journey: Journey, failed: AuditRecord) -> None:
    """Replay the failed record with the current mapping; the page shows the replay's own record."""
    page = journey.page
    customer_id = failed.source_id
    open_failed_record(journey, customer_id, failed)
    remap = "Map the stored source again with the current mapping"
    journey.key(f"audit_replay_mode_{failed.id}").get_by_text(remap).click()
    expect(journey.key(f"audit_replay_mode_{failed.id}").get_by_role("radio", name=remap)).to_be_checked()
    journey.key(f"audit_replay_{failed.id}").get_by_role("button", name="Replay").click()
    ran = page.get_by_test_id("stAlertContentSuccess").filter(has_text=re.compile(r"Replay job #\d+ ran"))
    expect(ran).to_contain_text("succeeded", timeout=int(SYNC_DEADLINE * 1000))
    journey.shoot("audit-replayed")
    [replayed] = records(customer_id, Outcome.SUCCEEDED)
    page.get_by_role("button", name=f"Open record #{replayed.id}").click()
    expect(page.get_by_text(f"Record #{replayed.id} · customer_account")).to_be_visible()
    expect(page.get_by_role("button", name=f"Open the original, record #{failed.id}")).to_be_visible()
    journey.shoot("audit-replay-record")


# --- helpers --------------------------------------------------------------------------------------------


def expect_step(page: Page, number: int, name: str) -> None:
    expect(page.get_by_test_id("stProgress")).to_contain_text(f"Step {number} of 6 · {name}")


def next_step(journey: Journey, number: int) -> None:
    journey.key(f"onb_next_{number}").get_by_role("button").click()


def type_into(widget: Locator, text: str) -> None:
    """Type into a text input outside a form and press Enter, which sends it to the app."""
    box = widget.locator("input")
    box.fill(text)
    box.press("Enter")


def code_after(page: Page, caption: str, *, starting: str | None = None) -> str:
    """The text of the code block drawn right after the caption `caption`; with `starting`, once that
    block's text starts with it (while Streamlit re-renders, the block after the caption can briefly be
    the next section's, e.g. the Zuora URL after the NetSuite caption)."""
    wait_until_settled(page)
    label = page.get_by_test_id("stCaptionContainer").filter(has_text=caption)
    code = label.locator("xpath=following::*[@data-testid='stCode'][1]").locator("code")
    expect(code).not_to_be_empty()
    if starting is not None:
        expect(code).to_have_text(re.compile("^\\s*" + re.escape(starting)))
    return code.inner_text().strip()


def edit_cell(page: Page, grid: Locator, *, row_named: str, column: str, text: str) -> None:
    """Type `text` into the cell of `column` in the row whose first cell is `row_named`, as a person does:
    click the row, arrow across to the column, Enter to open the cell's editor, type, Enter to save.

    The grid's accessible copy says which row and column the cell is (ids glide-cell-<column>-<row>) and
    whether it is selected; the canvas only takes clicks by position.
    """
    row = int(str(grid_cell(grid, row_named).get_attribute("id")).rsplit("-", 1)[1])
    header = grid.get_by_role("columnheader", name=column, exact=True, include_hidden=True)
    col = int(str(header.get_attribute("aria-colindex")))
    canvas = grid.locator(".stDataFrameGlideDataEditor").first
    y = GRID_HEADER_HEIGHT + row * GRID_ROW_HEIGHT + GRID_ROW_HEIGHT // 2
    canvas.click(position={"x": GRID_FIRST_COLUMN_X, "y": y})
    expect(grid.locator(f"#glide-cell-1-{row}")).to_have_attribute("aria-selected", "true")
    for _ in range(col - 1):
        page.keyboard.press("ArrowRight")
    cell = grid.locator(f"#glide-cell-{col}-{row}")
    expect(cell).to_have_attribute("aria-selected", "true")
    page.keyboard.press("Enter")
    editor = page.locator("textarea.gdg-input")
    expect(editor).to_be_focused()
    editor.fill(text)
    expect(editor).to_have_value(text)
    page.keyboard.press("Enter")
    expect(cell).to_have_text(text)


def create_customer(sandbox: Sandbox, name: str) -> str:
    """A customer made through NetSuite's record API: its User Event script posts to the runner."""
    c = sandbox.credentials
    create = partial(
        create_customer_via_api,
        c.netsuite_url,
        client_id=c.netsuite_client_id,
        certificate_id=c.netsuite_certificate_id,
        private_key=c.netsuite_private_key,
        fields={"companyName": name, "email": "ap@journey.test"},
    )
    # In a thread of its own: Playwright's sync API keeps an event loop running in this one.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(create).result()


def records(source_id: str, outcome: str) -> list[AuditRecord]:
    filters = AuditFilter(source_id=source_id, outcome=outcome)
    return list(audit.list_records(get_engine(), filters=filters))


def zuora_accounts(sandbox: Sandbox, crm_id: str) -> list[dict[str, Any]]:
    return [a for a in sandbox.zuora.accounts() if str(a.get("crmId")) == crm_id]


def active_integration_id() -> int:
    [integration] = crud.list_integrations(get_engine())
    assert integration.id is not None
    return integration.id


def active_customer_mapping() -> Mapping:
    active = crud.active_mapping(
        get_engine(), integration_id=active_integration_id(), flow="customer_account"
    )
    assert active is not None
    return active


def rule_for(spec: dict[str, Any], target: str) -> dict[str, Any]:
    return next(rule for rule in spec["fields"] if rule["target"] == target)
