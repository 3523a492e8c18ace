"""Payments of the Zuora emulator: read-only over the API, created by tests through seeds or methods.

Shapes follow /work/shared/api/zuora.md §5 (Zuora's generated SDK PaymentsApi; the older
GET_TransactionPayment). Filtering and sorting of `GET /v1/payments` follow the operation's
documentation in Zuora's generated Python client (PaymentsApi.g_et_retrieve_all_payments): each query
parameter filters on the field of that name (`null` matches a null field), and `sort` takes up to two
`<operator><field>` entries where `-` means ascending and `+` (or no operator) descending, by default
descending payment number.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.zuora.emulator_common import (
    BadParameter,
    custom_fields,
    day_of,
    decimal_of,
    money,
    new_id,
    parse_day,
    parse_instant,
    zuora_timestamp,
)

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

PAYMENT_PAGE = 20  # default pageSize of GET /v1/payments (notes §5)
STATUSES = ("Draft", "Processing", "Processed", "Error", "Canceled", "Posted")  # notes §5
TYPES = ("External", "Electronic")
_TEXT = "accountId currency number status type createdById updatedById"
_AMOUNTS = "amount appliedAmount unappliedAmount refundAmount creditBalanceAmount"
TEXT_FILTERS, AMOUNT_FILTERS = frozenset(_TEXT.split()), frozenset(_AMOUNTS.split())
INSTANT_FILTERS = frozenset({"createdDate", "updatedDate"})
SORTABLE = frozenset(
    [
        "number",
        "accountId",
        "amount",
        "appliedAmount",
        "unappliedAmount",
        "refundAmount",
        "creditBalanceAmount",
        "effectiveDate",
        "createdDate",
        "createdById",
        "updatedDate",
        "updatedById",
    ]
)


class Payments:
    """Payments by id; applying one to invoices lowers their balances (and the account's)."""

    def __init__(self, owner: ZuoraEmulator) -> None:
        self.owner = owner
        self._payments: dict[str, dict[str, Any]] = {}
        self._paid: dict[str, list[dict[str, Any]]] = {}  # payment id -> paidInvoices
        self._next_number = 1

    def clear(self) -> None:
        with self.owner.lock:
            self._payments.clear()
            self._paid.clear()
            self._next_number = 1

    def all(self) -> list[dict[str, Any]]:
        with self.owner.lock:
            return copy.deepcopy(list(self._payments.values()))

    def find(self, key: str) -> dict[str, Any] | None:
        """By id or payment number (P-00000001)."""
        with self.owner.lock:
            found = self._payments.get(key)
            return found or next((p for p in self._payments.values() if p["number"] == key), None)

    def add(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Store a payment from camelCase fields; `accountId`/`accountNumber` and `amount` are needed.

        `invoices: [{"invoiceId" or "invoiceNumber", "amount"}]` applies the payment to posted
        invoices. Raises ValueError for anything a real tenant could not hold.
        """
        account_key = record.get("accountId") or record.get("accountNumber")
        account = self.owner.account_store.find(str(account_key)) if account_key else None
        if account is None:
            raise ValueError(f"a payment needs an existing account (got {account_key!r})")
        amount = decimal_of(record.get("amount"))
        if amount is None or amount <= 0:
            raise ValueError("a payment needs a positive amount")
        for name, allowed in (("status", STATUSES), ("type", TYPES)):
            if name in record and record[name] not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}")
        if record.get("effectiveDate") is not None and parse_day(record["effectiveDate"]) is None:
            raise ValueError("effectiveDate must be yyyy-mm-dd")
        applications = self._applications(record.get("invoices") or [])
        applied = sum((share for _, share in applications), Decimal(0))
        if applied > amount:
            raise ValueError(f"the invoices take {applied}, more than the payment's {amount}")
        now = self.owner.clock()
        extra = {k: v for k, v in record.items() if k not in ("invoices", "accountId", "accountNumber", "id")}
        with self.owner.lock:
            payment = {
                "id": str(record.get("id") or new_id()),
                "number": f"P-{self._next_number:08d}",
                "accountId": account["id"],
                "accountNumber": account["accountNumber"],
                "currency": account.get("currency"),
                "effectiveDate": day_of(now),
                "status": "Processed",
                "type": "External",
                "paymentMethodId": None,
                "gatewayResponse": None,
                "gatewayResponseCode": None,
                "comment": None,
                "referenceId": None,
                "createdById": self.owner.user_id,
                "createdDate": zuora_timestamp(now),
                "updatedById": self.owner.user_id,
                "updatedDate": zuora_timestamp(now),
                **extra,
                "amount": money(amount),
                "appliedAmount": money(applied),
                "unappliedAmount": money(amount - applied),
                "refundAmount": 0,
                "creditBalanceAmount": 0,
            }
            self._next_number += 1
            self._payments[payment["id"]] = payment
            self._paid[payment["id"]] = [
                {
                    "invoiceId": i["id"],
                    "invoiceNumber": i["invoiceNumber"],
                    "appliedPaymentAmount": money(share),
                }
                for i, share in applications
            ]
        for invoice, share in applications:
            self.owner.invoice_store.apply_payment(invoice, share)
        return copy.deepcopy(payment)

    def _applications(self, entries: list[Any]) -> list[tuple[dict[str, Any], Decimal]]:
        out = []
        for entry in entries:
            key = (entry.get("invoiceId") or entry.get("invoiceNumber")) if isinstance(entry, dict) else None
            invoice = self.owner.invoice_store.find(str(key)) if key else None
            share = decimal_of(entry.get("amount")) if isinstance(entry, dict) else None
            if invoice is None or invoice["status"] != "Posted":
                raise ValueError(f"payments apply to posted invoices only (got {key!r})")
            if share is None or share <= 0 or share > Decimal(str(invoice["balance"])):
                raise ValueError(
                    f"the amount applied to {invoice['invoiceNumber']} must be within its balance"
                )
            out.append((invoice, share))
        return out

    def update(self, key: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """Change stored fields (e.g. status) and bump updatedDate, as a gateway update would."""
        payment = self.find(key)
        if payment is None:
            raise KeyError(key)
        with self.owner.lock:
            payment.update(fields)
            payment["updatedDate"] = zuora_timestamp(self.owner.clock())
            return copy.deepcopy(payment)

    # Reads ---------------------------------------------------------------------------------------
    def view(self, payment: dict[str, Any]) -> dict[str, Any]:
        """GET /v1/payments/{key} and the entries of GET /v1/payments."""
        with self.owner.lock:
            return copy.deepcopy(payment)

    def listing(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        """Payments matching every filter parameter in `query`, in `sort` order (see module docstring)."""
        checks = [_filter(name, value) for name, value in query.items() if _filterable(name)]
        order = _sort_keys(query.get("sort", ""))
        with self.owner.lock:
            rows = [copy.deepcopy(p) for p in self._payments.values() if all(check(p) for check in checks)]
        for field, descending in reversed(order):  # stable sorts, last key first
            rows.sort(key=lambda p, f=field: _sort_value(p.get(f)), reverse=descending)
        return rows

    def transaction_rows(self, account_id: str) -> list[dict[str, Any]]:
        """GET /v1/transactions/payments/accounts/{key}: the older shape with paidInvoices (notes §5)."""
        with self.owner.lock:
            mine = [p for p in self._payments.values() if p["accountId"] == account_id]
            return [
                {
                    "id": p["id"],
                    "accountID": p["accountId"],
                    "accountNumber": p["accountNumber"],
                    "accountName": (self.owner.account_store.find(p["accountId"]) or {}).get("name"),
                    "type": p["type"],
                    "effectiveDate": p["effectiveDate"],
                    "paymentNumber": p["number"],
                    "paymentMethodID": p["paymentMethodId"],
                    "amount": p["amount"],
                    "paidInvoices": copy.deepcopy(self._paid[p["id"]]),
                    "gatewayTransactionNumber": p.get("gatewayTransactionNumber"),
                    "status": p["status"],
                    **custom_fields(p),
                }
                for p in sorted(mine, key=lambda p: p["number"], reverse=True)
            ]


def _sort_value(value: Any) -> tuple[bool, Any]:
    # Nulls sort together after values; the placeholder never meets a real value in a comparison.
    return (value is None, "" if value is None else value)


def _filterable(name: str) -> bool:
    return name in TEXT_FILTERS | AMOUNT_FILTERS | INSTANT_FILTERS or name == "effectiveDate"


def _filter(name: str, value: str) -> Any:
    """A predicate on one payment for `?name=value`; BadParameter when the value cannot be compared."""
    if value == "null":
        return lambda p: p.get(name) is None
    if name in AMOUNT_FILTERS:
        try:
            wanted = Decimal(value)
        except ArithmeticError as exc:
            raise BadParameter(f"'{name}' must be a number") from exc
        return lambda p: p.get(name) is not None and Decimal(str(p[name])) == wanted
    if name in INSTANT_FILTERS:
        try:
            instant = parse_instant(value).timestamp()
        except ValueError as exc:
            raise BadParameter(f"'{name}' must be a date-time such as 2024-07-30T10:00:00+01:00") from exc
        return lambda p: p.get(name) is not None and parse_instant(p[name]).timestamp() == instant
    if name == "effectiveDate" and parse_day(value) is None:
        raise BadParameter("'effectiveDate' must be yyyy-mm-dd")
    return lambda p: p.get(name) == value


def _sort_keys(text: str) -> list[tuple[str, bool]]:
    """`sort` -> [(field, descending)]. `+number` in a URL arrives as ` number` (a decoded space),
    which reads as "no operator", i.e. descending: the same meaning `+` has."""
    keys = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        descending = not part.startswith("-")
        field = part.lstrip("+-").strip()
        if field not in SORTABLE:
            raise BadParameter(f"'{field}' is not a sortable field of payments")
        keys.append((field, descending))
    if len(keys) > 2:
        raise BadParameter("at most two sortable fields")
    return keys or [("number", True)]
