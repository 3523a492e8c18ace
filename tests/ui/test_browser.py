"""The audit page in a real headless Chromium: `streamlit run app.py` on a seeded database, driven by Playwright.

The browser signs in as the admin (when the app has sign-in), opens the audit page, picks the failed
record, replays it, then replays the filtered failures in bulk. Needs Debian's chromium at
/usr/bin/chromium (`apt-get install -y chromium`): skipped without it, failed without it under CI. A
screenshot of the page with the failed record open is kept in the test's tmp_path and at
/tmp/audit_page.png.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.db import session_scope
from storage.models import Job, JobKind
from tests.support.browser import sign_in_and_follow
from tests.support.live import wait_for
from tests.ui.conftest import (
    FAILED_ERROR,
    FAILED_SOURCE_ID,
    REPO_ROOT,
    SUCCEEDED_SOURCE_ID,
    SeededAudit,
)

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STARTUP_DEADLINE = 60.0  # seconds for `streamlit run` to answer its health check
STOP_DEADLINE = 10.0  # seconds for Streamlit to exit after SIGTERM
UI_TIMEOUT = 30_000  # milliseconds Playwright waits for the page to show something
VIEWPORT = {"width": 1440, "height": 1000}
SCREENSHOT_COPY = Path("/tmp/audit_page.png")
# Glide data grid (behind st.dataframe) draws rows on a canvas; these place a click on one row's
# selection checkbox, in CSS pixels from the grid's top-left corner.
GRID_HEADER_HEIGHT = 35
GRID_ROW_HEIGHT = 35
GRID_CHECKBOX_X = 15
ADMIN = "admin"
ADMIN_PASSWORD = "a long browser-test passphrase"  # a throwaway account in a throwaway database


@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium, or skip (fail under CI, which must run the browser tests)."""
    if CHROMIUM.exists():
        return CHROMIUM
    message = f"{CHROMIUM} not found; install Debian's chromium: apt-get install -y chromium"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def streamlit_app(log_path: Path) -> Iterator[str]:
    """Run `streamlit run app.py` with this process's environment; yield its URL, stop it after."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        "app.py",
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, env=dict(os.environ), stdout=log, stderr=log)
        try:
            wait_for(
                lambda: _healthy(url, process, log_path),
                timeout=STARTUP_DEADLINE,
                interval=0.2,
                what=f"streamlit on port {port} to answer /_stcore/health",
            )
            yield url
        finally:
            process.terminate()
            try:
                process.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STOP_DEADLINE)


def _healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise AssertionError(f"streamlit exited with {process.returncode}:\n{log_path.read_text()}")
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def create_admin(engine: Engine) -> bool:
    """The admin account the browser signs in with, when the app has sign-in (storage.users)."""
    if importlib.util.find_spec("storage.users") is None:
        return False
    from storage.users import create_user

    create_user(engine, username=ADMIN, password=ADMIN_PASSWORD, is_admin=True)
    return True


def open_audit_page(page: Page, url: str) -> None:
    """Open the app, sign in when it asks, then follow the sidebar to the audit log (/audit).

    The app is entered at its root: a fresh page load is a fresh session that must sign in again, so
    /audit is reached by its sidebar link within the signed-in session.
    """
    sign_in_and_follow(page, url, username=ADMIN, password=ADMIN_PASSWORD, link="Audit log")
    expect(page).to_have_url(f"{url}/audit")
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()


def replay_jobs(engine: Engine) -> list[Job]:
    with session_scope(engine) as session:
        return list(session.exec(select(Job).where(col(Job.kind) == JobKind.REPLAY).order_by(col(Job.id))))


def grid_cell(grid: Locator, text: str) -> Locator:
    """Cells of `grid` showing exactly `text`.

    Glide data grid paints cells on a canvas and keeps an accessible copy of the visible ones as the
    canvas's fallback table, which is never rendered, hence `include_hidden`.
    """
    return grid.get_by_role("gridcell", name=text, exact=True, include_hidden=True)


def click_grid_row(page: Page, row: int) -> None:
    """Select row `row` (0-based) of the first data grid by clicking its checkbox."""
    grid = page.get_by_test_id("stDataFrame").first.locator(".stDataFrameGlideDataEditor").first
    y = GRID_HEADER_HEIGHT + row * GRID_ROW_HEIGHT + GRID_ROW_HEIGHT // 2
    grid.click(position={"x": GRID_CHECKBOX_X, "y": y})


def screenshot_whole_page(page: Page, path: Path) -> None:
    """Streamlit scrolls inside its own container, so grow the viewport to the content, then shoot."""
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": VIEWPORT["width"], "height": int(height) + 40})
    page.screenshot(path=str(path), full_page=True)


def test_browser_audit_page_shows_failed_record_detail_and_replays_it(
    seeded_audit: SeededAudit, chromium: Path, tmp_path: Path
) -> None:
    create_admin(seeded_audit.engine)
    with (
        streamlit_app(tmp_path / "streamlit.log") as url,
        sync_playwright() as playwright,
    ):
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(UI_TIMEOUT)
            expect.set_options(timeout=UI_TIMEOUT)
            open_audit_page(page, url)
            table = page.get_by_test_id("stDataFrame").first
            expect(grid_cell(table, SUCCEEDED_SOURCE_ID)).to_have_count(1)
            expect(grid_cell(table, FAILED_SOURCE_ID)).to_have_count(1)

            page.locator(".st-key-audit_outcome").get_by_role("radio", name="Failed").click()
            expect(grid_cell(table, SUCCEEDED_SOURCE_ID)).to_have_count(0)
            click_grid_row(page, 0)

            detail = page.get_by_text(f"Record #{seeded_audit.failed_id} · customer_account")
            expect(detail).to_be_visible()
            expect(page).to_have_url(re.compile(rf"/audit\?record={seeded_audit.failed_id}$"))
            expect(page.get_by_test_id("stAlertContentError")).to_contain_text(FAILED_ERROR)
            expect(page.get_by_test_id("stJson").first).to_contain_text("Atlantis")

            page.get_by_role("tab", name="Payload sent").click()
            payload = page.get_by_test_id("stJson").nth(1)
            expect(payload).to_be_visible()
            expect(payload).to_contain_text("billToContact")

            page.get_by_role("tab", name="Attempts (1)").click()
            page.get_by_text("Response excerpt · attempt 1 · POST → 400").click()
            expect(page.get_by_test_id("stCode").last).to_contain_text("53100020")
            attempts = page.get_by_test_id("stDataFrame").nth(1)
            expect(grid_cell(attempts, "https://rest.zuora.com/v1/accounts")).to_have_count(1)

            page.get_by_text("Map the stored source again with the current mapping").click()
            page.get_by_role("button", name="Replay", exact=True).click()
            expect(page.get_by_text(re.compile(r"Replay queued as job #\d+"))).to_be_visible()
            [job] = replay_jobs(seeded_audit.engine)
            assert job.payload["replay_of"] == seeded_audit.failed_id and job.payload["mode"] == "remap"

            screenshot = tmp_path / "audit_page.png"
            screenshot_whole_page(page, screenshot)
            shutil.copyfile(screenshot, SCREENSHOT_COPY)
            page.set_viewport_size(VIEWPORT)

            page.get_by_role("button", name="Count the failures to replay…").click()
            expect(page.get_by_text("1 failed record in this filter")).to_be_visible()
            page.get_by_role("button", name="Replay 1 source record").click()
            expect(page.get_by_test_id("stProgress")).to_contain_text("Enqueued 1 of 1 replays")
            expect(page.get_by_text("Enqueued 1 replay job;", exact=False)).to_be_visible()
            assert len(replay_jobs(seeded_audit.engine)) == 2
        finally:
            browser.close()
