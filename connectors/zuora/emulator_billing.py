"""Standalone invoices and the product catalog of the Zuora emulator.

Shapes follow /work/shared/api/zuora.md §4 (developer.zuora.com POST_StandaloneInvoice; Zuora's
generated SDK PostInvoiceType, PostInvoiceItemType, PostInvoiceResponse, InvoicesApi; the older
GET_TransactionInvoice). Validation answers the v1 envelope with the category a real tenant uses:
22 missing field, 20 invalid value, 21 unknown field, 40 not found, 30 business rule.

The catalog matters because of the notes' GL caveat: an invoice item naming a
`productRatePlanChargeId` takes chargeName, sku, uom, tax and accounting codes from that charge and
ignores what the request says, so the connector controls the GL account only by picking the charge
or by sending chargeName + accountingCode without one.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.zuora.emulator_common import (
    INVALID,
    MISSING,
    NOT_FOUND,
    RULE,
    UNKNOWN_FIELD,
    Answer,
    Reason,
    custom_fields,
    day_of,
    decimal_of,
    envelope,
    is_custom,
    money,
    new_id,
    not_found_answer,
    parse_day,
    resource_envelope,
    zuora_timestamp,
)

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

# UNCONFIRMED: Zuora's resource-code table is not in our sources; clients must key on the category
# (last two digits), which is documented (notes §8).
INVOICE_RESOURCE = 591000
MAX_ITEMS = 1000  # invoiceItems per invoice (notes §4)
MAX_TAX_ITEMS = 5  # taxItems per item
MAX_DISCOUNT_ITEMS = 10  # discountItems per item
MAX_BULK_POST = 50  # invoices per bulk-post call (notes §4)
INVOICE_NUMBER = re.compile(r"[A-Za-z0-9_-]{1,32}")  # custom invoice numbers (notes §4)
STATUSES = ("Draft", "Posted")  # what create accepts (notes §4)
_HEADER = (
    "accountId accountNumber invoiceDate dueDate invoiceNumber status currency comments autoPay paymentTerm "
    "templateId sequenceSet invoiceItems"
)
_ITEM = (
    "amount serviceStartDate serviceEndDate chargeName productRatePlanChargeId quantity unitPrice uom sku "
    "description accountingCode deferredRevenueAccountingCode recognizedRevenueAccountingCode revRecCode "
    "taxCode taxMode taxItems discountItems itemType purchaseOrderNumber bookingReference chargeDate"
)
HEADER_FIELDS, ITEM_FIELDS = frozenset(_HEADER.split()), frozenset(_ITEM.split())
# What GET /v1/invoices/{key}/items shows of a request item (plus id, amounts, unitOfMeasure).
ITEM_VIEW_FIELDS = [
    name for name in _ITEM.split() if name not in ("amount", "uom", "taxItems", "discountItems")
]
ACCOUNTING_CODE_FIELDS = (
    "accountingCode",
    "deferredRevenueAccountingCode",
    "recognizedRevenueAccountingCode",
)
# Item field <- catalog charge field: what the charge overrides on an invoice item (notes §4 GL caveat).
FROM_CHARGE = {
    "chargeName": "name",
    "sku": "sku",
    "uom": "uom",
    "taxCode": "taxCode",
    "taxMode": "taxMode",
    **{name: name for name in ACCOUNTING_CODE_FIELDS},
}
DEFAULT_ACCOUNTING_CODES = frozenset(
    {"Accounts Receivable", "Subscription Revenue", "Deferred Revenue", "4000 Services", "4100 Product Sales"}
)  # a small chart of accounts; "4000 Services" is the notes' sample request (§4)
_NET_TERM = re.compile(r"Net (\d+)", re.IGNORECASE)


class Catalog:
    """Products, rate plans and their charges (PRPCs), flat: one dict per charge."""

    def __init__(self, owner: ZuoraEmulator) -> None:
        self.owner = owner
        self._charges: dict[str, dict[str, Any]] = {}
        self._ids: dict[str, str] = {}  # product or "product/plan" name -> its id

    def add(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Add one charge from camelCase fields (`name` and `productName` needed); returns a copy."""
        if not record.get("name"):
            raise ValueError("a product rate plan charge needs a name")
        product = str(record.get("productName") or record["name"])
        plan = str(record.get("productRatePlanName") or product)
        with self.owner.lock:
            charge = {
                "productId": self._ids.setdefault(product, new_id()),
                "productName": product,
                "productRatePlanId": self._ids.setdefault(f"{product}/{plan}", new_id()),
                "productRatePlanName": plan,
                "type": "Recurring",
                "model": "FlatFee",
                "billingPeriod": "Month",
                "price": 0,
                **{name: None for name in ("sku", "uom", "taxCode", "taxMode", *ACCOUNTING_CODE_FIELDS)},
                **record,
            }
            charge["id"] = str(record.get("id") or new_id())
            self._charges[charge["id"]] = charge
            return dict(charge)

    def find(self, charge_id: Any) -> dict[str, Any] | None:
        with self.owner.lock:
            found = self._charges.get(charge_id) if isinstance(charge_id, str) else None
            return dict(found) if found else None

    def all(self) -> list[dict[str, Any]]:
        with self.owner.lock:
            return [dict(c) for c in self._charges.values()]

    def seed_defaults(self) -> None:
        """A subscription product and a services product, so demos have something to sell."""
        self.add(
            {
                "name": "Platform Fee",
                "productName": "Platform",
                "productRatePlanName": "Platform Monthly",
                "price": 100,
                "sku": "SKU-PLATFORM",
                "accountingCode": "Subscription Revenue",
                "deferredRevenueAccountingCode": "Deferred Revenue",
                "recognizedRevenueAccountingCode": "Subscription Revenue",
            }
        )
        self.add(
            {
                "name": "Consulting",
                "productName": "Services",
                "productRatePlanName": "Professional Services",
                "type": "OneTime",
                "model": "PerUnit",
                "billingPeriod": None,
                "price": 150,
                "uom": "Hour",
                "sku": "SKU-SERVICES",
                "accountingCode": "4000 Services",
            }
        )


