"""Webhook intake as plain functions: authenticate, validate, and commit the raw event with its jobs.

Nothing is stored unless the request is authentic and well formed, and the event and its jobs commit
in one transaction before the caller answers (design.md invariant 1). The HTTP handlers in
runner.webhooks are a few lines around `accept_netsuite`, `runner.intake_zuora.accept_zuora` and
`runner.intake_zoho.accept_zoho`.

Every refusal is an IntakeError carrying the HTTP status, a stable code (also the metrics verdict) and
a message that says what to fix without repeating any secret. The checks run cheapest and least
revealing first, and authentication always comes before the body is interpreted:

    413 body_too_large        over MAX_BODY, declared or actual
    404 unknown_integration   no integration under the URL's key
    403 ip_not_allowed        NetSuite only: the sender is outside the integration's IP allowlist
    401 missing_* / bad_*     the shared secret, HMAC signature or channel token is absent or wrong
    400 malformed_json / invalid_event / ...   the body or a required header is not what we document

This module holds what every system shares (size, lookup, JSON, constant-time comparison, the
deduplicating store) and the NetSuite intake with its IP allowlist.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from runner.flows import flows_for_record
from storage import crud, queue, webhook_secrets
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import InboundEvent, Integration

MAX_BODY = 1024 * 1024  # bytes; larger webhook bodies get 413
NETSUITE_RECORD_TYPES = frozenset({"customer", "vendor", "contact", "invoice"})
NETSUITE_EVENT_TYPES = frozenset({"create", "edit", "xedit", "delete", "inlineedit", "approve", "copy"})
KEPT_HEADERS = (
    "content-type",
    "user-agent",
    "x-forwarded-for",
    "x-amzn-trace-id",
    "zuora-notification-id",
    "zuora-request-id",
)


class IntakeError(Exception):
    """A rejected delivery: HTTP status, a stable error code, and a message saying what to fix."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message}


@dataclass(frozen=True)
class Accepted:
    """A stored delivery: its event row and the jobs queued for it. `duplicate` means the same delivery
    was stored before (a sender's retry); then `event_id` is the first copy's and nothing new was kept."""

    event_id: int
    job_ids: list[int] = field(default_factory=list)
    duplicate: bool = False


# Shared checks -------------------------------------------------------------------------------------


def check_size(declared_length: str | None, body: bytes | None = None) -> None:
    """Refuse bodies over MAX_BODY, by the declared length first and the real one after."""
    if declared_length is not None:
        try:
            length = int(declared_length)
        except ValueError:
            raise IntakeError(400, "bad_content_length", "Content-Length is not a number") from None
        if length > MAX_BODY:
            raise body_too_large(length)
    if body is not None and len(body) > MAX_BODY:
        raise body_too_large(len(body))


def body_too_large(size: int) -> IntakeError:
    return IntakeError(
        413, "body_too_large", f"the body is {size} bytes; webhooks are limited to {MAX_BODY} bytes"
    )


def find_integration(engine: Engine, key: str) -> Integration:
    """The integration a webhook URL names, or 404."""
    integration = crud.get_integration_by_key(engine, key=key)
    if integration is None or integration.id is None:
        raise IntakeError(
            404, "unknown_integration", f"no integration is registered under {key!r}; check the URL"
        )
    return integration


def matches_any(presented: str, candidates: Iterable[str]) -> bool:
    """Whether `presented` equals one of `candidates`, compared in constant time.

    Every candidate is compared (no early exit), so the time taken says nothing about which one, if
    any, matched; empty candidates never match.
    """
    given = presented.encode("utf-8")
    matched = False
    for candidate in candidates:
        matched |= bool(candidate) and hmac.compare_digest(given, candidate.encode("utf-8"))
    return matched


