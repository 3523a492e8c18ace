"""Zoho CRM notification intake: the channel's token, then one fetch-and-sync job per record id.

What Zoho POSTs to a channel's notify_url (shared/api/zoho.md §3e):

    {"server_time": 1718115953625, "query_params": {...}, "module": "Accounts",
     "resource_uri": "https://www.zohoapis.com/crm/v2/Accounts", "ids": ["5725767000003000010"],
     "affected_fields": [...], "operation": "insert" | "update" | "delete",
     "channel_id": "1000000068001", "token": "<the channel's token>"}

Zoho signs nothing: the token we chose when enabling the channel, echoed in the body, is the only
credential, so the body is read as JSON only far enough to find `channel_id` and `token`, and every
other field is checked after the token matched. The channel must be one of this integration's
(storage.channels) and not disabled there.

The token is a credential, so the event is stored with it replaced by REDACTED (design.md invariant
6); Zoho signs nothing, so keeping the exact bytes would prove nothing anyway.

Zoho documents no retry and no expected status (§3e, UNCONFIRMED), so an accepted notification
answers 200, the one status every sender reads as success. An identical redelivery (same channel,
module, operation, ids and server_time) answers 200 again and stores nothing.
"""

from __future__ import annotations

import hashlib
import json
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
from storage import channels
from storage.crypto import Vault
from storage.intake import IntakeIntegration, IntegrationCache

OPERATIONS = frozenset({"insert", "update", "delete"})
MAX_ID_LENGTH = 50  # characters; Zoho record ids are 19-digit longs
MAX_MODULE_LENGTH = 100  # characters in a module API name
REDACTED = "[redacted]"  # what the stored copy of a notification carries instead of the channel token


def accept_zoho(
    engine: Engine,
    vault: Vault,
    *,
    key: str,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str,
    integrations: IntegrationCache | None = None,
) -> Accepted:
    """Accept one Zoho notification; raises IntakeError when refused.

    Order: size, integration, channel_id and token present, channel known to this integration, token
    (constant time), channel not disabled (410), then module, operation, ids and server_time. Deletions
    are stored but queue nothing (design.md §1: deletions are never synchronised).
    """
    check_size(None, body)

    def judge(integration: IntakeIntegration) -> Accepted:
        note = parse_object(body)
        channel_id = _channel_id(note.get("channel_id"))
        token = note.get("token")
        if not isinstance(token, str) or not token:
            raise IntakeError(
                401,
                "missing_token",
                "the notification carries no 'token'; enable the channel with the token the app generated",
            )
        channel = channels.get_channel(engine, integration_id=integration.id, channel_id=channel_id)
        if channel is None:
            raise IntakeError(
                401,
                "unknown_channel",
                f"channel {channel_id} is not one of this integration's Zoho channels; enable notifications "
                "from the app (or disable this channel in Zoho)",
            )
        if not matches_any(token, [channels.channel_token(vault, channel)]):
            raise IntakeError(
                401,
                "bad_token",
                f"the token does not match channel {channel_id}'s; re-enable the channel from the app so "
                "Zoho sends the current token",
            )
        if channel.status == "disabled":
            raise IntakeError(
                410,
                "channel_disabled",
                f"channel {channel_id} is disabled in ml-connector, so its notifications are refused; "
                "re-enable it in the app, or disable it in Zoho (DELETE /crm/v8/actions/watch) to stop them",
            )
        module, operation, ids, server_time = _parse_notification(note)
        jobs = []
        if operation != "delete":
            for flow in integration.flows_for("zoho", lambda enabled: flows_for_event("zoho", enabled)):
                for record_id in ids:
                    payload = {
                        "module": module,
                        "id": record_id,
                        "operation": operation,
                        "channel_id": channel_id,
                        "server_time": server_time,
                    }
                    jobs.append((flow, payload))
        return store_event(
            engine,
            integration,
            system="zoho",
            delivery_key=delivery_key(channel_id, module, operation, ids, server_time),
            body=json.dumps({**note, "token": REDACTED}, ensure_ascii=False),
            headers=headers,
            remote_addr=client_address(integration, remote_addr, headers),
            jobs=jobs,
        )

    return with_integration(integrations or IntegrationCache(engine, vault), key, judge)


def delivery_key(channel_id: str, module: str, operation: str, ids: list[str], server_time: int) -> str:
    """`<channel>/<server_time>/<operation>/<digest>`: the same for an identical redelivery, different
    for any other notification. The ids go in as a digest because a notification may carry many, and
    the key is limited to 200 characters."""
    digest = hashlib.sha256(json.dumps([module, sorted(ids)]).encode("utf-8")).hexdigest()[:32]
    return f"{channel_id}/{server_time}/{operation}/{digest}"


def _channel_id(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.isdigit() or len(value) > 50:
        raise IntakeError(
            400, "invalid_event", "field 'channel_id' is required: the numeric id of the Zoho channel"
        )
    return value


def _parse_notification(note: dict[str, Any]) -> tuple[str, str, list[str], int]:
    module = note.get("module")
    if not isinstance(module, str) or not module.strip() or len(module) > MAX_MODULE_LENGTH:
        raise _invalid("field 'module' is required: the module's API name, e.g. \"Accounts\"")
    operation = note.get("operation")
    if not isinstance(operation, str) or operation not in OPERATIONS:
        raise _invalid(f"field 'operation' is {operation!r}; expected one of {', '.join(sorted(OPERATIONS))}")
    raw_ids = note.get("ids")
    if not isinstance(raw_ids, list) or not raw_ids:
        raise _invalid("field 'ids' is required: a non-empty list of record ids")
    ids: list[str] = []
    for position, raw in enumerate(raw_ids):
        if isinstance(raw, int) and not isinstance(raw, bool):
            raw = str(raw)
        if not isinstance(raw, str) or not raw.strip() or len(raw) > MAX_ID_LENGTH:
            raise _invalid(f"field 'ids[{position}]' must be a record id (a string or number)")
        if raw.strip() not in ids:
            ids.append(raw.strip())
    server_time = note.get("server_time")
    if isinstance(server_time, bool) or not isinstance(server_time, int) or server_time <= 0:
        raise _invalid("field 'server_time' is required: Zoho's send time in epoch milliseconds")
    return module.strip(), str(operation), ids, server_time


def _invalid(message: str) -> IntakeError:
    return IntakeError(400, "invalid_event", message)
