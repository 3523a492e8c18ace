"""Contract tests for what the Zoho emulator POSTs to a channel's notify_url when records change (notes §3e).

What was sent is asserted on `zoho.notifications` at once (the decision is synchronous); what arrived
is polled on the receiver, since deliveries are asynchronous and never hold up the API answer.
"""

from __future__ import annotations

import threading

import httpx2
import pytest

from connectors.zoho.emulator import ZohoEmulator
from tests.emulators import zoho_fixtures
from tests.emulators.conftest import Clock
from tests.emulators.zoho_fixtures import CHANNEL, NotificationReceiver, channel, new_ids, send, stamp, write
from tests.support.live import wait_for

notify_server = zoho_fixtures.notify_server
notify_receiver = zoho_fixtures.notify_receiver
hook_url = zoho_fixtures.hook_url

SHORT = 600.0  # seconds: a channel lifetime that lapses well before the test's access token does


# Notifications (notes §3e) ----------------------------------------------------------------------------


def test_insert_through_the_api_posts_the_documented_payload(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    zoho_url: str,
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
    clock: Clock,
) -> None:
    receiver = notify_receiver[0]
    send(zoho_http, zoho_auth, "POST", channel(hook_url, token="tenant42-7f3a"))

    ids = new_ids(
        write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}, {"Account_Name": "Beta"}])
    )

    [body] = receiver.wait(1)
    assert body == {
        "server_time": int(clock.now * 1000),
        "query_params": {"t": "42"},
        "module": "Accounts",
        "resource_uri": f"{zoho_url}/crm/v2/Accounts",
        "ids": ids,
        "affected_fields": [],
        "operation": "insert",
        "channel_id": CHANNEL,
        "token": "tenant42-7f3a",
    }
    assert (receiver.received[0]["path"], receiver.received[0]["query"]) == ("/zoho", {"t": "42"})
    assert [(n["channel_id"], n["url"]) for n in zoho.notifications] == [(CHANNEL, hook_url)]
    wait_for(lambda: zoho.deliveries, what="the delivery log")
    assert zoho.deliveries[0]["status"] == 200


@pytest.mark.parametrize("return_values", [False, True])
def test_update_notification_names_the_changed_fields(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
    return_values: bool,
) -> None:
    record_id = zoho.seed("Contacts", {"Last_Name": "Smith", "Phone": "1"})
    item = channel(hook_url, ["Contacts.edit"], return_affected_field_values=return_values)
    send(zoho_http, zoho_auth, "POST", item)

    zoho_http.put(
        "/crm/v8/Contacts",
        json={"data": [{"id": record_id, "Phone": "2", "Last_Name": "Smith"}]},
        headers=zoho_auth,
    )

    [body] = notify_receiver[0].wait(1)
    assert (body["operation"], body["ids"], body["affected_fields"]) == (
        "update",
        [record_id],
        [{record_id: ["Phone"]}],
    )
    if return_values:
        assert body["affected_values"] == [{"record_id": record_id, "values": {"Phone": "2"}}]
    else:
        assert "affected_values" not in body


def test_delete_through_the_api_is_notified(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    record_id = zoho.seed("Vendors", {"Vendor_Name": "Supplies"})
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Vendors.delete"]))

    zoho_http.delete(f"/crm/v8/Vendors?ids={record_id}", headers=zoho_auth)

    [body] = notify_receiver[0].wait(1)
    assert (body["module"], body["operation"], body["ids"], body["affected_fields"]) == (
        "Vendors",
        "delete",
        [record_id],
        [],
    )


def test_upsert_sends_one_notification_per_operation(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    existing = zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "1"})
    send(zoho_http, zoho_auth, "POST", channel(hook_url))
    records = [{"Account_Name": "New", "NetSuite_Id": "2"}, {"Account_Name": "Acme Ltd", "NetSuite_Id": "1"}]

    response = write(
        zoho_http, zoho_auth, "Accounts", records, upsert=True, duplicate_check_fields=["NetSuite_Id"]
    )

    inserted = new_ids(response)[0]
    bodies = sorted(notify_receiver[0].wait(2), key=lambda b: b["operation"])
    assert [(b["operation"], b["ids"]) for b in bodies] == [("insert", [inserted]), ("update", [existing])]


