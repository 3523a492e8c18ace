"""What every part of the Zuora emulator shares: the v1 error envelope, dates, money, v1 list paging.

Shapes follow /work/shared/api/zuora.md ("notes §n"). Kept free of state so each resource module
(accounts, invoices, subscriptions, payments) can import it without importing the others.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.datastructures import URL
from starlette.responses import Response

from connectors.emulator_kit import json_response

# A reason code is a 6-digit resource code followed by a 2-digit category (notes §8).
UNKNOWN_RESOURCE = 500000  # "unknown", used for GET/DELETE (notes §8)
MISSING, INVALID, UNKNOWN_FIELD, BAD_PARAMETER = 22, 20, 21, 27
RULE, NOT_FOUND, LIMIT, MALFORMED = 30, 40, 70, 90
V1_PAGE_MAX = 40  # rows; larger pageSize values are treated as 40 (notes §5, PORTAL guides/pagination.md)

Answer = tuple[int, dict[str, Any]]  # (HTTP status, JSON body)
Reason = tuple[int, str]  # (category, message)

_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")


class BadParameter(ValueError):
    """A query parameter the v1 list endpoints cannot use (category 27, HTTP 400)."""


def new_id() -> str:
    """A Zuora-style object id: 32 lower-case hex characters."""
    return uuid.uuid4().hex


def is_custom(name: str) -> bool:
    """Custom fields end in __c; Zuora's NetSuite Connector fields end in __NS (notes §3)."""
    return name.endswith(("__c", "__NS"))


def custom_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if is_custom(k)}


def envelope(*reasons: tuple[int, str]) -> dict[str, Any]:
    """The v1 error body {success:false, processId, reasons[{code, message}]} (notes §8).

    Each pair is (full 8-digit code, message): 53100022 = account resource, missing field.
    """
    items = [{"code": code, "message": message} for code, message in reasons]
    return {"success": False, "processId": uuid.uuid4().hex[:16].upper(), "reasons": items}


def resource_envelope(resource: int, reasons: Sequence[Reason]) -> dict[str, Any]:
    """An error body whose (category, message) pairs all belong to one 6-digit resource code."""
    return envelope(*[(resource * 100 + category, message) for category, message in reasons])


def v1_error(
    category: int, message: str, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """One-reason v1 error for a request not tied to a resource (resource code 500000)."""
    return json_response(envelope((UNKNOWN_RESOURCE * 100 + category, message)), status, headers)


def not_found_answer(status: int, what: str, key: str) -> Answer:
    """Category 40 under the unknown resource code, as GET and DELETE errors are (notes §8)."""
    return status, envelope((UNKNOWN_RESOURCE * 100 + NOT_FOUND, f"Cannot find {what} by key: '{key}'."))


# Dates --------------------------------------------------------------------------------------


def zuora_timestamp(ts: float) -> str:
    """Epoch seconds -> `yyyy-mm-dd hh:mm:ss` (UTC), the createdDate/updatedDate format (notes §4)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def day_of(ts: float) -> str:
    """Epoch seconds -> `yyyy-mm-dd` (UTC)."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d")


def parse_day(value: Any) -> date | None:
    """A strict `yyyy-mm-dd` date, or None when `value` is anything else (20240730 included)."""
    if not isinstance(value, str) or not _DAY.fullmatch(value):
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def parse_instant(text: str) -> datetime:
    """A filter value such as `2024-07-30T10:00:00+01:00`, `...Z` or `2024-07-30 10:00:00` (UTC if naive)."""
    parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def add_months(start: date, months: int) -> date:
    """`start` plus whole months, clamped to the month's last day (Jan 31 + 1 month = Feb 28/29)."""
    index = start.month - 1 + months
    year, month = start.year + index // 12, index % 12 + 1
    first_of_next = date(year + (month == 12), month % 12 + 1, 1)
    return date(year, month, min(start.day, (first_of_next - timedelta(days=1)).day))


