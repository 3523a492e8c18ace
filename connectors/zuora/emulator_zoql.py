"""ZOQL over the Zuora emulator's invoices and contacts (`POST /v1/action/query`, shared/api/zuora.md §3).

The Account object lives in emulator_accounts; this adds `Invoice` (Id, AccountId, InvoiceNumber,
InvoiceDate, DueDate, Amount, Balance, Status, ... and custom `__c` fields) and `Contact` (the accounts'
bill-to and sold-to contacts: Id, AccountId, FirstName, LastName, WorkEmail, WorkPhone, Address1, City,
State, PostalCode, Country, ...), which is how a reconciliation reads them in bulk. Same rules as for
Account: explicit field names, no `*`, functions or ORDER BY, `where` conditions joined by `and`,
PascalCase keys back, null fields left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from connectors.emulator_sql import Column, Query, SqlError
from connectors.zuora.emulator_common import custom_fields, is_custom

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

_INVOICE = (
    "Id AccountId InvoiceNumber InvoiceDate DueDate Amount AmountWithoutTax TaxAmount Balance Status "
    "Comments PostedDate CreatedDate UpdatedDate"
)
INVOICE_FIELDS = {name.lower(): name for name in _INVOICE.split()}
# ZOQL Contact name → the key our stored contact dict uses (create-style names, notes §3).
CONTACT_FIELDS = {
    "Id": "id",
    "FirstName": "firstName",
    "LastName": "lastName",
    "WorkEmail": "workEmail",
    "WorkPhone": "workPhone",
    "PersonalEmail": "personalEmail",
    "MobilePhone": "mobilePhone",
    "HomePhone": "homePhone",
    "Fax": "fax",
    "NickName": "nickname",
    "Address1": "address1",
    "Address2": "address2",
    "City": "city",
    "State": "state",
    "PostalCode": "zipCode",
    "Country": "country",
    "County": "county",
    "TaxRegion": "taxRegion",
}


def objects() -> frozenset[str]:
    """The ZOQL objects this module answers (lower case)."""
    return frozenset({"invoice", "contact"})


def run(emulator: ZuoraEmulator, query: Query, match: Any) -> list[dict[str, Any]]:
    """Rows of `query` over Invoice or Contact; `match(value, op, literal)` is the Account query's rule."""
    if query.items is None or not all(isinstance(i.expr, Column) for i in query.items) or query.order_by:
        raise SqlError("ZOQL needs explicit field names and has no functions, * or ORDER BY")
    table = query.table.lower()
    rows = _invoice_rows(emulator) if table == "invoice" else _contact_rows(emulator)
    known = INVOICE_FIELDS if table == "invoice" else {k.lower(): k for k in [*CONTACT_FIELDS, "AccountId"]}
    selected = [i.expr.name.lower() for i in query.items if isinstance(i.expr, Column)]
    for column in selected + [c.column.lower() for c in query.where]:
        if column not in known and not is_custom(column.replace("__ns", "__NS")):
            from connectors.zuora.emulator_accounts import InvalidField

            raise InvalidField(f"invalid field for query: {query.table}.{column}")
    out = []
    for row in rows:
        if all(match(row.get(c.column.lower(), ("", None))[1], c.op, c.value) for c in query.where):
            picked = [row[name] for name in selected if name in row]
            out.append({pascal: value for pascal, value in picked if value is not None})
    return out


def _invoice_rows(emulator: ZuoraEmulator) -> list[dict[str, tuple[str, Any]]]:
    rows = []
    for invoice in emulator.invoice_store.all():
        row = {
            name: (pascal, invoice.get(pascal[0].lower() + pascal[1:]))
            for name, pascal in INVOICE_FIELDS.items()
        }
        row.update({k.lower(): (k, v) for k, v in custom_fields(invoice).items()})
        rows.append(row)
    return rows


def _contact_rows(emulator: ZuoraEmulator) -> list[dict[str, tuple[str, Any]]]:
    rows = []
    for account in emulator.account_store.all():
        seen: set[str] = set()
        for contact in (account.get("billToContact") or {}, account.get("soldToContact") or {}):
            if not contact or contact.get("id") in seen:
                continue
            seen.add(str(contact.get("id")))
            row = {pascal.lower(): (pascal, contact.get(key)) for pascal, key in CONTACT_FIELDS.items()}
            row["accountid"] = ("AccountId", account.get("id"))
            rows.append(row)
    return rows
