"""Contract tests for the Zuora emulator's callouts: body, HMAC signature, headers, retries, events."""

from __future__ import annotations

import hmac
import re
import socket
from typing import Any

import httpx2
import pytest

from connectors.zuora.emulator import ZuoraEmulator
from tests.emulators.zuora_fixtures import (
    CalloutReceiver,
    callout_receiver_fixture,  # noqa: F401  (fixture "callout_receiver")
    callout_server_fixture,  # noqa: F401  (fixture "callout_server")
    create_account,
    signature,
)
from tests.support.live import wait_for

SECRET = "callout-secret-ü"  # non-ASCII on purpose: the key is the secret's UTF-8 bytes
HEX32 = re.compile(r"[0-9a-f]{32}")
Receiver = tuple[CalloutReceiver, str]


def settled(zuora: ZuoraEmulator, count: int = 1) -> list[dict[str, Any]]:
    """Every attempt once `count` notifications are finished (delivered or given up)."""
    wait_for(
        lambda: zuora.pending_callouts == 0 and len({c["notificationId"] for c in zuora.callouts}) >= count,
        what=f"{count} callout(s) to settle",
    )
    return zuora.callouts


@pytest.fixture
def account(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> dict[str, Any]:
    """Account A00000001; creating it over HTTP also lets the emulator learn its serving loop."""
    return create_account(zuora_http, zuora_auth)


# Body, signature and headers ------------------------------------------------------------------------


def test_subscription_created_callout_is_signed_json_in_our_documented_shape(
    zuora: ZuoraEmulator, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver
    zuora.register_callout(url, secret=SECRET)

    created = zuora.create_subscription("A00000001", contract_effective_date="2024-07-01")

    (attempt,) = settled(zuora)
    (received,) = receiver.received
    headers = received["headers"]
    assert received["body"] == {
        "event": "Subscription Created",
        "eventCategory": 1210,
        "notification": "Subscription Created",
        "tenantId": "19",
        "accountId": account["accountId"],
        "accountNumber": "A00000001",
        "subscriptionId": created["id"],
        "subscriptionNumber": "A-S00000001",
        "version": 1,
        "subscriptionStatus": "Active",
        "effectiveDate": "2024-07-01",
        "amendmentType": None,
        "orderNumber": None,
        "orderActionType": None,
    }
    assert hmac.compare_digest(headers["x-zuora-signature"], signature(SECRET, received["raw"]))
    assert headers["content-type"] == "application/json"
    assert HEX32.fullmatch(headers["zuora-notification-id"]) and HEX32.fullmatch(headers["zuora-request-id"])
    assert headers["x-amzn-trace-id"].startswith("Root=1-")
    assert (attempt["notificationId"], attempt["requestId"]) == (
        headers["zuora-notification-id"],
        headers["zuora-request-id"],
    )
    assert (attempt["status"], attempt["outcome"], attempt["attempt"], attempt["url"]) == (
        200,
        "delivered",
        1,
        url,
    )


@pytest.mark.parametrize(
    ("change", "event", "category", "amendment", "status"),
    [
        ("create", "Subscription Created", 1210, None, "Active"),
        ("amend", "Amendment Processed", 1310, "NewProduct", "Active"),
        ("renew", "Amendment Processed", 1310, "Renewal", "Active"),
        ("cancel", "Amendment Processed", 1310, "Cancellation", "Cancelled"),
    ],
)
def test_billing_tenant_raises_standard_events(
    zuora: ZuoraEmulator,
    callout_receiver: Receiver,
    account: dict[str, Any],
    change: str,
    event: str,
    category: int,
    amendment: str | None,
    status: str,
) -> None:
    receiver, url = callout_receiver
    zuora.create_subscription("A00000001")
    zuora.register_callout(url, secret=SECRET)

    latest = _make_change(zuora, change)

    settled(zuora)
    (body,) = receiver.bodies()
    assert (body["event"], body["eventCategory"], body["amendmentType"], body["subscriptionStatus"]) == (
        event,
        category,
        amendment,
        status,
    )
    assert (body["subscriptionId"], body["version"]) == (latest["id"], latest["version"])


def _make_change(zuora: ZuoraEmulator, change: str) -> dict[str, Any]:
    plan = next(c["productRatePlanId"] for c in zuora.catalog() if c["name"] == "Consulting")
    if change == "create":
        return zuora.create_subscription("A00000001")
    if change == "amend":
        return zuora.amend_subscription(
            "A-S00000001", "NewProduct", add_rate_plans=[{"productRatePlanId": plan}]
        )
    if change == "renew":
        return zuora.amend_subscription("A-S00000001", "Renewal")
    return zuora.cancel_subscription("A-S00000001", reason="churn")


@pytest.mark.parametrize(
    ("change", "notification", "action"),
    [
        ("create", "Create Subscription", "CreateSubscription"),
        ("amend", "Add Product", "AddProduct"),
        ("renew", "Renew Subscription", "RenewSubscription"),
        ("cancel", "Cancel Subscription", "CancelSubscription"),
    ],
)
def test_orders_tenant_raises_order_processed_and_order_action_processed(
    zuora: ZuoraEmulator,
    callout_receiver: Receiver,
    account: dict[str, Any],
    change: str,
    notification: str,
    action: str,
) -> None:
    receiver, url = callout_receiver
    zuora.configure(orders_tenant=True)
    zuora.create_subscription("A00000001")
    zuora.register_callout(url, secret=SECRET)

    latest = _make_change(zuora, change)

    settled(zuora, 2)
    bodies = sorted(receiver.bodies(), key=lambda b: b["event"])
    order_action, order = bodies
    assert [b["event"] for b in bodies] == ["Order Action Processed", "Order Processed"]
    assert (order_action["notification"], order_action["orderActionType"]) == (notification, action)
    assert (order["notification"], order["orderActionType"]) == ("Order Processed", None)
    assert {b["eventCategory"] for b in bodies} == {None} and {b["amendmentType"] for b in bodies} == {None}
    assert order["orderNumber"] == order_action["orderNumber"] == latest["orderNumber"] is not None
    assert len({c["notificationId"] for c in zuora.callouts}) == 2  # two notifications, two ids


# Retries -----------------------------------------------------------------------------------------------

RETRIES = [
    ("5xx then 200", [500, 200], [500, 200], "delivered"),
    ("429 and 503 then 200", [429, 503, 200], [429, 503, 200], "delivered"),
    ("403 then 200", [403, 200], [403, 200], "delivered"),
    ("408 then 200", [408, 200], [408, 200], "delivered"),
    ("500 three times", [500, 500, 500, 200], [500, 500, 500], "failed"),
    ("400 is final", [400, 200], [400], "failed"),
    ("401 is final", [401, 200], [401], "failed"),
    ("404 is final", [404, 200], [404], "failed"),
    ("422 is final", [422, 200], [422], "failed"),
    ("302 is final and not followed", [302, 200], [302], "failed"),
    ("201 is not success and not retried", [201, 200], [201], "failed"),
]


@pytest.mark.parametrize(("case", "answers", "seen", "outcome"), RETRIES, ids=[r[0] for r in RETRIES])
def test_callout_retries_only_what_zuora_retries(
    zuora: ZuoraEmulator,
    callout_receiver: Receiver,
    account: dict[str, Any],
    case: str,
    answers: list[int],
    seen: list[int],
    outcome: str,
) -> None:
    receiver, url = callout_receiver
    receiver.statuses.extend(answers)
    zuora.register_callout(url, secret=SECRET)

    zuora.create_subscription("A00000001")

    attempts = settled(zuora)
    assert [a["status"] for a in attempts] == seen
    assert [a["attempt"] for a in attempts] == list(range(1, len(seen) + 1))
    assert attempts[-1]["outcome"] == outcome and all(a["outcome"] == "retrying" for a in attempts[:-1])
    assert len({a["notificationId"] for a in attempts}) == 1  # stable across retries
    assert len({a["requestId"] for a in attempts}) == len(seen)  # new per attempt
    raws = {r["raw"] for r in receiver.received}
    assert len(raws) == 1 and all(
        r["headers"]["x-zuora-signature"] == signature(SECRET, r["raw"]) for r in receiver.received
    )


def test_callout_retries_network_errors(zuora: ZuoraEmulator, account: dict[str, Any]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    zuora.register_callout(f"http://127.0.0.1:{port}/hook", secret=SECRET)

    zuora.create_subscription("A00000001")

    attempts = settled(zuora)
    assert [a["outcome"] for a in attempts] == ["retrying", "retrying", "failed"]
    assert all("ConnectError" in a["error"] and "status" not in a for a in attempts)


@pytest.mark.parametrize(
    ("retries", "answers", "seen"), [(1, [500], [500]), (5, [500] * 4 + [200], [500] * 4 + [200])]
)
def test_callout_attempts_are_configurable(
    zuora: ZuoraEmulator,
    callout_receiver: Receiver,
    account: dict[str, Any],
    retries: int,
    answers: list[int],
    seen: list[int],
) -> None:
    receiver, url = callout_receiver
    receiver.statuses.extend(answers)
    zuora.register_callout(url, secret=SECRET, retries=retries, interval=0)

    zuora.create_subscription("A00000001")

    assert [a["status"] for a in settled(zuora)] == seen


def test_callout_waits_the_interval_between_attempts(
    zuora: ZuoraEmulator, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver
    receiver.statuses.append(503)
    zuora.callout_interval = 0.2  # seconds

    zuora.register_callout(url, secret=SECRET)
    zuora.create_subscription("A00000001")

    settled(zuora)
    first, second = (r["at"] for r in receiver.received)
    assert second - first >= 0.19


# Delivery and registration ----------------------------------------------------------------------------


def test_callouts_never_delay_the_answer_that_caused_them(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver
    zuora.register_callout(url, secret=SECRET)
    receiver.hold()

    answer = zuora_http.post("/_emulator/subscriptions", json={"account": "A00000001"})

    assert answer.status_code == 201
    wait_for(lambda: receiver.received, what="the held callout to arrive")
    assert zuora.pending_callouts == 1 and zuora.callouts == []
    receiver.release()
    assert settled(zuora)[0]["outcome"] == "delivered"


def test_callout_events_choose_what_each_target_receives(
    zuora: ZuoraEmulator, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver
    zuora.register_callout(url + "/created", secret=SECRET, events=["1210"])
    zuora.register_callout(url + "/cancelled", secret=SECRET, events=["Amendment Processed"])

    zuora.create_subscription("A00000001")
    zuora.cancel_subscription("A-S00000001")

    settled(zuora, 2)
    routed = sorted((r["path"].rsplit("/", 1)[1], r["body"]["event"]) for r in receiver.received)
    assert routed == [("cancelled", "Amendment Processed"), ("created", "Subscription Created")]


def test_callout_hooks_register_list_and_forget(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver

    registered = zuora_http.post("/_emulator/callouts", json={"url": url, "secret": SECRET, "retries": 2})
    zuora_http.post("/_emulator/subscriptions", json={"account": "A00000001"})
    settled(zuora)
    listed = zuora_http.get("/_emulator/callouts").json()
    zuora_http.delete("/_emulator/callouts")
    zuora_http.post("/_emulator/subscriptions", json={"account": "A00000001"})

    assert registered.status_code == 201 and HEX32.fullmatch(registered.json()["id"])
    assert [(c["event"], c["outcome"]) for c in listed] == [("Subscription Created", "delivered")]
    assert zuora.sender.targets == [] and zuora.pending_callouts == 0 and len(receiver.received) == 1


@pytest.mark.parametrize(
    "payload",
    [
        {"secret": SECRET},
        {"url": "ftp://example.com/hook", "secret": SECRET},
        {"url": "http://127.0.0.1/hook"},
        {"url": "http://127.0.0.1/hook", "secret": SECRET, "retries": 0},
        {"url": "http://127.0.0.1/hook", "secret": SECRET, "retries": 6},
        {"url": "http://127.0.0.1/hook", "secret": SECRET, "interval": -1},
        {"url": "http://127.0.0.1/hook", "secret": SECRET, "events": "Subscription Created"},
    ],
    ids=[
        "no url",
        "not http",
        "no secret",
        "zero attempts",
        "six attempts",
        "negative interval",
        "events as text",
    ],
)
def test_callout_hook_refuses_bad_registrations(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, payload: dict[str, Any]
) -> None:
    response = zuora_http.post("/_emulator/callouts", json=payload)

    assert (response.status_code, bool(response.json()["error"])) == (400, True)
    assert zuora.sender.targets == []


def test_seeded_subscription_fires_only_when_asked(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    receiver, url = callout_receiver
    zuora.register_callout(url, secret=SECRET)

    zuora_http.post(
        "/_emulator/seed/subscriptions", json={"account": "A00000001", "subscriptionNumber": "QUIET"}
    )
    zuora_http.post(
        "/_emulator/seed/subscriptions?notify=true",
        json={"account": "A00000001", "subscriptionNumber": "LOUD"},
    )

    settled(zuora)
    assert [b["subscriptionNumber"] for b in receiver.bodies()] == ["LOUD"]


def test_reset_keeps_callout_targets_and_forgets_attempts(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, callout_receiver: Receiver, account: dict[str, Any]
) -> None:
    _, url = callout_receiver
    zuora.register_callout(url, secret=SECRET)
    zuora.create_subscription("A00000001")
    settled(zuora)

    zuora_http.post("/_emulator/reset")

    assert zuora.callouts == [] and [t.url for t in zuora.sender.targets] == [url]


def test_callouts_need_a_served_emulator(callout_receiver: Receiver) -> None:
    never_served = ZuoraEmulator()
    never_served.seed("accounts", {"name": "Offline", "currency": "USD"})
    never_served.register_callout(callout_receiver[1], secret=SECRET)

    with pytest.raises(RuntimeError, match="serve the emulator first"):
        never_served.create_subscription("A00000001")