# Money --------------------------------------------------------------------------------------


def decimal_of(value: Any) -> Decimal | None:
    """A JSON number as a Decimal (bools and strings refused), so sums do not drift like floats."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def money(value: Decimal) -> int | float:
    """A Decimal back to JSON: whole amounts as integers (Zuora's samples show `"amount":100`)."""
    return int(value) if value == value.to_integral_value() else float(value)


# v1 list paging -------------------------------------------------------------------------------


def page_params(query: Mapping[str, str], default_size: int) -> tuple[int, int]:
    """(page, pageSize) from `?page=&pageSize=`: page is 1-based, pageSize above 40 is treated as 40."""
    try:
        page = int(query.get("page", "1"))
        size = int(query.get("pageSize", str(default_size)))
    except ValueError as exc:
        raise BadParameter("page and pageSize must be whole numbers") from exc
    if page < 1 or size < 1:
        raise BadParameter("page and pageSize must be at least 1")
    return page, min(size, V1_PAGE_MAX)


def paginate(
    rows: Sequence[dict[str, Any]], page: int, size: int, url: URL
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of `rows` and the full URL of the next page (None on the last page).

    v1 lists answer `nextPage` as a full URL to follow until it is absent (notes §5).
    """
    start = (page - 1) * size
    chunk = list(rows[start : start + size])
    if start + size >= len(rows):
        return chunk, None
    return chunk, str(url.include_query_params(page=page + 1, pageSize=size))


def list_body(key: str, rows: list[dict[str, Any]], next_page: str | None) -> dict[str, Any]:
    """`{key: rows, nextPage?, success: true}`, the envelope of every v1 list (notes §5)."""
    body: dict[str, Any] = {key: rows}
    if next_page:
        body["nextPage"] = next_page
    body["success"] = True
    return body


# Idempotency-Key (notes §7) -------------------------------------------------------------------

IDEMPOTENCY_TTL = 24 * 3600.0  # seconds a stored result is replayed (notes §7)
IDEMPOTENCY_KEY_MAX = 255  # characters


@dataclass
class StoredAnswer:
    """One Idempotency-Key: what it was used for and, once finished, the answer to replay."""

    fingerprint: tuple[str, str, str]  # method, path, body digest
    stored_at: float  # epoch seconds
    done: bool = False
    status: int = 0
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


class IdempotencyKeys:
    """Keys claimed by POST/PATCH calls: the first answer, success or failure, is replayed for 24 h."""

    def __init__(self, lock: Any, clock: Callable[[], float]) -> None:
        self._lock = lock
        self._clock = clock
        self._keys: dict[str, StoredAnswer] = {}

    def clear(self) -> None:
        with self._lock:
            self._keys.clear()

    def claim(self, key: str, fingerprint: tuple[str, str, str]) -> StoredAnswer | str | None:
        """Reserve `key`; returns the stored answer to replay, 'conflict'/'mismatch', or None if claimed."""
        now = self._clock()
        with self._lock:
            stored = self._keys.get(key)
            if stored is not None and now - stored.stored_at > IDEMPOTENCY_TTL:
                stored = None
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return "mismatch"
                return stored if stored.done else "conflict"
            self._keys[key] = StoredAnswer(fingerprint, now)
            return None

    def settle(self, key: str, response: Response | None) -> None:
        """Store the first answer for replay, or free the key when the handler made none."""
        with self._lock:
            if response is None:
                self._keys.pop(key, None)
                return
            stored = self._keys[key]
            stored.done, stored.status, stored.body = True, response.status_code, bytes(response.body)
            # The route's own headers (content-type, Location, ...) come back on a replay; the length is
            # worked out again, and per-call headers (request id, rate limits) are added fresh.
            stored.headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}

    @property
    def in_flight(self) -> list[str]:
        with self._lock:
            return [k for k, v in self._keys.items() if not v.done]
