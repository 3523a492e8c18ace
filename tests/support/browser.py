"""Debian's Chromium driven by Playwright, for tests that look at the app as a person does."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

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