def parse_object(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (UTF-8), or 400 saying what is wrong with it."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise IntakeError(400, "malformed_json", "the body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as exc:
        raise IntakeError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise IntakeError(400, "invalid_event", "the body must be a JSON object")
    return value


def header(headers: Mapping[str, str], name: str) -> str | None:
    """A header by case-insensitive name (Starlette lower-cases them; direct callers may not)."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with an event; credentials and signatures are never among them."""
    return {k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS}


def store_event(
    engine: Engine,
    *,
    integration_id: int,
    system: str,
    delivery_key: str,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str,
    jobs: Sequence[tuple[str, dict[str, Any]]],
) -> Accepted:
    """Commit the event and its jobs (flow, payload) in one transaction, once per delivery key.

    A delivery key already stored for this integration and system is a redelivery: nothing is added
    and the first copy is reported as a duplicate. The unique constraint on (integration_id, system,
    delivery_key) settles two copies arriving at once: the loser's insert fails and it reports the
    winner's row.
    """
    existing = _stored_event_id(engine, integration_id, system, delivery_key)
    if existing is not None:
        return Accepted(event_id=existing, duplicate=True)
    try:
        with session_scope(engine) as session:
            row = InboundEvent(
                integration_id=integration_id,
                system=system,
                delivery_key=delivery_key,
                headers=kept_headers(headers),
                body=body.decode("utf-8"),
                remote_addr=remote_addr[:100],
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            queued = [
                queue.enqueue(
                    session, integration_id=integration_id, flow=flow, payload=payload, event_id=row.id
                )
                for flow, payload in jobs
            ]
            return Accepted(event_id=row.id, job_ids=[job.id for job in queued if job.id is not None])
    except IntegrityError:
        existing = _stored_event_id(engine, integration_id, system, delivery_key)
        if existing is None:
            raise
        return Accepted(event_id=existing, duplicate=True)


def _stored_event_id(engine: Engine, integration_id: int, system: str, delivery_key: str) -> int | None:
    with session_scope(engine) as session:
        return session.exec(
            select(InboundEvent.id).where(
                col(InboundEvent.integration_id) == integration_id,
                col(InboundEvent.system) == system,
                col(InboundEvent.delivery_key) == delivery_key,
            )
        ).first()


# Where a request came from -------------------------------------------------------------------------


def client_address(integration: Integration, peer: str, headers: Mapping[str, str]) -> str:
    """The address a delivery came from: the socket peer, or, when the integration's settings say
    `trust_forwarded_for` (the runner sits behind a proxy the operator controls), the left-most
    X-Forwarded-For address. The proxy must then set that header itself, not pass on the sender's."""
    forwarded = header(headers, "x-forwarded-for")
    if (integration.settings or {}).get("trust_forwarded_for") is True and forwarded:
        return _strip_port(forwarded.split(",")[0].strip())
    return peer


def check_ip_allowlist(integration: Integration, address: str, headers: Mapping[str, str]) -> None:
    """Refuse (403) an address outside `settings["ip_allowlist"]` (CIDRs, IPv4 or IPv6).

    An empty or missing list allows everyone. Entries that are not networks match nothing (fail
    closed) and are named in the refusal so the operator sees the typo.
    """
    entries = (integration.settings or {}).get("ip_allowlist") or []
    if isinstance(entries, str):
        entries = [entries]
    if not entries:
        return
    networks, invalid = [], []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            invalid.append(str(entry))
    trusted = (integration.settings or {}).get("trust_forwarded_for") is True
    forwarded = header(headers, "x-forwarded-for")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        where = (
            "check what the proxy puts first in X-Forwarded-For (read because trust_forwarded_for is set)"
            if trusted and forwarded
            else "the runner could not tell where the request came from"
        )
        raise IntakeError(
            403,
            "ip_not_allowed",
            f"the sender's address {address!r} is not an IP address, so the integration's ip_allowlist "
            f"cannot admit it; {where}",
        ) from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    if any(ip.version == network.version and ip in network for network in networks):
        return
    hint = (
        f"add {ip} (or its network, e.g. {ip}/{ip.max_prefixlen}) to the integration's ip_allowlist setting"
    )
    if forwarded and not trusted:
        hint += "; if the runner is behind a proxy, set trust_forwarded_for so the original sender is checked"
    if invalid:
        hint += (
            f"; these allowlist entries are not networks and were ignored: {', '.join(map(repr, invalid))}"
        )
    raise IntakeError(
        403, "ip_not_allowed", f"requests from {ip} are not allowed for this integration: {hint}"
    )


def _strip_port(text: str) -> str:
    """`[2001:db8::1]:443` -> `2001:db8::1`, `203.0.113.7:5000` -> `203.0.113.7`; others unchanged."""
    if text.startswith("[") and "]" in text:
        return text[1 : text.index("]")]
    if text.count(":") == 1:
        return text.split(":", 1)[0]
    return text


# NetSuite --------------------------------------------------------------------------------------------


def accept_netsuite(
    engine: Engine,
    vault: Vault,
    *,
    key: str,
    secret: str | None,
    body: bytes,
    headers: Mapping[str, str],
    remote_addr: str,
) -> Accepted:
    """Accept an event from our NetSuite User Event script; raises IntakeError when refused.

    Order: size, integration, IP allowlist, shared secret (current, or the previous one during its
    rotation grace period, see storage.webhook_secrets), then the body. NetSuite sends no delivery id,
    so every delivery is stored and processed; the flows' link table keeps repeats harmless.
    """
    check_size(None, body)
    integration = find_integration(engine, key)
    assert integration.id is not None
    address = client_address(integration, remote_addr, headers)
    check_ip_allowlist(integration, address, headers)
    if not secret:
        raise IntakeError(
            401, "missing_secret", "send the shared secret in the X-Webhook-Secret header (or ?secret=)"
        )
    if not matches_any(secret, webhook_secrets.accepted(vault, integration, "netsuite_secret")):
        raise IntakeError(
            401,
            "bad_secret",
            "the shared secret does not match this integration's; copy it again from the app",
        )
    event = _parse_netsuite(body)
    flows = flows_for_record(event["recordType"], list(integration.flows))
    payload = {"record_type": event["recordType"], "id": event["id"], "event_type": event["eventType"]}
    return store_event(
        engine,
        integration_id=integration.id,
        system="netsuite",
        delivery_key=uuid.uuid4().hex,
        body=body,
        headers=headers,
        remote_addr=address,
        # Deletions are kept as events but never synchronised (design.md §1).
        jobs=[(flow, payload) for flow in flows] if event["eventType"] != "delete" else [],
    )


def _parse_netsuite(body: bytes) -> dict[str, str]:
    event = parse_object(body)
    record_type = event.get("recordType")
    if not isinstance(record_type, str) or not record_type:
        raise IntakeError(400, "invalid_event", "field 'recordType' is required (e.g. \"customer\")")
    record_type = record_type.lower()
    if record_type not in NETSUITE_RECORD_TYPES:
        raise IntakeError(
            400,
            "invalid_event",
            f"field 'recordType' is {record_type!r}; expected one of {', '.join(sorted(NETSUITE_RECORD_TYPES))}",
        )
    record_id = event.get("id")
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        record_id = str(record_id)
    if not isinstance(record_id, str) or not record_id.strip() or len(record_id) > 100:
        raise IntakeError(
            400, "invalid_event", "field 'id' must be the record's internal id (a string or number)"
        )
    event_type = str(event.get("eventType") or "edit").lower()
    if event_type not in NETSUITE_EVENT_TYPES:
        raise IntakeError(
            400,
            "invalid_event",
            f"field 'eventType' is {event_type!r}; expected one of {', '.join(sorted(NETSUITE_EVENT_TYPES))}",
        )
    return {"recordType": record_type, "id": record_id.strip(), "eventType": event_type}
