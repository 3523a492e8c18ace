"""Contract tests for the Zoho emulator's Search Records API: `GET /crm/v8/{module}/search`.

Behaviour from Zoho's search-records docs (see connectors.zoho.emulator_search): 200 with data and info,
204 when nothing matches, INVALID_QUERY for a bad criteria, backslash escapes, 2,000 records at most.
"""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from connectors.zoho.client import criteria_value
from connectors.zoho.emulator import ZohoEmulator
from tests.emulators.conftest import Clock
from tests.emulators.zoho_fixtures import scoped_auth

SEARCH = "/crm/v8/Accounts/search"


def search(http: httpx2.Client, auth: dict[str, str], **params: Any) -> httpx2.Response:
    return http.get(SEARCH, params=params, headers=auth)


def names(response: httpx2.Response) -> list[str]:
    return sorted(r["Account_Name"] for r in response.json()["data"])


def test_criteria_search_answers_the_matching_records_with_info(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    acme = zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "101", "Phone": "555-0100"})
    zoho.seed("Accounts", {"Account_Name": "Beta", "NetSuite_Id": "202", "Phone": "555-0200"})
    zoho.seed("Accounts", {"Account_Name": "Gamma", "NetSuite_Id": "303", "Phone": "777-0300"})

    response = search(
        zoho_http, zoho_auth, criteria="(NetSuite_Id:equals:101)", fields="Account_Name,NetSuite_Id"
    )

    assert response.status_code == 200
    [record] = response.json()["data"]
    assert record == {"id": acme, "Account_Name": "Acme", "NetSuite_Id": "101"}  # `fields` trims, id stays
    info = response.json()["info"]
    assert (info["count"], info["page"], info["per_page"], info["more_records"]) == (1, 1, 200, False)


@pytest.mark.parametrize(
    ("criteria", "expected"),
    [
        ("NetSuite_Id:equals:202", ["Beta"]),  # one condition without parentheses (the docs' own example)
        ("((Phone:starts_with:555)and(NetSuite_Id:equals:202))", ["Beta"]),
        ("((NetSuite_Id:equals:101)or(NetSuite_Id:equals:303))", ["Acme", "Gamma"]),
        (
            "(((Phone:starts_with:555)and(Account_Name:equals:acme))or(NetSuite_Id:equals:303))",
            ["Acme", "Gamma"],
        ),
        ("(NetSuite_Id:in:101,303)", ["Acme", "Gamma"]),
        ("(Account_Name:not_equal:Beta)", ["Acme", "Gamma"]),
        ("(Account_Name:starts_with:GAM)", ["Gamma"]),  # case-insensitive
    ],
)
def test_criteria_operators_and_grouping(
    zoho: ZohoEmulator,
    zoho_http: httpx2.Client,
    zoho_auth: dict[str, str],
    criteria: str,
    expected: list[str],
) -> None:
    zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "101", "Phone": "555-0100"})
    zoho.seed("Accounts", {"Account_Name": "Beta", "NetSuite_Id": "202", "Phone": "555-0200"})
    zoho.seed("Accounts", {"Account_Name": "Gamma", "NetSuite_Id": "303", "Phone": "777-0300"})

    response = search(zoho_http, zoho_auth, criteria=criteria)

    assert (response.status_code, names(response)) == (200, expected)


def test_equals_behaves_like_contains(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    # Zoho's docs: (Company:equals:ABC) also finds "ABC Inc"; a client wanting an exact match must check.
    zoho.seed("Accounts", {"Account_Name": "ABC", "NetSuite_Id": "12"})
    zoho.seed("Accounts", {"Account_Name": "ABC Inc", "NetSuite_Id": "123"})

    assert names(search(zoho_http, zoho_auth, criteria="(Account_Name:equals:ABC)")) == ["ABC", "ABC Inc"]
    assert names(search(zoho_http, zoho_auth, criteria="(NetSuite_Id:equals:12)")) == ["ABC", "ABC Inc"]
    zoho.search_equals_contains = False
    assert names(search(zoho_http, zoho_auth, criteria="(NetSuite_Id:equals:12)")) == ["ABC"]


def test_no_match_is_204_with_no_body(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "101"})

    response = search(zoho_http, zoho_auth, criteria="(NetSuite_Id:equals:999)")
    empty_module = zoho_http.get(
        "/crm/v8/Vendors/search", params={"criteria": "(Vendor_Name:equals:x)"}, headers=zoho_auth
    )

    assert (response.status_code, response.content) == (204, b"")
    assert (empty_module.status_code, empty_module.content) == (204, b"")


