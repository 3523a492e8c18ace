"""The subscription-event flow without a network: source ids, event kinds, the snapshot and the default
mapping to the NetSuite custom record."""

from __future__ import annotations

from typing import Any

import pytest

from runner.flows import registry
from runner.flows.subscription import (
    AMENDED,
    CANCELLED,
    CREATED,
    DEFAULT_MAPPING,
    SubscriptionEventToCustomRecord,
    event_kind,
    external_id,
    parse_source_id,
    snapshot_of,
)
from runner.mapping import MappingError, apply, validate_spec

FLOW = SubscriptionEventToCustomRecord()


def version(**changes: Any) -> dict[str, Any]:
    """A subscription version as GET /v1/subscriptions/{key} returns it (shared/api/zuora.md §5)."""
    body: dict[str, Any] = {
        "success": True,
        "id": "8ad09be48db5aa07018db6ad3c3b1b5a",
        "subscriptionNumber": "A-S00000001",
        "version": 1,
        "status": "Active",
        "accountId": "8ad09be48db5aa07018db6ad3a4a1b32",
        "accountNumber": "A00000001",
        "currency": "USD",
        "termType": "TERMED",
        "autoRenew": True,
        "contractEffectiveDate": "2024-07-01",
        "serviceActivationDate": "2024-07-01",
        "termStartDate": "2024-07-01",
        "termEndDate": "2025-07-01",
        "subscriptionEndDate": "2025-07-01",
        "cancelReason": None,
        "orderNumber": None,
        "contractedMrr": 100,
        "totalContractedValue": 1200,
        "statusHistory": [{"startDate": "2024-07-01", "endDate": None, "status": "Active"}],
        "ratePlans": [],
    }
    body.update(changes)
    return body


def callout(**changes: Any) -> dict[str, Any]:
    """The job payload intake_zuora makes of a Subscription Created callout."""
    payload: dict[str, Any] = {
        "notification_id": "a7" * 16,
        "event": "Subscription Created",
        "notification": "Subscription Created",
        "account_id": "8ad09be48db5aa07018db6ad3a4a1b32",
        "subscription_id": "8ad09be48db5aa07018db6ad3c3b1b5a",
        "subscription_number": "A-S00000001",
        "version": 1,
    }
    payload.update(changes)
    return payload


CANCELLED_V3 = {
    "version": 3,
    "status": "Cancelled",
    "subscriptionEndDate": "2024-10-15",
    "statusHistory": [
        {"startDate": "2024-07-01", "endDate": "2024-10-15", "status": "Active"},
        {"startDate": "2024-10-15", "endDate": None, "status": "Cancelled"},
    ],
}


# Registration -------------------------------------------------------------------------------------


def test_subscription_flow_is_registered_under_the_name_event_feeds_uses() -> None:
    flow = registry()["subscription_event"]

    assert (flow.source_system, flow.target_system, flow.source_record) == ("zuora", "netsuite", "")
    assert flow.batch_size == 1


def test_subscription_default_mapping_is_valid_and_maps_every_required_field() -> None:
    targets = {rule["target"] for rule in DEFAULT_MAPPING["fields"]}

    assert validate_spec(DEFAULT_MAPPING) == []
    assert set(FLOW.required_fields) <= targets


# Source ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (callout(), "A-S00000001@v1"),
        (callout(version=4), "A-S00000001@v4"),
        (callout(version=None), "8ad09be48db5aa07018db6ad3c3b1b5a"),  # the version's own id
        (callout(version=None, subscription_id=None), "A-S00000001"),  # the latest version
        ({"id": "A-S00000001@v2", "replay_of": 7, "mode": "payload", "refetch": False}, "A-S00000001@v2"),
    ],
)
def test_subscription_source_id_names_the_version(payload: dict[str, Any], expected: str) -> None:
    assert FLOW.source_id(payload) == expected


def test_subscription_source_id_refuses_an_event_without_a_subscription() -> None:
    payload = callout(event="Invoice Posted", subscription_id=None, subscription_number=None, version=None)

    with pytest.raises(MappingError, match="Invoice Posted"):
        FLOW.source_id(payload)


@pytest.mark.parametrize(
    ("source_id", "expected"),
    [
        ("A-S00000001@v2", ("A-S00000001", 2)),
        ("A-S00000001", ("A-S00000001", None)),
        ("8ad09be48db5aa07018db6ad3c3b1b5a", ("8ad09be48db5aa07018db6ad3c3b1b5a", None)),
        ("A-S1@vx", ("A-S1@vx", None)),
        ("A-S1@v0", ("A-S1@v0", None)),
    ],
)
def test_subscription_source_id_parses_back_to_key_and_version(
    source_id: str, expected: tuple[str, int | None]
) -> None:
    assert parse_source_id(source_id) == expected


@pytest.mark.parametrize(
    ("number", "version_number", "expected"),
    [("A-S00000001", 2, "A-S00000001-v2"), ("SUB 7/B", 1, "SUB_7_B-v1"), ("S_1", "3", "S_1-v3")],
)
def test_subscription_external_id_keeps_to_netsuite_characters(
    number: str, version_number: int | str, expected: str
) -> None:
    assert external_id(number, version_number) == expected


