"""The Zoho CRM emulator's Notification ("watch") API: channels, their expiry, and the POSTs they send.

`POST/PATCH/PUT/GET/DELETE /crm/v8/actions/watch` as in /work/shared/api/zoho.md §3 ("notes §3x"),
with response shapes from Zoho's v8 OpenAPI examples (GitHub zoho/crm-oas
`v8.0/notifications/operations/*/examples/`, "OAS example <op>").

A channel is stored as one entry per (channel_id, module), as Zoho lists it (notes §3c, §7). Every
record change the emulator makes is offered to `publish`, which POSTs the documented payload
(notes §3e) to each live entry watching that module and operation, through an `Outbox`, so the API
answer never waits for the receiver. Expiry is read from the emulator's clock, so tests move time
instead of sleeping.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2

from connectors.emulator_kit import Outbox, parse_iso
from connectors.zoho.emulator_records import MANDATORY, MODULE_IDS, Change, zoho_time

DEFAULT_LIFETIME = 3600.0  # seconds: a missing or too-long channel_expiry becomes 1 hour (notes §3a, K170)
MAX_LIFETIME = 7 * 86400.0  # seconds: at most one week ahead from API v4 on (notes §3a)
MAX_TOKEN_LENGTH = 50  # characters in `token`, longer is INVALID_DATA (notes §3a; the v8 OAS says 256)
MAX_ITEMS = 50  # watch objects per request (OAS createNotifications: maxItems=50)
MAX_PER_PAGE = 200  # channels per GET page (notes §3c)
DELIVERY_TIMEOUT = httpx2.Timeout(10.0)  # seconds for the receiver to answer one notification
# Event suffix -> the `operation` a notification carries (notes §3a, §3e).
OPERATIONS = {"create": "insert", "edit": "update", "delete": "delete"}
SUBSCRIBED = "Successfully subscribed for actions-watch of the given module"
UPDATED = "Successfully updated the subscribe details"
REMOVED = "Successfully removed the subscribe details"
UNSUBSCRIBED = "Successfully un-subscribed from actions-watch"


class ItemError(Exception):
    """One `watch[i]` object is refused; `body` is its per-item error (notes §3a, §5)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.body = {"code": code, "details": details, "message": message, "status": "error"}


@dataclass
class Channel:
    """One module's subscription under a channel id."""

    channel_id: str
    module: str
    events: list[str]  # the suffixes asked for: create, edit, delete, all
    notify_url: str
    token: str | None
    expires_at: float  # epoch seconds
    notify_on_related_action: bool
    return_affected_field_values: bool
    notification_condition: Any
    api_base: str  # the API domain the channel was made on, for resource_uri

    def wants(self, operation: str) -> bool:
        return "all" in self.events or any(OPERATIONS[e] == operation for e in self.events)


