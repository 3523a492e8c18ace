"""The webhook endpoints: thin HTTP edges around the intake functions of runner.intake*.

    POST /webhooks/netsuite/{integration}   our User Event script      202 accepted
    POST /webhooks/zuora/{integration}      a Zuora callout            200 accepted or duplicate
    POST /webhooks/zoho/{integration}       a Zoho channel notification 200 accepted or duplicate

Each handler reads the body (refusing more than MAX_BODY without reading it all), runs the intake
function in a worker thread (it talks to the database), and turns the outcome into JSON:
`{"accepted": true, "duplicate": bool, "event_id": n, "jobs": [...]}`, or `{"error", "message"}` with
the IntakeError's status. Every outcome is counted in `mlc_webhook_events_total{system, verdict}`, the
verdict being "accepted", "duplicate", the error code, or "error" when the event could not be stored:
that answers 503, so the sender tries again rather than believing an event was kept that was not
(design.md invariant 1). Every outcome is logged too, never with a secret: refusals at WARNING and
failures at ERROR, which is what an operator acts on; acceptances only at DEBUG, because at webhook
rates a line each would bury those (and cost a good share of an acceptance's CPU), and the counter and
the stored events already say what came in.

The routes share one storage.intake.IntegrationCache, so a delivery does not read its integration
(and decrypt its secrets) each time; runner.intake.with_integration says why that never lets a stale
secret, allowlist or integration decide a delivery.

A 503 is for the runner's troubles only, never for what a sender wrote (tests/reliability/test_bad_input.py
fuzzes this). So this edge also refuses, as 4xx, what would otherwise fail below the intake's checks:
an integration key no integration can have (404, before any query), JSON nested too deep or with a
number too long for Python's parser (400 malformed_json), and values the database cannot keep, such as
a NUL character in text or a key too long for its column (400 unstorable_value; the transaction
rolled back, so nothing was half-stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from anyio import to_thread
from prometheus_client import Counter
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from runner.intake import MAX_BODY, Accepted, IntakeError, accept_netsuite, body_too_large, check_size
from runner.intake_zoho import accept_zoho
from runner.intake_zuora import NOTIFICATION_HEADER, SIGNATURE_HEADER, accept_zuora
from storage.crypto import Vault
from storage.intake import IntegrationCache

log = logging.getLogger("ml_connector.webhooks")

Intake = Callable[[bytes], Accepted]  # an intake function with everything but the body bound
MAX_KEY_LENGTH = 64  # characters in an integration key (storage.models.IntegrationBase.key)


async def read_body(request: Request) -> bytes:
    """The request body, refusing more than MAX_BODY bytes without reading them all."""
    check_size(request.headers.get("content-length"))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise body_too_large(size)
        chunks.append(chunk)
    return b"".join(chunks)


def webhook_routes(*, engine: Engine, vault: Vault, events: Counter, wake: Callable[[], None]) -> list[Route]:
    """The three webhook routes. `events` is the mlc_webhook_events_total counter (labels system,
    verdict); `wake` tells the worker pool that jobs were queued (called on the event loop)."""
    integrations = IntegrationCache(engine, vault)
    counted = {
        (system, verdict): events.labels(system, verdict)
        for system in ("netsuite", "zuora", "zoho")
        for verdict in ("accepted", "duplicate")
    }

    async def receive(
        request: Request, system: str, ok_status: int, intake: Intake, extra: dict[str, Any] | None = None
    ) -> Response:
        key = request.path_params["integration"]
        peer = request.client.host if request.client else "?"
        try:
            body = await read_body(request)
            check_key(key)
            try:
                accepted = await to_thread.run_sync(intake, body)
            except (DataError, RecursionError, ValueError) as exc:
                refusal = refusal_for(exc)
                if refusal is None:
                    raise
                raise refusal from exc
        except IntakeError as exc:
            events.labels(system, exc.code).inc()
            log.warning(
                "%s webhook for %r from %s refused: %s %s: %s",
                system,
                key,
                peer,
                exc.status,
                exc.code,
                exc.message,
            )
            return JSONResponse(exc.body(), status_code=exc.status)
        except Exception:
            events.labels(system, "error").inc()
            log.exception("%s webhook for %r from %s could not be stored", system, key, peer)
            message = "the event could not be stored and was not acknowledged; send it again later"
            return JSONResponse({"error": "unavailable", "message": message}, status_code=503)
        verdict = "duplicate" if accepted.duplicate else "accepted"
        counted[system, verdict].inc()
        log.debug("%s webhook for %r %s as event %d", system, key, verdict, accepted.event_id)
        if accepted.job_ids:
            wake()
        answer = {
            "accepted": True,
            "duplicate": accepted.duplicate,
            "event_id": accepted.event_id,
            "jobs": accepted.job_ids,
            **(extra or {}),
        }
        return JSONResponse(answer, status_code=ok_status)

    async def netsuite(request: Request) -> Response:
        key, headers, peer = _basics(request)
        secret = request.headers.get("x-webhook-secret") or request.query_params.get("secret")
        return await receive(
            request,
            "netsuite",
            202,
            lambda body: accept_netsuite(
                engine,
                vault,
                key=key,
                secret=secret,
                body=body,
                headers=headers,
                remote_addr=peer,
                integrations=integrations,
            ),
        )

    async def zuora(request: Request) -> Response:
        key, headers, peer = _basics(request)
        signature = headers.get(SIGNATURE_HEADER.lower())
        notification_id = headers.get(NOTIFICATION_HEADER.lower())
        return await receive(
            request,
            "zuora",
            200,  # Zuora counts only 200 as delivered (shared/api/zuora.md §6)
            lambda body: accept_zuora(
                engine,
                vault,
                key=key,
                signature=signature,
                notification_id=notification_id,
                body=body,
                headers=headers,
                remote_addr=peer,
                integrations=integrations,
            ),
            # Tenants may have Zuora "confirm success by parsing response content": {"success": true}.
            extra={"success": True},
        )

    async def zoho(request: Request) -> Response:
        key, headers, peer = _basics(request)
        return await receive(
            request,
            "zoho",
            200,  # Zoho documents no expected status; 200 is success to every sender
            lambda body: accept_zoho(
                engine,
                vault,
                key=key,
                body=body,
                headers=headers,
                remote_addr=peer,
                integrations=integrations,
            ),
        )

    return [
        Route("/webhooks/netsuite/{integration}", netsuite, methods=["POST"]),
        Route("/webhooks/zuora/{integration}", zuora, methods=["POST"]),
        Route("/webhooks/zoho/{integration}", zoho, methods=["POST"]),
    ]


def check_key(key: str) -> None:
    """Refuse (404) a URL key no integration can have: longer than the column or holding control
    characters (PostgreSQL cannot even compare text with a NUL in it), without asking the database."""
    if len(key) > MAX_KEY_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in key):
        more = "…" if len(key) > MAX_KEY_LENGTH else ""
        raise IntakeError(
            404,
            "unknown_integration",
            f"no integration is registered under {key[:MAX_KEY_LENGTH]!r}{more}; check the URL (keys are "
            f"at most {MAX_KEY_LENGTH} printable characters)",
        )


def refusal_for(exc: Exception) -> IntakeError | None:
    """The 400 for a failure the sender's data caused below the intake's own checks; None when `exc`
    is not one (then it is the runner's trouble: 503)."""
    if isinstance(exc, RecursionError):
        return IntakeError(400, "malformed_json", "the body nests JSON too deeply; send a flat JSON object")
    if isinstance(exc, DataError):
        return IntakeError(400, "unstorable_value", _unstorable(exc))
    if "integer string conversion" in str(exc):  # json.loads on a number of more than 4300 digits
        return IntakeError(400, "malformed_json", "a number in the body has too many digits to read")
    return None


def _unstorable(exc: DataError) -> str:
    """What the database refused, in words that name the fix and repeat none of the data."""
    reason = str(exc.orig).lower()
    if "0x00" in reason or "\\u0000" in reason:
        what = "text must not contain NUL characters (\\u0000)"
    elif "too long" in reason:
        what = (
            "a value is longer than the field it is kept in (ids and keys are at most 50 to 200 characters)"
        )
    elif "out of range" in reason:
        what = "a number is out of range"
    else:
        what = "a value has a form the database does not accept"
    return f"the event cannot be stored as sent: {what}; correct it and send again"


def _basics(request: Request) -> tuple[str, dict[str, str], str]:
    """The integration key, the headers (lower-case names) and the socket peer's address."""
    headers: dict[str, str] = {}
    for name, value in request.headers.raw:  # as dict(request.headers), without its scan per name
        headers.setdefault(name.decode("latin-1"), value.decode("latin-1"))
    return request.path_params["integration"], headers, request.client.host if request.client else ""
