"""Zuora callout notifications as the emulator sends them: signed JSON POSTs with Zuora's retry rules.

Zuora has no fixed webhook format: each tenant builds it in a callout template (notes §6). This module
sends what our setup guide tells tenants to configure, so the connector's receiver can be tested
against exactly that.

Body (the template's `customRequestBody`, JSON; every key is always present, null when it does not
apply; built from merge fields such as <Subscription.ID>, <Account.Number>, <Amendment.type>, <Tenant.ID>)::

    {
      "event": "Subscription Created" | "Amendment Processed"        (Billing tenant, standard events)
             | "Order Processed" | "Order Action Processed",          (Orders tenant, custom events)
      "eventCategory": 1210 | 1310 | null,       standard event category code; null for custom events
      "notification": "Subscription Created" | "Amendment Processed" | "Order Processed"
                    | "Create Subscription" | "Cancel Subscription" | "Add Product" | ...,
      "tenantId": "19",
      "accountId": "8ad0...", "accountNumber": "A00000001",
      "subscriptionId": "8ad0...",               the id of the version the change produced
      "subscriptionNumber": "A-S00000001", "version": 2, "subscriptionStatus": "Active" | "Cancelled" | ...,
      "effectiveDate": "2024-07-30",
      "amendmentType": "Cancellation" | "NewProduct" | ... | null,   (Amendment Processed only)
      "orderNumber": "O-00000001" | null,                            (Orders tenant only)
      "orderActionType": "CreateSubscription" | "CancelSubscription" | ... | null  (Order Action Processed)
    }

There is deliberately no timestamp: no merge field is known to yield the current time (notes §6,
UNCONFIRMED), so replay protection is the receiver's dedup on Zuora-Notification-Id.

Headers on every attempt:
    Content-Type: application/json
    X-Zuora-Signature: sha256=<hex HMAC-SHA256(secret as UTF-8, raw body)>  our template's HMAC setting
    Zuora-Notification-Id: <32 hex>     the same on every retry of one notification: the dedup key
    Zuora-Request-Id: <32 hex>          new on every attempt (a uuid without hyphens)
    X-Amzn-Trace-Id: Root=1-<8 hex>-<24 hex>

Delivery (notes §6, docs.zuora.com "configure callout settings"): only HTTP 200 is success; other
answers fail, and are retried only for 1xx, 403, 408, 429, 5xx and network errors (never 400, 401,
404, 422 or 3xx, and redirects are not followed). Default 3 attempts, at most 5. Zuora waits at least
30 minutes between attempts; the emulator's interval is seconds (configurable) so tests stay fast.
Each attempt has 10 s to connect and 25 s in all. Deliveries run as tasks on the serving event loop
and never delay the API answer that caused them.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx2

from connectors.emulator_kit import spawn

SIGNATURE_HEADER = "X-Zuora-Signature"
DEFAULT_ATTEMPTS = 3  # notes §6
MAX_ATTEMPTS = 5
ATTEMPT_DEADLINE = 25.0  # seconds per attempt: 10 s connect + 15 s transfer, fixed by Zuora (notes §6)
TIMEOUT = httpx2.Timeout(15.0, connect=10.0)  # seconds
RESPONSE_KEPT = 60 * 1024  # bytes of each answer kept in the history, as Zuora truncates (notes §6)
RETRIED_STATUSES = frozenset({403, 408, 429})  # plus 1xx and 5xx


def sign(secret: str, raw_body: bytes) -> str:
    """`sha256=<hex>`: HMAC-SHA256 keyed with the secret's UTF-8 bytes over the exact bytes sent."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), raw_body, hashlib.sha256).hexdigest()


def is_retried(status: int) -> bool:
    """Whether Zuora tries again after this answer (network errors are always retried)."""
    return 100 <= status < 200 or status in RETRIED_STATUSES or status >= 500


@dataclass(frozen=True)
class CalloutTarget:
    """One receiving endpoint (a callout template plus its notification definitions)."""

    id: str
    url: str
    secret: str = field(repr=False)
    events: frozenset[str] | None  # None: every event; else event names, notification names or codes
    attempts: int
    interval: float | None  # seconds between attempts; None: the sender's current default

    def wants(self, body: Mapping[str, Any]) -> bool:
        """Whether this target subscribed to the event `body` describes."""
        if self.events is None:
            return True
        names = {str(body.get("event")), str(body.get("notification")), str(body.get("eventCategory"))}
        return not names.isdisjoint(self.events)