class Invoices:
    """Standalone invoices and their items; answers (HTTP status, body) pairs."""

    def __init__(self, owner: ZuoraEmulator) -> None:
        self.owner = owner
        self._invoices: dict[str, dict[str, Any]] = {}
        self._items: dict[str, list[dict[str, Any]]] = {}
        self._order: dict[str, int] = {}  # id -> creation sequence, the tie-break after updatedDate
        self._next_number = 1

    def clear(self) -> None:
        with self.owner.lock:
            self._invoices.clear()
            self._items.clear()
            self._order.clear()
            self._next_number = 1

    def all(self) -> list[dict[str, Any]]:
        """Stored invoices in creation order, each with its `invoiceItems` list."""
        with self.owner.lock:
            return [
                {**copy.deepcopy(i), "invoiceItems": copy.deepcopy(self._items[i["id"]])}
                for i in self._invoices.values()
            ]

    def find(self, key: str) -> dict[str, Any] | None:
        """The live invoice by id or invoice number."""
        with self.owner.lock:
            found = self._invoices.get(key)
            return found or next((i for i in self._invoices.values() if i["invoiceNumber"] == key), None)

    def not_found(self, key: str) -> Answer:
        return not_found_answer(self.owner.not_found_status, "invoice", key)

    def error(self, reasons: list[Reason]) -> Answer:
        return self.owner.error_http_status, resource_envelope(INVOICE_RESOURCE, reasons)

    # POST /v1/invoices ---------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> Answer:
        """Validate a standalone invoice, store it (Draft, or Posted in one call) and answer it flat."""
        strict = self.owner.reject_unknown_fields
        reasons = [
            (UNKNOWN_FIELD, f"'{name}' is not a valid field")
            for name in body
            if strict and name not in HEADER_FIELDS and not is_custom(name)
        ]
        account, account_reasons = self._account_for(body)
        reasons += (
            account_reasons + self._header_reasons(body) + self._items_reasons(body.get("invoiceItems"))
        )
        if reasons or account is None:
            return self.error(reasons)
        invoice = self._store(body, account)
        return 200, {**self.view(invoice), "success": True}

    def _account_for(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Reason]]:
        # One of accountId/accountNumber; both must then name the same account (notes §4).
        account_id, number = body.get("accountId"), body.get("accountNumber")
        if not account_id and not number:
            return None, [(MISSING, "'accountId' or 'accountNumber' is required")]
        by_id = self.owner.account_store.find(str(account_id)) if account_id else None
        by_number = self.owner.account_store.find(str(number)) if number else None
        if account_id and (by_id is None or by_id["id"] != account_id):
            return None, [(NOT_FOUND, f"The account with id '{account_id}' does not exist.")]
        if number and (by_number is None or by_number["accountNumber"] != number):
            return None, [(NOT_FOUND, f"The account with number '{number}' does not exist.")]
        account = by_id or by_number
        assert account is not None
        if by_id is not None and by_number is not None and by_id is not by_number:
            return None, [(INVALID, "'accountId' and 'accountNumber' do not refer to the same account.")]
        if account.get("status") != "Active":
            message = (
                f"The account {account['accountNumber']} is not Active (status {account.get('status')})."
            )
            return None, [(RULE, message)]
        return account, []

    def _header_reasons(self, body: dict[str, Any]) -> list[Reason]:
        reasons: list[Reason] = []
        raw_date = body.get("invoiceDate")
        invoice_date = parse_day(raw_date)
        closed = parse_day(self.owner.closed_period_end)
        if raw_date in (None, ""):
            reasons.append((MISSING, "'invoiceDate' may not be null"))
        elif invoice_date is None:
            reasons.append((INVALID, f"'invoiceDate' value {raw_date!r} is not a date in yyyy-mm-dd format"))
        elif closed is not None and invoice_date <= closed:
            reasons.append((RULE, f"The invoice date {raw_date} is in a closed accounting period."))
        if body.get("dueDate") is not None and parse_day(body["dueDate"]) is None:
            reasons.append(
                (INVALID, f"'dueDate' value {body['dueDate']!r} is not a date in yyyy-mm-dd format")
            )
        number = body.get("invoiceNumber")
        if number is not None and (not isinstance(number, str) or not INVOICE_NUMBER.fullmatch(number)):
            reasons.append((INVALID, "'invoiceNumber' must be 1-32 characters of A-Z, a-z, 0-9, - and _"))
        elif number is not None and self.owner.reject_duplicate_invoice_numbers and self.find(number):
            reasons.append((RULE, f"The invoice number {number} already exists."))
        if body.get("status", "Draft") not in STATUSES:
            reasons.append((INVALID, "'status' value should be one of: Draft, Posted"))
        currency = body.get("currency")
        if currency is not None and currency not in self.owner.currencies:
            reasons.append((INVALID, f"Currency '{currency}' is invalid or not active."))
        return reasons

    def _items_reasons(self, items: Any) -> list[Reason]:
        if items is None or items == []:
            return [(MISSING, "'invoiceItems' may not be empty")]
        if not isinstance(items, list):
            return [(INVALID, "'invoiceItems' must be a list")]
        if len(items) > MAX_ITEMS:
            return [(INVALID, f"An invoice can have at most {MAX_ITEMS} invoice items.")]
        return [reason for index, item in enumerate(items) for reason in self._item_reasons(index, item)]

    def _item_reasons(self, index: int, item: Any) -> list[Reason]:
        where = f"invoiceItems[{index}]"
        if not isinstance(item, dict):
            return [(INVALID, f"'{where}' must be an object")]
        strict = self.owner.reject_unknown_fields
        reasons = [
            (UNKNOWN_FIELD, f"'{where}.{name}' is not a valid field")
            for name in item
            if strict and name not in ITEM_FIELDS and not is_custom(name)
        ]
        for name in ("amount", "serviceStartDate"):
            if item.get(name) in (None, ""):
                reasons.append((MISSING, f"'{where}.{name}' may not be null"))
        for name in ("amount", "quantity", "unitPrice"):
            if item.get(name) not in (None, "") and decimal_of(item[name]) is None:
                reasons.append((INVALID, f"'{where}.{name}' must be a number"))
        start, end = parse_day(item.get("serviceStartDate")), parse_day(item.get("serviceEndDate"))
        for name in ("serviceStartDate", "serviceEndDate"):  # chargeDate is a date-time, not checked
            if item.get(name) not in (None, "") and parse_day(item[name]) is None:
                reasons.append((INVALID, f"'{where}.{name}' is not a date in yyyy-mm-dd format"))
        if start and end and end < start:
            reasons.append((INVALID, f"'{where}.serviceEndDate' is before serviceStartDate"))
        charge_id = item.get("productRatePlanChargeId")
        if charge_id:
            if self.owner.catalog_store.find(charge_id) is None:
                reasons.append((NOT_FOUND, f"The product rate plan charge '{charge_id}' does not exist."))
        else:
            if not item.get("chargeName"):
                reasons.append((MISSING, f"'{where}.chargeName' is required without productRatePlanChargeId"))
            # Codes the request sends count only without a charge (with one they are ignored).
            known = self.owner.accounting_codes
            for name in ACCOUNTING_CODE_FIELDS:
                if item.get(name) and known is not None and item[name] not in known:
                    reasons.append(
                        (INVALID, f"'{where}.{name}': accounting code '{item[name]}' does not exist.")
                    )
        for name, limit, amount in (
            ("taxItems", MAX_TAX_ITEMS, "taxAmount"),
            ("discountItems", MAX_DISCOUNT_ITEMS, "amount"),
        ):
            value = item.get(name)
            if value is not None and (not isinstance(value, list) or len(value) > limit):
                reasons.append((INVALID, f"'{where}.{name}' must be a list of at most {limit} entries"))
            elif any(not isinstance(e, dict) or decimal_of(e.get(amount, 0)) is None for e in value or []):
                reasons.append((INVALID, f"'{where}.{name}' entries must be objects with a numeric {amount}"))
        return reasons

    def _store(self, body: dict[str, Any], account: dict[str, Any]) -> dict[str, Any]:
        owner = self.owner
        now = owner.clock()
        built = [self._build_item(item) for item in body["invoiceItems"]]
        items = [item for item, _ in built]
        without_tax = sum((Decimal(str(i["chargeAmount"])) for i in items), Decimal(0))
        tax = sum((Decimal(str(i["taxAmount"])) for i in items), Decimal(0))
        discount = sum((item_discount for _, item_discount in built), Decimal(0))
        term = body.get("paymentTerm") or account.get("paymentTerm") or ""
        due = body.get("dueDate") or _due_date(body["invoiceDate"], term)
        with owner.lock:
            number = body.get("invoiceNumber") or f"INV{self._next_number:08d}"
            self._next_number += 1
            invoice = {
                "id": new_id(),
                "invoiceNumber": number,
                "accountId": account["id"],
                "accountNumber": account["accountNumber"],
                "accountName": account.get("name"),
                "invoiceDate": body["invoiceDate"],
                "dueDate": due,
                "status": "Draft",
                "currency": body.get("currency") or account.get("currency"),
                "amount": money(without_tax + tax),
                "amountWithoutTax": money(without_tax),
                "taxAmount": money(tax),
                "discount": money(discount),
                "balance": money(without_tax + tax),
                "paymentAmount": 0,
                "refundAmount": 0,
                "adjustmentAmount": 0,
                "comments": body.get("comments"),
                "autoPay": body.get("autoPay", account.get("autoPay", False)),
                "paymentTerm": term or None,
                "templateId": body.get("templateId"),
                "sequenceSetId": body.get("sequenceSet"),
                "billToContactId": account["billToContact"]["id"],
                "soldToContactId": account["soldToContact"]["id"],
                "source": "API",
                "sourceType": "Standalone",
                "transferredToAccounting": "false",
                "postedDate": None,
                "postedBy": None,
                "createdById": owner.user_id,
                "createdDate": zuora_timestamp(now),
                "updatedById": owner.user_id,
                "updatedDate": zuora_timestamp(now),
                **custom_fields(body),
            }
            self._invoices[invoice["id"]] = invoice
            self._items[invoice["id"]] = items
            self._order[invoice["id"]] = len(self._order)
        if body.get("status") == "Posted":
            self.post(invoice)
        return invoice

    def _build_item(self, item: dict[str, Any]) -> tuple[dict[str, Any], Decimal]:
        """The stored item (codes from its charge, if any) and its discount."""
        charge = self.owner.catalog_store.find(item.get("productRatePlanChargeId"))
        given = {k: v for k, v in item.items() if k not in ("taxItems", "discountItems")}
        if charge is not None:
            given.update({field: charge.get(source) for field, source in FROM_CHARGE.items()})
        amount = decimal_of(item["amount"]) or Decimal(0)
        tax = sum(
            (decimal_of(t.get("taxAmount")) or Decimal(0) for t in item.get("taxItems") or []), Decimal(0)
        )
        discount = sum(
            (abs(decimal_of(d.get("amount")) or Decimal(0)) for d in item.get("discountItems") or []),
            Decimal(0),
        )
        stored = {"id": new_id(), **{name: given.get(name) for name in ITEM_VIEW_FIELDS}}
        # Item field names as the SDK's InvoiceItem reads them (chargeAmount excludes tax).
        stored.update(
            unitOfMeasure=given.get("uom"),
            chargeAmount=money(amount - discount),
            taxAmount=money(tax),
            balance=money(amount - discount + tax),
            chargeType=charge["type"] if charge else "OneTime",
            processingType="Charge",
            sourceItemType="ProductRatePlanCharge" if charge else "None",
            **custom_fields(item),
        )
        return stored, discount

    # Posting -------------------------------------------------------------------------------------
    def post(self, invoice: dict[str, Any], invoice_date: str | None = None) -> None:
        """Draft -> Posted; the invoice's balance now counts in the account balance."""
        now = self.owner.clock()
        with self.owner.lock:
            if invoice_date:
                invoice["invoiceDate"] = invoice_date
            invoice.update(status="Posted", postedDate=day_of(now), postedBy=self.owner.user_id)
            invoice["updatedDate"] = zuora_timestamp(now)
        self.owner.account_store.adjust_balance(invoice["accountId"], Decimal(str(invoice["balance"])))

    def bulk_post(self, body: dict[str, Any]) -> Answer:
        """POST /v1/invoices/bulk-post: each entry posts or fails on its own (≤50 per call, notes §4)."""
        entries = body.get("invoices")
        if entries is None or entries == []:
            return self.error([(MISSING, "'invoices' may not be empty")])
        if not isinstance(entries, list):
            return self.error([(INVALID, "'invoices' must be a list")])
        if len(entries) > MAX_BULK_POST:
            return self.error([(INVALID, f"At most {MAX_BULK_POST} invoices can be posted in one call.")])
        return 200, {"invoices": [self._post_one(entry) for entry in entries], "success": True}

    def _post_one(self, entry: Any) -> dict[str, Any]:
        key = entry.get("id") if isinstance(entry, dict) else None
        invoice = self.find(key) if isinstance(key, str) else None
        new_date = entry.get("invoiceDate") if isinstance(entry, dict) else None
        reason: Reason | None = None
        if invoice is None:
            reason = (NOT_FOUND, f"Cannot find invoice by key: '{key}'.")
        elif invoice["status"] != "Draft":
            reason = (
                RULE,
                f"Only Draft invoices can be posted; {invoice['invoiceNumber']} is {invoice['status']}.",
            )
        elif new_date is not None and parse_day(new_date) is None:
            reason = (INVALID, f"'invoiceDate' value {new_date!r} is not a date in yyyy-mm-dd format")
        if reason is not None or invoice is None:
            assert reason is not None
            failed = envelope((INVOICE_RESOURCE * 100 + reason[0], reason[1]))
            return {"id": key, **failed}
        self.post(invoice, new_date)
        return {"id": invoice["id"], "success": True}

    def apply_payment(self, invoice: dict[str, Any], amount: Decimal) -> None:
        """Lower a posted invoice's balance by an applied payment (and the account's with it)."""
        with self.owner.lock:
            balance = Decimal(str(invoice["balance"]))
            if amount > balance:
                raise ValueError(f"{amount} exceeds the balance {balance} of {invoice['invoiceNumber']}")
            invoice["balance"] = money(balance - amount)
            invoice["paymentAmount"] = money(Decimal(str(invoice["paymentAmount"])) + amount)
            invoice["updatedDate"] = zuora_timestamp(self.owner.clock())
        self.owner.account_store.adjust_balance(invoice["accountId"], -amount)

    # Reads ---------------------------------------------------------------------------------------
    def view(self, invoice: dict[str, Any]) -> dict[str, Any]:
        """GET /v1/invoices/{key} (and the create answer): the flat invoice."""
        with self.owner.lock:
            return copy.deepcopy(invoice)

    def items_of(self, invoice: dict[str, Any]) -> list[dict[str, Any]]:
        with self.owner.lock:
            return copy.deepcopy(self._items[invoice["id"]])

    def of_account(self, account_id: str) -> list[dict[str, Any]]:
        """The account's invoices, newest updatedDate first (older API, notes §4)."""
        with self.owner.lock:
            mine = [copy.deepcopy(i) for i in self._invoices.values() if i["accountId"] == account_id]
            return sorted(mine, key=lambda i: (i["updatedDate"], self._order[i["id"]]), reverse=True)


def transaction_row(invoice: dict[str, Any], base_url: str) -> dict[str, Any]:
    """One entry of GET /v1/transactions/invoices/accounts/{key}: invoiceItems is a URL (notes §4)."""
    names = "id accountId accountName accountNumber invoiceNumber invoiceDate dueDate amount balance status"
    row = {name: invoice.get(name) for name in names.split()}
    row["invoiceItems"] = f"{base_url.rstrip('/')}/v1/invoices/{invoice['id']}/items"
    return row


def _due_date(invoice_date: str, payment_term: str) -> str:
    """Invoice date plus the term's days: `Net 30` adds 30, `Due Upon Receipt` adds none."""
    match = _NET_TERM.fullmatch(payment_term.strip())
    day = parse_day(invoice_date)
    assert day is not None
    return (day + timedelta(days=int(match.group(1)) if match else 0)).isoformat()
