"""Lookup tables: versioned like mappings in the mapping table, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from runner.mapping import apply, validate_spec
from storage import crud
from storage.crypto import Vault
from storage.lookups import (
    DEFAULT_DESCRIPTIONS,
    DEFAULT_LOOKUPS,
    active_lookups,
    lookup_versions,
    lookups_for,
    save_lookup,
)


def make_integration(engine: Engine, vault: Vault, name: str = "L") -> int:
    workspace = crud.create_workspace(engine, name=name)
    assert workspace.id is not None
    conn = crud.create_connection(
        engine, vault, workspace_id=workspace.id, system="netsuite", name="n", base_url="http://127.0.0.1"
    )
    integration = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="i",
        source_connection_id=conn.id,
        target_connection_id=conn.id,
        flows=["invoice"],
    )
    return integration.id


def test_save_lookup_makes_a_new_active_version_each_time(engine: Engine, vault: Vault) -> None:
    integration = make_integration(engine, vault)

    first = save_lookup(engine, integration_id=integration, name="gl_account_charge", rows={"4000": "A"})
    second = save_lookup(
        engine,
        integration_id=integration,
        name="gl_account_charge",
        rows={4000: "B", "4100": "C"},
        description="GL → charge",
        created_by="ada@acme.test",
    )

    assert (first.version, second.version) == (1, 2)
    assert first.flow == second.flow == "lookup:gl_account_charge"
    versions = lookup_versions(engine, integration_id=integration, name="gl_account_charge")
    assert [(v.version, v.active, v.created_by) for v in versions] == [
        (2, True, "ada@acme.test"),
        (1, False, "system"),
    ]
    assert versions[0].spec == {"rows": {"4000": "B", "4100": "C"}, "description": "GL → charge"}
    assert versions[1].spec["rows"] == {"4000": "A"}
    assert active_lookups(engine, integration_id=integration) == {
        "gl_account_charge": {"4000": "B", "4100": "C"}
    }


def test_active_lookups_reads_every_table_in_one_query_and_no_flow_mappings(
    engine: Engine, vault: Vault
) -> None:
    integration = make_integration(engine, vault)
    other = make_integration(engine, vault, name="other")
    save_lookup(engine, integration_id=integration, name="currency_code", rows={"Yen": "JPY"})
    save_lookup(
        engine, integration_id=integration, name="tax_codes", rows={"CA": {"code": "T1", "rate": 7.25}}
    )
    save_lookup(engine, integration_id=other, name="currency_code", rows={"Peso": "MXN"})
    crud.save_mapping(engine, integration_id=integration, flow="invoice", spec={"fields": []})
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        tables = active_lookups(engine, integration_id=integration)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)

    assert tables == {"currency_code": {"Yen": "JPY"}, "tax_codes": {"CA": {"code": "T1", "rate": 7.25}}}
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1


def test_lookups_for_overlays_stored_tables_on_the_defaults_for_mappings(
    engine: Engine, vault: Vault
) -> None:
    integration = make_integration(engine, vault)
    assert lookups_for(engine, integration_id=integration) == DEFAULT_LOOKUPS

    save_lookup(
        engine, integration_id=integration, name="gl_account_charge", rows={"5000": "Hardware Revenue"}
    )
    save_lookup(engine, integration_id=integration, name="tax_codes", rows={"CA": "T1"})
    tables = lookups_for(engine, integration_id=integration)

    assert tables["gl_account_charge"] == {"5000": "Hardware Revenue"}  # replaced whole, not merged
    assert tables["currency_code"] == DEFAULT_LOOKUPS["currency_code"]
    assert tables["tax_codes"] == {"CA": "T1"}
    tables["currency_code"]["Yen"] = "JPY"
    assert "Yen" not in DEFAULT_LOOKUPS["currency_code"]
    spec = {
        "fields": [
            {
                "target": "code",
                "source": "account",
                "transform": {"name": "lookup", "table": "gl_account_charge"},
            }
        ]
    }
    assert validate_spec(spec, lookups=tables) == []
    assert apply(spec, {"account": 5000}, lookups=tables).payload == {"code": "Hardware Revenue"}


@pytest.mark.parametrize("name", ["", "GL", "gl-accounts", "1gl", "x" * 44, "lookup:gl"])
def test_save_lookup_refuses_a_bad_name_before_touching_the_database(name: str) -> None:
    never_used = sa.create_engine("sqlite://")

    with pytest.raises(ValueError, match="lookup table name"):
        save_lookup(never_used, integration_id=1, name=name, rows={})


def test_default_lookups_are_described_and_map_currencies_to_iso_codes() -> None:
    assert set(DEFAULT_DESCRIPTIONS) == set(DEFAULT_LOOKUPS)
    assert {"gl_account_charge", "subsidiary_currency", "currency_code", "category_classification"} <= set(
        DEFAULT_LOOKUPS
    )
    currencies = DEFAULT_LOOKUPS["currency_code"]
    assert {currencies[k] for k in ("US Dollar", "USD")} == {"USD"}
    assert {currencies[k] for k in ("Euro", "EUR")} == {"EUR"}
    assert {currencies[k] for k in ("British pound", "GBP")} == {"GBP"}
    assert all(len(code) == 3 and code.isupper() for code in DEFAULT_LOOKUPS["subsidiary_currency"].values())
    assert set(DEFAULT_LOOKUPS["category_classification"].values()) <= {
        "Customer",
        "Partner",
        "Reseller",
        "Distributor",
        "Vendor",
        "Prospect",
        "Other",
    }