class WatchRegistry:
    """Notification channels of one org and the notifications they sent."""

    def __init__(self, clock: Callable[[], float], lock: threading.RLock) -> None:
        self.clock = clock
        self.lock = lock
        self.default_lifetime = DEFAULT_LIFETIME
        self.max_lifetime = MAX_LIFETIME
        self.max_token_length = MAX_TOKEN_LENGTH
        # UNCONFIRMED (notes §3a): ZD documents per-item errors under HTTP 400; an older OAS under 202.
        self.all_failed_status = 400
        # UNCONFIRMED (notes §3e): whether a lapsed channel still shows in GET; Zoho lists "active" ones.
        self.list_expired = False
        # Where the payload says the resource lives: /crm/v2/ even on v7/v8 channels (notes §3e).
        self.notification_api_version = "v2"
        self.outbox = Outbox(DELIVERY_TIMEOUT)
        self.notifications: list[dict[str, Any]] = []
        self._channels: dict[tuple[str, str], Channel] = {}

    def clear(self) -> None:
        with self.lock:
            self._channels.clear()
            self.notifications.clear()
        self.outbox.clear()

    def snapshot(self) -> list[dict[str, Any]]:
        """Every stored entry, lapsed ones too, with `expired` set (for tests and the hook)."""
        now = self.clock()
        with self.lock:
            return [{**self._render(c), "expired": c.expires_at <= now} for c in self._channels.values()]

    # API operations ------------------------------------------------------------------------------
    def enable(self, items: list[Any], api_base: str) -> tuple[int, dict[str, Any]]:
        """POST: subscribe (or re-subscribe, which renews) each item's modules (notes §3a)."""
        return self._batch(items, lambda index, item: self._enable_one(index, item, api_base), 201)

    def update(self, items: list[Any], api_base: str, *, replace: bool) -> tuple[int, dict[str, Any]]:
        """PATCH (`replace=False`, keys sent change) or PUT (whole definition replaced) (notes §3b)."""
        return self._batch(items, lambda index, item: self._update_one(index, item, api_base, replace), 200)

    def listing(self, channel_id: str | None, module: str | None) -> list[dict[str, Any]]:
        """GET entries, filtered by channel id and module (notes §3c)."""
        now = self.clock()
        with self.lock:
            return [
                self._render(c)
                for c in self._channels.values()
                if (self.list_expired or c.expires_at > now)
                and channel_id in (None, c.channel_id)
                and module in (None, c.module)
            ]

    def disable(self, channel_ids: list[str]) -> tuple[int, dict[str, Any]]:
        """DELETE ?channel_ids=: one result per removed (channel, module) entry (notes §3d)."""
        now, results = self.clock(), []
        with self.lock:
            for channel_id in channel_ids:
                live = [
                    c for c in self._channels.values() if c.channel_id == channel_id and c.expires_at > now
                ]
                if not live:
                    results.append(_not_subscribed(channel_id, None).body)
                for entry in live:
                    del self._channels[(entry.channel_id, entry.module)]
                    details = {"resource_uri": _resource_uri(entry), "resource_id": MODULE_IDS[entry.module]}
                    details["channel_id"] = entry.channel_id
                    results.append(
                        {"code": "SUCCESS", "details": details, "message": UNSUBSCRIBED, "status": "success"}
                    )
        return self._status(results, 200), {"watch": results}

    # Notifications (notes §3e) ---------------------------------------------------------------------
    def publish(self, changes: list[Change], loop: asyncio.AbstractEventLoop | None) -> None:
        """POST one notification per live channel entry that watches each change's module and operation.

        `loop` is the serving event loop, used when the change came from a test thread, not a request.
        """
        now = self.clock()
        outgoing: list[dict[str, Any]] = []
        with self.lock:
            for change in changes:
                for entry in self._channels.values():
                    if (
                        entry.module == change.module
                        and entry.expires_at > now
                        and entry.wants(change.operation)
                    ):
                        outgoing.append({"url": entry.notify_url, "body": self._payload(entry, change, now)})
            for note in outgoing:
                note.update(channel_id=note["body"]["channel_id"], at=now)
                self.notifications.append(note)
        for note in outgoing:
            try:
                self.outbox.schedule(note["url"], note["body"], {"Content-Type": "application/json"}, loop)
            except RuntimeError as exc:  # no server loop yet: keep the state change, record why nothing went
                note["error"] = str(exc)

    def _payload(self, entry: Channel, change: Change, now: float) -> dict[str, Any]:
        affected = (
            [{i: change.affected.get(i, [])} for i in change.ids] if change.operation == "update" else []
        )
        body: dict[str, Any] = {
            "server_time": int(now * 1000),  # epoch milliseconds
            "query_params": dict(parse_qsl(urlsplit(entry.notify_url).query)),
            "module": entry.module,
            "resource_uri": f"{entry.api_base}/crm/{self.notification_api_version}/{entry.module}",
            "ids": list(change.ids),
            "affected_fields": affected,
            "operation": change.operation,
            "channel_id": entry.channel_id,
            "token": entry.token,
        }
        if entry.return_affected_field_values and change.operation == "update":
            # Shape from a captured real payload (amp-labs/connectors subscriptionEvent.go, notes §3e).
            body["affected_values"] = [
                {"record_id": i, "values": change.values.get(i, {})} for i in change.ids
            ]
        return body

    # Internals -------------------------------------------------------------------------------------
    def _batch(
        self, items: list[Any], one: Callable[[int, Any], dict[str, Any]], ok_status: int
    ) -> tuple[int, dict[str, Any]]:
        results = []
        with self.lock:
            for index, item in enumerate(items):
                try:
                    results.append(one(index, item))
                except ItemError as exc:
                    results.append(exc.body)
        return self._status(results, ok_status), {"watch": results}

    def _status(self, results: list[dict[str, Any]], ok_status: int) -> int:
        ok = sum(1 for r in results if r["status"] == "success")
        if ok == len(results):
            return ok_status
        return 207 if ok else self.all_failed_status

    def _enable_one(self, index: int, item: Any, api_base: str) -> dict[str, Any]:
        spec = _parse(index, item, ("channel_id", "events", "notify_url"), self.max_token_length)
        expires_at = self._expiry(index, spec.get("channel_expiry"))
        entries = [
            self._build(spec, module, ops, expires_at, api_base) for module, ops in spec["events"].items()
        ]
        for entry in entries:
            self._channels[(entry.channel_id, entry.module)] = entry
        return _success(SUBSCRIBED, entries)

    def _update_one(self, index: int, item: Any, api_base: str, replace: bool) -> dict[str, Any]:
        removing = isinstance(item, dict) and item.get("_delete_events") is True
        required = ("channel_id", "events") if removing else ("channel_id", "events", "notify_url")
        spec = _parse(index, item, required, self.max_token_length)
        now, channel_id = self.clock(), spec["channel_id"]
        live = {
            c.module: c for c in self._channels.values() if c.channel_id == channel_id and c.expires_at > now
        }
        missing = [m for m in spec["events"] if m not in live]
        if not live or missing:
            # A lapsed channel cannot be renewed: enable it again with POST (notes §3b; K170).
            raise _not_subscribed(channel_id, missing[0] if missing else None)
        if removing:
            for module, ops in spec["events"].items():
                entry = live[module]
                entry.events = [e for e in entry.events if e not in ops]
                if not entry.events:
                    del self._channels[(channel_id, module)]
            return _success(REMOVED, [live[m] for m in spec["events"]])
        if replace:
            # PUT: the item is the whole definition; keys left out take their defaults (notes §3b).
            expires_at = self._expiry(index, spec.get("channel_expiry"))
            for module in live:
                del self._channels[(channel_id, module)]
            entries = [self._build(spec, m, ops, expires_at, api_base) for m, ops in spec["events"].items()]
        else:
            expiry = self._expiry(index, spec["channel_expiry"]) if "channel_expiry" in spec else None
            entries = [self._patch(live[m], ops, spec, expiry) for m, ops in spec["events"].items()]
        for entry in entries:
            self._channels[(entry.channel_id, entry.module)] = entry
        return _success(UPDATED, entries)

    def _build(
        self, spec: dict[str, Any], module: str, ops: list[str], expires_at: float, base: str
    ) -> Channel:
        return Channel(
            channel_id=spec["channel_id"],
            module=module,
            events=ops,
            notify_url=spec["notify_url"],
            token=spec.get("token"),
            expires_at=expires_at,
            notify_on_related_action=spec.get("notify_on_related_action", True),  # default true (notes §3a)
            return_affected_field_values=spec.get("return_affected_field_values", False),
            notification_condition=spec.get("notification_condition"),
            api_base=base,
        )

    @staticmethod
    def _patch(entry: Channel, ops: list[str], spec: dict[str, Any], expiry: float | None) -> Channel:
        # PATCH: only the keys sent change; the module's events become the ones listed (UNCONFIRMED).
        entry.events = ops
        entry.notify_url = spec.get("notify_url", entry.notify_url)
        entry.token = spec.get("token", entry.token)
        entry.expires_at = entry.expires_at if expiry is None else expiry
        for key in ("notify_on_related_action", "return_affected_field_values", "notification_condition"):
            if key in spec:
                setattr(entry, key, spec[key])
        return entry

    def _expiry(self, index: int, raw: Any) -> float:
        """channel_expiry as epoch seconds: missing or beyond the maximum silently becomes 1 hour (K170)."""
        now = self.clock()
        if raw is None:
            return now + self.default_lifetime
        try:
            at = parse_iso(str(raw))
        except ValueError:
            raise _field(index, "channel_expiry", "invalid data", expected_data_type="datetime") from None
        if at <= now:
            # UNCONFIRMED: an expiry in the past is refused rather than defaulted.
            raise _field(index, "channel_expiry", "the channel expiry is in the past")
        return now + self.default_lifetime if at - now > self.max_lifetime else at

    def _render(self, entry: Channel) -> dict[str, Any]:
        """An entry as GET /actions/watch lists it (notes §3c; OAS example getNotifications)."""
        return {
            "notify_on_related_action": entry.notify_on_related_action,
            "channel_expiry": zoho_time(entry.expires_at),
            "return_affected_field_values": entry.return_affected_field_values,
            "resource_uri": _resource_uri(entry),
            "resource_id": MODULE_IDS[entry.module],
            "notify_url": entry.notify_url,
            "resource_name": entry.module,
            "fields": None,
            "notification_condition": entry.notification_condition,
            "channel_id": entry.channel_id,
            "events": [f"{entry.module}.{e}" for e in entry.events],
            "token": entry.token,
        }


