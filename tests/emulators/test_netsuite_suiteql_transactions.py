"""Contract tests for SuiteQL over transaction and transactionline (invoices), joins and the row cap."""

from __future__ import annotations

import httpx2
import pytest

from connectors.emulator_sql import Column, Join, SqlError, parse_select
from connectors.netsuite.emulator import NetSuiteEmulator
from tests.emulators.netsuite_fixtures import (
    SUITEQL,
    TRANSIENT,
    error_code,
    error_detail,
    seed_customer,
    seed_invoice,
)

SINCE_MAY_2 = "TO_TIMESTAMP('2024-05-02 00:00:00', 'YYYY-MM-DD HH24:MI:SS')"


def suiteql(http: httpx2.Client, auth: dict[str, str], q: str, **params: int) -> httpx2.Response:
    return http.post(SUITEQL, params=params, json={"q": q}, headers={**auth, **TRANSIENT})


def items(http: httpx2.Client, auth: dict[str, str], q: str, **params: int) -> list[dict[str, str]]:
    response = suiteql(http, auth, q, **params)
    assert response.status_code == 200, response.text
    return [{k: v for k, v in row.items() if k != "links"} for row in response.json()["items"]]


@pytest.fixture
def invoices(netsuite: NetSuiteEmulator) -> list[str]:
    """Customers 1000 (Acme) and 1001 (Beta); invoices 1002..1004 modified on May 1, 2 and 3."""
    acme, beta = seed_customer(netsuite, "Acme"), seed_customer(netsuite, "Beta")
    return [
        seed_invoice(
            netsuite,
            acme,
            {"item": {"id": "86"}, "quantity": 2, "rate": 150.0, "description": "Consulting"},
            {"item": {"id": "87"}, "amount": 99.5, "custcol_charge": "C-1"},
            tranId="INV-1",
            tranDate="2024-05-01",
            lastModifiedDate="2024-05-01T09:00:00Z",
            custbody_zuora_id="Z-1",
        ),
        seed_invoice(
            netsuite,
            beta,
            {"item": {"id": "86"}, "amount": 40},
            tranId="INV-2",
            tranDate="2024-05-02",
            lastModifiedDate="2024-05-02T10:11:12Z",
            status="B",
        ),
        seed_invoice(
            netsuite,
            acme,
            {"item": {"id": "88"}, "quantity": 1, "rate": 10},
            tranId="INV-3",
            tranDate="2024-05-03",
            lastModifiedDate="2024-05-03T00:00:00Z",
        ),
    ]


