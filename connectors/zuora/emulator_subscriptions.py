"""Subscriptions of the Zuora emulator: versions made by test hooks, read over the v1 API, and the
callout events each change raises.

Shapes follow /work/shared/api/zuora.md §5 and Zuora's generated SDK (GETSubscriptionTypeWithSuccess,
GETSubscriptionStatusHistoryType). Every change (amendment or cancellation) makes a new version with a
new id and the same subscription number: a key that is a number reads the latest version, a key that
is an id reads exactly that version (UNCONFIRMED: the notes only say "number or ID"; the emulator's
`subscription_id_reads_latest` switches an id to the latest version too).

Events (notes §6): a Billing tenant raises Subscription Created (event category 1210) and Amendment
Processed (1310, with the amendment type, Cancellation included). An Orders tenant has neither and
raises the custom events Order Processed and Order Action Processed instead; see `event_bodies`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from connectors.zuora.emulator_common import (
    add_months,
    day_of,
    decimal_of,
    is_custom,
    money,
    new_id,
    parse_day,
)

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

SUBSCRIPTION_CREATED = 1210  # standard event category codes (notes §6)
AMENDMENT_PROCESSED = 1310
# Amendment type -> (Orders order-action type, Orders notification name). The amendment types are the
# notes' §6 list; the action names are the Orders API's; the notification names are the ones the notes
# list for Orders tenants, spelled out (UNCONFIRMED: tenants name their notifications themselves).
ORDER_ACTIONS = {
    "NewProduct": ("AddProduct", "Add Product"),
    "RemoveProduct": ("RemoveProduct", "Remove Product"),
    "UpdateProduct": ("UpdateProduct", "Update Product"),
    "TermsAndConditions": ("TermsAndConditions", "Terms and Conditions"),
    "Renewal": ("RenewSubscription", "Renew Subscription"),
    "OwnerTransfer": ("OwnerTransfer", "Owner Transfer"),
    "SuspendSubscription": ("Suspend", "Suspend Subscription"),
    "ResumeSubscription": ("Resume", "Resume Subscription"),
    "Cancellation": ("CancelSubscription", "Cancel Subscription"),
}
CREATE_ACTION = ("CreateSubscription", "Create Subscription")
AMENDMENT_TYPES = tuple(ORDER_ACTIONS)
# Top-level fields an amendment's `fields` may set; the term ones need TermsAndConditions.
TERM_FIELDS = frozenset(
    {"termType", "initialTerm", "currentTerm", "renewalTerm", "autoRenew", "renewalSetting"}
)
FREE_FIELDS = frozenset({"notes"})
SUBSCRIPTION_PAGE = 20  # default pageSize of GET /v1/subscriptions/accounts/{key}


@dataclass(frozen=True)
class Change:
    """One subscription change, as the callout sender needs it."""

    version: dict[str, Any]  # the new version's view
    amendment_type: str | None  # None when the subscription was created
    effective_date: str  # yyyy-mm-dd
    order_number: str  # the order that made the change (used by Orders-tenant events)


def event_bodies(change: Change, *, orders_tenant: bool, tenant_id: str) -> list[dict[str, Any]]:
    """The callout bodies one change raises: our documented customRequestBody (see callouts.py).

    Billing tenant: one body, event Subscription Created (1210) or Amendment Processed (1310).
    Orders tenant: Order Processed (once per order) then Order Action Processed (per order action,
    notification named after the action: Create Subscription, Cancel Subscription, ...), both with
    eventCategory null because custom events have no category code.
    """
    sub = change.version
    facts = {
        "tenantId": tenant_id,
        "accountId": sub["accountId"],
        "accountNumber": sub["accountNumber"],
        "subscriptionId": sub["id"],
        "subscriptionNumber": sub["subscriptionNumber"],
        "version": sub["version"],
        "subscriptionStatus": sub["status"],
        "effectiveDate": change.effective_date,
    }
    if not orders_tenant:
        if change.amendment_type is None:
            head = {"event": "Subscription Created", "eventCategory": SUBSCRIPTION_CREATED}
            head["notification"] = "Subscription Created"
        else:
            head = {"event": "Amendment Processed", "eventCategory": AMENDMENT_PROCESSED}
            head["notification"] = "Amendment Processed"
        tail = {"amendmentType": change.amendment_type, "orderNumber": None, "orderActionType": None}
        return [{**head, **facts, **tail}]
    action, notification = (
        CREATE_ACTION if change.amendment_type is None else ORDER_ACTIONS[change.amendment_type]
    )
    order = {"amendmentType": None, "orderNumber": change.order_number}
    processed = {"event": "Order Processed", "eventCategory": None, "notification": "Order Processed"}
    acted = {"event": "Order Action Processed", "eventCategory": None, "notification": notification}
    return [
        {**processed, **facts, **order, "orderActionType": None},
        {**acted, **facts, **order, "orderActionType": action},
    ]


def create_options(record: Mapping[str, Any]) -> dict[str, Any]:
    """camelCase seed/hook keys -> `ZuoraEmulator.create_subscription` keywords (`account` is the key)."""
    names = {
        "account": "account_key",
        "ratePlans": "rate_plans",
        "termType": "term_type",
        "initialTerm": "initial_term",
        "renewalTerm": "renewal_term",
        "autoRenew": "auto_renew",
        "contractEffectiveDate": "contract_effective_date",
        "subscriptionNumber": "subscription_number",
        "fields": "fields",
    }
    unknown = [k for k in record if k not in names]
    if unknown or "account" not in record:
        raise ValueError(
            f"a subscription needs 'account' and takes {', '.join(names)} (got {', '.join(unknown) or 'no account'})"
        )
    return {names[k]: v for k, v in record.items()}


class Subscriptions:
    """Subscription versions by id, grouped by subscription number (oldest version first)."""

    def __init__(self, owner: ZuoraEmulator) -> None:
        self.owner = owner
        self._versions: dict[str, dict[str, Any]] = {}
        self._numbers: dict[str, list[str]] = {}
        self._counters = {"subscription": 1, "order": 1, "charge": 1}

    def clear(self) -> None:
        with self.owner.lock:
            self._versions.clear()
            self._numbers.clear()
            self._counters = dict.fromkeys(self._counters, 1)

    def _next(self, counter: str) -> int:
        with self.owner.lock:
            value = self._counters[counter]
            self._counters[counter] += 1
            return value

    # Reads ---------------------------------------------------------------------------------------
    def find(self, key: str) -> dict[str, Any] | None:
        """A number reads the latest version; an id reads that version (or, per the owner's
        `subscription_id_reads_latest`, the latest one too)."""
        with self.owner.lock:
            if key in self._versions:
                if not self.owner.subscription_id_reads_latest:
                    return self._versions[key]
                key = self._versions[key]["subscriptionNumber"]
            ids = self._numbers.get(key)
            return self._versions[ids[-1]] if ids else None

    def version(self, key: str, number: int) -> dict[str, Any] | None:
        found = self.find(key)
        if found is None:
            return None
        with self.owner.lock:
            ids = self._numbers[found["subscriptionNumber"]]
            return self._versions[ids[number - 1]] if 1 <= number <= len(ids) else None

    def view(self, version: dict[str, Any]) -> dict[str, Any]:
        """GET /v1/subscriptions/{key}: the flat version plus isLatestVersion and success."""
        with self.owner.lock:
            latest = self._numbers[version["subscriptionNumber"]][-1] == version["id"]
            return {**copy.deepcopy(version), "isLatestVersion": latest, "success": True}

    def of_account(self, account_id: str) -> list[dict[str, Any]]:
        """Latest versions of the account's subscriptions, oldest subscription first."""
        with self.owner.lock:
            latest = [self._versions[ids[-1]] for ids in self._numbers.values()]
            return [
                {k: v for k, v in self.view(s).items() if k != "success"}
                for s in latest
                if s["accountId"] == account_id
            ]

    def all(self) -> list[dict[str, Any]]:
        """Every version, in creation order."""
        with self.owner.lock:
            return [self.view(v) for v in self._versions.values()]

    # Changes -------------------------------------------------------------------------------------
    def create(
        self,
        account_key: str,
        *,
        rate_plans: Sequence[Mapping[str, Any]] | None = None,
        term_type: str = "TERMED",
        initial_term: int = 12,
        renewal_term: int = 12,
        auto_renew: bool = True,
        contract_effective_date: str | None = None,
        subscription_number: str | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> Change:
        """Subscribe an Active account to catalog rate plans (default: the first recurring plan)."""
        account = self.owner.account_store.find(account_key)
        if account is None or account.get("status") != "Active":
            raise ValueError(f"subscriptions need an existing Active account (got {account_key!r})")
        if term_type not in ("TERMED", "EVERGREEN"):
            raise ValueError("termType must be TERMED or EVERGREEN")
        start = self._day(contract_effective_date)
        _check_fields(fields or {}, allow_terms=False)
        number = subscription_number or f"A-S{self._next('subscription'):08d}"
        with self.owner.lock:
            if number in self._numbers:
                raise ValueError(f"subscription number {number} already exists")
        termed = term_type == "TERMED"
        end = add_months(start, initial_term).isoformat() if termed else None
        version = {
            "id": new_id(),
            "subscriptionNumber": number,
            "version": 1,
            "revision": "1.0",
            "status": "Active",
            **_owner_fields(account),
            "currency": account.get("currency"),
            "termType": term_type,
            "autoRenew": auto_renew,
            "initialTerm": initial_term if termed else None,
            "initialTermPeriodType": "Month",
            "currentTerm": initial_term if termed else None,
            "currentTermPeriodType": "Month",
            "renewalTerm": renewal_term if termed else None,
            "renewalTermPeriodType": "Month",
            "renewalSetting": "RENEW_WITH_SPECIFIC_TERM",
            **dict.fromkeys(
                ("contractEffectiveDate", "serviceActivationDate", "customerAcceptanceDate"),
                start.isoformat(),
            ),
            "subscriptionStartDate": start.isoformat(),
            "termStartDate": start.isoformat(),
            "termEndDate": end,
            "subscriptionEndDate": end,
            "lastBookingDate": start.isoformat(),
            "cancelReason": None,
            "notes": None,
            "orderNumber": None,
            "statusHistory": [{"startDate": start.isoformat(), "endDate": None, "status": "Active"}],
            "ratePlans": [self._rate_plan(p, account, start) for p in self._plans_or_default(rate_plans)],
            **(fields or {}),
        }
        return self._commit(version, None, start)

    def amend(
        self,
        key: str,
        amendment_type: str,
        *,
        effective_date: str | None = None,
        fields: Mapping[str, Any] | None = None,
        add_rate_plans: Sequence[Mapping[str, Any]] | None = None,
        remove_rate_plans: Sequence[str] | None = None,
        update_charges: Sequence[Mapping[str, Any]] | None = None,
        new_owner: str | None = None,
    ) -> Change:
        """Make the next version of subscription `key` with one amendment (see `ORDER_ACTIONS`)."""
        if amendment_type not in ORDER_ACTIONS:
            raise ValueError(f"amendment type must be one of {', '.join(AMENDMENT_TYPES)}")
        current = self._latest(key)
        day = self._day(effective_date)
        version = self._next_version(current, day)
        _check_fields(fields or {}, allow_terms=amendment_type == "TermsAndConditions")
        version.update(fields or {})
        account = self.owner.account_store.find(version["accountId"]) or {}
        if amendment_type == "NewProduct":
            for plan in _required(add_rate_plans, "add_rate_plans"):
                version["ratePlans"].append({**self._rate_plan(plan, account, day), "lastChangeType": "Add"})
        elif amendment_type == "RemoveProduct":
            self._remove_plans(version, _required(remove_rate_plans, "remove_rate_plans"), day)
        elif amendment_type == "UpdateProduct":
            self._update_charges(version, _required(update_charges, "update_charges"))
        elif amendment_type in ("TermsAndConditions", "Renewal"):
            self._retime(version, renew=amendment_type == "Renewal")
        elif amendment_type == "OwnerTransfer":
            owner = self.owner.account_store.find(str(_required(new_owner, "new_owner")))
            if owner is None:
                raise ValueError(f"no account {new_owner!r} to transfer to")
            version.update(_owner_fields(owner))
        elif amendment_type == "SuspendSubscription":
            _move_status(version, "Active", "Suspended", day)
        elif amendment_type == "ResumeSubscription":
            _move_status(version, "Suspended", "Active", day)
        else:
            raise ValueError("use cancel to cancel a subscription")
        return self._commit(version, amendment_type, day)

    def cancel(self, key: str, *, cancellation_date: str | None = None, reason: str | None = None) -> Change:
        """Cancel subscription `key` on `cancellation_date` (default today) as a new version."""
        current = self._latest(key)
        day = self._day(cancellation_date)
        version = self._next_version(current, day)
        _move_status(version, version["status"], "Cancelled", day)
        version["subscriptionEndDate"] = day.isoformat()
        if version["termType"] == "EVERGREEN":
            version["termEndDate"] = day.isoformat()
        # Zuora fills cancelReason only for cancellations made through Orders (SDK GETSubscriptionType).
        version["cancelReason"] = reason if self.owner.orders_tenant else None
        for plan in version["ratePlans"]:
            for charge in plan["ratePlanCharges"]:
                charge["effectiveEndDate"] = day.isoformat()
        return self._commit(version, "Cancellation", day)

    # Helpers -------------------------------------------------------------------------------------
    def _latest(self, key: str) -> dict[str, Any]:
        found = self.find(key)
        if found is None:
            raise KeyError(key)
        latest = self.find(found["subscriptionNumber"])
        assert latest is not None
        if latest["status"] == "Cancelled":
            raise ValueError(f"subscription {latest['subscriptionNumber']} is cancelled")
        return latest

    def _day(self, text: str | None) -> date:
        if text is None:
            parsed = parse_day(day_of(self.owner.clock()))
        else:
            parsed = parse_day(text)
            if parsed is None:
                raise ValueError(f"{text!r} is not a yyyy-mm-dd date")
        assert parsed is not None
        return parsed

    def _next_version(self, current: dict[str, Any], day: date) -> dict[str, Any]:
        with self.owner.lock:
            version = copy.deepcopy(current)
        number = current["version"] + 1
        version.update(id=new_id(), version=number, revision=f"{number}.0", lastBookingDate=day.isoformat())
        for plan in version["ratePlans"]:
            plan["id"] = new_id()  # every version has its own rate plan and charge ids
            for charge in plan["ratePlanCharges"]:
                charge["id"] = new_id()
        return version

    def _commit(self, version: dict[str, Any], amendment_type: str | None, day: date) -> Change:
        order_number = f"O-{self._next('order'):08d}"
        version["orderNumber"] = order_number if self.owner.orders_tenant else None
        _recompute(version)
        with self.owner.lock:
            self._versions[version["id"]] = version
            self._numbers.setdefault(version["subscriptionNumber"], []).append(version["id"])
        return Change(self.view(version), amendment_type, day.isoformat(), order_number)

    def _plans_or_default(self, plans: Sequence[Mapping[str, Any]] | None) -> Sequence[Mapping[str, Any]]:
        if plans is not None:
            return plans
        recurring = [c for c in self.owner.catalog_store.all() if c.get("type") == "Recurring"]
        return [{"productRatePlanId": recurring[0]["productRatePlanId"]}] if recurring else []

    def _rate_plan(self, plan: Mapping[str, Any], account: Mapping[str, Any], start: date) -> dict[str, Any]:
        """`{"productRatePlanId", "chargeOverrides": [{"productRatePlanChargeId", "price", "quantity"}]}`."""
        plan_id = plan.get("productRatePlanId")
        charges = [c for c in self.owner.catalog_store.all() if c["productRatePlanId"] == plan_id]
        if not charges:
            raise ValueError(f"no product rate plan {plan_id!r} in the catalog")
        overrides = {o.get("productRatePlanChargeId"): o for o in plan.get("chargeOverrides") or []}
        rows = []
        for charge in charges:
            override = overrides.get(charge["id"], {})
            charge_id = new_id()
            rows.append(
                {
                    "id": charge_id,
                    "originalChargeId": charge_id,
                    "productRatePlanChargeId": charge["id"],
                    "number": f"C-{self._next('charge'):08d}",
                    "name": charge["name"],
                    "type": charge["type"],
                    "model": charge["model"],
                    "uom": charge.get("uom"),
                    "version": 1,
                    "segment": 1,
                    "price": override.get("price", charge.get("price", 0)),
                    "quantity": override.get("quantity", 1),
                    "billingPeriod": charge.get("billingPeriod"),
                    "currency": account.get("currency"),
                    "effectiveStartDate": start.isoformat(),
                    "effectiveEndDate": None,
                }
            )
        first = charges[0]
        return {
            "id": new_id(),
            "productId": first["productId"],
            "productName": first["productName"],
            "productSku": first.get("sku"),
            "productRatePlanId": plan_id,
            "ratePlanName": first["productRatePlanName"],
            "lastChangeType": None,
            "ratePlanCharges": rows,
        }

    @staticmethod
    def _remove_plans(version: dict[str, Any], plan_keys: Sequence[str], day: date) -> None:
        for key in plan_keys:
            plans = [p for p in version["ratePlans"] if key in (p["id"], p["productRatePlanId"])]
            if not plans:
                raise ValueError(f"the subscription has no rate plan {key!r}")
            for plan in plans:
                plan["lastChangeType"] = "Remove"
                for charge in plan["ratePlanCharges"]:
                    charge["effectiveEndDate"] = day.isoformat()

    @staticmethod
    def _update_charges(version: dict[str, Any], updates: Sequence[Mapping[str, Any]]) -> None:
        for update in updates:
            key = update.get("chargeNumber") or update.get("productRatePlanChargeId")
            hits = [
                (plan, charge)
                for plan in version["ratePlans"]
                for charge in plan["ratePlanCharges"]
                if key in (charge["number"], charge["productRatePlanChargeId"])
            ]
            if not hits:
                raise ValueError(f"the subscription has no charge {key!r}")
            for plan, charge in hits:
                charge.update({k: update[k] for k in ("price", "quantity") if k in update})
                charge["version"] += 1
                plan["lastChangeType"] = "Update"

    @staticmethod
    def _retime(version: dict[str, Any], *, renew: bool) -> None:
        if version["termType"] != "TERMED":
            if renew:
                raise ValueError("only TERMED subscriptions renew")
            for name in ("initialTerm", "currentTerm", "renewalTerm", "termEndDate", "subscriptionEndDate"):
                version[name] = None
            return
        term_start = parse_day(version["termStartDate"])
        assert term_start is not None
        if renew:
            term_start = parse_day(version["termEndDate"]) or term_start
            version["termStartDate"] = term_start.isoformat()
            version["currentTerm"] = version["renewalTerm"]
        version["currentTerm"] = version["currentTerm"] or version["initialTerm"] or 12
        end = add_months(term_start, int(version["currentTerm"])).isoformat()
        version["termEndDate"] = version["subscriptionEndDate"] = end


def _owner_fields(account: Mapping[str, Any]) -> dict[str, Any]:
    names = {"accountId": "id", "accountNumber": "accountNumber", "accountName": "name"}
    own = {field: account.get(source) for field, source in names.items()}
    return {**own, **{"invoiceOwner" + k[0].upper() + k[1:]: v for k, v in own.items()}}


def _move_status(version: dict[str, Any], expected: str, new: str, day: date) -> None:
    if version["status"] != expected:
        raise ValueError(f"the subscription is {version['status']}, not {expected}")
    for entry in version["statusHistory"]:
        if entry["endDate"] is None:
            entry["endDate"] = day.isoformat()
    version["statusHistory"].append({"startDate": day.isoformat(), "endDate": None, "status": new})
    version["status"] = new


def _recompute(version: dict[str, Any]) -> None:
    """Charge mrr/tcv and the subscription's contractedMrr/totalContractedValue after a change."""
    term = version.get("currentTerm") if version["termType"] == "TERMED" else None
    total_mrr, total_tcv = Decimal(0), Decimal(0)
    for plan in version["ratePlans"]:
        for charge in plan["ratePlanCharges"]:
            quantity = decimal_of(charge["quantity"])
            unit = (decimal_of(charge["price"]) or Decimal(0)) * (
                Decimal(1) if quantity is None else quantity
            )
            months = {"Month": 1, "Quarter": 3, "Semi_Annual": 6, "Annual": 12}.get(
                charge["billingPeriod"] or ""
            )
            live = plan["lastChangeType"] != "Remove" and version["status"] != "Cancelled"
            mrr = unit / months if charge["type"] == "Recurring" and months and live else Decimal(0)
            tcv = unit if charge["type"] == "OneTime" else mrr * term if term else Decimal(0)
            charge["mrr"], charge["tcv"] = money(round(mrr, 2)), money(round(tcv, 2))
            total_mrr, total_tcv = total_mrr + mrr, total_tcv + tcv
    version["contractedMrr"] = money(round(total_mrr, 2))
    version["totalContractedValue"] = money(round(total_tcv, 2))


def _check_fields(fields: Mapping[str, Any], *, allow_terms: bool) -> None:
    allowed = FREE_FIELDS | (TERM_FIELDS if allow_terms else frozenset())
    bad = [name for name in fields if name not in allowed and not is_custom(name)]
    if bad:
        raise ValueError(
            f"cannot set {', '.join(bad)} here (allowed: {', '.join(sorted(allowed))}, custom fields)"
        )


def _required(value: Any, name: str) -> Any:
    if not value:
        raise ValueError(f"this amendment needs {name}")
    return value
