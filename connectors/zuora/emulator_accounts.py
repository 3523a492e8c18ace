"""Accounts of the Zuora emulator: POST/GET/PUT /v1/accounts, Object Query and ZOQL over them.

Shapes follow /work/shared/api/zuora.md §3 (developer.zuora.com POST_Account, queryAccounts,
Action_POSTquery; Zuora's generated SDK). The store keeps accounts flat (account fields plus
billToContact/soldToContact dicts) and answers (HTTP status, body) pairs; HTTP lives in emulator.py.
"""

from __future__ import annotations

import base64
import copy
import json
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.emulator_kit import iso_utc
from connectors.emulator_sql import Column, SqlError, compare, parse_select
from connectors.zuora import emulator_zoql
from connectors.zuora.emulator_common import (
    INVALID,
    MISSING,
    RULE,
    UNKNOWN_FIELD,
    Answer,
    Reason,
    custom_fields,
    is_custom,
    money,
    new_id,
    not_found_answer,
    resource_envelope,
)

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

ACCOUNT_RESOURCE = 531000  # 6-digit resource code used in the sample 53100320 (notes §8)
OBJECT_QUERY_PAGE = 10  # default pageSize (notes §3)
OBJECT_QUERY_MAX_PAGE = 99
ZOQL_BATCH = 2000  # records per query/queryMore call (notes §3)
_ACCOUNT_FIELDS = (
    "name currency billCycleDay billToContact soldToContact accountNumber autoPay paymentTerm crmId batch "
    "notes salesRep invoiceTemplateId parentId invoiceDeliveryPrefsEmail invoiceDeliveryPrefsPrint "
    "communicationProfileId defaultPaymentMethodId taxInfo purchaseOrderNumber customerServiceRepName "
    "sequenceSetId"
)
_CONTACT_FIELDS = (
    "firstName lastName address1 address2 city state zipCode country county workEmail workPhone taxRegion "
    "personalEmail mobilePhone homePhone fax nickname otherPhone otherPhoneType"
)
ACCOUNT_FIELDS = frozenset(_ACCOUNT_FIELDS.split())  # what POST/PUT /v1/accounts accept (notes §3)
CONTACT_FIELDS = frozenset(_CONTACT_FIELDS.split())
# Which stored fields GET /v1/accounts/{key} shows in which section (notes §3).
_BASIC_INFO = "id accountNumber name status crmId batch notes parentId salesRep invoiceTemplateId"
_BILLING = "billCycleDay currency paymentTerm autoPay defaultPaymentMethodId invoiceDeliveryPrefsEmail"
_REQUIRED = "name currency billCycleDay billToContact billToContact.firstName billToContact.lastName"
BASIC_INFO, BILLING, REQUIRED = _BASIC_INFO.split(), _BILLING.split(), _REQUIRED.split()
# Object Query names are lower-case; ZOQL answers in PascalCase (notes §3).
_QUERY_FIELDS = (
    "Id AccountNumber Name Status CrmId Currency BillCycleDay PaymentTerm AutoPay Batch Notes SalesRep "
    "ParentId Balance InvoiceTemplateId CommunicationProfileId DefaultPaymentMethodId BillToId SoldToId "
    "CreatedDate UpdatedDate"
)
QUERY_FIELDS = {name.lower(): name for name in _QUERY_FIELDS.split()}
ACCOUNT_DEFAULTS = {
    "status": "Active",
    "paymentTerm": "Due Upon Receipt",
    "autoPay": False,
    "batch": "Batch1",
    "crmId": None,
    "balance": 0,
}  # tenant defaults for fields a create leaves out
FILTERABLE = frozenset({"id", "accountnumber", "name", "status", "crmid"})


class InvalidField(SqlError):
    """A ZOQL query names a field Account does not have (answered as INVALID_FIELD)."""


def account_envelope(reasons: list[Reason]) -> dict[str, Any]:
    """An error body for account calls: (category, message) pairs under the account resource code."""
    return resource_envelope(ACCOUNT_RESOURCE, reasons)


