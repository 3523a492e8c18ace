"""Zuora subscription event → NetSuite custom record (revenue accounting).

Trigger: a Zuora callout (runner/intake_zuora.py) for a subscription created, amended or cancelled,
from a Billing tenant (Subscription Created 1210, Amendment Processed 1310) or an Orders tenant (the
custom events Order Processed and Order Action Processed: Create Subscription, Cancel Subscription,
Add Product, ...). Intake has already dropped redeliveries of one Zuora-Notification-Id.

One NetSuite record per subscription *version*. Every Zuora change makes a new version with its own id
(shared/api/zuora.md §5); revenue accounting needs each booking (the original contract, each
amendment, the cancellation) as its own traceable row with the terms and MRR/TCV in force from that
version on, not one row overwritten by the latest change. So:

- source id: `<subscription number>@v<version>` (e.g. `A-S00000001@v2`); when a callout names no
  version, the version id Zuora sent (which reads that version) or the number (the latest version);
- fetch: `GET /v1/subscriptions/{number}/versions/{version}` (or `/v1/subscriptions/{key}`), the full
  version kept as the audit snapshot, plus `_event` (the event kind and the callout that asked) and
  `_record` (the external id and name of the NetSuite record, the cancellation date);
- write: `PUT /record/v1/customrecord_ml_zuora_subscription/eid:<number>-v<version>`, NetSuite's
  upsert by external id, guarded first by the link table (flow `subscription_event`). The upsert is
  idempotent, so a replay, a retry, or both Orders events of one change (Order Processed and Order
  Action Processed each queue a job) update the one record instead of adding another.

Event kind (`created` / `amended` / `cancelled`, see `event_kind`): what the callout names when it is
decisive (Subscription Created; Create or Cancel Subscription; a Cancellation amendment), otherwise
what the version itself shows (status Cancelled → cancelled; version 1 → created; else amended). The
two always agree for a callout naming its version, so a replay that re-fetches gets the same kind.

The custom record type and its `custrecord_mlz_*` fields cannot be created through REST
(shared/api/netsuite.md §3): the customer deploys them with our NetSuite bundle, as for the User Event
script.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any, ClassVar, cast

from anyio import to_thread

from connectors.errors import RemoteError
from connectors.netsuite.client import NetSuiteClient
from connectors.zuora.client import ZuoraClient
from runner.flows import FlowContext, Postpone, WriteResult
from runner.mapping import Mapped, MappingError
from storage import links

RECORD_TYPE = "customrecord_ml_zuora_subscription"
LINK_BUSY_RETRY = 2.0  # seconds to wait when another job is writing the same subscription version

CREATED, AMENDED, CANCELLED = "created", "amended", "cancelled"
# Names that decide the kind on their own, compared without case and spaces: Billing events and
# amendment types, Orders notification names and order action types (shared/api/zuora.md §6).
DECISIVE_NAMES: dict[str, str] = {
    "subscriptioncreated": CREATED,
    "createsubscription": CREATED,
    "cancellation": CANCELLED,
    "cancelsubscription": CANCELLED,
}
# Job payload keys read for the kind, most specific first. intake_zuora puts `event` and
# `notification` in the payload; the amendment and order action types are read when it carries them.
EVENT_KEYS = (
    "order_action_type",
    "orderActionType",
    "amendment_type",
    "amendmentType",
    "notification",
    "event",
)
VERSION_MARK = "@v"
UNSAFE_EXTERNAL_ID = re.compile(r"[^A-Za-z0-9_-]")  # NetSuite external ids: letters, digits, _ and -

DEFAULT_MAPPING: dict[str, Any] = {
    "fields": [
        {"target": "externalId", "source": "_record.externalId", "required": True},
        {"target": "name", "source": "_record.name", "required": True},
        {"target": "custrecord_mlz_sub_number", "source": "subscriptionNumber", "required": True},
        {"target": "custrecord_mlz_sub_id", "source": "id", "required": True},
        {"target": "custrecord_mlz_version", "source": "version", "required": True},
        {"target": "custrecord_mlz_event_kind", "source": "_event.kind", "required": True},
        {"target": "custrecord_mlz_status", "source": "status"},
        {"target": "custrecord_mlz_account_id", "source": "accountId"},
        {"target": "custrecord_mlz_account_number", "source": "accountNumber"},
        {"target": "custrecord_mlz_term_type", "source": "termType"},
        {"target": "custrecord_mlz_auto_renew", "source": "autoRenew"},
        {"target": "custrecord_mlz_contract_effective", "source": "contractEffectiveDate"},
        {"target": "custrecord_mlz_service_activation", "source": "serviceActivationDate"},
        {"target": "custrecord_mlz_term_start", "source": "termStartDate"},
        {"target": "custrecord_mlz_term_end", "source": "termEndDate"},
        {"target": "custrecord_mlz_sub_end", "source": "subscriptionEndDate"},
        {"target": "custrecord_mlz_cancelled_date", "source": "_record.cancelledDate"},
        {"target": "custrecord_mlz_cancel_reason", "source": "cancelReason"},
        {"target": "custrecord_mlz_mrr", "source": "contractedMrr"},
        {"target": "custrecord_mlz_tcv", "source": "totalContractedValue"},
        {"target": "custrecord_mlz_currency", "source": "currency"},
        {"target": "custrecord_mlz_order_number", "source": "orderNumber"},
    ]
}


def parse_source_id(source_id: str) -> tuple[str, int | None]:
    """(subscription key, version or None): `A-S00000001@v2` → ("A-S00000001", 2)."""
    key, mark, version = source_id.rpartition(VERSION_MARK)
    if mark and key and version.isdigit() and int(version) >= 1:
        return key, int(version)
    return source_id, None


def external_id(subscription_number: str, version: int | str) -> str:
    """The NetSuite external id of one subscription version: `A-S00000001-v2` (unsafe characters → _)."""
    return UNSAFE_EXTERNAL_ID.sub("_", f"{subscription_number}-v{version}")


def event_kind(event: Mapping[str, Any] | None, subscription: Mapping[str, Any]) -> str:
    """created, amended or cancelled: the callout's decisive names first (see DECISIVE_NAMES), then the
    version itself (status Cancelled → cancelled; version 1 → created; anything else → amended)."""
    for key in EVENT_KEYS:
        name = (event or {}).get(key)
        if isinstance(name, str):
            kind = DECISIVE_NAMES.get(re.sub(r"[\s_]", "", name).lower())
            if kind is not None:
                return kind
    if str(subscription.get("status") or "").lower() in ("cancelled", "canceled"):
        return CANCELLED
    return CREATED if str(subscription.get("version")) == "1" else AMENDED


def cancelled_date(subscription: Mapping[str, Any]) -> str | None:
    """When a cancelled version stopped: its Cancelled status-history entry, else the subscription end
    (GET /v1/subscriptions has no cancelledDate; Zuora documents its subscriptionEndDate as the
    cancellation date of a cancelled subscription)."""
    if str(subscription.get("status") or "").lower() not in ("cancelled", "canceled"):
        return None
    started = [
        entry.get("startDate")
        for entry in subscription.get("statusHistory") or []
        if isinstance(entry, Mapping) and str(entry.get("status", "")).lower() in ("cancelled", "canceled")
    ]
    return next((str(day) for day in started if day), None) or subscription.get("subscriptionEndDate")


def snapshot_of(subscription: Mapping[str, Any], event: Mapping[str, Any] | None) -> dict[str, Any]:
    """The audit snapshot: the version as Zuora returned it, plus `_event` and `_record` for the mapping."""
    record = {k: v for k, v in subscription.items() if k != "success"}
    number, version = record.get("subscriptionNumber"), record.get("version")
    if not number or version is None:
        raise RemoteError(
            "Zuora returned a subscription without subscriptionNumber or version", system="zuora"
        )
    record["_event"] = {
        "kind": event_kind(event, record),
        "event": (event or {}).get("event"),
        "notification": (event or {}).get("notification"),
        "notificationId": (event or {}).get("notification_id"),
    }
    record["_record"] = {
        "externalId": external_id(str(number), version),
        "name": f"{number} v{version}",
        "cancelledDate": cancelled_date(record),
    }
    return record


class SubscriptionEventToCustomRecord:
    name: ClassVar[str] = "subscription_event"
    title: ClassVar[str] = "Zuora subscription event → NetSuite custom record"
    source_system: ClassVar[str] = "zuora"
    target_system: ClassVar[str] = "netsuite"
    source_record: ClassVar[str] = ""  # fed by Zuora callouts (EVENT_FEEDS), not by NetSuite events
    default_mapping: ClassVar[dict[str, Any]] = DEFAULT_MAPPING
    required_fields: ClassVar[tuple[str, ...]] = (
        "externalId",
        "name",
        "custrecord_mlz_sub_number",
        "custrecord_mlz_version",
        "custrecord_mlz_event_kind",
    )
    batch_size: ClassVar[int] = 1

    def source_id(self, job_payload: dict[str, Any]) -> str:
        """`<number>@v<version>` from a callout's job payload; a replay's payload carries it as `id`."""
        if "replay_of" in job_payload or "notification_id" not in job_payload:
            source_id = str(job_payload.get("id") or "")
            if not source_id:
                raise MappingError("id", "the job names no subscription")
            return source_id
        number = _text(job_payload.get("subscription_number"))
        version = job_payload.get("version")
        if number and isinstance(version, int) and not isinstance(version, bool) and version >= 1:
            source_id = f"{number}{VERSION_MARK}{version}"
        else:
            source_id = _text(job_payload.get("subscription_id")) or number
        if not source_id:
            raise MappingError(
                "subscription",
                f"Zuora event {job_payload.get('event')!r} names no subscription: only subscription events "
                "(Subscription Created, Amendment Processed, Order Processed, Order Action Processed) feed "
                "this flow; remove other events from the callout's notifications",
            )
        return source_id

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]:
        zuora = cast(ZuoraClient, ctx.source)
        key, version = parse_source_id(source_id)
        subscription = await zuora.get_subscription(key, version=version)
        if version is not None and str(subscription.get("version")) != str(version):
            raise RemoteError(
                f"asked Zuora for version {version} of {key} and got version {subscription.get('version')}",
                system="zuora",
            )
        # The callout's facts name the event kind; a replay has none, and the version decides.
        payload = ctx.job_payload
        callout = "notification_id" in payload and "replay_of" not in payload
        return snapshot_of(subscription, dict(payload) if callout else None)

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult:
        netsuite = cast(NetSuiteClient, ctx.target)
        eid = _external_id_of(mapped, source_id)
        payload_hash = _hash(mapped.payload)
        try:
            state = await to_thread.run_sync(
                lambda: links.claim(
                    ctx.engine,
                    integration_id=ctx.integration.id or 0,
                    flow=self.name,
                    source_system=self.source_system,
                    source_id=source_id,
                    target_system=self.target_system,
                    worker=ctx.worker,
                )
            )
        except links.LinkBusy as exc:
            raise Postpone(str(exc), LINK_BUSY_RETRY) from exc

        linked = state.linked and bool(state.link.target_id)
        body = mapped.for_update() if linked else dict(mapped.payload)
        body.pop("externalId", None)  # the URL carries it: PUT .../eid:<external id> is the upsert
        try:
            internal_id = await netsuite.upsert_by_external_id(RECORD_TYPE, eid, body)
        except BaseException as exc:
            if not linked:
                rejected = isinstance(exc, RemoteError)
                await to_thread.run_sync(
                    lambda: links.release(ctx.engine, state.link, worker=ctx.worker, rejected=rejected)
                )
            raise
        response = {"recordType": RECORD_TYPE, "externalId": eid, "id": internal_id}
        if linked and internal_id == state.link.target_id:
            await to_thread.run_sync(lambda: links.touch(ctx.engine, state.link, payload_hash=payload_hash))
            return WriteResult(internal_id, "update", response)
        # A first write, or the linked record was deleted in NetSuite and the upsert made a new one.
        await to_thread.run_sync(
            lambda: links.complete(ctx.engine, state.link, target_id=internal_id, payload_hash=payload_hash)
        )
        return WriteResult(internal_id, "create", response)


def _external_id_of(mapped: Mapped, source_id: str) -> str:
    """The mapped externalId, else the one the source id implies (`A-S1@v2` → `A-S1-v2`)."""
    given = _text(mapped.payload.get("externalId"))
    if given:
        return given
    key, version = parse_source_id(source_id)
    if version is None:
        raise MappingError("externalId", "required: map it (the default maps _record.externalId)")
    return external_id(key, version)


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _hash(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


FLOWS = [SubscriptionEventToCustomRecord()]