# Event kinds --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "subscription", "kind"),
    [
        # Billing tenant: standard events.
        ({"event": "Subscription Created"}, {"version": 1, "status": "Active"}, CREATED),
        ({"event": "Amendment Processed"}, {"version": 2, "status": "Active"}, AMENDED),
        ({"event": "Amendment Processed"}, {"version": 3, "status": "Cancelled"}, CANCELLED),
        ({"event": "Amendment Processed", "amendment_type": "Cancellation"}, {"version": 3}, CANCELLED),
        ({"event": "Amendment Processed", "amendmentType": "Renewal"}, {"version": 2}, AMENDED),
        ({"event": "Amendment Processed"}, {"version": 2, "status": "Suspended"}, AMENDED),
        # Orders tenant: Order Action Processed, named after the order action.
        ({"event": "Order Action Processed", "notification": "Create Subscription"}, {"version": 1}, CREATED),
        (
            {"event": "Order Action Processed", "notification": "Cancel Subscription"},
            {"version": 5},
            CANCELLED,
        ),
        ({"event": "Order Action Processed", "notification": "Add Product"}, {"version": 2}, AMENDED),
        (
            {"event": "Order Action Processed", "order_action_type": "CancelSubscription"},
            {"version": 2},
            CANCELLED,
        ),
        # Orders tenant: Order Processed names no action; the version decides.
        ({"event": "Order Processed", "notification": "Order Processed"}, {"version": 1}, CREATED),
        ({"event": "Order Processed", "notification": "Order Processed"}, {"version": 2}, AMENDED),
        ({"event": "Order Processed"}, {"version": 3, "status": "Cancelled"}, CANCELLED),
        # A replay that re-fetches has no callout: the version decides.
        (None, {"version": 1, "status": "Active"}, CREATED),
        (None, {"version": 2, "status": "Active"}, AMENDED),
        (None, {"version": 3, "status": "Canceled"}, CANCELLED),
    ],
)
def test_subscription_event_kind_from_billing_and_orders_events(
    event: dict[str, Any] | None, subscription: dict[str, Any], kind: str
) -> None:
    assert event_kind(event, subscription) == kind


# Snapshot and mapping -----------------------------------------------------------------------------


def test_subscription_snapshot_keeps_the_version_and_adds_event_and_record() -> None:
    snapshot = snapshot_of(version(), callout())

    assert "success" not in snapshot
    assert snapshot["ratePlans"] == [] and snapshot["statusHistory"][0]["status"] == "Active"
    assert snapshot["_event"] == {
        "kind": CREATED,
        "event": "Subscription Created",
        "notification": "Subscription Created",
        "notificationId": "a7" * 16,
    }
    assert snapshot["_record"] == {
        "externalId": "A-S00000001-v1",
        "name": "A-S00000001 v1",
        "cancelledDate": None,
    }


def test_subscription_created_version_maps_to_the_custom_record() -> None:
    mapped = apply(DEFAULT_MAPPING, snapshot_of(version(), callout()))

    assert mapped.payload == {
        "externalId": "A-S00000001-v1",
        "name": "A-S00000001 v1",
        "custrecord_mlz_sub_number": "A-S00000001",
        "custrecord_mlz_sub_id": "8ad09be48db5aa07018db6ad3c3b1b5a",
        "custrecord_mlz_version": 1,
        "custrecord_mlz_event_kind": "created",
        "custrecord_mlz_status": "Active",
        "custrecord_mlz_account_id": "8ad09be48db5aa07018db6ad3a4a1b32",
        "custrecord_mlz_account_number": "A00000001",
        "custrecord_mlz_term_type": "TERMED",
        "custrecord_mlz_auto_renew": True,
        "custrecord_mlz_contract_effective": "2024-07-01",
        "custrecord_mlz_service_activation": "2024-07-01",
        "custrecord_mlz_term_start": "2024-07-01",
        "custrecord_mlz_term_end": "2025-07-01",
        "custrecord_mlz_sub_end": "2025-07-01",
        "custrecord_mlz_mrr": 100,
        "custrecord_mlz_tcv": 1200,
        "custrecord_mlz_currency": "USD",
    }
    assert mapped.create_only == frozenset()


def test_subscription_cancelled_version_maps_its_cancellation() -> None:
    orders_cancel = callout(
        event="Order Action Processed", notification="Cancel Subscription", version=3, subscription_id="v3"
    )
    subscription = version(
        id="v3", contractedMrr=0, cancelReason="Customer churned", orderNumber="O-00000003", **CANCELLED_V3
    )

    payload = apply(DEFAULT_MAPPING, snapshot_of(subscription, orders_cancel)).payload

    assert payload["externalId"] == "A-S00000001-v3"
    assert payload["custrecord_mlz_event_kind"] == "cancelled"
    assert payload["custrecord_mlz_status"] == "Cancelled"
    assert payload["custrecord_mlz_cancelled_date"] == "2024-10-15"
    assert payload["custrecord_mlz_cancel_reason"] == "Customer churned"
    assert payload["custrecord_mlz_order_number"] == "O-00000003"
    assert payload["custrecord_mlz_mrr"] == 0  # zero is a value, not a blank


def test_subscription_cancelled_date_falls_back_to_the_subscription_end() -> None:
    subscription = version(status="Cancelled", subscriptionEndDate="2024-09-30", statusHistory=[])

    assert snapshot_of(subscription, None)["_record"]["cancelledDate"] == "2024-09-30"


def test_subscription_mapping_names_the_field_a_snapshot_cannot_fill() -> None:
    snapshot = snapshot_of(version(), None)
    del snapshot["_event"]

    with pytest.raises(MappingError) as caught:
        apply(DEFAULT_MAPPING, snapshot)

    assert caught.value.field == "custrecord_mlz_event_kind"
