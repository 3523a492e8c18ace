"""Contract tests for the Zuora emulator's payments: read only over the API, seeded by tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx2
import pytest

from connectors.zuora.emulator import ZuoraEmulator
from tests.emulators.conftest import Clock
from tests.emulators.zuora_fixtures import account_body, create_account, create_invoice, follow_pages

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def numbers(body: dict[str, Any]) -> list[str]:
    return [p["number"] for p in body["payments"]]


@pytest.fixture
def two_accounts(zuora_http: httpx2.Client, zuora_auth: dict[str, str]) -> list[dict[str, Any]]:
    """A00000001 in USD and A00000002 in EUR."""
    return [
        create_account(zuora_http, zuora_auth),
        create_account(zuora_http, zuora_auth, name="Euro", currency="EUR"),
    ]


@pytest.mark.parametrize("by", ["id", "number"])
def test_payment_reads_back_by_id_or_number(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    two_accounts: list[Any],
    by: str,
) -> None:
    payment = zuora.add_payment(
        "A00000001",
        250,
        effectiveDate="2024-08-01",
        paymentMethodId="pm-1",
        gatewayResponse="Approved",
        IntegrationId__NS="77",
    )

    body = zuora_http.get(f"/v1/payments/{payment[by]}", headers=zuora_auth).json()

    expected = {
        "id": payment["id"],
        "number": "P-00000001",
        "accountId": two_accounts[0]["accountId"],
        "accountNumber": "A00000001",
        "amount": 250,
        "appliedAmount": 0,
        "unappliedAmount": 250,
        "refundAmount": 0,
        "currency": "USD",
        "effectiveDate": "2024-08-01",
        "status": "Processed",
        "type": "External",
        "paymentMethodId": "pm-1",
        "gatewayResponse": "Approved",
        "IntegrationId__NS": "77",
        "success": True,
    }
    assert {k: body[k] for k in expected} == expected
    assert TIMESTAMP.fullmatch(body["createdDate"]) and TIMESTAMP.fullmatch(body["updatedDate"])


def test_payment_applied_to_invoices_lowers_their_balances(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], two_accounts: list[Any]
) -> None:
    invoice = create_invoice(zuora_http, zuora_auth, status="Posted")

    payment = zuora.add_payment("A00000001", 150, invoices=[{"invoiceNumber": "NS-INV-10023", "amount": 100}])

    assert (payment["appliedAmount"], payment["unappliedAmount"]) == (100, 50)
    fetched = zuora_http.get(f"/v1/invoices/{invoice['id']}", headers=zuora_auth).json()
    assert (fetched["balance"], fetched["paymentAmount"]) == (0, 100)
    assert zuora_http.get("/v1/accounts/A00000001", headers=zuora_auth).json()["metrics"]["balance"] == 0
    rows = zuora_http.get("/v1/transactions/payments/accounts/A00000001", headers=zuora_auth).json()[
        "payments"
    ]
    assert (rows[0]["accountID"], rows[0]["paymentNumber"], rows[0]["amount"]) == (
        two_accounts[0]["accountId"],
        "P-00000001",
        150,
    )
    assert rows[0]["paidInvoices"] == [
        {"invoiceId": invoice["id"], "invoiceNumber": "NS-INV-10023", "appliedPaymentAmount": 100}
    ]


def test_list_payments_pages_20_by_default_newest_number_first(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], two_accounts: list[Any]
) -> None:
    for n in range(25):
        zuora.add_payment("A00000001", n + 1)

    first = zuora_http.get("/v1/payments", headers=zuora_auth).json()
    rows, pages = follow_pages(zuora_http, zuora_auth, "/v1/payments", "payments")

    assert len(first["payments"]) == 20 and first["success"] is True
    assert first["nextPage"].startswith(str(zuora_http.base_url)) and "page=2" in first["nextPage"]
    assert ([p["number"] for p in rows], pages) == ([f"P-{n:08d}" for n in range(25, 0, -1)], 2)


@pytest.fixture
def varied_payments(zuora: ZuoraEmulator, two_accounts: list[Any], clock: Clock) -> list[dict[str, Any]]:
    """P-1 USD 50 Processed External, P-2 EUR 75 Electronic, P-3 USD 50 Canceled, one second apart."""
    made = [zuora.add_payment("A00000001", 50, effectiveDate="2024-08-01")]
    clock.advance(1)
    made.append(zuora.add_payment("A00000002", 75, type="Electronic", effectiveDate="2024-08-02"))
    clock.advance(1)
    made.append(zuora.add_payment("A00000001", 50, status="Canceled", effectiveDate="2024-08-03"))
    return made


def _as_plus_one_hour(timestamp: str) -> str:
    utc = datetime.strptime(timestamp, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    return utc.astimezone(timezone(timedelta(hours=1))).isoformat()


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "Canceled"}, ["P-00000003"]),
        ({"type": "Electronic"}, ["P-00000002"]),
        ({"currency": "USD", "status": "Processed"}, ["P-00000001"]),
        ({"amount": "50"}, ["P-00000003", "P-00000001"]),
        ({"amount": "75.00"}, ["P-00000002"]),
        ({"effectiveDate": "2024-08-02"}, ["P-00000002"]),
        ({"number": "P-00000001"}, ["P-00000001"]),
        ({"appliedAmount": "0", "unappliedAmount": "75"}, ["P-00000002"]),
        ({"paymentMethodId": "ignored, not filterable"}, ["P-00000003", "P-00000002", "P-00000001"]),
    ],
)
def test_list_payments_filters_on_fields(
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    varied_payments: list[Any],
    params: dict[str, str],
    expected: list[str],
) -> None:
    assert numbers(zuora_http.get("/v1/payments", params=params, headers=zuora_auth).json()) == expected


def test_list_payments_filters_on_account_and_updated_date(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], varied_payments: list[dict[str, Any]]
) -> None:
    by_account = zuora_http.get(
        "/v1/payments", params={"accountId": varied_payments[1]["accountId"]}, headers=zuora_auth
    )
    same_instant = _as_plus_one_hour(varied_payments[1]["updatedDate"])
    by_instant = zuora_http.get("/v1/payments", params={"updatedDate": same_instant}, headers=zuora_auth)

    assert numbers(by_account.json()) == numbers(by_instant.json()) == ["P-00000002"]


def test_list_payments_null_matches_missing_values(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], two_accounts: list[Any]
) -> None:
    zuora.seed("accounts", account_body(name="No currency", currency=None))
    zuora.add_payment("A00000001", 10)
    zuora.add_payment("A00000003", 20)

    body = zuora_http.get("/v1/payments?currency=null", headers=zuora_auth).json()

    assert numbers(body) == ["P-00000002"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["P-00000003", "P-00000002", "P-00000001"]),
        ("sort=-number", ["P-00000001", "P-00000002", "P-00000003"]),
        ("sort=number", ["P-00000003", "P-00000002", "P-00000001"]),
        ("sort=+amount", ["P-00000002", "P-00000001", "P-00000003"]),  # '+' arrives as a space: descending
        ("sort=%2Bamount,-number", ["P-00000002", "P-00000001", "P-00000003"]),
        ("sort=-amount,+number", ["P-00000003", "P-00000001", "P-00000002"]),
        ("sort=-updatedDate", ["P-00000001", "P-00000002", "P-00000003"]),
    ],
)
def test_list_payments_sorts_with_zuoras_operators(
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    varied_payments: list[Any],
    query: str,
    expected: list[str],
) -> None:
    assert numbers(zuora_http.get(f"/v1/payments?{query}", headers=zuora_auth).json()) == expected


@pytest.mark.parametrize(
    "query",
    [
        "pageSize=abc",
        "page=0",
        "sort=color",
        "sort=-number,amount,effectiveDate",
        "updatedDate=yesterday",
        "amount=lots",
        "effectiveDate=08/01/2024",
    ],
)
def test_list_payments_refuses_bad_parameters(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], query: str
) -> None:
    response = zuora_http.get(f"/v1/payments?{query}", headers=zuora_auth)

    assert (response.status_code, response.json()["success"], response.json()["reasons"][0]["code"]) == (
        400,
        False,
        50000027,
    )


def test_update_payment_moves_its_updated_date(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    two_accounts: list[Any],
    clock: Clock,
) -> None:
    payment = zuora.add_payment("A00000001", 40)
    zuora.add_payment("A00000001", 41)
    clock.advance(60)

    updated = zuora.update_payment(payment["number"], status="Canceled")

    assert updated["updatedDate"] > payment["updatedDate"]
    newest = zuora_http.get("/v1/payments?sort=updatedDate", headers=zuora_auth).json()["payments"][0]
    assert (newest["status"], newest["updatedDate"]) == ("Canceled", updated["updatedDate"])


def test_account_payments_page_with_next_page_urls(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], two_accounts: list[Any]
) -> None:
    for n in range(3):
        zuora.add_payment("A00000001", n + 1)
    zuora.add_payment("A00000002", 9)

    rows, pages = follow_pages(
        zuora_http, zuora_auth, "/v1/transactions/payments/accounts/A00000001?pageSize=2", "payments"
    )

    assert ([r["paymentNumber"] for r in rows], pages) == (["P-00000003", "P-00000002", "P-00000001"], 2)


@pytest.mark.parametrize("path", ["/v1/payments/P-09999999", "/v1/transactions/payments/accounts/A09999999"])
def test_unknown_payment_keys_are_404_category_40(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], path: str
) -> None:
    response = zuora_http.get(path, headers=zuora_auth)

    assert (response.status_code, response.json()["reasons"][0]["code"]) == (404, 50000040)


@pytest.mark.parametrize(
    "path", ["/v1/payments", "/v1/payments/P-00000001", "/v1/transactions/payments/accounts/A00000001"]
)
def test_payment_routes_refuse_missing_tokens(zuora_http: httpx2.Client, path: str) -> None:
    assert zuora_http.get(path, headers={"Authorization": "Bearer nope"}).status_code == 401


# Seeding ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("hook", ["/_emulator/seed/payments", "/_emulator/payments"])
def test_payment_hooks_store_payments(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    two_accounts: list[Any],
    hook: str,
) -> None:
    response = zuora_http.post(hook, json={"accountNumber": "A00000002", "amount": 12.5, "status": "Posted"})

    assert response.status_code == 201
    stored = zuora.payments()
    assert [(p["accountNumber"], p["amount"], p["status"], p["currency"]) for p in stored] == [
        ("A00000002", 12.5, "Posted", "EUR")
    ]
    assert zuora_http.get(f"/v1/payments/{stored[0]['id']}", headers=zuora_auth).status_code == 200


SEED_ERRORS = [
    ("unknown account", {"accountNumber": "A09999999", "amount": 1}),
    ("no amount", {"accountNumber": "A00000001"}),
    ("zero amount", {"accountNumber": "A00000001", "amount": 0}),
    ("unknown status", {"accountNumber": "A00000001", "amount": 1, "status": "Settled"}),
    ("bad effective date", {"accountNumber": "A00000001", "amount": 1, "effectiveDate": "2024/08/01"}),
    (
        "draft invoice",
        {"accountNumber": "A00000001", "amount": 1, "invoices": [{"invoiceNumber": "DRAFT-1", "amount": 1}]},
    ),
    (
        "more than the balance",
        {
            "accountNumber": "A00000001",
            "amount": 500,
            "invoices": [{"invoiceNumber": "POSTED-1", "amount": 101}],
        },
    ),
    (
        "more than the payment",
        {
            "accountNumber": "A00000001",
            "amount": 5,
            "invoices": [{"invoiceNumber": "POSTED-1", "amount": 10}],
        },
    ),
]


@pytest.mark.parametrize(("case", "payload"), SEED_ERRORS, ids=[s[0] for s in SEED_ERRORS])
def test_payment_seed_refuses_what_a_tenant_cannot_hold(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    case: str,
    payload: dict[str, Any],
) -> None:
    create_account(zuora_http, zuora_auth)
    create_invoice(zuora_http, zuora_auth, invoiceNumber="DRAFT-1")
    create_invoice(zuora_http, zuora_auth, invoiceNumber="POSTED-1", status="Posted")

    response = zuora_http.post("/_emulator/seed/payments", json=payload)

    assert (response.status_code, bool(response.json()["error"])) == (400, True)
    assert zuora.payments() == [] and zuora.invoices()[1]["balance"] == 100