def _missing(body: dict[str, Any], path: str) -> bool:
    value: Any = body
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value is None or value == ""


class Accounts:
    """The tenant's customer accounts; every method takes `owner.lock` and reads `owner`'s settings."""

    def __init__(self, owner: ZuoraEmulator) -> None:
        self.owner = owner
        self._accounts: dict[str, dict[str, Any]] = {}
        self._next_number = 1
        self._locators: dict[str, list[dict[str, Any]]] = {}

    def clear(self) -> None:
        with self.owner.lock:
            self._accounts.clear()
            self._next_number = 1
            self._locators.clear()

    def all(self) -> list[dict[str, Any]]:
        """Deep copies of the stored accounts, in creation order."""
        with self.owner.lock:
            return copy.deepcopy(list(self._accounts.values()))

    def find(self, key: str) -> dict[str, Any] | None:
        """The live stored account by id or account number (notes §3), or None."""
        with self.owner.lock:
            found = self._accounts.get(key)
            return found or next((a for a in self._accounts.values() if a["accountNumber"] == key), None)

    def not_found(self, key: str) -> Answer:
        """The answer for an unknown account key (category 40; 404 or 200 per `not_found_status`)."""
        return not_found_answer(self.owner.not_found_status, "entity", key)

    def adjust_balance(self, account_id: str, delta: Decimal) -> None:
        """Move the account balance (posted invoices raise it, applied payments lower it)."""
        with self.owner.lock:
            account = self._accounts[account_id]
            account["balance"] = money(Decimal(str(account.get("balance") or 0)) + delta)

    # Create / update / read --------------------------------------------------------------------
    def _field_reasons(self, body: dict[str, Any]) -> list[Reason]:
        strict = self.owner.reject_unknown_fields
        reasons: list[Reason] = []
        for name, value in body.items():
            if name not in ACCOUNT_FIELDS and not is_custom(name) and strict:
                reasons.append((UNKNOWN_FIELD, f"'{name}' is not a valid field"))
            elif name in ("billToContact", "soldToContact") and not isinstance(value, dict):
                reasons.append((INVALID, f"'{name}' must be an object"))
        for contact in ("billToContact", "soldToContact"):
            for name in (body.get(contact) or {}) if isinstance(body.get(contact), dict) else {}:
                if name not in CONTACT_FIELDS and not is_custom(name) and strict:
                    reasons.append((UNKNOWN_FIELD, f"'{contact}.{name}' is not a valid field"))
        day = body.get("billCycleDay")
        if day is not None and (not isinstance(day, int) or not 0 <= day <= 31):
            reasons.append((INVALID, "'billCycleDay' value should be between 0 and 31"))
        if body.get("currency") is not None and body["currency"] not in self.owner.currencies:
            reasons.append((INVALID, f"Currency '{body['currency']}' is invalid or not active."))
        return reasons

    def create(self, body: dict[str, Any]) -> Answer:
        """POST /v1/accounts semantics: validate, store, answer (HTTP status, body)."""
        reasons = [(MISSING, f"'{path}' may not be null") for path in REQUIRED if _missing(body, path)]
        reasons += self._field_reasons(body)
        number = body.get("accountNumber")
        if number and self.find(str(number)) is not None:
            reasons.append((RULE, f"The account number {number} is invalid or already exists."))
        if reasons:
            return self.owner.error_http_status, account_envelope(reasons)
        account = self.store(body)
        bill_to, sold_to = account["billToContact"]["id"], account["soldToContact"]["id"]
        answer = {"success": True, "accountId": account["id"], "accountNumber": account["accountNumber"]}
        return 200, {**answer, "billToContactId": bill_to, "soldToContactId": sold_to}

    def update(self, key: str, body: dict[str, Any]) -> Answer:
        """PUT /v1/accounts/{key}: a subset of the create fields; contacts merge field by field."""
        account = self.find(key)
        if account is None:
            return self.not_found(key)
        reasons = self._field_reasons(body)
        reasons += [
            (MISSING, f"'{n}' may not be null") for n in ("name", "currency") if n in body and not body[n]
        ]
        if reasons:
            return self.owner.error_http_status, account_envelope(reasons)
        with self.owner.lock:
            for name, value in body.items():
                if name in ("billToContact", "soldToContact"):
                    account[name].update(value)
                else:
                    account[name] = value
            account["updatedDate"] = iso_utc(self.owner.clock())
        return 200, {"success": True}

    def store(self, body: dict[str, Any]) -> dict[str, Any]:
        """Store an account from a create-style body without validation (also the seed path)."""
        # ISO-8601: the form Object Query answers timestamps in (notes §3).
        now = iso_utc(self.owner.clock())
        bill_to = {"id": new_id(), **(body.get("billToContact") or {})}
        sold_to = {**bill_to, **(body.get("soldToContact") or {}), "id": new_id()}
        with self.owner.lock:
            number = body.get("accountNumber") or f"A{self._next_number:08d}"
            self._next_number += 1
            given = {k: v for k, v in body.items() if k not in ("billToContact", "soldToContact", "id")}
            account = {"id": new_id(), "accountNumber": number, **ACCOUNT_DEFAULTS, **given}
            account.update(billToContact=bill_to, soldToContact=sold_to, createdDate=now, updatedDate=now)
            self._accounts[account["id"]] = account
        return account

    def detail(self, key: str) -> Answer:
        """GET /v1/accounts/{key}: basicInfo, billingAndPayment, metrics, contacts, success."""
        account = self.find(key)
        if account is None:
            return self.not_found(key)
        with self.owner.lock:
            account = copy.deepcopy(account)
        basic = {k: account.get(k) for k in BASIC_INFO} | custom_fields(account)
        balance = account.get("balance", 0)
        metrics = {"balance": balance, "totalInvoiceBalance": balance, "creditBalance": 0}
        metrics.update(contractedMrr=0, currency=account.get("currency"))
        return 200, {
            "basicInfo": basic,
            "billingAndPayment": {k: account.get(k) for k in BILLING},
            "metrics": metrics,
            "billToContact": account["billToContact"],
            "soldToContact": account["soldToContact"],
            "success": True,
        }

    # Object Query and ZOQL ---------------------------------------------------------------------
    @staticmethod
    def query_row(account: dict[str, Any]) -> dict[str, Any]:
        """An account with Object Query's lower-case field names."""
        row = {name: account.get(pascal[0].lower() + pascal[1:]) for name, pascal in QUERY_FIELDS.items()}
        row["billtoid"], row["soldtoid"] = account["billToContact"]["id"], account["soldToContact"]["id"]
        row.update({k.lower(): v for k, v in custom_fields(account).items()})
        return row

    def object_query(self, filters: list[str], size: int, offset: int) -> tuple[list[dict[str, Any]], int]:
        """Rows matching every `field.OP:value` filter (ANDed, case-insensitive), from `offset`."""
        parsed = [self._parse_filter(f) for f in filters]
        # Narrow by crmId on the raw accounts first: the connector looks accounts up by crmId before
        # every create, and building a query row for every account made that cost grow with the tenant.
        crm_ids = [(op, value) for name, op, value in parsed if name == "crmid" and op in ("EQ", "IN")]
        with self.owner.lock:
            accounts = list(self._accounts.values())
            if crm_ids:
                op, value = crm_ids[0]
                accounts = [a for a in accounts if _filter_match(a.get("crmId"), op, value)]
            rows = [self.query_row(a) for a in accounts]
        rows = [r for r in rows if all(_filter_match(r.get(name), op, value) for name, op, value in parsed)]
        return rows[offset : offset + size], len(rows)

    def _parse_filter(self, text: str) -> tuple[str, str, Any]:
        name, _, rest = text.partition(".")
        op, sep, value = rest.partition(":")
        name = name.lower()
        if not sep or op not in ("EQ", "NE", "IN"):
            raise SqlError(
                f"filter {text!r}: expected <field>.EQ:<value>, <field>.NE:<value> or <field>.IN:[<a>,<b>]"
            )
        if name not in FILTERABLE and name not in self.owner.indexed_custom_fields:
            raise SqlError(f"filter {text!r}: field '{name}' is not filterable")
        if op == "IN":
            if not (value.startswith("[") and value.endswith("]")) or not value[1:-1].strip():
                raise SqlError(f"filter {text!r}: IN takes a bracketed list, <field>.IN:[<a>,<b>]")
            items = [item.strip() for item in value[1:-1].split(",")]
            return name, op, [None if item == "null" else item for item in items]
        return name, op, None if value == "null" else value

    def zoql(self, query_string: str) -> list[dict[str, Any]]:
        """Run `select F1, F2 from Account where F = 'v' [and ...]`; PascalCase keys, nulls left out."""
        query = parse_select(query_string)
        if query.table.lower() in emulator_zoql.objects():  # Invoice and Contact: emulator_zoql
            return emulator_zoql.run(self.owner, query, _zoql_match)
        if query.table.lower() != "account":
            raise SqlError(
                f"invalid ZOQL object {query.table!r}: only Account, Invoice and Contact are emulated"
            )
        if query.items is None or not all(isinstance(i.expr, Column) for i in query.items) or query.order_by:
            raise SqlError("ZOQL needs explicit field names and has no functions, * or ORDER BY")
        selected = [i.expr.name.lower() for i in query.items if isinstance(i.expr, Column)]
        for column in selected + [c.column.lower() for c in query.where]:
            if column not in QUERY_FIELDS and not is_custom(column.replace("__ns", "__NS")):
                raise InvalidField(f"invalid field for query: Account.{column}")
        with self.owner.lock:
            rows = [self._zoql_row(a) for a in self._accounts.values()]
        out = []
        for row in rows:
            if all(_zoql_match(row.get(c.column.lower(), ("", None))[1], c.op, c.value) for c in query.where):
                picked = [row[name] for name in selected if name in row]
                out.append({pascal: value for pascal, value in picked if value is not None})
        return out

    def _zoql_row(self, account: dict[str, Any]) -> dict[str, tuple[str, Any]]:
        # lower-case name -> (ZOQL spelling, value); custom fields keep the casing they were created with.
        standard = self.query_row(account)
        row = {name: (pascal, standard.get(name)) for name, pascal in QUERY_FIELDS.items()}
        row.update({k.lower(): (k, v) for k, v in custom_fields(account).items()})
        return row

    def query_page(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        """The ZOQL envelope; more than ZOQL_BATCH rows leave a queryLocator for queryMore."""
        page, rest = records[:ZOQL_BATCH], records[ZOQL_BATCH:]
        body: dict[str, Any] = {"records": page, "size": len(records), "done": not rest}
        if rest:
            locator = new_id()
            with self.owner.lock:
                self._locators[locator] = rest
            body["queryLocator"] = locator
        return body

    def query_more(self, locator: str) -> dict[str, Any] | None:
        with self.owner.lock:
            rest = self._locators.pop(locator, None)
        return None if rest is None else self.query_page(rest)


def _filter_match(value: Any, op: str, wanted: Any) -> bool:
    if op == "IN":
        return any(_filter_match(value, "EQ", one) for one in wanted)
    equal = (value is None and wanted is None) or (
        value is not None and wanted is not None and str(value).lower() == str(wanted).lower()
    )
    return equal if op == "EQ" else not equal


def _zoql_match(value: Any, op: str, literal: Any) -> bool:
    if isinstance(value, str) and isinstance(literal, str):
        value, literal = value.lower(), literal.lower()
    elif isinstance(value, bool | int | float) and isinstance(literal, str):
        value = str(value).lower()
        literal = literal.lower()
    return compare(value, op, literal)


def encode_cursor(offset: int) -> str:
    """An opaque Object Query `nextPage` cursor."""
    return base64.urlsafe_b64encode(json.dumps({"offset": offset}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    padded = cursor + "=" * (-len(cursor) % 4)
    try:
        return int(json.loads(base64.urlsafe_b64decode(padded))["offset"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SqlError(f"invalid cursor {cursor!r}") from exc