@pytest.mark.parametrize(
    ("criteria", "details"),
    [
        (
            "(Not_A_Field:equals:x)",
            {"reason": "the field is not available for search", "api_name": "Not_A_Field"},
        ),
        (
            "(Account_Name:greater_than:x)",
            {"reason": "invalid operator found", "api_name": "Account_Name", "operator": "greater_than"},
        ),
        (
            "(Account_Name:equals:Acme (UK))",
            {"reason": "unescaped parenthesis in the value", "api_name": "Account_Name"},
        ),
        (
            "(Account_Name:equals:Acme, Ltd)",
            {"reason": "unescaped comma in the value", "api_name": "Account_Name"},
        ),
        ("((Account_Name:equals:Acme)", {"reason": "unbalanced parentheses"}),
        (
            "(Account_Name=Acme)",
            {"reason": "a condition reads {api_name}:{operator}:{value}", "near": "Account_Name=Acme"},
        ),
    ],
)
def test_a_bad_criteria_is_invalid_query(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str], criteria: str, details: dict[str, str]
) -> None:
    response = search(zoho_http, zoho_auth, criteria=criteria)

    assert response.status_code == 400
    assert response.json() == {
        "code": "INVALID_QUERY",
        "details": details,
        "message": "invalid query formed",
        "status": "error",
    }


def test_more_than_ten_conditions_is_invalid_query(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    criteria = "(" + "or".join(f"(NetSuite_Id:equals:{n})" for n in range(11)) + ")"

    response = search(zoho_http, zoho_auth, criteria=criteria)

    assert (response.status_code, response.json()["code"]) == (400, "INVALID_QUERY")


@pytest.mark.parametrize("name", ["Acme (UK), Ltd", "Back\\slash\\", "(Paren)", "a,b,c", "Colon: yes"])
def test_escaped_specials_in_a_value_match_literally(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], name: str
) -> None:
    wanted = zoho.seed("Accounts", {"Account_Name": name})
    zoho.seed("Accounts", {"Account_Name": "Other"})

    response = search(zoho_http, zoho_auth, criteria=f"(Account_Name:equals:{criteria_value(name)})")

    assert response.status_code == 200, response.text
    assert [r["id"] for r in response.json()["data"]] == [wanted]