def test_test_hooks_notify_like_changes_made_in_the_crm(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url))
    zoho.seed("Accounts", {"Account_Name": "Quiet"})  # seeding is silent unless asked
    assert zoho.notifications == []

    record_id = zoho_http.post("/_emulator/seed/Accounts?notify=1", json={"Account_Name": "Loud"}).json()[
        "id"
    ]
    zoho_http.patch(f"/_emulator/records/Accounts/{record_id}", json={"Phone": "9"})
    zoho_http.patch(f"/_emulator/records/Accounts/{record_id}?notify=false", json={"Phone": "8"})
    zoho.delete_record("Accounts", record_id)

    operations = sorted(b["operation"] for b in notify_receiver[0].wait(3))
    assert operations == ["delete", "insert", "update"]
    assert [n["body"]["operation"] for n in zoho_http.get("/_emulator/notifications").json()] == [
        "insert",
        "update",
        "delete",
    ]


def test_channels_get_only_the_events_they_asked_for(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, ["Contacts.create"]))
    contact = zoho.seed("Contacts", {"Last_Name": "Smith"})

    zoho.update_record("Contacts", contact, {"Phone": "1"})
    zoho.seed("Accounts", {"Account_Name": "Acme"}, notify=True)
    write(zoho_http, zoho_auth, "Contacts", [{"Last_Name": "Jones"}])

    assert [(n["body"]["module"], n["body"]["operation"]) for n in zoho.notifications] == [
        ("Contacts", "insert")
    ]
    notify_receiver[0].wait(1)


def test_every_live_channel_on_a_module_gets_its_own_token(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
) -> None:
    url = notify_receiver[1]
    send(
        zoho_http,
        zoho_auth,
        "POST",
        channel(f"{url}/one", token="one"),
        channel(f"{url}/two", channel_id="2", token="two"),
    )

    zoho.seed("Accounts", {"Account_Name": "Acme"}, notify=True)

    notify_receiver[0].wait(2)
    assert sorted((e["path"], e["body"]["token"]) for e in notify_receiver[0].received) == [
        ("/one", "one"),
        ("/two", "two"),
    ]


def test_nothing_is_sent_after_the_channel_expires(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], hook_url: str, clock: Clock
) -> None:
    send(zoho_http, zoho_auth, "POST", channel(hook_url, channel_expiry=stamp(clock.now + SHORT)))
    clock.advance(SHORT)

    write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}])
    zoho.seed("Accounts", {"Account_Name": "Beta"}, notify=True)

    assert zoho.notifications == [] and zoho.pending_deliveries == 0


def test_the_api_answer_does_not_wait_for_the_receiver(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    receiver = notify_receiver[0]
    receiver.gate = threading.Event()  # the receiver holds every POST until the test opens the gate
    send(zoho_http, zoho_auth, "POST", channel(hook_url))

    response = write(zoho_http, zoho_auth, "Accounts", [{"Account_Name": "Acme"}])

    assert response.status_code == 201 and zoho.pending_deliveries == 1 and receiver.bodies() == []
    receiver.gate.set()
    receiver.wait(1)
    wait_for(lambda: zoho.pending_deliveries == 0, what="the delivery to finish")


def test_a_failing_receiver_is_logged_once(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    notify_receiver: tuple[NotificationReceiver, str],
    hook_url: str,
) -> None:
    notify_receiver[0].status = 500
    send(zoho_http, zoho_auth, "POST", channel(hook_url))

    zoho.seed("Accounts", {"Account_Name": "Acme"}, notify=True)

    wait_for(lambda: zoho.deliveries, what="the delivery log")
    assert [d["status"] for d in zoho.deliveries] == [500] and zoho.pending_deliveries == 0
