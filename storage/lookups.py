"""Lookup tables for mappings (NetSuite GL account → Zuora accounting code, currency names → ISO codes...).

A table is a set of rows `{"key": value}` that a mapping's `lookup` step reads by name. Tables are
versioned exactly like mappings and kept in the same table: a row of `Mapping` with
`flow = "lookup:<name>"` and `spec = {"rows": {...}, "description": "..."}`; saving makes a new active
version, older versions stay for the audit trail.

`DEFAULT_LOOKUPS` are the starter tables every integration gets until someone saves its own version;
a saved table replaces the starter table of the same name whole (a row deleted by the user stays
deleted).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage import crud
from storage.db import session_scope
from storage.models import Mapping

PREFIX = "lookup:"  # the `flow` of a lookup table's rows in the mapping table
# Mapping.flow holds 50 characters, the prefix takes 7.
NAME = re.compile(r"[a-z][a-z0-9_]{0,42}")

DEFAULT_LOOKUPS: dict[str, dict[str, Any]] = {
    # NetSuite GL account number → Zuora accounting code.
    "gl_account_charge": {
        # NetSuite GL account number → a Zuora accounting code from the tenant's chart of accounts.
        # Starter rows only: a tenant replaces them with its own accounts and codes.
        "4000": "4000 Services",
        "4010": "Subscription Revenue",
        "4100": "4100 Product Sales",
    },
    # NetSuite subsidiary internal id → the subsidiary's ISO 4217 currency.
    "subsidiary_currency": {"1": "USD", "2": "GBP", "3": "EUR", "4": "CAD", "5": "AUD"},
    # NetSuite currency (refName or symbol) → ISO 4217 code.
    "currency_code": {
        "US Dollar": "USD",
        "USD": "USD",
        "Euro": "EUR",
        "EUR": "EUR",
        "British pound": "GBP",
        "GBP": "GBP",
        "Canadian Dollar": "CAD",
        "CAD": "CAD",
        "Australian Dollar": "AUD",
        "AUD": "AUD",
    },
    # NetSuite customer category → Zoho CRM Accounts.Account_Type picklist value.
    "category_classification": {
        "Corporate": "Customer",
        "Individual": "Customer",
        "Customer": "Customer",
        "Partner": "Partner",
        "Reseller": "Reseller",
        "Distributor": "Distributor",
        "Vendor": "Vendor",
        "Supplier": "Vendor",
        "Prospect": "Prospect",
        "Lead": "Prospect",
    },
}

DEFAULT_DESCRIPTIONS: dict[str, str] = {
    "gl_account_charge": "NetSuite GL account number → Zuora charge accounting code",
    "subsidiary_currency": "NetSuite subsidiary id → ISO currency code",
    "currency_code": "NetSuite currency name or symbol → ISO currency code",
    "category_classification": "NetSuite customer category → Zoho Account_Type",
}


def save_lookup(
    engine: Engine,
    *,
    integration_id: int,
    name: str,
    rows: dict[str, Any],
    description: str = "",
    created_by: str = "system",
) -> Mapping:
    """Store `rows` as the next version of lookup table `name` and make it the active one.

    Keys are kept as text (a mapping compares values as text); `name` is lower-case letters, digits and
    underscores, at most 43 characters.
    """
    if not NAME.fullmatch(name):
        raise ValueError(f"lookup table name {name!r}: use lower-case letters, digits and _ (at most 43)")
    spec = {"rows": {str(key): value for key, value in rows.items()}, "description": description}
    return crud.save_mapping(
        engine, integration_id=integration_id, flow=PREFIX + name, spec=spec, created_by=created_by
    )


def active_lookups(engine: Engine, *, integration_id: int) -> dict[str, dict[str, Any]]:
    """Every stored table's active rows, by table name (one query; should a table have two active
    versions, the newest wins)."""
    with engine.connect() as connection:
        found = connection.execute(_ACTIVE_TABLES, {"integration_id": integration_id}).all()
        connection.rollback()  # a read: end its transaction
    return {flow.removeprefix(PREFIX): dict((spec or {}).get("rows") or {}) for flow, spec in found}


_MAPPING = Mapping.__table__  # type: ignore[attr-defined]
_ACTIVE_TABLES = (
    sa_select(_MAPPING.c.flow, _MAPPING.c.spec)
    .where(
        _MAPPING.c.integration_id == bindparam("integration_id"),
        _MAPPING.c.flow.startswith(PREFIX),
        _MAPPING.c.active.is_(True),
    )
    .order_by(_MAPPING.c.id)
)


def lookup_versions(engine: Engine, *, integration_id: int, name: str) -> list[Mapping]:
    """Every stored version of table `name`, newest first (`spec["rows"]`, `spec["description"]`)."""
    with session_scope(engine) as session:
        return list(
            session.exec(
                select(Mapping)
                .where(col(Mapping.integration_id) == integration_id, col(Mapping.flow) == PREFIX + name)
                .order_by(col(Mapping.version).desc())
            ).all()
        )


def lookups_for(engine: Engine, *, integration_id: int) -> dict[str, dict[str, Any]]:
    """The tables a mapping of this integration sees: the starter tables, each replaced whole by the
    integration's active stored version of the same name, plus its own tables."""
    tables = {name: dict(rows) for name, rows in DEFAULT_LOOKUPS.items()}
    tables.update(active_lookups(engine, integration_id=integration_id))
    return tables