def test_the_docs_escaping_example(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    # ((Last_Name:equals:Burns\,B)and(First_Name:starts_with:M)), and a trailing backslash doubled.
    burns = zoho.seed("Contacts", {"Last_Name": "Burns,B", "First_Name": "Mary"})
    k = zoho.seed("Contacts", {"Last_Name": "K\\"})

    def ids(criteria: str) -> list[str]:
        response = zoho_http.get("/crm/v8/Contacts/search", params={"criteria": criteria}, headers=zoho_auth)
        return [r["id"] for r in response.json()["data"]]

    assert ids(r"((Last_Name:equals:Burns\,B)and(First_Name:starts_with:M))") == [burns]
    assert ids(r"(Last_Name:equals:K\\)") == [k]


def test_email_phone_and_word_searches(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    ann = zoho.seed("Contacts", {"Last_Name": "Smith", "Email": "ann@example.com", "Mobile": "+1 555 0100"})
    zoho.seed("Contacts", {"Last_Name": "Jones", "Secondary_Email": "bob@example.com", "Phone": "555-0200"})

    def ids(**params: str) -> list[str]:
        response = zoho_http.get("/crm/v8/Contacts/search", params=params, headers=zoho_auth)
        return [r["id"] for r in response.json()["data"]] if response.status_code == 200 else []

    assert ids(email="ANN@example.com") == [ann]
    assert ids(phone="15550100") == [ann]
    assert ids(word="smi") == [ann]
    assert ids(criteria="(Last_Name:equals:Smith)", word="jones") == [ann]  # criteria wins over word
    short = zoho_http.get("/crm/v8/Contacts/search", params={"word": "s"}, headers=zoho_auth)
    assert (short.status_code, short.json()["code"]) == (400, "INVALID_DATA")


def test_no_search_parameter_is_expected_param_missing(
    zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    response = search(zoho_http, zoho_auth)

    assert response.status_code == 400
    assert (response.json()["code"], response.json()["message"]) == (
        "EXPECTED_PARAM_MISSING",
        "mandatory param missing",
    )


def test_pages_and_the_2000_record_limit(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    for n in range(2005):
        zoho.seed("Accounts", {"Account_Name": f"Bulk {n:04d}"})

    first = search(zoho_http, zoho_auth, criteria="(Account_Name:starts_with:Bulk)", per_page=200)
    tenth = search(zoho_http, zoho_auth, criteria="(Account_Name:starts_with:Bulk)", per_page=200, page=10)
    past = search(zoho_http, zoho_auth, criteria="(Account_Name:starts_with:Bulk)", per_page=200, page=11)

    assert (first.json()["info"]["count"], first.json()["info"]["more_records"]) == (200, True)
    assert (tenth.json()["info"]["count"], tenth.json()["info"]["more_records"]) == (200, True)
    assert past.status_code == 400
    assert (past.json()["code"], past.json()["message"]) == (
        "LIMIT_REACHED",
        "Maximum response iteration limit reached",
    )


def test_search_needs_a_read_scope_on_the_module(zoho: ZohoEmulator, zoho_http: httpx2.Client) -> None:
    zoho.seed("Accounts", {"Account_Name": "Acme"})
    criteria = {"criteria": "(Account_Name:equals:Acme)"}

    def status(scopes: str) -> int:
        return zoho_http.get(
            SEARCH, params=criteria, headers=scoped_auth(zoho_http, zoho, scopes)
        ).status_code

    assert status("ZohoCRM.modules.READ") == 200
    assert status("ZohoCRM.modules.accounts.READ") == 200
    assert status("ZohoCRM.modules.ALL") == 200
    assert status("ZohoCRM.modules.contacts.READ") == 401
    assert status("ZohoCRM.modules.accounts.CREATE") == 401
    denied = zoho_http.get(SEARCH, params=criteria, headers=scoped_auth(zoho_http, zoho, "ZohoCRM.org.READ"))
    assert denied.json()["code"] == "OAUTH_SCOPE_MISMATCH"
    # The docs also name ZohoSearch.securesearch.READ; enforced only when asked (UNCONFIRMED in life).
    zoho.require_search_scope = True
    assert status("ZohoCRM.modules.ALL") == 401
    assert status("ZohoCRM.modules.ALL,ZohoSearch.securesearch.READ") == 200


def test_unknown_module_and_no_token(zoho_http: httpx2.Client, zoho_auth: dict[str, str]) -> None:
    bad_module = zoho_http.get(
        "/crm/v8/Widgets/search", params={"criteria": "(a:equals:b)"}, headers=zoho_auth
    )
    no_token = zoho_http.get(SEARCH, params={"criteria": "(Account_Name:equals:x)"})

    assert (bad_module.status_code, bad_module.json()["code"]) == (400, "INVALID_MODULE")
    assert no_token.status_code == 401


def test_new_records_wait_for_the_search_index(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str], clock: Clock
) -> None:
    zoho.search_index_lag = 5.0
    zoho.seed("Accounts", {"Account_Name": "Fresh"})

    assert search(zoho_http, zoho_auth, criteria="(Account_Name:equals:Fresh)").status_code == 204
    clock.advance(6)
    assert search(zoho_http, zoho_auth, criteria="(Account_Name:equals:Fresh)").status_code == 200


def test_search_spends_one_credit(
    zoho: ZohoEmulator, zoho_http: httpx2.Client, zoho_auth: dict[str, str]
) -> None:
    before = zoho.credits_used()

    search(zoho_http, zoho_auth, criteria="(Account_Name:equals:x)")

    assert zoho.credits_used() == before + 1
