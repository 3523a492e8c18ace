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

The integration a URL names comes from a storage.intake.IntegrationCache (the runner keeps one per
app) through `with_integration`: a delivery is judged on the cached copy, a refusal is judged again on
a fresh read, and an acceptance is stored only if the integration is still that copy (storage.intake
explains why no decision rests on a stale copy). Without a cache, every delivery reads afresh.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from runner.flows import flows_for_record
from storage.crypto import Vault
from storage.intake import IntakeIntegration, IntegrationCache, IntegrationChanged, store_delivery

MAX_BODY = 1024 * 1024  # bytes; larger webhook bodies get 413
NETSUITE_RECORD_TYPES = frozenset({"customer", "vendor", "contact", "invoice"})
NETSUITE_EVENT_TYPES = frozenset({"create", "edit", "xedit", "delete", "inlineedit", "approve", "copy"})
KEPT_HEADERS = frozenset(
    {
        "content-type",
        "user-agent",
        "x-forwarded-for",
        "x-amzn-trace-id",
        "zuora-notification-id",
        "zuora-request-id",
    }
)
FRESH_TRIES = 3  # fresh reads of an integration that keeps changing while a delivery is stored


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


def with_integration(
    integrations: IntegrationCache, key: str, judge: Callable[[IntakeIntegration], Accepted]
) -> Accepted:
    """`judge(integration)` for the integration under `key`, or 404 when there is none.

    `judge` checks the delivery against the integration and stores it (raising IntakeError when it
    refuses, IntegrationChanged when the integration changed before the delivery could be stored). It
    runs first on the cached copy; a refusal or a change on that copy is judged again on a fresh read,
    so what the app saved a moment ago (a new secret, a wider allowlist, a deleted integration) holds
    for this delivery. A refusal whose fresh read is the same integration stands without a second
    judgement.
    """
    cached = integrations.cached(key)
    if cached is not None:
        try:
            return judge(cached)
        except IntakeError as refusal:
            fresh = integrations.fresh(key)
            if fresh is not None and fresh.stamp == cached.stamp:
                raise refusal from None
        except IntegrationChanged:
            fresh = integrations.fresh(key)
    else:
        fresh = integrations.fresh(key)
    for _ in range(FRESH_TRIES):
        if fresh is None:
            raise unknown_integration(key)
        try:
            return judge(fresh)
        except IntegrationChanged as changed:
            judged_on, fresh = fresh, integrations.fresh(key)
            if fresh is not None and fresh.stamp == judged_on.stamp and changed.__cause__ is not None:
                raise changed.__cause__ from None  # not a change: the database refused the rows themselves
    raise RuntimeError(f"the integration under {key!r} kept changing while a delivery was being stored")


def unknown_integration(key: str) -> IntakeError:
    return IntakeError(
        404, "unknown_integration", f"no integration is registered under {key!r}; check the URL"
    )


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
    found = headers.get(wanted)
    if found is not None:
        return found
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def kept_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers worth keeping with an event; credentials and signatures are never among them."""
    return {k.lower(): v for k, v in headers.items() if k.lower() in KEPT_HEADERS}


def store_event(
    engine: Engine,
    integration: IntakeIntegration,
    *,
    system: str,
    delivery_key: str,
    body: bytes | str,
    headers: Mapping[str, str],
    remote_addr: str,
    jobs: Sequence[tuple[str, dict[str, Any]]],
) -> Accepted:
    """Commit the event and its jobs (flow, payload) in one transaction, once per delivery key.

    A delivery key already stored for this integration and system is a redelivery: nothing is added
    and the first copy is reported as a duplicate; two copies arriving at once are settled by the
    unique constraint on (integration_id, system, delivery_key) (storage.intake.store_delivery).
    Raises IntegrationChanged, having stored nothing, when `integration` is no longer current.
    """
    stored = store_delivery(
        engine,
        integration,
        system=system,
        delivery_key=delivery_key,
        body=body if isinstance(body, str) else body.decode("utf-8"),
        headers=kept_headers(headers),
        remote_addr=remote_addr,
        jobs=jobs,
    )
    return Accepted(event_id=stored.event_id, job_ids=stored.job_ids, duplicate=stored.duplicate)


# Where a request came from -------------------------------------------------------------------------


def client_address(integration: IntakeIntegration, peer: str, headers: Mapping[str, str]) -> str:
    """The address a delivery came from: the socket peer, or, when the integration's settings say
    `trust_forwarded_for` (the runner sits behind a proxy the operator controls), the left-most
    X-Forwarded-For address. The proxy must then set that header itself, not pass on the sender's."""
    if integration.settings.get("trust_forwarded_for") is not True:
        return peer
    forwarded = header(headers, "x-forwarded-for")
    return _strip_port(forwarded.split(",")[0].strip()) if forwarded else peer


def check_ip_allowlist(integration: IntakeIntegration, address: str, headers: Mapping[str, str]) -> None:
    """Refuse (403) an address outside `settings["ip_allowlist"]` (CIDRs, IPv4 or IPv6).

    An empty or missing list allows everyone. Entries that are not networks match nothing (fail
    closed) and are named in the refusal so the operator sees the typo.
    """
    entries = integration.settings.get("ip_allowlist") or []
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
    trusted = integration.settings.get("trust_forwarded_for") is True
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
    integrations: IntegrationCache | None = None,
) -> Accepted:
    """Accept an event from our NetSuite User Event script; raises IntakeError when refused.

    Order: size, integration, IP allowlist, shared secret (current, or the previous one during its
    rotation grace period, see storage.webhook_secrets), then the body. NetSuite sends no delivery id,
    so every delivery is stored and processed; the flows' link table keeps repeats harmless.
    `integrations` is the runner's cache (see `with_integration`); without it the integration is read
    afresh.
    """
    check_size(None, body)

    def judge(integration: IntakeIntegration) -> Accepted:
        address = client_address(integration, remote_addr, headers)
        check_ip_allowlist(integration, address, headers)
        if not secret:
            raise IntakeError(
                401, "missing_secret", "send the shared secret in the X-Webhook-Secret header (or ?secret=)"
            )
        if not matches_any(secret, integration.accepted_secrets("netsuite_secret")):
            raise IntakeError(
                401,
                "bad_secret",
                "the shared secret does not match this integration's; copy it again from the app",
            )
        event = _parse_netsuite(body)
        record_type = event["recordType"]
        # Deletions are kept as events but never synchronised (design.md §1).
        flows = (
            integration.flows_for(
                f"netsuite:{record_type}", lambda enabled: flows_for_record(record_type, enabled)
            )
            if event["eventType"] != "delete"
            else []
        )
        payload = {"record_type": record_type, "id": event["id"], "event_type": event["eventType"]}
        return store_event(
            engine,
            integration,
            system="netsuite",
            delivery_key=uuid.uuid4().hex,
            body=body,
            headers=headers,
            remote_addr=address,
            jobs=[(flow, payload) for flow in flows],
        )

    return with_integration(integrations or IntegrationCache(engine, vault), key, judge)


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
