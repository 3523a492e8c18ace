"""`ZohoClient.search_records` against the Zoho emulator over HTTP: escaping, paging, 204, errors."""

from __future__ import annotations

from typing import Any

import pytest

from connectors.errors import RemoteError
from connectors.zoho.client import ZohoClient, search_criteria
from tests.connectors.conftest import Harness

ZO = ["zoho"]


def zoho_of(harness: Harness) -> tuple[ZohoClient, Any]:
    client = harness.client
    assert isinstance(client, ZohoClient)
    return client, harness.emulator


def search_calls(harness: Harness) -> list[str]:
    return [a.url for a in harness.api_attempts() if "/search" in a.url]


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_search_by_a_dict_escapes_values_and_finds_the_record(harness: Harness) -> None:
    client, zoho = zoho_of(harness)
    tricky = "Acme (UK), Ltd \\ Co"
    wanted = zoho.seed("Accounts", {"Account_Name": tricky, "NetSuite_Id": "N-1"})
    zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "N-2"})

    found = await client.search_records("Accounts", {"Account_Name": tricky}, fields=["Account_Name"])
    both = await client.search_records(
        "Accounts", {"Account_Name": ("starts_with", "acme"), "NetSuite_Id": ("in", ["N-1", "N-2"])}
    )

    assert [(r["id"], r["Account_Name"]) for r in found] == [(wanted, tricky)]
    assert set(found[0]) == {"id", "Account_Name"}  # only the fields asked for, and the id
    assert len(both) == 2
    assert len(search_calls(harness)) == 2


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_search_follows_pages_while_more_records(harness: Harness) -> None:
    client, zoho = zoho_of(harness)
    for n in range(450):
        zoho.seed("Accounts", {"Account_Name": f"Bulk {n:03d}"})

    found = await client.search_records("Accounts", "(Account_Name:starts_with:Bulk)")

    assert len(found) == 450 and len({r["id"] for r in found}) == 450
    assert len(search_calls(harness)) == 3  # 200 + 200 + 50


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_search_with_no_match_is_an_empty_list(harness: Harness) -> None:
    client, zoho = zoho_of(harness)
    zoho.seed("Accounts", {"Account_Name": "Acme", "NetSuite_Id": "1"})

    assert await client.search_records("Accounts", {"NetSuite_Id": "404"}) == []


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_a_bad_criteria_raises_with_zohos_reason(harness: Harness) -> None:
    client, _ = zoho_of(harness)

    with pytest.raises(RemoteError, match="INVALID_QUERY") as raised:
        await client.search_records("Accounts", {"No_Such_Field": "x"})

    assert raised.value.status == 400 and "the field is not available for search" in (
        raised.value.excerpt or ""
    )


@pytest.mark.parametrize("harness", ZO, indirect=True)
async def test_more_than_2000_matches_raise_instead_of_a_silent_part(harness: Harness) -> None:
    client, zoho = zoho_of(harness)
    for n in range(2001):
        zoho.seed("Accounts", {"Account_Name": f"Many {n:04d}"})

    with pytest.raises(RemoteError, match="more than 2000"):
        await client.search_records("Accounts", {"Account_Name": ("starts_with", "Many")})

    assert len(search_calls(harness)) == 10  # stops at the limit instead of asking for page 11


@pytest.mark.parametrize(
    ("criteria", "text"),
    [
        ({"NetSuite_Id": "12"}, "(NetSuite_Id:equals:12)"),
        ({"Account_Name": "a(b),c\\"}, "(Account_Name:equals:a\\(b\\)\\,c\\\\)"),
        (
            {"NetSuite_Id": "1", "Phone": ("starts_with", "555"), "Account_Name": ("in", ["x,y", "z"])},
            "((NetSuite_Id:equals:1)and(Phone:starts_with:555)and(Account_Name:in:x\\,y,z))",
        ),
        ("((A:equals:b)or(C:equals:d))", "((A:equals:b)or(C:equals:d))"),
    ],
)
def test_search_criteria_text(criteria: Any, text: str) -> None:
    assert search_criteria(criteria) == text


@pytest.mark.parametrize(
    "criteria", [{}, {f"F{n}": "x" for n in range(11)}, {"NetSuite_Id": ""}, {"NetSuite_Id": ["1", "2"]}]
)
def test_search_criteria_refuses_what_zoho_would(criteria: Any) -> None:
    with pytest.raises(ValueError):
        search_criteria(criteria)
