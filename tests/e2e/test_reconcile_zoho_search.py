"""The pre-create lookup for Zoho flows (`existing_target`) is one search by NetSuite_Id, not a module scan,
and it only accepts an exact NetSuite_Id (Zoho's `equals` behaves like contains)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from runner.reconcile import service
from runner.reconcile.service import TargetMatch
from storage.crypto import Vault
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack


@pytest.fixture
def stack(engine: Engine, vault: Vault, settings: Settings) -> Iterator[Stack]:
    with running_stack(engine, vault, settings) as running:
        yield running


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_existing_target_is_one_search_and_an_exact_match(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    zoho = stack.zoho
    for n in range(450):  # three module pages' worth, which the old scan read every time
        zoho.seed("Accounts", {"Account_Name": f"Filler {n}", "NetSuite_Id": f"9{n:04d}"})
    zoho.seed("Accounts", {"Account_Name": "Near Miss", "NetSuite_Id": "4242"})  # contains "42"
    exact = zoho.seed("Accounts", {"Account_Name": "Exact", "NetSuite_Id": "42"})
    odd = zoho.seed("Accounts", {"Account_Name": "Odd", "NetSuite_Id": "a(b),c"})

    def lookup(source_id: str) -> TargetMatch | None:
        return service.find_existing_target(
            engine, vault, settings, integration_id=stack.zoho_integration_id, flow="customer_zoho",
            source_id=source_id,
        )  # fmt: skip

    with zoho.lock:
        before = len(zoho.requests)
    found = lookup("42")
    with zoho.lock:
        calls = [(r["method"], r["path"]) for r in zoho.requests[before:] if r["path"].startswith("/crm/")]

    assert found == TargetMatch(exact, "Exact", "NetSuite_Id")
    assert calls == [("GET", "/crm/v8/Accounts/search")]
    assert lookup("424") is None  # "4242" contains it, but it is not that id
    assert lookup("777777") is None  # 204 from Zoho
    assert lookup("a(b),c") == TargetMatch(odd, "Odd", "NetSuite_Id")  # escaped in the criteria


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_short_id_inside_more_than_2000_others_falls_back_to_reading_the_module(
    stack: Stack, engine: Engine, vault: Vault, settings: Settings
) -> None:
    zoho = stack.zoho
    for n in range(2001):  # every one of these contains "7", so `equals` finds them all
        zoho.seed("Accounts", {"Account_Name": f"Seven {n}", "NetSuite_Id": f"7{n:05d}"})
    seven = zoho.seed("Accounts", {"Account_Name": "Seven", "NetSuite_Id": "7"})

    with zoho.lock:
        before = len(zoho.requests)
    found = service.find_existing_target(
        engine, vault, settings, integration_id=stack.zoho_integration_id, flow="customer_zoho", source_id="7"
    )
    with zoho.lock:
        paths = [r["path"] for r in zoho.requests[before:] if r["path"].startswith("/crm/")]

    assert found == TargetMatch(seven, "Seven", "NetSuite_Id")
    assert paths.count("/crm/v8/Accounts/search") == 10 and "/crm/v8/Accounts" in paths