def test_transaction_poll_since_a_timestamp(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = (
        "SELECT t.id, t.tranid, t.entity, t.trandate, t.status, t.foreigntotal, "
        "TO_CHAR(t.lastmodifieddate, 'YYYY-MM-DD HH24:MI:SS') AS lastmodified "
        f"FROM transaction t WHERE t.type = 'CustInvc' AND t.lastmodifieddate >= {SINCE_MAY_2} ORDER BY t.id"
    )

    rows = items(ns_http, ns_auth, q)

    assert rows == [
        {
            "id": invoices[1],
            "tranid": "INV-2",
            "entity": "1001",
            "trandate": "5/2/2024",
            "status": "B",
            "foreigntotal": "40",
            "lastmodified": "2024-05-02 10:11:12",
        },
        {
            "id": invoices[2],
            "tranid": "INV-3",
            "entity": "1000",
            "trandate": "5/3/2024",
            "status": "A",
            "foreigntotal": "10",
            "lastmodified": "2024-05-03 00:00:00",
        },
    ]


def test_transaction_select_star_has_the_invoice_columns(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    [row] = items(ns_http, ns_auth, f"SELECT * FROM transaction WHERE id = {invoices[0]}")

    assert {k: row[k] for k in ("type", "recordtype", "foreigntotal", "currency", "custbody_zuora_id")} == {
        "type": "CustInvc",
        "recordtype": "invoice",
        "foreigntotal": "399.5",
        "currency": "1",
        "custbody_zuora_id": "Z-1",
    }
    assert "duedate" not in row  # null columns are left out


def test_transactionline_item_lines_of_one_invoice(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = (
        "SELECT tl.id, tl.item, tl.quantity, tl.rate, tl.netamount, tl.memo, tl.custcol_charge "
        f"FROM transactionline tl WHERE tl.transaction = {invoices[0]} AND tl.mainline = 'F' ORDER BY tl.id"
    )

    rows = items(ns_http, ns_auth, q)

    # Sales lines post as credits: quantity and netamount come back negative (UNCONFIRMED default).
    assert rows == [
        {"id": "1", "item": "86", "quantity": "-2", "rate": "150", "netamount": "-300", "memo": "Consulting"},
        {
            "id": "2",
            "item": "87",
            "quantity": "-1",
            "rate": "99.5",
            "netamount": "-99.5",
            "custcol_charge": "C-1",
        },
    ]


def test_transactionline_signs_are_positive_when_configured(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    netsuite.suiteql_sales_lines_negative = False

    q = f"SELECT quantity, netamount FROM transactionline WHERE transaction = {invoices[1]} AND mainline = 'F'"

    assert items(ns_http, ns_auth, q) == [{"quantity": "1", "netamount": "40"}]


def test_transactionline_main_line_carries_the_total(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = f"SELECT id, mainline, netamount, entity, item FROM transactionline WHERE transaction = {invoices[0]} AND mainline = 'T'"

    assert items(ns_http, ns_auth, q) == [
        {"id": "0", "mainline": "T", "netamount": "399.5", "entity": "1000"}
    ]


def test_join_transaction_with_its_lines(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = (
        "SELECT t.tranid, tl.id AS line, tl.item FROM transaction t "
        "JOIN transactionline tl ON tl.transaction = t.id "
        "WHERE t.type = 'CustInvc' AND tl.mainline = 'F' AND t.entity = 1000 ORDER BY t.id, tl.id"
    )

    assert items(ns_http, ns_auth, q) == [
        {"tranid": "INV-1", "line": "1", "item": "86"},
        {"tranid": "INV-1", "line": "2", "item": "87"},
        {"tranid": "INV-3", "line": "1", "item": "88"},
    ]


def test_join_transaction_with_its_customer(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = (
        "SELECT t.tranid, c.companyname FROM transaction t INNER JOIN customer c ON t.entity = c.id "
        "ORDER BY c.companyname DESC, t.tranid"
    )

    assert items(ns_http, ns_auth, q) == [
        {"tranid": "INV-2", "companyname": "Beta"},
        {"tranid": "INV-1", "companyname": "Acme"},
        {"tranid": "INV-3", "companyname": "Acme"},
    ]


def test_transaction_paging_by_key(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = f"SELECT id FROM transaction WHERE id > {invoices[0]} ORDER BY id"

    assert [row["id"] for row in items(ns_http, ns_auth, q, limit=1000)] == invoices[1:]


def test_transaction_trandate_filters_with_to_date(
    ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    q = "SELECT tranid FROM transaction WHERE trandate < TO_DATE('2024-05-02', 'YYYY-MM-DD')"

    assert items(ns_http, ns_auth, q) == [{"tranid": "INV-1"}]


def test_row_cap_answers_only_the_first_rows(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], invoices: list[str]
) -> None:
    netsuite.suiteql_row_cap = 4  # stands in for 100,000
    q = "SELECT tl.transaction, tl.id FROM transactionline tl ORDER BY tl.transaction, tl.id"  # 7 rows

    first = suiteql(ns_http, ns_auth, q, limit=2, offset=0).json()
    last = suiteql(ns_http, ns_auth, q, limit=2, offset=2).json()

    assert (first["totalResults"], first["hasMore"], last["hasMore"], last["count"]) == (4, True, False, 2)
    assert [(r["transaction"], r["id"]) for r in last["items"]] == [(invoices[0], "2"), (invoices[1], "0")]


@pytest.mark.parametrize(("limit", "offset"), [(2, 4), (3, 2), (1000, 0)])
def test_row_cap_refuses_a_page_beyond_it(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str], limit: int, offset: int
) -> None:
    netsuite.suiteql_row_cap = 4

    response = suiteql(ns_http, ns_auth, "SELECT id FROM transaction", limit=limit, offset=offset)

    assert (response.status_code, error_code(response)) == (400, "INVALID_PARAMETER")
    assert error_detail(response)["o:errorQueryParam"] == "offset"
    assert "exceeds 4" in error_detail(response)["detail"]


def test_row_cap_defaults_to_100000(
    netsuite: NetSuiteEmulator, ns_http: httpx2.Client, ns_auth: dict[str, str]
) -> None:
    assert (
        suiteql(ns_http, ns_auth, "SELECT id FROM transaction", limit=1000, offset=99_000).status_code == 200
    )
    assert (
        suiteql(ns_http, ns_auth, "SELECT id FROM transaction", limit=1000, offset=99_500).status_code == 400
    )


@pytest.mark.parametrize(
    ("q", "needle"),
    [
        ("SELECT t.nope FROM transaction t", "Field 'nope' for record 'transaction' was not found"),
        ("SELECT tl.type FROM transactionline tl", "Field 'type' for record 'transactionline' was not found"),
        ("SELECT id FROM transaction t JOIN transactionline tl ON tl.transaction = t.id", "ambiguous"),
        ("SELECT x.id FROM transaction t", "alias 'x'"),
        ("SELECT t.id FROM transaction t JOIN transactionline tl ON t.id = t.entity", "JOIN ... ON"),
        ("SELECT t.id FROM transaction t JOIN transactionline tl ON tl.transaction > t.id", "JOIN needs ON"),
        ("SELECT t.id FROM transaction t LEFT JOIN transactionline tl ON tl.transaction = t.id", "JOIN"),
        ("SELECT id FROM transaction WHERE trandate >= '2024-05-01'", "TO_TIMESTAMP"),
        ("SELECT NVL(status, 0) FROM transaction", "NVL"),
        ("SELECT id FROM transaction t JOIN salesorder s ON s.id = t.id", "salesorder"),
    ],
)
def test_suiteql_refuses_what_it_cannot_answer_naming_the_problem(
    ns_http: httpx2.Client, ns_auth: dict[str, str], q: str, needle: str
) -> None:
    response = suiteql(ns_http, ns_auth, q)

    assert (response.status_code, error_code(response)) == (400, "INVALID_PARAMETER")
    assert error_detail(response)["detail"].startswith("Invalid search query.")
    assert needle in error_detail(response)["detail"]


# The shared parser (also used by Zuora's ZOQL) ---------------------------------------------------


def test_parse_select_keeps_qualifiers_aliases_and_joins() -> None:
    query = parse_select(
        "SELECT t.id, tl.item AS item FROM transaction t INNER JOIN transactionline tl ON tl.transaction = t.id "
        "WHERE tl.mainline = 'F' ORDER BY t.id DESC",
        allow_joins=True,
    )

    assert (query.table, query.alias) == ("transaction", "t")
    assert query.joins == (Join("transactionline", "tl", Column("transaction", "tl"), Column("id", "t")),)
    assert [item.expr for item in query.items or []] == [Column("id", "t"), Column("item", "tl")]
    assert (query.where[0].column, query.where[0].qualifier) == ("mainline", "tl")
    assert query.order_by == [("id", True)] and query.order_columns == ((Column("id", "t"), True),)


def test_parse_select_refuses_join_unless_the_dialect_allows_it() -> None:
    with pytest.raises(SqlError, match="JOIN"):
        parse_select("select Id from Account a join Contact c on c.AccountId = a.Id")
