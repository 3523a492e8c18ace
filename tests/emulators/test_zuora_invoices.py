"""Contract tests for the Zuora emulator's standalone invoices: create, read, items, bulk-post, list."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx2
import pytest

from connectors.zuora.emulator import ZuoraEmulator
from tests.emulators.conftest import Clock
from tests.emulators.zuora_fixtures import (
    account_body,
    create_account,
    create_invoice,
    follow_pages,
    invoice_body,
    invoice_item,
)

TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


def category(reason: dict[str, Any]) -> int:
    """The last two digits of a v1 reason code (notes §8), whether the code is an int or a string."""
    return int(str(reason["code"])[-2:])


def account_balance(http: httpx2.Client, auth: dict[str, str], key: str = "A00000001") -> Any:
    return http.get(f"/v1/accounts/{key}", headers=auth).json()["metrics"]["balance"]


# POST /v1/invoices ------------------------------------------------------------------------------


def test_create_invoice_answers_the_flat_invoice_and_stores_it(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    account = create_account(zuora_http, zuora_auth)

    body = create_invoice(zuora_http, zuora_auth)

    assert re.fullmatch(r"[0-9a-f]{32}", body["id"])
    expected = {
        "invoiceNumber": "NS-INV-10023",
        "accountId": account["accountId"],
        "amount": 100,
        "amountWithoutTax": 100,
        "taxAmount": 0,
        "discount": 0,
        "invoiceDate": "2024-07-30",
        "dueDate": "2024-08-29",
        "status": "Draft",
        "currency": "USD",
        "source": "API",
        "transferredToAccounting": "false",
        "postedDate": None,
        "success": True,
    }
    assert {k: body[k] for k in expected} == expected
    assert TIMESTAMP.fullmatch(body["createdDate"]) and TIMESTAMP.fullmatch(body["updatedDate"])
    stored = zuora.invoices()[0]
    assert (stored["id"], stored["balance"]) == (body["id"], 100)
    item = stored["invoiceItems"][0]
    assert (item["chargeName"], item["accountingCode"], item["description"]) == (
        "Consulting",
        "4000 Services",
        "NS line 1",
    )
    assert account_balance(zuora_http, zuora_auth) == 0  # a Draft does not count


def test_create_invoice_posted_in_one_call_raises_the_account_balance(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)

    body = create_invoice(zuora_http, zuora_auth, status="Posted")

    assert (body["status"], body["postedBy"]) == ("Posted", zuora.user_id)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", body["postedDate"])
    assert account_balance(zuora_http, zuora_auth) == 100


@pytest.mark.parametrize("keys", ["accountId", "both"])
def test_create_invoice_finds_the_account_by_id_or_by_both_keys(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str], keys: str
) -> None:
    account = create_account(zuora_http, zuora_auth)
    number = account["accountNumber"] if keys == "both" else None

    body = create_invoice(zuora_http, zuora_auth, accountNumber=number, accountId=account["accountId"])

    assert body["accountId"] == account["accountId"]
    assert zuora.invoices()[0]["accountNumber"] == "A00000001"


def test_create_invoice_takes_name_and_codes_from_the_product_rate_plan_charge(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    charge = zuora.add_product_rate_plan_charge(
        "Widget", accounting_code="4100 Product Sales", sku="SKU-W", uom="Each", type="OneTime"
    )
    create_account(zuora_http, zuora_auth)
    item = invoice_item(
        productRatePlanChargeId=charge["id"], chargeName="Ignored", accountingCode="Not A Code", uom="Box"
    )

    create_invoice(zuora_http, zuora_auth, invoiceItems=[item])

    stored = zuora.invoices()[0]["invoiceItems"][0]
    assert (stored["chargeName"], stored["accountingCode"], stored["sku"], stored["unitOfMeasure"]) == (
        "Widget",
        "4100 Product Sales",
        "SKU-W",
        "Each",
    )
    assert stored["productRatePlanChargeId"] == charge["id"]


def test_create_invoice_defaults_number_due_date_and_keeps_custom_fields(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth, paymentTerm="Net 30")

    body = create_invoice(
        zuora_http,
        zuora_auth,
        invoiceNumber=None,
        dueDate=None,
        NetSuiteInvoiceId__c="9001",
        IntegrationId__NS="9001",
    )

    assert (body["invoiceNumber"], body["dueDate"]) == ("INV00000001", "2024-08-29")
    fetched = zuora_http.get(f"/v1/invoices/{body['id']}", headers=zuora_auth).json()
    assert (fetched["NetSuiteInvoiceId__c"], fetched["IntegrationId__NS"]) == ("9001", "9001")


def test_create_invoice_sums_items_taxes_and_discounts(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    items = [
        invoice_item(amount=100, taxItems=[{"name": "VAT", "taxAmount": 10, "taxRate": 0.1}]),
        invoice_item(amount=50.5, discountItems=[{"amount": 5, "chargeName": "Promo"}]),
    ]

    body = create_invoice(zuora_http, zuora_auth, invoiceItems=items)

    assert (body["amountWithoutTax"], body["taxAmount"], body["discount"], body["amount"]) == (
        145.5,
        10,
        5,
        155.5,
    )


def test_create_invoice_accepts_any_accounting_code_when_the_check_is_off(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    zuora.configure(accounting_codes=None)
    create_account(zuora_http, zuora_auth)

    create_invoice(zuora_http, zuora_auth, invoiceItems=[invoice_item(accountingCode="9999 Anything")])

    assert zuora.invoices()[0]["invoiceItems"][0]["accountingCode"] == "9999 Anything"


def _without(field: str) -> dict[str, Any]:
    return {"invoiceItems": [invoice_item(**{field: None})]}


CREATE_ERRORS: list[tuple[str, dict[str, Any], int, str]] = [
    ("no account key", {"accountNumber": None}, 22, "accountId"),
    ("unknown account number", {"accountNumber": "A09999999"}, 40, "A09999999"),
    ("unknown account id", {"accountNumber": None, "accountId": "f" * 32}, 40, "f" * 32),
    ("missing invoiceDate", {"invoiceDate": None}, 22, "invoiceDate"),
    ("US-style invoiceDate", {"invoiceDate": "07/30/2024"}, 20, "invoiceDate"),
    ("compact invoiceDate", {"invoiceDate": "20240730"}, 20, "invoiceDate"),
    ("impossible invoiceDate", {"invoiceDate": "2024-02-30"}, 20, "invoiceDate"),
    ("bad dueDate", {"dueDate": "soon"}, 20, "dueDate"),
    ("invoiceNumber over 32", {"invoiceNumber": "N" * 33}, 20, "invoiceNumber"),
    ("invoiceNumber with a slash", {"invoiceNumber": "NS/INV 1"}, 20, "invoiceNumber"),
    ("unknown status", {"status": "Canceled"}, 20, "status"),
    ("inactive currency", {"currency": "XXX"}, 20, "XXX"),
    ("unknown field", {"tranId": "1"}, 21, "tranId"),
    ("no items", {"invoiceItems": None}, 22, "invoiceItems"),
    ("empty items", {"invoiceItems": []}, 22, "invoiceItems"),
    ("over 1000 items", {"invoiceItems": [invoice_item()] * 1001}, 20, "1000"),
    ("item without amount", _without("amount"), 22, "amount"),
    ("item amount as text", {"invoiceItems": [invoice_item(amount="100")]}, 20, "amount"),
    ("item without serviceStartDate", _without("serviceStartDate"), 22, "serviceStartDate"),
    (
        "bad serviceStartDate",
        {"invoiceItems": [invoice_item(serviceStartDate="2024-13-01")]},
        20,
        "serviceStartDate",
    ),
    (
        "service ends before it starts",
        {"invoiceItems": [invoice_item(serviceEndDate="2024-07-01")]},
        20,
        "serviceEndDate",
    ),
    ("no chargeName and no charge", _without("chargeName"), 22, "chargeName"),
    ("unknown charge", {"invoiceItems": [invoice_item(productRatePlanChargeId="f" * 32)]}, 40, "f" * 32),
    (
        "unknown accounting code",
        {"invoiceItems": [invoice_item(accountingCode="9999 Nope")]},
        20,
        "9999 Nope",
    ),
    ("six tax items", {"invoiceItems": [invoice_item(taxItems=[{"taxAmount": 1}] * 6)]}, 20, "taxItems"),
    (
        "tax item without a number",
        {"invoiceItems": [invoice_item(taxItems=[{"taxAmount": "ten"}])]},
        20,
        "taxItems",
    ),
    (
        "discount item not an object",
        {"invoiceItems": [invoice_item(discountItems=["5%"])]},
        20,
        "discountItems",
    ),
    ("unknown item field", {"invoiceItems": [invoice_item(glAccount="4000")]}, 21, "glAccount"),
]


@pytest.mark.parametrize(
    ("case", "overrides", "expected", "fragment"), CREATE_ERRORS, ids=[c[0] for c in CREATE_ERRORS]
)
def test_create_invoice_validation_answers_200_with_the_category(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    case: str,
    overrides: dict[str, Any],
    expected: int,
    fragment: str,
) -> None:
    create_account(zuora_http, zuora_auth)

    response = zuora_http.post("/v1/invoices", json=invoice_body(**overrides), headers=zuora_auth)

    body = response.json()
    assert (response.status_code, body["success"]) == (200, False)
    assert body["processId"]
    assert any(category(r) == expected and fragment in r["message"] for r in body["reasons"]), body
    assert zuora.invoices() == []


def _draft_account(zuora: ZuoraEmulator) -> dict[str, Any]:
    zuora.seed("accounts", account_body(status="Draft", accountNumber="A-DRAFT"))
    return {"accountNumber": "A-DRAFT"}


def _closed_period(zuora: ZuoraEmulator) -> dict[str, Any]:
    zuora.configure(closed_period_end="2024-07-31")
    return {}


def _second_account(zuora: ZuoraEmulator) -> dict[str, Any]:
    return {"accountId": zuora.seed("accounts", account_body(name="Other"))}


SETUP_ERRORS: list[tuple[str, Callable[[ZuoraEmulator], dict[str, Any]], int, str]] = [
    ("account not Active", _draft_account, 30, "Active"),
    ("closed accounting period", _closed_period, 30, "closed"),
    ("keys name two accounts", _second_account, 20, "same account"),
]


@pytest.mark.parametrize(
    ("case", "setup", "expected", "fragment"), SETUP_ERRORS, ids=[c[0] for c in SETUP_ERRORS]
)
def test_create_invoice_business_rules_answer_their_category(
    zuora: ZuoraEmulator,
    zuora_http: httpx2.Client,
    zuora_auth: dict[str, str],
    case: str,
    setup: Callable[[ZuoraEmulator], dict[str, Any]],
    expected: int,
    fragment: str,
) -> None:
    create_account(zuora_http, zuora_auth)
    overrides = setup(zuora)

    response = zuora_http.post("/v1/invoices", json=invoice_body(**overrides), headers=zuora_auth)

    reasons = response.json()["reasons"]
    assert [category(r) for r in reasons] == [expected] and fragment in reasons[0]["message"], reasons
    assert zuora.invoices() == []


def test_create_invoice_refuses_a_repeated_invoice_number(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    create_invoice(zuora_http, zuora_auth)

    again = zuora_http.post("/v1/invoices", json=invoice_body(), headers=zuora_auth).json()

    assert (again["success"], category(again["reasons"][0])) == (False, 30)
    assert len(zuora.invoices()) == 1


def test_create_invoice_with_malformed_json_is_category_90(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    headers = {**zuora_auth, "Content-Type": "application/json"}

    body = zuora_http.post("/v1/invoices", content=b"{oops", headers=headers).json()

    assert (body["success"], category(body["reasons"][0])) == (False, 90)


def test_create_invoice_replays_under_its_idempotency_key(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    headers = {**zuora_auth, "Idempotency-Key": "ns-invoice-10023"}

    first = zuora_http.post("/v1/invoices", json=invoice_body(), headers=headers)
    second = zuora_http.post("/v1/invoices", json=invoice_body(), headers=headers)

    assert first.json() == second.json() and second.json()["success"] is True
    assert len(zuora.invoices()) == 1


# GET /v1/invoices/{key}[/items] ------------------------------------------------------------------


@pytest.mark.parametrize("by", ["id", "invoiceNumber"])
def test_get_invoice_by_id_or_number(zuora_http: httpx2.Client, zuora_auth: dict[str, str], by: str) -> None:
    create_account(zuora_http, zuora_auth)
    created = create_invoice(zuora_http, zuora_auth)

    fetched = zuora_http.get(f"/v1/invoices/{created[by]}", headers=zuora_auth).json()

    assert fetched == created


@pytest.mark.parametrize("path", ["/v1/invoices/INV-NOPE", "/v1/invoices/INV-NOPE/items"])
def test_get_unknown_invoice_is_404_category_40(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], path: str
) -> None:
    response = zuora_http.get(path, headers=zuora_auth)

    assert (response.status_code, response.json()["success"], category(response.json()["reasons"][0])) == (
        404,
        False,
        40,
    )


def test_get_invoice_items_pages_with_full_next_page_urls(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], zuora: ZuoraEmulator
) -> None:
    create_account(zuora_http, zuora_auth)
    items = [invoice_item(description=f"line {n}", amount=n + 1) for n in range(5)]
    created = create_invoice(zuora_http, zuora_auth, invoiceItems=items)

    first = zuora_http.get(f"/v1/invoices/{created['id']}/items?pageSize=2", headers=zuora_auth).json()
    rows, pages = follow_pages(
        zuora_http, zuora_auth, f"/v1/invoices/{created['id']}/items?pageSize=2", "invoiceItems"
    )

    assert first["nextPage"].startswith(str(zuora_http.base_url)) and "page=2" in first["nextPage"]
    assert ([r["description"] for r in rows], pages) == ([f"line {n}" for n in range(5)], 3)
    assert rows[0]["chargeAmount"] == 1 and rows[0]["id"] == zuora.invoices()[0]["invoiceItems"][0]["id"]


# POST /v1/invoices/bulk-post ---------------------------------------------------------------------


def test_bulk_post_posts_drafts_and_can_move_their_date(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    first = create_invoice(zuora_http, zuora_auth, invoiceNumber="NS-1")
    second = create_invoice(zuora_http, zuora_auth, invoiceNumber="NS-2")
    entries = [{"id": first["id"], "invoiceDate": "2024-08-01"}, {"id": second["id"]}]

    body = zuora_http.post("/v1/invoices/bulk-post", json={"invoices": entries}, headers=zuora_auth).json()

    assert body == {
        "invoices": [{"id": first["id"], "success": True}, {"id": second["id"], "success": True}],
        "success": True,
    }
    stored = {i["invoiceNumber"]: i for i in zuora.invoices()}
    assert (stored["NS-1"]["status"], stored["NS-1"]["invoiceDate"], stored["NS-2"]["status"]) == (
        "Posted",
        "2024-08-01",
        "Posted",
    )
    assert account_balance(zuora_http, zuora_auth) == 200


def test_bulk_post_reports_each_failure_on_its_own(
    zuora: ZuoraEmulator, zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    posted = create_invoice(zuora_http, zuora_auth, invoiceNumber="NS-1", status="Posted")
    draft = create_invoice(zuora_http, zuora_auth, invoiceNumber="NS-2")
    entries = [
        {"id": "f" * 32},
        {"id": posted["id"]},
        {"id": draft["id"], "invoiceDate": "1 Aug"},
        {"id": draft["id"]},
    ]

    body = zuora_http.post("/v1/invoices/bulk-post", json={"invoices": entries}, headers=zuora_auth).json()

    results = body["invoices"]
    assert body["success"] is True
    assert [r["success"] for r in results] == [False, False, False, True]
    assert [category(r["reasons"][0]) for r in results[:3]] == [40, 30, 20]
    assert all(r["processId"] for r in results[:3])


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({}, 22),
        ({"invoices": []}, 22),
        ({"invoices": "all"}, 20),
        ({"invoices": [{"id": "x"}] * 51}, 20),
    ],
    ids=["no list", "empty list", "not a list", "over 50"],
)
def test_bulk_post_refuses_bad_batches(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], payload: dict[str, Any], expected: int
) -> None:
    body = zuora_http.post("/v1/invoices/bulk-post", json=payload, headers=zuora_auth).json()

    assert (body["success"], category(body["reasons"][0])) == (False, expected)


# GET /v1/transactions/invoices/accounts/{key} ---------------------------------------------------


def test_account_invoices_list_newest_updated_first_with_item_urls(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], clock: Clock
) -> None:
    account = create_account(zuora_http, zuora_auth)
    create_account(zuora_http, zuora_auth, name="Other")
    created = []
    for n in range(3):
        created.append(create_invoice(zuora_http, zuora_auth, invoiceNumber=f"NS-{n}"))
        clock.advance(1)
    create_invoice(zuora_http, zuora_auth, invoiceNumber="NS-OTHER", accountNumber="A00000002")
    clock.advance(1)
    zuora_http.post(
        "/v1/invoices/bulk-post", json={"invoices": [{"id": created[0]["id"]}]}, headers=zuora_auth
    )

    body = zuora_http.get(
        f"/v1/transactions/invoices/accounts/{account['accountId']}", headers=zuora_auth
    ).json()

    assert [i["invoiceNumber"] for i in body["invoices"]] == ["NS-0", "NS-2", "NS-1"]
    row = body["invoices"][0]
    assert (row["accountNumber"], row["status"], row["balance"], row["accountName"]) == (
        "A00000001",
        "Posted",
        100,
        "Acme Ltd",
    )
    items = zuora_http.get(row["invoiceItems"], headers=zuora_auth).json()["invoiceItems"]
    assert items[0]["chargeName"] == "Consulting"
    assert "nextPage" not in body and body["success"] is True


def test_account_invoices_treat_page_sizes_over_40_as_40(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str]
) -> None:
    create_account(zuora_http, zuora_auth)
    for n in range(41):
        create_invoice(zuora_http, zuora_auth, invoiceNumber=f"NS-{n}")

    first = zuora_http.get(
        "/v1/transactions/invoices/accounts/A00000001?pageSize=100", headers=zuora_auth
    ).json()
    rows, pages = follow_pages(
        zuora_http, zuora_auth, "/v1/transactions/invoices/accounts/A00000001?pageSize=100", "invoices"
    )

    assert (
        len(first["invoices"]) == 40 and "pageSize=40" in first["nextPage"] and "page=2" in first["nextPage"]
    )
    assert (len({r["id"] for r in rows}), pages) == (41, 2)


@pytest.mark.parametrize(
    ("path", "status", "expected"),
    [
        ("/v1/transactions/invoices/accounts/A09999999", 404, 40),
        ("/v1/transactions/invoices/accounts/A00000001?pageSize=abc", 400, 27),
        ("/v1/transactions/invoices/accounts/A00000001?pageSize=0", 400, 27),
        ("/v1/transactions/invoices/accounts/A00000001?page=0", 400, 27),
    ],
)
def test_account_invoices_errors(
    zuora_http: httpx2.Client, zuora_auth: dict[str, str], path: str, status: int, expected: int
) -> None:
    create_account(zuora_http, zuora_auth)

    response = zuora_http.get(path, headers=zuora_auth)

    assert (response.status_code, category(response.json()["reasons"][0])) == (status, expected)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/invoices"),
        ("POST", "/v1/invoices/bulk-post"),
        ("GET", "/v1/invoices/INV00000001"),
        ("GET", "/v1/invoices/INV00000001/items"),
        ("GET", "/v1/transactions/invoices/accounts/A00000001"),
    ],
)
def test_invoice_routes_refuse_missing_tokens(zuora_http: httpx2.Client, method: str, path: str) -> None:
    response = zuora_http.request(method, path, json={})

    assert (response.status_code, response.json()["reasons"][0]["code"]) == (401, 90000011)
