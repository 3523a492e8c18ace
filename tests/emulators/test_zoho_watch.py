"""Contract tests for the Zoho emulator's Notification API: enable, list, update, disable (notes §3a-§3d).

Channels expire on the emulator's clock, so expiry is tested by moving the clock, never by waiting.
What channels POST when records change: test_zoho_notifications.py.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators import zoho_fixtures
from tests.emulators.conftest import Clock
from tests.emulators.zoho_fixtures import CHANNEL, WATCH, channel, send, stamp

notify_server = zoho_fixtures.notify_server
notify_receiver = zoho_fixtures.notify_receiver
hook_url = zoho_fixtures.hook_url

HOUR = 3600.0  # seconds
DAY = 86400.0  # seconds
SHORT = 600.0  # seconds: a channel lifetime that lapses well before the test's access token does


# Enable (notes §3a) --------------------------------------------------------------------------------


def test_enable_answers_201_with_an_entry_per_module(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    zoho_url: str,
    hook_url: str,
    clock: Clock,
) -> None:
    expiry = stamp(clock.now + DAY)
    item = channel(
        hook_url, ["Accounts.all", "Contacts.create", "Contacts.edit"], channel_expiry=expiry, token="t42"
    )

    response = send(zoho_http, zoho_auth, "POST", item)

    assert response.status_code == 201
    result = response.json()["watch"][0]
    assert (result["code"], result["status"]) == ("SUCCESS", "success")
    assert result["message"] == "Successfully subscribed for actions-watch of the given module"
    assert [
        (e["resource_name"], e["channel_id"], e["channel_expiry"]) for e in result["details"]["events"]
    ] == [
        ("Accounts", CHANNEL, expiry),
        ("Contacts", CHANNEL, expiry),
    ]
    assert result["details"]["events"][0]["resource_uri"] == f"{zoho_url}/crm/v8/Accounts"
    assert sorted((c["resource_name"], tuple(c["events"]), c["token"]) for c in zoho.channels()) == [
        ("Accounts", ("Accounts.all",), "t42"),
        ("Contacts", ("Contacts.create", "Contacts.edit"), "t42"),
    ]


@pytest.mark.parametrize(
    ("ahead", "lifetime"),
    [
        (None, HOUR),
        (8 * DAY, HOUR),
        (7 * DAY + 60, HOUR),
        (7 * DAY, 7 * DAY),
        (6 * DAY, 6 * DAY),
        (120.0, 120.0),
    ],
)
def test_channel_expiry_missing_or_beyond_a_week_becomes_one_hour(
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    hook_url: str,
    clock: Clock,
    ahead: float | None,
    lifetime: float,
) -> None:
    extra = {} if ahead is None else {"channel_expiry": stamp(clock.now + ahead)}

    response = send(zoho_http, zoho_auth, "POST", channel(hook_url, **extra))

    assert response.json()["watch"][0]["details"]["events"][0]["channel_expiry"] == stamp(
        clock.now + lifetime
    )


@pytest.mark.parametrize(
    ("change", "code", "details"),
    [
        (
            {"channel_id": None},
            "MANDATORY_NOT_FOUND",
            {"api_name": "channel_id", "json_path": "$.watch[0].channel_id"},
        ),
        ({"events": []}, "MANDATORY_NOT_FOUND", {"api_name": "events"}),
        ({"notify_url": None}, "MANDATORY_NOT_FOUND", {"api_name": "notify_url"}),
        (
            {"channel_id": "channel-one"},
            "INVALID_DATA",
            {"api_name": "channel_id", "expected_data_type": "long"},
        ),
        (
            {"events": ["Spaceships.all"]},
            "INVALID_DATA",
            {"api_name": "events", "json_path": "$.watch[0].events[0]"},
        ),
        (
            {"events": ["Accounts.all", "Accounts.update"]},
            "INVALID_DATA",
            {"json_path": "$.watch[0].events[1]"},
        ),
        ({"events": "Accounts.all"}, "INVALID_DATA", {"api_name": "events"}),
        ({"token": "x" * 51}, "INVALID_DATA", {"api_name": "token", "maximum_length": 50}),
        ({"notify_url": "ftp://hooks.example.com/z"}, "INVALID_DATA", {"api_name": "notify_url"}),
        (
            {"channel_expiry": "tomorrow"},
            "INVALID_DATA",
            {"api_name": "channel_expiry", "expected_data_type": "datetime"},
        ),
        ({"channel_expiry": "2000-01-01T00:00:00+00:00"}, "INVALID_DATA", {"api_name": "channel_expiry"}),
        ({"return_affected_field_values": "yes"}, "INVALID_DATA", {"expected_data_type": "boolean"}),
    ],
)
def test_enable_refuses_bad_channels_per_item(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    hook_url: str,
    change: dict[str, Any],
    code: str,
    details: dict[str, Any],
) -> None:
    item = {k: v for k, v in {**channel(hook_url), **change}.items() if v is not None}

    response = send(zoho_http, zoho_auth, "POST", item)

    assert response.status_code == 400
    error = response.json()["watch"][0]
    assert (error["code"], error["status"]) == (code, "error")
    assert details.items() <= error["details"].items()
    assert zoho.channels() == []


def test_enable_with_one_good_and_one_bad_channel_is_207(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str
) -> None:
    response = send(zoho_http, zoho_auth, "POST", channel(hook_url), channel(hook_url, channel_id="x"))

    assert response.status_code == 207
    assert [r["status"] for r in response.json()["watch"]] == ["success", "error"]
    assert len(zoho.channels()) == 1


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{oops", "INVALID_DATA"),
        (b'{"channels": []}', "MANDATORY_NOT_FOUND"),
        (b'{"watch": []}', "MANDATORY_NOT_FOUND"),
        (b'{"watch": [' + b",".join([b"{}"] * 51) + b"]}", "LIMIT_EXCEEDED"),
    ],
)
def test_watch_bodies_without_a_usable_watch_array_are_refused(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], body: bytes, code: str
) -> None:
    response = zoho_http.post(WATCH, content=body, headers={**zoho_auth, "Content-Type": "application/json"})

    assert (response.status_code, response.json()["code"]) == (400, code)


# List (notes §3c) -----------------------------------------------------------------------------------


def test_list_shows_live_channels_and_filters(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, zoho_url: str
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Accounts.edit", "Vendors.all"], token="t"))
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Contacts.delete"], channel_id="2000"))

    everything = zoho_http.get(WATCH, headers=zoho_auth).json()
    vendors = zoho_http.get(f"{WATCH}?module=Vendors", headers=zoho_auth).json()["watch"]
    second = zoho_http.get(f"{WATCH}?channel_id=2000", headers=zoho_auth).json()["watch"]

    assert [(w["channel_id"], w["resource_name"], w["events"]) for w in everything["watch"]] == [
        (CHANNEL, "Accounts", ["Accounts.edit"]),
        (CHANNEL, "Vendors", ["Vendors.all"]),
        ("2000", "Contacts", ["Contacts.delete"]),
    ]
    assert everything["info"] == {"per_page": 200, "count": 3, "page": 1, "more_records": False}
    first = everything["watch"][0]
    assert (first["notify_url"], first["token"], first["resource_uri"]) == (
        hook_url,
        "t",
        f"{zoho_url}/crm/v8/Accounts",
    )
    assert (first["notify_on_related_action"], first["return_affected_field_values"]) == (True, False)
    assert [w["resource_name"] for w in vendors] == ["Vendors"] and [w["channel_id"] for w in second] == [
        "2000"
    ]


def test_list_with_nothing_subscribed_is_204(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = zoho_http.get(WATCH, headers=zoho_auth)

    assert (response.status_code, response.content) == (204, b"")


# Update: PATCH and PUT (notes §3b) ---------------------------------------------------------------------


def test_patch_changes_only_the_keys_sent(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, clock: Clock
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, token="keep-me", return_affected_field_values=True))
    renewed = stamp(clock.now + 2 * DAY)

    response = send(zoho_http, zoho_auth, "PATCH", channel(hook_url, channel_expiry=renewed))

    assert response.status_code == 200
    assert response.json()["watch"][0]["message"] == "Successfully updated the subscribe details"
    [entry] = zoho.channels()
    assert (entry["channel_expiry"], entry["token"], entry["return_affected_field_values"]) == (
        renewed,
        "keep-me",
        True,
    )


def test_put_replaces_the_whole_definition(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, clock: Clock
) -> None:
    item = channel(hook_url, ["Accounts.all", "Contacts.all"], token="old", notify_on_related_action=False)
    send(zoho_http, zoho_auth, "POST", item)

    response = send(zoho_http, zoho_auth, "PUT", channel(hook_url, ["Accounts.edit"]))

    assert response.status_code == 200
    [entry] = zoho.channels()
    assert (entry["events"], entry["token"], entry["notify_on_related_action"]) == (
        ["Accounts.edit"],
        None,
        True,
    )
    assert entry["channel_expiry"] == stamp(clock.now + HOUR)


def test_patch_with_delete_events_removes_just_those(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Accounts.create", "Accounts.edit", "Vendors.all"]))

    response = send(
        zoho_http,
        zoho_auth,
        "PATCH",
        {"channel_id": CHANNEL, "events": ["Accounts.create", "Vendors.all"], "_delete_events": True},
    )

    assert response.json()["watch"][0]["message"] == "Successfully removed the subscribe details"
    assert [(c["resource_name"], c["events"]) for c in zoho.channels()] == [("Accounts", ["Accounts.edit"])]


@pytest.mark.parametrize("method", ["PATCH", "PUT"])
@pytest.mark.parametrize("case", ["lapsed", "unknown channel", "module not in the channel"])
def test_updating_a_channel_that_is_not_live_is_not_subscribed(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    hook_url: str,
    clock: Clock,
    method: str,
    case: str,
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, channel_expiry=stamp(clock.now + SHORT)))
    item = {
        "lapsed": channel(hook_url, channel_expiry=stamp(clock.now + 3 * HOUR)),
        "unknown channel": channel(hook_url, channel_id="999"),
        "module not in the channel": channel(hook_url, ["Accounts.all", "Contacts.all"]),
    }[case]
    if case == "lapsed":
        clock.advance(SHORT)

    response = send(zoho_http, zoho_auth, method, item)

    assert response.status_code == 400
    assert response.json()["watch"][0]["code"] == "NOT_SUBSCRIBED"
    assert [(c["resource_name"], c["expired"]) for c in zoho.channels()] == [("Accounts", case == "lapsed")]


def test_patch_needs_the_notify_url(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url))

    response = send(zoho_http, zoho_auth, "PATCH", {"channel_id": CHANNEL, "events": ["Accounts.all"]})

    assert (response.status_code, response.json()["watch"][0]["details"]["api_name"]) == (400, "notify_url")


def test_a_lapsed_channel_leaves_the_list_and_can_be_enabled_again(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, clock: Clock
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, channel_expiry=stamp(clock.now + SHORT)))
    clock.advance(SHORT)

    listed = zoho_http.get(WATCH, headers=zoho_auth)
    again = send(zoho_http, zoho_auth, "POST", channel(hook_url))

    assert listed.status_code == 204
    assert again.status_code == 201
    assert [c["expired"] for c in zoho.channels()] == [False]


# Disable (notes §3d) --------------------------------------------------------------------------------


def test_disable_removes_every_module_of_the_channel(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Accounts.all", "Contacts.all"]))
    send(zoho_http, zoho_auth, "POST", channel(hook_url, channel_id="2000"))

    response = zoho_http.delete(f"{WATCH}?channel_ids={CHANNEL},4040", headers=zoho_auth)

    assert response.status_code == 207
    results = response.json()["watch"]
    assert [(r["code"], r["details"].get("resource_uri", "").rsplit("/", 1)[-1]) for r in results] == [
        ("SUCCESS", "Accounts"),
        ("SUCCESS", "Contacts"),
        ("NOT_SUBSCRIBED", ""),
    ]
    assert results[0]["message"] == "Successfully un-subscribed from actions-watch"
    assert [c["channel_id"] for c in zoho.channels()] == ["2000"]


def test_disable_needs_channel_ids(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    response = zoho_http.delete(WATCH, headers=zoho_auth)

    assert (response.status_code, response.json()["code"], response.json()["details"]) == (
        400,
        "REQUIRED_PARAM_MISSING",
        {"param_name": "channel_ids"},
    )


def test_channels_hook_lists_lapsed_entries_too(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, clock: Clock
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url))
    clock.advance(HOUR)

    listed = zoho_http.get("/_emulator/channels").json()

    assert [(c["channel_id"], c["expired"]) for c in listed] == [(CHANNEL, True)]
