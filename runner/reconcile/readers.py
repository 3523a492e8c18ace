"""Bulk reads for reconciliation, each through the connection's shared client (so its rate limits,
retries and concurrency cap apply):

- NetSuite: SuiteQL paged by key (`NetSuiteClient.scan`, 1,000 rows a query, past the 100,000-row cap);
- Zuora: ZOQL (`ZuoraClient.query`, 2,000 records a call, `queryMore` after) over Account, Contact and
  Invoice;
- Zoho: module pages of 200 (`ZohoClient.list_records`) with only the fields compared.

Each reader returns plain dicts keyed by the target record's id, shaped like what the flow writes (a
Zuora account in create shape: `name`, `crmId`, `billToContact: {...}`), so a mapped payload and a
target record compare path by path.
"""

from __future__ import annotations

from typing import Any

from connectors.netsuite.client import NetSuiteClient
from connectors.zoho.client import ZohoClient
from connectors.zuora.client import ZuoraClient

ZOHO_FIELDS = 49  # field names per Zoho listing: 50 a call, with `id`

# Zuora account fields a mapping may target, by their ZOQL Account name (create-shape name → ZOQL name).
ACCOUNT_ZOQL = {
    "name": "Name",
    "crmId": "CrmId",
    "accountNumber": "AccountNumber",
    "currency": "Currency",
    "billCycleDay": "BillCycleDay",
    "paymentTerm": "PaymentTerm",
    "autoPay": "AutoPay",
    "batch": "Batch",
    "notes": "Notes",
    "salesRep": "SalesRep",
    "status": "Status",
}
# Contact fields (under billToContact. / soldToContact.) by their ZOQL Contact name.
CONTACT_ZOQL = {
    "firstName": "FirstName",
    "lastName": "LastName",
    "workEmail": "WorkEmail",
    "workPhone": "WorkPhone",
    "personalEmail": "PersonalEmail",
    "mobilePhone": "MobilePhone",
    "fax": "Fax",
    "address1": "Address1",
    "address2": "Address2",
    "city": "City",
    "state": "State",
    "zipCode": "PostalCode",
    "country": "Country",
    "county": "County",
}


async def netsuite_rows(
    client: NetSuiteClient, table: str, columns: list[str], *, where: str = ""
) -> list[dict[str, Any]]:
    """Every row of `table` (matching `where`) with `columns`, read by key a page at a time."""
    selected = ", ".join(dict.fromkeys(["id", *columns]))
    return [row async for row in client.scan(selected, table, where=where)]


def zuora_readable(paths: list[str]) -> bool:
    """Whether ZOQL can read every one of these create-shape account paths (else the caller reads each
    paired account with GET /v1/accounts/{id})."""
    for path in paths:
        head, _, rest = path.partition(".")
        if rest:
            if head not in ("billToContact", "soldToContact") or rest not in CONTACT_ZOQL:
                return False
        elif head not in ACCOUNT_ZOQL and not head.endswith("__c"):
            return False
    return True


async def zuora_accounts(client: ZuoraClient, paths: list[str]) -> dict[str, dict[str, Any]]:
    """Every Zuora account as {id, crmId, <paths>} in create shape, with its bill-to and sold-to contacts
    when `paths` reach into them (two or three ZOQL queries for the whole tenant)."""
    custom = sorted({p for p in paths if "." not in p and p.endswith("__c")})
    names = ["Id", "BillToId", "SoldToId", *dict.fromkeys([*ACCOUNT_ZOQL.values(), *custom])]
    accounts: dict[str, dict[str, Any]] = {}
    async for row in client.query(f"select {', '.join(names)} from Account"):
        account = {key: row.get(zoql) for key, zoql in ACCOUNT_ZOQL.items()}
        account.update({name: row.get(name) for name in custom})
        account["id"] = str(row.get("Id"))
        account["_bill_to"], account["_sold_to"] = row.get("BillToId"), row.get("SoldToId")
        accounts[account["id"]] = account
    contact_fields = sorted({p.split(".", 1)[1] for p in paths if "." in p})
    if contact_fields:
        wanted = ["Id", "AccountId", *(CONTACT_ZOQL[f] for f in contact_fields if f in CONTACT_ZOQL)]
        contacts: dict[str, dict[str, Any]] = {}
        async for row in client.query(f"select {', '.join(dict.fromkeys(wanted))} from Contact"):
            contacts[str(row.get("Id"))] = {f: row.get(CONTACT_ZOQL[f]) for f in contact_fields}
        for account in accounts.values():
            account["billToContact"] = contacts.get(str(account["_bill_to"]), {})
            account["soldToContact"] = contacts.get(str(account["_sold_to"]), {})
    return accounts


def account_shape(detail: dict[str, Any]) -> dict[str, Any]:
    """GET /v1/accounts/{id} (basicInfo, billingAndPayment, contacts) in create shape."""
    shaped = {**(detail.get("basicInfo") or {}), **(detail.get("billingAndPayment") or {})}
    shaped["billToContact"] = detail.get("billToContact") or {}
    shaped["soldToContact"] = detail.get("soldToContact") or {}
    return shaped


async def zuora_invoices(client: ZuoraClient, *, netsuite_field: str | None) -> list[dict[str, Any]]:
    """Every Zuora invoice: Id, AccountId, InvoiceNumber, InvoiceDate, Amount, Status (and the custom
    field holding the NetSuite invoice id, when the mapping writes one)."""
    names = ["Id", "AccountId", "InvoiceNumber", "InvoiceDate", "Amount", "Status"]
    if netsuite_field:
        names.append(netsuite_field)
    return [row async for row in client.query(f"select {', '.join(names)} from Invoice")]


async def zoho_records(client: ZohoClient, module: str, fields: list[str]) -> dict[str, dict[str, Any]]:
    """Every record of a Zoho module with `fields`, by id (one listing per ZOHO_FIELDS names: Zoho
    takes at most 50 a call)."""
    records: dict[str, dict[str, Any]] = {}
    names = [f for f in dict.fromkeys(fields) if f != "id"]
    for start in range(0, max(1, len(names)), ZOHO_FIELDS):
        async for record in client.list_records(module, fields=names[start : start + ZOHO_FIELDS]):
            records.setdefault(str(record.get("id")), {}).update(record)
    return records
