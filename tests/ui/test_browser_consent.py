"""Connect to NetSuite in headless Chromium: the Connections page opens NetSuite's consent in a pop-up
window, the NetSuite emulator approves at once and sends the window back to the app, and the page takes
the code from it, saves the refresh token and shows the connection connected with a valid token.

The emulators are served on loopback from this process; the app is a real `streamlit run app.py` on the
same SQLite file, in sandbox mode. The emulator's integration record has the app's Connections page as its
redirect URI, which is known once the app has a port. Needs Debian's chromium (tests.support.browser):
skipped without it, failed without it under CI. A screenshot of the page after the approval is kept in
the test's tmp_path and at /tmp/consent_page.png.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect

from connectors.netsuite.emulator_auth import TOKEN_PATH
from connectors.sandbox import Sandbox, build
from runner import consent, onboarding
from storage import crud
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.settings import get_settings
from storage.users import create_user
from tests.support.browser import (
    chromium_page,
    require_chromium,
    screenshot_whole_page,
    sign_in_and_follow,
    streamlit_app,
    wait_until_settled,
)
from tests.support.live import serve
from tests.ui.conftest import APP_PATH

pytestmark = pytest.mark.browser

ADMIN = "admin"
ADMIN_PASSWORD = "a long consent-test passphrase"  # a throwaway account in a throwaway database
CLIENT_ID = "code-client-browser"
CLIENT_SECRET = "code-secret-browser-5e6f"
UI_TIMEOUT = 30_000  # milliseconds Playwright waits for the page to show something
FIRST_LOAD = 60_000  # milliseconds for the first page: Streamlit imports pandas and migrates
SCREENSHOT_COPY = Path("/tmp/consent_page.png")


@dataclass
class Running:
    page: Page
    url: str
    sandbox: Sandbox
    connection_id: int
    shots: Path


@pytest.fixture
def running(ui_database_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Running]:
    """The emulators here, the app in its own process, one NetSuite connection in authorization code mode
    still without its refresh token, and a signed-out browser page."""
    require_chromium()
    monkeypatch.setenv("ML_CONNECTOR_KEYS", Fernet.generate_key().decode())
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    get_settings.cache_clear()
    get_vault.cache_clear()
    engine = get_engine()
    upgrade(engine)  # before the app starts, so the two do not race to migrate
    create_user(engine, username=ADMIN, password=ADMIN_PASSWORD, is_admin=True)
    sandbox, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    workspace = onboarding.create_workspace(engine, name="Acme")
    connection = crud.create_connection(
        engine, get_vault(), workspace_id=workspace.id or 0, system="netsuite", name="NetSuite SB1",
        base_url=sandbox.credentials.netsuite_url, environment=sandbox.credentials.netsuite_account_id,
        settings={"auth_mode": "auth_code", "account_id": sandbox.credentials.netsuite_account_id,
                  "client_id": CLIENT_ID},
        secrets={"client_secret": CLIENT_SECRET},
    )  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(serve(sandbox.netsuite.app, sock=sockets["netsuite"]))
        url = stack.enter_context(streamlit_app(APP_PATH, tmp_path / "streamlit.log"))
        # The integration record's redirect URI: the app's Connections page, exactly.
        sandbox.netsuite.register_auth_code_client(CLIENT_ID, CLIENT_SECRET, consent.redirect_uri_for(url))
        page = stack.enter_context(chromium_page())
        page.set_default_timeout(UI_TIMEOUT)
        yield Running(page, url, sandbox, connection.id, tmp_path)
    for unused in ("zuora", "zoho"):
        sockets[unused].close()


def test_browser_connect_to_netsuite_saves_the_refresh_token_and_shows_it_connected(running: Running) -> None:
    page = running.page
    page.goto(running.url)
    expect(page.get_by_role("button", name="Sign in")).to_be_visible(timeout=FIRST_LOAD)
    sign_in_and_follow(page, running.url, username=ADMIN, password=ADMIN_PASSWORD, link="Connections")
    expect(page.get_by_role("heading", name="Connections", exact=True)).to_be_visible()
    expect(page.get_by_text("none yet")).to_be_visible()  # no access token before the approval
    redirect = consent.redirect_uri_for(running.url)
    expect(page.get_by_text(redirect, exact=True)).to_be_visible()  # to copy onto the integration record
    wait_until_settled(page)

    with page.expect_popup() as opened:
        page.get_by_role("button", name="Connect to NetSuite").click()
    window = opened.value
    # The page reads NetSuite's answer off the window once it is back on the app's address, and closes it.
    window.wait_for_event("close", timeout=UI_TIMEOUT)

    expect(page.get_by_text("updated with a new refresh token")).to_be_visible()
    # The access token that came with the refresh token, kept for the runner, and the ping made right after.
    expect(
        page.get_by_text(re.compile(r"^valid · expires in \d+ min.* · approved in NetSuite$"))
    ).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile(r"NetSuite SB1 .* connected$"))).to_be_visible()
    expect(page.get_by_text("NetSuite answered; saving…")).to_have_count(0)
    wait_until_settled(page)
    shot = running.shots / "consent.png"
    screenshot_whole_page(page, shot)
    shutil.copy(shot, SCREENSHOT_COPY)

    connection = crud.get_connection(get_engine(), connection_id=running.connection_id)
    assert connection is not None and connection.last_ping_ok is True
    assert crud.connection_secrets(get_vault(), connection)["refresh_token"]
    exchanges = [r for r in running.sandbox.netsuite.requests if r["path"] == TOKEN_PATH]
    assert exchanges and all(r["status"] == 200 for r in exchanges)
    assert CLIENT_SECRET not in page.content()
