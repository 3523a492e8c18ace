"""Contract tests for the Zuora emulator's subscriptions: versions made by hooks, read over the v1 API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from connectors.zuora.emulator import ZuoraEmulator
from tests.emulators.zuora_fixtures import create_account, follow_pages

START = "2024-01-15"


def subscribe(zuora: ZuoraEmulator, account: str = "A00000001", **options: Any) -> dict[str, Any]:
    return zuora.create_subscription(account, contract_effective_date=START, **options)


def get(http: httpx2.Client, auth: dict[str, str], path: str) -> dict[str, Any]:
    response = http.get(path, headers=auth)
    assert response.status_code == 200, response.text
    return dict(response.json())


def consulting_plan(zuora: ZuoraEmulator) -> str:
    return next(c["productRatePlanId"] for c in zuora.catalog() if c["name"] == "Consulting")


# GET /v1/subscriptions/{key} ---------------------------------------------------------------------


def test_subscription_reads_back_by_number_with_terms_charges_and_metrics(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    account = create_account(zuora_http, zuora_auth)
    created = subscribe(zuora, fields={"notes": "from NS SO-1", "NetSuiteSalesOrder__c": "SO-1"})

    body = get(zuora_http, zuora_auth, f"/v1/subscriptions/{created['subscriptionNumber']}")

    expected = {
        "id": created["id"],
        "subscriptionNumber": "A-S00000001",
        "version": 1,
        "status": "Active",
        "accountId": account["accountId"],
        "accountNumber": "A00000001",
        "termType": "TERMED",
        "autoRenew": True,
        "initialTerm": 12,
        "currentTerm": 12,
        "renewalTerm": 12,
        "contractEffectiveDate": START,
        "subscriptionStartDate": START,
        "termStartDate": START,
        "termEndDate": "2025-01-15",
        "subscriptionEndDate": "2025-01-15",
        "cancelReason": None,
        "contractedMrr": 100,
        "totalContractedValue": 1200,
        "isLatestVersion": True,
        "notes": "from NS SO-1",
        "NetSuiteSalesOrder__c": "SO-1",
        "success": True,
    }
    assert {k: body[k] for k in expected} == expected
    assert body["statusHistory"] == [{"startDate": START, "endDate": None, "status": "Active"}]
    (plan,) = body["ratePlans"]
    (charge,) = plan["ratePlanCharges"]
    assert (plan["productName"], plan["ratePlanName"]) == ("Platform", "Platform Monthly")
    assert (charge["name"], charge["type"], charge["price"], charge["mrr"], charge["number"]) == (
        "Platform Fee",
        "Recurring",
        100,
        100,
        "C-00000001",
    )


def test_amendment_makes_a_new_version_and_old_ids_keep_reading_theirs(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    first = subscribe(zuora)

    second = zuora.amend_subscription(
        first["subscriptionNumber"],
        "UpdateProduct",
        update_charges=[{"chargeNumber": "C-00000001", "price": 150}],
    )

    latest = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001")
    old = get(zuora_http, zuora_auth, f"/v1/subscriptions/{first['id']}")
    v1 = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001/versions/1")
    v2 = get(zuora_http, zuora_auth, f"/v1/subscriptions/{first['id']}/versions/2")
    assert second["id"] != first["id"] and (latest["id"], latest["version"]) == (second["id"], 2)
    assert (latest["contractedMrr"], latest["ratePlans"][0]["lastChangeType"]) == (150, "Update")
    assert (old["version"], old["isLatestVersion"], old["contractedMrr"]) == (1, False, 100)
    assert (v1["id"], v2["id"]) == (first["id"], second["id"])
    assert [v["version"] for v in zuora.subscriptions()] == [1, 2]


def test_old_version_ids_can_read_the_latest_version_when_configured(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.configure(subscription_id_reads_latest=True)
    create_account(zuora_http, zuora_auth)
    first = subscribe(zuora)
    zuora.amend_subscription("A-S00000001", "Renewal")

    body = get(zuora_http, zuora_auth, f"/v1/subscriptions/{first['id']}")

    assert (body["version"], body["isLatestVersion"]) == (2, True)


def _plans(view: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(p["ratePlanName"], p["lastChangeType"]) for p in view["ratePlans"]]


AMENDMENTS: list[
    tuple[str, Callable[[ZuoraEmulator], dict[str, Any]], Callable[[dict[str, Any]], Any], Any]
] = [
    (
        "NewProduct",
        lambda z: {"add_rate_plans": [{"productRatePlanId": consulting_plan(z)}]},
        _plans,
        [("Platform Monthly", None), ("Professional Services", "Add")],
    ),
    (
        "RemoveProduct",
        lambda z: {"remove_rate_plans": [z.catalog()[0]["productRatePlanId"]]},
        lambda v: (_plans(v), v["contractedMrr"]),
        ([("Platform Monthly", "Remove")], 0),
    ),
    (
        "TermsAndConditions",
        lambda z: {"fields": {"autoRenew": False, "currentTerm": 24}},
        lambda v: (v["autoRenew"], v["termEndDate"], v["totalContractedValue"]),
        (False, "2026-01-15", 2400),
    ),
    ("Renewal", lambda z: {}, lambda v: (v["termStartDate"], v["termEndDate"]), ("2025-01-15", "2026-01-15")),
    (
        "OwnerTransfer",
        lambda z: {"new_owner": "A00000002"},
        lambda v: (v["accountNumber"], v["invoiceOwnerAccountNumber"]),
        ("A00000002", "A00000002"),
    ),
    (
        "SuspendSubscription",
        lambda z: {"effective_date": "2024-03-01"},
        lambda v: (v["status"], v["statusHistory"][-1]),
        ("Suspended", {"startDate": "2024-03-01", "endDate": None, "status": "Suspended"}),
    ),
]


@pytest.mark.parametrize(
    ("amendment", "options", "probe", "expected"), AMENDMENTS, ids=[a[0] for a in AMENDMENTS]
)
def test_amendment_types_change_what_they_name(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    amendment: str,
    options: Callable[[ZuoraEmulator], dict[str, Any]],
    probe: Callable[[dict[str, Any]], Any],
    expected: Any,
) -> None:
    create_account(zuora_http, zuora_auth)
    create_account(zuora_http, zuora_auth, name="New Owner")
    subscribe(zuora)

    zuora.amend_subscription("A-S00000001", amendment, **options(zuora))

    assert probe(get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001")) == expected


def test_resume_brings_a_suspended_subscription_back(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    subscribe(zuora)
    zuora.amend_subscription("A-S00000001", "SuspendSubscription", effective_date="2024-03-01")

    zuora.amend_subscription("A-S00000001", "ResumeSubscription", effective_date="2024-04-01")

    body = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001")
    assert (body["status"], body["version"], [h["status"] for h in body["statusHistory"]]) == (
        "Active",
        3,
        ["Active", "Suspended", "Active"],
    )


@pytest.mark.parametrize(("orders_tenant", "reason"), [(False, None), (True, "Customer churned")])
def test_cancel_makes_a_cancelled_version(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    orders_tenant: bool,
    reason: str | None,
) -> None:
    zuora.configure(orders_tenant=orders_tenant)
    create_account(zuora_http, zuora_auth)
    subscribe(zuora)

    zuora.cancel_subscription("A-S00000001", cancellation_date="2024-06-30", reason="Customer churned")

    body = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001")
    charge = body["ratePlans"][0]["ratePlanCharges"][0]
    assert (body["status"], body["version"], body["subscriptionEndDate"], body["termEndDate"]) == (
        "Cancelled",
        2,
        "2024-06-30",
        "2025-01-15",
    )
    # Zuora fills cancelReason only when Orders made the cancellation (SDK GETSubscriptionType).
    assert (body["cancelReason"], charge["effectiveEndDate"], body["contractedMrr"]) == (
        reason,
        "2024-06-30",
        0,
    )
    assert body["statusHistory"][-1] == {"startDate": "2024-06-30", "endDate": None, "status": "Cancelled"}
    assert (body["orderNumber"] is not None) == orders_tenant


def test_evergreen_subscription_has_no_term_end(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    subscribe(zuora, term_type="EVERGREEN")
    zuora.cancel_subscription("A-S00000001", cancellation_date="2024-02-01")

    first = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001/versions/1")
    cancelled = get(zuora_http, zuora_auth, "/v1/subscriptions/A-S00000001")

    assert (first["termType"], first["termEndDate"], first["currentTerm"]) == ("EVERGREEN", None, None)
    assert cancelled["termEndDate"] == cancelled["subscriptionEndDate"] == "2024-02-01"


# GET /v1/subscriptions/accounts/{key} -------------------------------------------------------------


def test_account_subscriptions_list_latest_versions_with_next_page_urls(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    create_account(zuora_http, zuora_auth, name="Other")
    for _ in range(3):
        subscribe(zuora)
    subscribe(zuora, "A00000002")
    zuora.amend_subscription("A-S00000002", "Renewal")

    first = get(zuora_http, zuora_auth, "/v1/subscriptions/accounts/A00000001?pageSize=2")
    rows, pages = follow_pages(
        zuora_http, zuora_auth, "/v1/subscriptions/accounts/A00000001?pageSize=2", "subscriptions"
    )

    assert first["nextPage"].startswith(str(zuora_http.base_url)) and "page=2" in first["nextPage"]
    assert [(r["subscriptionNumber"], r["version"]) for r in rows] == [
        ("A-S00000001", 1),
        ("A-S00000002", 2),
        ("A-S00000003", 1),
    ]
    assert pages == 2 and all("success" not in r for r in rows)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/subscriptions/A-S09999999",
        "/v1/subscriptions/A-S00000001/versions/2",
        "/v1/subscriptions/A-S00000001/versions/0",
        "/v1/subscriptions/A-S00000001/versions/latest",
        "/v1/subscriptions/accounts/A09999999",
    ],
)
def test_unknown_subscription_keys_are_404_category_40(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], path: str
) -> None:
    create_account(zuora_http, zuora_auth)
    subscribe(zuora)

    response = zuora_http.get(path, headers=zuora_auth)

    assert (response.status_code, response.json()["success"], response.json()["reasons"][0]["code"]) == (
        404,
        False,
        50000040,
    )


def test_unknown_subscription_can_answer_200_when_configured(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.configure(not_found_status=200)

    response = zuora_http.get("/v1/subscriptions/A-S09999999", headers=zuora_auth)

    assert (response.status_code, response.json()["success"]) == (200, False)


@pytest.mark.parametrize(
    "path",
    [
        "/v1/subscriptions/A-S00000001",
        "/v1/subscriptions/A-S00000001/versions/1",
        "/v1/subscriptions/accounts/A00000001",
    ],
)
def test_subscription_routes_refuse_missing_tokens(zuora_http: httpx2.Client, path: str) -> None:
    assert zuora_http.get(path).status_code == 401


# Test hooks ----------------------------------------------------------------------------------------


def test_subscription_hooks_create_amend_and_cancel(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)

    created = zuora_http.post(
        "/_emulator/subscriptions",
        json={"account": "A00000001", "termType": "EVERGREEN", "contractEffectiveDate": START},
    )
    amended = zuora_http.post(
        "/_emulator/subscriptions/A-S00000001/amend",
        json={"amendmentType": "NewProduct", "addRatePlans": [{"productRatePlanId": consulting_plan(zuora)}]},
    )
    cancelled = zuora_http.post(
        "/_emulator/subscriptions/A-S00000001/cancel", json={"cancellationDate": "2024-05-01"}
    )

    assert (created.status_code, created.json()["termType"], created.json()["version"]) == (
        201,
        "EVERGREEN",
        1,
    )
    assert (amended.status_code, len(amended.json()["ratePlans"])) == (200, 2)
    assert (cancelled.status_code, cancelled.json()["status"], cancelled.json()["version"]) == (
        200,
        "Cancelled",
        3,
    )
    listed = zuora_http.get("/_emulator/records/subscriptions").json()
    assert [s["version"] for s in listed] == [1, 2, 3] and [s["isLatestVersion"] for s in listed] == [
        False,
        False,
        True,
    ]


def test_seeded_subscription_is_readable(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)

    seeded = zuora_http.post(
        "/_emulator/seed/subscriptions", json={"account": "A00000001", "subscriptionNumber": "SUB-NS-7"}
    ).json()

    assert get(zuora_http, zuora_auth, "/v1/subscriptions/SUB-NS-7")["id"] == seeded["id"]


HOOK_ERRORS = [
    ("create without account", "/_emulator/subscriptions", {"termType": "TERMED"}, 400),
    ("create for unknown account", "/_emulator/subscriptions", {"account": "A09999999"}, 400),
    (
        "create with bad term type",
        "/_emulator/subscriptions",
        {"account": "A00000001", "termType": "MONTHLY"},
        400,
    ),
    (
        "create with unknown plan",
        "/_emulator/subscriptions",
        {"account": "A00000001", "ratePlans": [{"productRatePlanId": "x"}]},
        400,
    ),
    (
        "amend unknown subscription",
        "/_emulator/subscriptions/A-S09999999/amend",
        {"amendmentType": "Renewal"},
        404,
    ),
    (
        "amend with unknown type",
        "/_emulator/subscriptions/A-S00000001/amend",
        {"amendmentType": "Upsell"},
        400,
    ),
    (
        "amend a term without TermsAndConditions",
        "/_emulator/subscriptions/A-S00000001/amend",
        {"amendmentType": "Renewal", "fields": {"initialTerm": 6}},
        400,
    ),
    (
        "amend with a misspelt key",
        "/_emulator/subscriptions/A-S00000001/amend",
        {"amendmentType": "NewProduct", "addRatePlan": [{"productRatePlanId": "x"}]},
        400,
    ),
    (
        "add product without plans",
        "/_emulator/subscriptions/A-S00000001/amend",
        {"amendmentType": "NewProduct"},
        400,
    ),
    (
        "resume an active subscription",
        "/_emulator/subscriptions/A-S00000001/amend",
        {"amendmentType": "ResumeSubscription"},
        400,
    ),
    (
        "cancel with a bad date",
        "/_emulator/subscriptions/A-S00000001/cancel",
        {"cancellationDate": "30/06/2024"},
        400,
    ),
    ("cancel unknown subscription", "/_emulator/subscriptions/A-S09999999/cancel", {}, 404),
]


@pytest.mark.parametrize(("case", "path", "payload", "status"), HOOK_ERRORS, ids=[h[0] for h in HOOK_ERRORS])
def test_subscription_hooks_refuse_what_a_tenant_would(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    case: str,
    path: str,
    payload: dict[str, Any],
    status: int,
) -> None:
    create_account(zuora_http, zuora_auth)
    subscribe(zuora)

    response = zuora_http.post(path, json=payload)

    assert (response.status_code, bool(response.json()["error"])) == (status, True)
    assert len(zuora.subscriptions()) == 1


def test_a_cancelled_subscription_takes_no_more_changes(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    subscribe(zuora)
    zuora.cancel_subscription("A-S00000001")

    again = zuora_http.post("/_emulator/subscriptions/A-S00000001/cancel", json={})

    assert again.status_code == 400 and len(zuora.subscriptions()) == 2
