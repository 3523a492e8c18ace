"""The Reconciliation page in a real headless Chromium: `streamlit run app.py` on a seeded SQLite file.

A finished run and its drifts are stored as a runner leaves them (tests.ui.test_reconcile_page.seed_run);
the browser signs in, opens Reconciliation from the sidebar, reads the drift list, picks a drift by
clicking its row, accepts it with a reason, and downloads the list as CSV. Screenshots go to the test's
tmp_path and are copied to /tmp/ml-connector-reconcile/ for a person to look at. Needs Debian's chromium
(tests.support.browser): skipped without it, failed without it under CI.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from storage import reconcile as store
from storage.db import get_engine
from storage.reconcile import DriftStatus
from storage.users import create_user
from tests.support.browser import (
    chromium_page,
    grid_cell,
    require_chromium,
    screenshot_whole_page,
    sign_in_and_follow,
    streamlit_app,
)
from tests.ui.conftest import APP_PATH, SeededAudit
from tests.ui.test_reconcile_page import SeededRun, seed_run

pytestmark = pytest.mark.browser

ADMIN = "admin"
ADMIN_PASSWORD = "a long reconcile-test passphrase"  # a throwaway account in a throwaway database
FIRST_LOAD = 60_000  # milliseconds for the first page: Streamlit imports pandas and migrates
UI_TIMEOUT = 20_000  # milliseconds Playwright waits for the page to show something
VIEWPORT = (1440, 1000)
SHOTS_COPY = Path("/tmp/ml-connector-reconcile")
REASON = "Zuora keeps the billing phone on purpose"
# Glide data grid (behind st.dataframe) paints rows on a canvas: a click on a row's selection checkbox
# is placed in CSS pixels from the grid's top-left corner.
GRID_HEADER_HEIGHT = 35
GRID_ROW_HEIGHT = 35
GRID_CHECKBOX_X = 15


@pytest.fixture
def app_page(seeded_audit: SeededAudit, tmp_path: Path) -> Iterator[tuple[Page, SeededRun, Path]]:
    """The app on a database holding one finished run, and a signed-in browser on its Reconciliation page."""
    require_chromium()
    run = seed_run(seeded_audit.integration_id)
    create_user(get_engine(), username=ADMIN, password=ADMIN_PASSWORD, is_admin=True)
    shutil.rmtree(SHOTS_COPY, ignore_errors=True)
    SHOTS_COPY.mkdir(parents=True)
    with streamlit_app(APP_PATH, tmp_path / "streamlit.log") as url, chromium_page(VIEWPORT) as page:
        page.set_default_timeout(UI_TIMEOUT)
        expect.set_options(timeout=UI_TIMEOUT)
        page.set_default_navigation_timeout(FIRST_LOAD)
        sign_in_and_follow(page, url, username=ADMIN, password=ADMIN_PASSWORD, link="Reconciliation")
        expect(page.get_by_role("heading", name="Reconciliation", exact=True)).to_be_visible(
            timeout=FIRST_LOAD
        )
        yield page, run, tmp_path


def test_browser_reconcile_reads_drifts_accepts_one_and_exports_csv(
    app_page: tuple[Page, SeededRun, Path],
) -> None:
    page, run, tmp_path = app_page
    try:
        walk(page, run, tmp_path)
    except BaseException:
        page.screenshot(path=str(SHOTS_COPY / "failure.png"))
        raise


def walk(page: Page, run: SeededRun, tmp_path: Path) -> None:
    # The totals and the drift list, field by field.
    expect(page.get_by_text(f"Last run #{run.run_id}")).to_be_visible()
    expect(page.get_by_text("Invoice amounts by period")).to_be_visible()
    table = page.locator("[class*='st-key-reconcile_table_'] [data-testid='stDataFrame']").first
    expect(grid_cell(table, "billToContact.workPhone")).to_have_count(1)
    expect(grid_cell(table, "555-9999")).to_have_count(1)
    settle(page)
    shoot(page, tmp_path, "1-reconciliation")

    # Pick the first row's drift (Initech's phone) by clicking it, and accept it with a reason.
    drift_id = run.drift_ids["2042"]
    grid = table.locator(".stDataFrameGlideDataEditor").first
    grid.click(position={"x": GRID_CHECKBOX_X, "y": GRID_HEADER_HEIGHT + GRID_ROW_HEIGHT // 2})
    expect(page.get_by_text(f"Drift #{drift_id} · Initech")).to_be_visible()
    settle(page)
    page.locator(f".st-key-reconcile_reason_{drift_id} textarea").fill(REASON)
    page.locator(f".st-key-reconcile_accept_{drift_id}").get_by_role("button", name="Accept").click()
    accepted = page.get_by_test_id("stAlertContentSuccess").filter(
        has_text="Accepted: the reason is in the audit trail"
    )
    expect(accepted).to_be_visible()
    drift = store.get_drift(get_engine(), drift_id=drift_id)
    assert drift is not None and (drift.status, drift.reason) == (DriftStatus.ACCEPTED, REASON)
    expect(page.get_by_text(f"accept by {ADMIN}", exact=False)).to_be_visible()
    settle(page)
    shoot(page, tmp_path, "2-accepted")

    # The CSV carries every field difference, and the decision just made.
    with page.expect_download() as download:
        page.locator(".st-key-reconcile_csv").get_by_role("button", name="Download CSV").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == f"drifts-acme-run-{run.run_id}.csv"
    rows = list(csv.DictReader(io.StringIO(saved.read_text())))
    phone = next(r for r in rows if r["field"] == "billToContact.workPhone")
    assert (phone["netsuite"], phone["target"], phone["status"], phone["reason"]) == (
        "555-0101",
        "555-9999",
        "accepted",
        REASON,
    )
    assert {r["source_id"] for r in rows} == {"2042", "4004", "9009", "7001"}


def settle(page: Page) -> None:
    """Wait for the app's script run to finish: widgets drawn again mid-run lose what was typed."""
    expect(page.get_by_test_id("stApp")).to_have_attribute("data-test-script-state", "notRunning")


def shoot(page: Page, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}.png"
    screenshot_whole_page(page, path)
    shutil.copy(path, SHOTS_COPY / path.name)