def _parse(index: int, item: Any, required: tuple[str, ...], max_token: int) -> dict[str, Any]:
    """Validate one watch object; keys present in the result are exactly the ones sent (for PATCH)."""
    if not isinstance(item, dict):
        raise ItemError(
            "INVALID_DATA", "invalid data", expected_data_type="jsonobject", json_path=f"$.watch[{index}]"
        )
    for key in required:
        if item.get(key) in (None, "", []):
            raise _field(index, key, "required field not found", code="MANDATORY_NOT_FOUND")
    spec: dict[str, Any] = {}
    channel_id = item.get("channel_id")
    # channel_id is a long (notes §3a): a number or a string of digits.
    if isinstance(channel_id, bool) or not str(channel_id).isdigit():
        raise _field(index, "channel_id", "invalid data", expected_data_type="long")
    spec["channel_id"] = str(channel_id)
    spec["events"] = _events(index, item.get("events"))
    if "notify_url" in item:
        url = item["notify_url"]
        if (
            not isinstance(url, str)
            or urlsplit(url).scheme not in ("http", "https")
            or not urlsplit(url).netloc
        ):
            raise _field(index, "notify_url", "invalid data", expected_data_type="url")
        spec["notify_url"] = url
    if item.get("token") is not None:
        token = item["token"]
        if not isinstance(token, str) or len(token) > max_token:
            raise _field(index, "token", "invalid data", maximum_length=max_token)
        spec["token"] = token
    for key in ("notify_on_related_action", "return_affected_field_values", "_delete_events"):
        if key in item:
            if not isinstance(item[key], bool):
                raise _field(index, key, "invalid data", expected_data_type="boolean")
            spec[key] = item[key]
    if item.get("channel_expiry") is not None:
        spec["channel_expiry"] = item["channel_expiry"]
    if "notification_condition" in item:
        spec["notification_condition"] = item["notification_condition"]
    return spec


