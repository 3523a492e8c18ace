"""Contract tests for the Zoho emulator's limits: concurrency per edition and API credits per 24 hours (notes §4)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import Clock, fresh_get, zoho_refresh_params
from tests.emulators.zoho_fixtures import write
from tests.support.live import wait_for

DAY = 86400.0  # seconds


@pytest.mark.parametrize(
    ("edition", "users", "concurrency", "budget"),
    [
        ("free", 3, 5, 5_000),
        ("standard", 10, 10, 52_500),
        ("professional", 1, 15, 50_500),
        ("enterprise", 5_000, 20, 2_000_000),
        ("ultimate", 3, 25, 56_000),
    ],
)
def test_edition_sets_concurrency_and_daily_credits(
    edition: str, users: int, concurrency: int, budget: int
) -> None:
    emulator = ZohoEmulator(edition=edition, users=users)

    assert (emulator.faults.concurrency_limit, emulator.credit_budget) == (concurrency, budget)


def test_concurrency_over_the_limit_gets_429(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_url: str, zoho_auth: dict[str, str]
) -> None:
    # One call held in flight by injected latency; the next one finds the cap of one taken.
    zoho.faults.configure({"latency": 0.5, "concurrency_limit": 1})

    with ThreadPoolExecutor(max_workers=1) as pool:
        held = pool.submit(fresh_get, zoho_url, "/crm/v8/Accounts/1", zoho_auth)
        wait_for(lambda: zoho.faults.in_flight == 1, what="one call in flight")
        refused = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    assert held.result().status_code == 204
    assert (refused.status_code, refused.json()["code"], refused.json()["details"]) == (
        429,
        "TOO_MANY_REQUESTS",
        {"limit": 1},
    )
    assert "retry-after" not in refused.headers
    wait_for(lambda: zoho.faults.in_flight == 0, what="the held call to leave")  # it leaves after answering


def test_spent_credits_get_429_until_they_come_back_a_day_later(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    zoho.credit_budget = 3
    answers = [zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth) for _ in range(4)]

    assert [a.status_code for a in answers] == [204, 204, 204, 429]
    assert answers[-1].json() == {
        "code": "TOO_MANY_REQUESTS",
        "details": {"limit": 3, "window": 86400, "retry_after": 86400},
        "message": "the API credits of the last 24 hours are used up",
        "status": "error",
    }
    assert zoho.credits_used() == 3

    clock.advance(DAY)  # the credits of the first calls come back; the access token has long expired
    token = zoho_http.post("/oauth/v2/token", data=zoho_refresh_params()).json()["access_token"]
    again = zoho_http.get("/crm/v8/Accounts/1", headers={"Authorization": f"Zoho-oauthtoken {token}"})

    assert again.status_code == 204 and zoho.credits_used() == 1


@pytest.mark.parametrize(("records", "credits"), [(1, 1), (10, 1), (11, 2), (100, 10)])
def test_batch_writes_cost_a_credit_per_started_ten_records(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], records: int, credits: int
) -> None:
    response = write(
        zoho_http, zoho_auth, "Accounts", [{"Account_Name": f"Company {n}"} for n in range(records)]
    )

    assert response.status_code == 201
    assert zoho.credits_used() == credits


def test_a_batch_larger_than_the_credits_left_is_refused_whole(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho.credit_budget = 2

    response = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": f"Company {n}"} for n in range(30)])

    assert response.status_code == 429
    assert zoho.records("Accounts") == [] and zoho.credits_used() == 0


def test_refused_logins_and_token_requests_cost_no_credits(
    zoho: ZohoEmulator, zoho_http: httpx2.Client
) -> None:
    zoho_http.post("/oauth/v2/token", data=zoho_refresh_params())
    zoho_http.get("/crm/v8/Accounts/1", headers={"Authorization": "Zoho-oauthtoken nope"})

    assert zoho.credits_used() == 0


def test_retry_after_can_be_switched_on(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    zoho.credit_budget, zoho.send_retry_after = 1, True
    zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)
    clock.advance(600)

    refused = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    assert (refused.status_code, refused.headers["retry-after"]) == (429, str(int(DAY - 600)))


def test_credits_hook_reports_and_sets_the_budget(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    set_to = zoho_http.post("/_emulator/credits", json={"budget": 1}).json()
    refused = zoho_http.get("/crm/v8/Accounts/1", headers=zoho_auth)

    assert set_to == {"budget": 1, "used": 1, "edition": "professional"}
    assert refused.status_code == 429
    assert zoho_http.post("/_emulator/credits", json={"credits": 1}).status_code == 400