class CalloutSender:
    """Registered targets, asynchronous signed deliveries with retries, and the history of attempts.

    `history` holds one dict per attempt: notificationId, requestId, url, event, notification, attempt,
    status (or error), outcome ("delivered", "retrying" or "failed"), response, body, headers, at.
    """

    def __init__(self, *, interval: float, clock: Callable[[], float] = time.time) -> None:
        self.interval = interval  # seconds between attempts unless a target says otherwise
        self.timeout = TIMEOUT
        self.attempt_deadline = ATTEMPT_DEADLINE
        self.clock = clock
        self.history: list[dict[str, Any]] = []
        self._targets: dict[str, CalloutTarget] = {}
        self._lock = threading.Lock()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    # Targets -----------------------------------------------------------------------------------
    def register(
        self,
        url: str,
        *,
        secret: str,
        events: Collection[str] | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
        interval: float | None = None,
    ) -> CalloutTarget:
        """Add a target; `attempts` counts the first try (1 = no retries, Zuora allows up to 5)."""
        if not url.startswith(("http://", "https://")):
            raise ValueError("a callout URL must be http(s)")
        if not secret:
            raise ValueError("a callout needs an HMAC secret")
        if not 1 <= attempts <= MAX_ATTEMPTS:
            raise ValueError(f"attempts must be between 1 and {MAX_ATTEMPTS}")
        if isinstance(events, str):
            raise ValueError("events must be a list of names or codes, not one string")
        if interval is not None and interval < 0:
            raise ValueError("interval must not be negative")
        chosen = None if events is None else frozenset(str(e) for e in events)
        target = CalloutTarget(uuid.uuid4().hex, url, secret, chosen, attempts, interval)
        with self._lock:
            self._targets[target.id] = target
        return target

    def unregister(self, target_id: str) -> bool:
        with self._lock:
            return self._targets.pop(target_id, None) is not None

    def clear_targets(self) -> None:
        with self._lock:
            self._targets.clear()

    @property
    def targets(self) -> list[CalloutTarget]:
        with self._lock:
            return list(self._targets.values())

    # Delivery ----------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Notifications whose last attempt has not finished yet."""
        with self._lock:
            return self._pending

    def attempts(self) -> list[dict[str, Any]]:
        """Copies of the `history` entries, oldest first (safe while deliveries append)."""
        with self._lock:
            return [dict(entry) for entry in self.history]

    def clear_history(self) -> None:
        with self._lock:
            self.history.clear()

    def dispatch(self, body: Mapping[str, Any], loop: asyncio.AbstractEventLoop | None) -> list[str]:
        """Send `body` to every target that wants it; returns the new notification ids.

        `loop` is the serving loop, used when called from outside it (a test thread); without targets
        nothing is scheduled and no loop is needed.
        """
        raw = json.dumps(body, separators=(",", ":")).encode("utf-8")
        ids = []
        for target in self.targets:
            if target.wants(body):
                notification_id = uuid.uuid4().hex
                self._spawn(self._deliver(target, notification_id, dict(body), raw), loop)
                ids.append(notification_id)
        return ids

    async def drain(self) -> None:
        """Wait until every scheduled notification is settled (callable from any event loop)."""
        while self.pending:
            await asyncio.sleep(0.01)

    def _spawn(self, coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop | None) -> None:
        with self._lock:
            self._pending += 1
        try:
            spawn(coro, loop, self._tasks)
        except RuntimeError:
            with self._lock:
                self._pending -= 1
            raise

    async def _deliver(
        self, target: CalloutTarget, notification_id: str, body: dict[str, Any], raw: bytes
    ) -> None:
        try:
            async with httpx2.AsyncClient(
                timeout=self.timeout, follow_redirects=False, trust_env=False
            ) as client:
                for attempt in range(1, target.attempts + 1):
                    delivered, again = await self._attempt(
                        client, target, notification_id, body, raw, attempt
                    )
                    if delivered or not again or attempt == target.attempts:
                        return
                    await asyncio.sleep(self.interval if target.interval is None else target.interval)
        finally:
            with self._lock:
                self._pending -= 1

    async def _attempt(
        self,
        client: httpx2.AsyncClient,
        target: CalloutTarget,
        notification_id: str,
        body: dict[str, Any],
        raw: bytes,
        attempt: int,
    ) -> tuple[bool, bool]:
        """One POST; (delivered, worth retrying). Records the attempt in `history`."""
        request_id = uuid.uuid4().hex
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(target.secret, raw),
            "Zuora-Notification-Id": notification_id,
            "Zuora-Request-Id": request_id,
            "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        }
        entry: dict[str, Any] = {
            "notificationId": notification_id,
            "requestId": request_id,
            "url": target.url,
            "event": body.get("event"),
            "notification": body.get("notification"),
            "attempt": attempt,
        }
        try:
            async with asyncio.timeout(self.attempt_deadline):
                response = await client.post(target.url, content=raw, headers=headers)
            entry["status"] = response.status_code
            entry["response"] = response.content[:RESPONSE_KEPT].decode("utf-8", "replace")
            delivered, again = response.status_code == 200, is_retried(response.status_code)
        except (httpx2.HTTPError, TimeoutError) as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
            delivered, again = False, True
        last = attempt == target.attempts
        entry["outcome"] = "delivered" if delivered else "retrying" if again and not last else "failed"
        entry.update(body=body, headers=headers, at=self.clock())
        with self._lock:
            self.history.append(entry)
        return delivered, again