def _events(index: int, events: Any) -> dict[str, list[str]]:
    """`["Accounts.all", "Contacts.create"]` -> {module: [suffixes]}, refusing unknown modules/ops."""
    if not isinstance(events, list):
        raise _field(index, "events", "invalid data", expected_data_type="jsonarray")
    grouped: dict[str, list[str]] = {}
    for position, event in enumerate(events):
        module, _, op = str(event).partition(".")
        if module not in MANDATORY or op not in (*OPERATIONS, "all"):
            # OAS example updateNotificationDetails/400-modulenotsupported: INVALID_DATA on `events`.
            path = f"$.watch[{index}].events[{position}]"
            raise ItemError("INVALID_DATA", "invalid data", api_name="events", json_path=path)
        ops = grouped.setdefault(module, [])
        if op not in ops:
            ops.append(op)
    return grouped


def _field(index: int, name: str, message: str, *, code: str = "INVALID_DATA", **details: Any) -> ItemError:
    return ItemError(code, message, api_name=name, json_path=f"$.watch[{index}].{name}", **details)


def _not_subscribed(channel_id: str, module: str | None) -> ItemError:
    # NOT_SUBSCRIBED is in OAS notifications.json `InvalidParamError` (notes §3a); message UNCONFIRMED.
    details = {"channel_id": channel_id} | ({"resource_name": module} if module else {})
    return ItemError("NOT_SUBSCRIBED", "the channel is not subscribed for actions-watch", **details)


def _success(message: str, entries: list[Channel]) -> dict[str, Any]:
    events = [
        {
            "channel_expiry": zoho_time(e.expires_at),
            "resource_uri": _resource_uri(e),
            "resource_id": MODULE_IDS[e.module],
            "resource_name": e.module,
            "channel_id": e.channel_id,
        }
        for e in entries
    ]
    return {"code": "SUCCESS", "details": {"events": events}, "message": message, "status": "success"}


def _resource_uri(entry: Channel) -> str:
    # The v8 OAS examples of enable/list/disable answers show /crm/v8/ (notifications still say v2).
    return f"{entry.api_base}/crm/v8/{entry.module}"
