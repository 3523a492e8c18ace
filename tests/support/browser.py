"""Debian's Chromium driven by Playwright, for tests that look at the app as a person does."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support.live import wait_for

CHROMIUM = Path(os.environ.get("ML_CONNECTOR_CHROMIUM", "/usr/bin/chromium"))
# Without the background-networking flags Chromium keeps dialling out, which this machine refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def require_chromium() -> None:
    """Skip without Chromium, except under CI, where a missing browser is a failure."""
    if CHROMIUM.exists():
        return
    message = f"{CHROMIUM} is missing: install Debian's chromium package (./test.sh does this as root)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium_page(viewport: tuple[int, int] = (1400, 1000)) -> Iterator[Any]:
    """A fresh page in headless Chromium."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
            yield page
        finally:
            browser.close()


def sign_in_and_follow(page: Any, url: str, *, username: str, password: str, link: str) -> None:
    """Open the app at its root, sign in when it asks, then follow the sidebar link named `link`.

    A fresh page load is a fresh session that must sign in again, so pages are reached by their sidebar
    links within the signed-in session rather than by URL.
    """
    from playwright.sync_api import expect

    page.goto(url)
    sign_in = page.get_by_role("button", name="Sign in")
    target = page.get_by_test_id("stSidebarNav").get_by_role("link", name=link)
    expect(sign_in.or_(target).first).to_be_visible(timeout=60_000)
    if sign_in.is_visible():
        page.get_by_role("textbox", name="Username").fill(username)
        page.get_by_role("textbox", name="Password").fill(password)
        sign_in.click()
    target.click()


STREAMLIT_STARTUP = 60.0  # seconds for `streamlit run` to answer its health check
STREAMLIT_STOP = 10.0  # seconds for Streamlit to exit after SIGTERM


@contextmanager
def streamlit_app(app: Path, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run `streamlit run <app>` on a free loopback port (with `env`, else this process's environment);
    yield its URL, stop it after. Its output goes to `log_path`, quoted when it exits early."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    command = [sys.executable, "-m", "streamlit", "run", str(app), "--server.headless", "true"]
    command += ["--server.port", str(port), "--server.address", "127.0.0.1"]
    # No file watcher: a source file edited while the test runs would make Streamlit reload modules
    # mid-session (SQLModel then refuses to define its tables twice).
    command += ["--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"streamlit exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=app.parent, env=dict(os.environ if env is None else env), stdout=log, stderr=log
        )
        try:
            wait_for(healthy, timeout=STREAMLIT_STARTUP, interval=0.2, what=f"streamlit on port {port}")
            yield url
        finally:
            process.terminate()
            try:
                process.wait(STREAMLIT_STOP)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(STREAMLIT_STOP)


def screenshot_whole_page(page: Any, path: Path) -> None:
    """Streamlit scrolls inside its own container, so grow the viewport to the content, shoot, and put
    the viewport back."""
    viewport = page.viewport_size
    height = page.evaluate(
        "() => Math.max(...Array.from(document.querySelectorAll('*'), e => e.scrollHeight))"
    )
    page.set_viewport_size({"width": viewport["width"], "height": int(height) + 40})
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size(viewport)


def grid_cell(grid: Any, text: str) -> Any:
    """Cells of a data grid (st.dataframe, st.data_editor) showing exactly `text`.

    Glide data grid paints cells on a canvas and keeps an accessible copy of the visible ones as the
    canvas's fallback table, which is never rendered, hence `include_hidden`.
    """
    return grid.get_by_role("gridcell", name=text, exact=True, include_hidden=True)


def wait_until_settled(page: Any, timeout: float = 30.0) -> None:
    """Wait until the app's script run has finished: while it runs, elements of the previous run are still
    on the page (Streamlit redraws in place), so a locator could read a stale one."""
    from playwright.sync_api import expect

    app = page.get_by_test_id("stApp")
    expect(app).to_have_attribute("data-test-script-state", "notRunning", timeout=int(timeout * 1000))
