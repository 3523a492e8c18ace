"""Our own token requests never trip Zoho's 10-tokens-per-10-minutes limit, the app's pings included, and
when Zoho (or our budget) says wait, the ping says so plainly instead of blaming the refresh token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.ping import ping
from connectors.registry import SYSTEMS, ZOHO_TOKEN_LIMIT
from connectors.sync import ping_connection
from connectors.zoho.emulator import ZohoEmulator
from connectors.zoho.emulator_oauth import TOKENS_PER_WINDOW
from tests.connectors.conftest import Harness
from tests.support.live import serve

CLIENT_ID, SECRET, REFRESH = "1000.PINGS", "ping-secret", "1000.ping.refresh"


@pytest.fixture
def zoho() -> Iterator[tuple[ZohoEmulator, str]]:
    emulator = ZohoEmulator()
    emulator.register_client(CLIENT_ID, SECRET, REFRESH)
    with serve(emulator.app) as url:
        yield emulator, url


def test_runner_and_app_budgets_together_stay_under_zohos_limit() -> None:
    entry = SYSTEMS["zoho"]
    assert entry.refresh_budget is not None and entry.app_refresh_budget is not None
    limit, window = ZOHO_TOKEN_LIMIT

    assert entry.refresh_budget[0] + entry.app_refresh_budget[0] < limit
    assert entry.refresh_budget[1] >= window and entry.app_refresh_budget[1] >= window


def test_a_dozen_app_pings_in_a_row_never_get_zoho_to_throttle_and_say_how_long_to_wait(
    zoho: tuple[ZohoEmulator, str],
) -> None:
    emulator, url = zoho
    settings = {"data_centre": "com", "client_id": CLIENT_ID}
    secrets = {"client_secret": SECRET, "refresh_token": REFRESH}

    results = [
        ping_connection("zoho", base_url=url, settings=settings, secrets=secrets, sandbox=True)
        for _ in range(12)
    ]

    allowed = SYSTEMS["zoho"].app_refresh_budget[0]  # type: ignore[index]
    assert [r.ok for r in results] == [True] * allowed + [False] * (12 - allowed)
    assert emulator.token_requests == allowed < TOKENS_PER_WINDOW  # Zoho never had reason to throttle
    for refused in results[allowed:]:
        assert refused.reaction == "transient"
        assert "Wait 10 minutes and try again" in refused.message
        assert "rejected the refresh token" not in refused.message


@pytest.mark.parametrize("harness", ["zoho"], indirect=True)
async def test_zoho_throttling_reads_as_throttling_not_as_a_rejected_refresh_token(harness: Harness) -> None:
    harness.emulator.oauth.tokens_per_window = 0  # type: ignore[attr-defined]  # Zoho has had enough
    try:
        result = await ping(harness.make())
    finally:
        harness.emulator.oauth.tokens_per_window = TOKENS_PER_WINDOW  # type: ignore[attr-defined]

    assert result.ok is False and result.reaction == "transient"
    assert "too many were asked for" in result.message and "Wait 10 minutes" in result.message
    assert "rejected the refresh token" not in result.message
