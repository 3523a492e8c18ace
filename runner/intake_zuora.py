"""Zuora callout intake: HMAC-SHA256 over the raw body, dedupe on Zuora-Notification-Id.

Zuora has no fixed webhook format; our setup guide has each tenant configure its callout template as
shared/api/zuora.md §6 describes (and connectors/zuora/callouts.py emulates):

    header  X-Zuora-Signature: sha256=<hex HMAC-SHA256(zuora_hmac_secret as UTF-8, raw body)>
    header  Zuora-Notification-Id: <id>       the same on every retry of one notification
    body    {"event", "eventCategory", "notification", "tenantId", "accountId", "accountNumber",
             "subscriptionId", "subscriptionNumber", "version", "subscriptionStatus", "effectiveDate",
             "amendmentType", "orderNumber", "orderActionType"}   JSON, every key present, null if n/a

Zuora counts only HTTP 200 as delivered and retries anything else that is retriable (5xx, 403, 408,
429), with the same notification id; a body has no timestamp, so the notification id is also the only
replay protection. A notification id already stored answers 200 again ("duplicate") and stores nothing.
The answer carries `"success": true` so tenants who turn on "confirm success by parsing response
content" are served too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from runner.flows import flows_for_event
from runner.intake import (
    Accepted,
    IntakeError,
    check_size,
    client_address,
    matches_any,
    parse_object,
    store_event,
    with_integration,
)
from storage.crypto import Vault
from storage.intake import IntakeIntegration, IntegrationCache

SIGNATURE_HEADER = "X-Zuora-Signature"
NOTIFICATION_HEADER = "Zuora-Notification-Id"
SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})")
NOTIFICATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,100}")
# The events whose body must name a subscription (Billing tenants' standard events, Orders tenants'
# custom ones, shared/api/zuora.md §6); other events (custom ones like "Account Created") are kept as sent.
SUBSCRIPTION_EVENTS = frozenset(
    {"Subscription Created", "Amendment Processed", "Order Processed", "Order Action Processed"}
)
OPTIONAL_TEXT = ("notification", "tenantId", "accountId", "accountNumber", "subscriptionStatus")


def accept_zuora(
    engine: Engine,
    vault: Vault,
    *,
    key: str,
    signature: str | None,
    notification_id: str | None,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str,
    integrations: IntegrationCache | None = None,
) -> Accepted:
    """Accept one Zuora callout; raises IntakeError when refused.

    Order: size, integration, signature (against the current HMAC secret, or the previous one during
    its rotation grace period), notification id, then the body. Jobs go to the flows EVENT_FEEDS maps
    Zuora to that are enabled and implemented (runner.flows.flows_for_event). `integrations` is the
    runner's cache (runner.intake.with_integration); without it the integration is read afresh.
    """
    check_size(None, body)

    def judge(integration: IntakeIntegration) -> Accepted:
        _authenticate(signature, body, integration.accepted_secrets("zuora_hmac_secret"))
        delivery = _notification_id(notification_id)
        event = _parse_callout(body)
        payload = {
            "notification_id": delivery,
            "event": event["event"],
            "notification": event.get("notification"),
            "account_id": event.get("accountId"),
            "subscription_id": event.get("subscriptionId"),
            "subscription_number": event.get("subscriptionNumber"),
            "version": event.get("version"),
        }
        flows = integration.flows_for("zuora", lambda enabled: flows_for_event("zuora", enabled))
        return store_event(
            engine,
            integration,
            system="zuora",
            delivery_key=delivery,
            body=body,
            headers=headers,
            remote_addr=client_address(integration, remote_addr, headers),
            jobs=[(flow, payload) for flow in flows],
        )

    return with_integration(integrations or IntegrationCache(engine, vault), key, judge)


def _notification_id(header_value: str | None) -> str:
    """The delivery key: Zuora's notification id, checked (400 when absent or malformed)."""
    delivery = (header_value or "").strip()
    if not delivery:
        raise IntakeError(
            400,
            "missing_notification_id",
            f"send Zuora's {NOTIFICATION_HEADER} header (Zuora adds it to every callout); it is how "
            "retries are recognised",
        )
    if not NOTIFICATION_ID.fullmatch(delivery):
        raise IntakeError(
            400,
            "invalid_notification_id",
            f"the {NOTIFICATION_HEADER} header must be 1 to 100 letters, digits or . _ : -",
        )
    return delivery


def signature_of(secret: str, body: bytes) -> str:
    """`sha256=<hex>` as our callout template has Zuora compute it (secret as UTF-8, raw body bytes)."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def _authenticate(signature: str | None, body: bytes, secrets: list[str]) -> None:
    if not signature:
        raise IntakeError(
            401,
            "missing_signature",
            f"send the {SIGNATURE_HEADER} header: set the callout template's HMAC to SHA-256, HEX output, "
            f"key {SIGNATURE_HEADER}, value sha256={{{{Request.HMAC.Signed}}}}, data {{{{Request.Body}}}}",
        )
    found = SIGNATURE.fullmatch(signature.strip())
    if found is None:
        raise IntakeError(
            401,
            "bad_signature",
            f"the {SIGNATURE_HEADER} header must read sha256=<64 hex digits>; set the callout template's "
            "hmacOutputFormat to HEX and hmacValue to sha256={{Request.HMAC.Signed}}",
        )
    if not secrets:
        raise IntakeError(
            401,
            "bad_signature",
            "this integration has no Zuora HMAC secret yet; generate one in the app and paste it into "
            "the callout template",
        )
    presented = "sha256=" + found.group(1).lower()  # Zuora's HEX output may be upper case
    if not matches_any(presented, [signature_of(secret, body) for secret in secrets]):
        raise IntakeError(
            401,
            "bad_signature",
            f"the {SIGNATURE_HEADER} signature does not match the body: the callout template's HMAC "
            "secret must equal this integration's Zuora HMAC secret (copy it again from the app), and "
            "hmacData must be {{Request.Body}}",
        )


def _parse_callout(body: bytes) -> dict[str, Any]:
    """Our documented callout body, checked field by field (see the module docstring)."""
    event = parse_object(body)
    name = event.get("event")
    if not isinstance(name, str) or not name.strip():
        raise _invalid("field 'event' is required: the event name, e.g. \"Subscription Created\"")
    for field_name in OPTIONAL_TEXT:
        if event.get(field_name) is not None and not isinstance(event[field_name], str):
            raise _invalid(f"field {field_name!r} must be a string or null")
    category = event.get("eventCategory")
    if category is not None and (isinstance(category, bool) or not isinstance(category, int)):
        raise _invalid("field 'eventCategory' must be the numeric event category code (e.g. 1210) or null")
    version = event.get("version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int) or version < 1):
        raise _invalid("field 'version' must be the subscription version (a whole number from 1) or null")
    if name in SUBSCRIPTION_EVENTS:
        for field_name in ("subscriptionId", "subscriptionNumber"):
            value = event.get(field_name)
            if not isinstance(value, str) or not value.strip():
                raise _invalid(
                    f"field {field_name!r} is required for {name!r} events; add it to the callout "
                    "template's body (see the setup guide)"
                )
    return event


def _invalid(message: str) -> IntakeError:
    return IntakeError(400, "invalid_event", message)
