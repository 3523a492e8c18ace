"""The runner's OpenAPI description, written as data and served at `/openapi.json`.

Each route the app serves has an entry in `OPERATIONS` (path → method → operation); `describe()` builds
the document from the app's own route list and fails when a route has no entry, so the description
cannot silently fall behind the code. The webhook operations document exactly what runner.intake*
checks and in which order, and every refusal the runner gives:

    {"error": "<stable code>", "message": "<what to fix, never a secret>"}

with the codes each status can carry listed per operation (`ERROR_CODES`), so a client, a tenant's
admin or a fuzzer (tests/reliability/test_schemathesis.py) can tell a documented refusal from a bug.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from starlette.routing import BaseRoute, Route

from runner.intake import MAX_BODY, NETSUITE_EVENT_TYPES, NETSUITE_RECORD_TYPES
from runner.intake_zoho import MAX_ID_LENGTH, MAX_MODULE_LENGTH
from runner.intake_zoho import OPERATIONS as ZOHO_OPERATIONS
from runner.intake_zuora import NOTIFICATION_HEADER, SIGNATURE_HEADER
from runner.webhooks import MAX_KEY_LENGTH

OPENAPI_VERSION = "3.1.0"
JSON = "application/json"

# Refusals every webhook can give, by status; each operation adds its own (see `_webhook`).
COMMON_ERRORS: dict[int, list[str]] = {
    400: ["bad_content_length", "malformed_json", "invalid_event", "unstorable_value"],
    404: ["unknown_integration", "not_found"],
    413: ["body_too_large"],
    503: ["unavailable"],
}
ERROR_CODES: dict[str, dict[int, list[str]]] = {
    "netsuite": {**COMMON_ERRORS, 401: ["missing_secret", "bad_secret"], 403: ["ip_not_allowed"]},
    "zuora": {
        **COMMON_ERRORS,
        400: [*COMMON_ERRORS[400], "missing_notification_id", "invalid_notification_id"],
        401: ["missing_signature", "bad_signature"],
    },
    "zoho": {
        **COMMON_ERRORS,
        401: ["missing_token", "unknown_channel", "bad_token"],
        410: ["channel_disabled"],
    },
}
STATUS_MEANING = {
    400: "The body or a required header is not what we document; `message` names the field.",
    401: "The credential (shared secret, HMAC signature or channel token) is missing or wrong.",
    403: "The sender's address is outside the integration's IP allowlist.",
    404: "No integration is registered under the URL's key.",
    410: "The Zoho channel is disabled in ml-connector; stop it in Zoho or re-enable it in the app.",
    413: f"The body is over {MAX_BODY} bytes (declared or actual).",
    503: "The event could not be stored and was not acknowledged: send it again later.",
}


def error_schema(codes: Iterable[str] | None = None) -> dict[str, Any]:
    """`{"error", "message"}`, the shape of every refusal; `codes` narrows `error` to those listed."""
    code: dict[str, Any] = {"type": "string", "description": "A stable code, also the metrics verdict."}
    if codes is not None:
        code["enum"] = sorted(set(codes))
    return {
        "type": "object",
        "required": ["error", "message"],
        "properties": {
            "error": code,
            "message": {"type": "string", "description": "What to fix; never repeats a secret."},
        },
        "additionalProperties": False,
    }


def _refusal(status: int, codes: Iterable[str]) -> dict[str, Any]:
    codes = list(codes)
    return {
        "description": f"{STATUS_MEANING[status]} Codes: {', '.join(codes)}.",
        "content": {JSON: {"schema": error_schema(codes)}},
    }


def _accepted(extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "accepted": {"const": True},
        "duplicate": {"type": "boolean", "description": "A redelivery: nothing new was stored."},
        "event_id": {"type": "integer", "description": "The stored event (the first copy's)."},
        "jobs": {"type": "array", "items": {"type": "integer"}, "description": "Jobs queued for it."},
        **(extra or {}),
    }
    return {
        "type": "object",
        "required": list(properties),
        "properties": properties,
        "additionalProperties": False,
    }


INTEGRATION = {
    "name": "integration",
    "in": "path",
    "required": True,
    "description": "The integration's key, as the app shows it in the webhook URL.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH},
}
NULLABLE_TEXT = {"type": ["string", "null"]}
RECORD_ID = {
    "oneOf": [{"type": "string", "minLength": 1, "maxLength": 100}, {"type": "integer"}],
    "description": "The record's internal id.",
}

NETSUITE_EVENT = {
    "type": "object",
    "description": "What our User Event script (connectors/netsuite/suitescript) POSTs after a save.",
    "required": ["recordType", "id"],
    "properties": {
        "recordType": {"type": "string", "enum": sorted(NETSUITE_RECORD_TYPES)},
        "id": RECORD_ID,
        "eventType": {"type": "string", "enum": sorted(NETSUITE_EVENT_TYPES), "default": "edit"},
    },
    "additionalProperties": True,
}
ZUORA_CALLOUT = {
    "type": "object",
    "description": "The callout template body our setup guide has each tenant configure "
    "(connectors/zuora/callouts.py); subscription events must name the subscription.",
    "required": ["event"],
    "properties": {
        "event": {"type": "string", "minLength": 1, "examples": ["Subscription Created"]},
        "eventCategory": {"type": ["integer", "null"]},
        "notification": NULLABLE_TEXT,
        "tenantId": NULLABLE_TEXT,
        "accountId": NULLABLE_TEXT,
        "accountNumber": NULLABLE_TEXT,
        "subscriptionId": NULLABLE_TEXT,
        "subscriptionNumber": NULLABLE_TEXT,
        "version": {"type": ["integer", "null"], "minimum": 1},
        "subscriptionStatus": NULLABLE_TEXT,
        "effectiveDate": NULLABLE_TEXT,
        "amendmentType": NULLABLE_TEXT,
        "orderNumber": NULLABLE_TEXT,
        "orderActionType": NULLABLE_TEXT,
    },
    "additionalProperties": True,
}
ZOHO_NOTIFICATION = {
    "type": "object",
    "description": "What Zoho CRM POSTs to a notification channel's notify_url; `token` is the "
    "channel's, chosen by ml-connector when it enabled the channel.",
    "required": ["channel_id", "token", "module", "operation", "ids", "server_time"],
    "properties": {
        "channel_id": {"oneOf": [{"type": "string", "pattern": "^[0-9]{1,50}$"}, {"type": "integer"}]},
        "token": {"type": "string", "minLength": 1},
        "module": {"type": "string", "minLength": 1, "maxLength": MAX_MODULE_LENGTH},
        "operation": {"type": "string", "enum": sorted(ZOHO_OPERATIONS)},
        "ids": {
            "type": "array",
            "minItems": 1,
            "items": {
                "oneOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID_LENGTH}, {"type": "integer"}]
            },
        },
        "server_time": {"type": "integer", "minimum": 1, "description": "Epoch milliseconds."},
        "resource_uri": {"type": "string"},
        "query_params": {"type": "object"},
        "affected_fields": {"type": "array"},
    },
    "additionalProperties": True,
}


def _header(name: str, description: str, schema: dict[str, Any], *, required: bool) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": schema}


def _webhook(
    system: str,
    *,
    summary: str,
    description: str,
    parameters: list[dict[str, Any]],
    body: dict[str, Any],
    ok_status: int,
    ok: dict[str, Any],
) -> dict[str, Any]:
    responses: dict[str, Any] = {
        str(ok_status): {
            "description": "Stored (or a redelivery of a stored event).",
            "content": {JSON: {"schema": ok}},
        }
    }
    for status, codes in sorted(ERROR_CODES[system].items()):
        responses[str(status)] = _refusal(status, codes)
    return {
        "post": {
            "operationId": f"{system}_webhook",
            "tags": ["webhooks"],
            "summary": summary,
            "description": description,
            "parameters": [INTEGRATION, *parameters],
            "requestBody": {
                "required": True,
                "description": f"A JSON object of at most {MAX_BODY} bytes, read as raw bytes (signatures "
                "cover them exactly).",
                "content": {JSON: {"schema": body}},
            },
            "responses": responses,
        }
    }


OPERATIONS: dict[str, dict[str, Any]] = {
    "/webhooks/netsuite/{integration}": _webhook(
        "netsuite",
        summary="A record saved in NetSuite (our User Event script)",
        description="Checks, in order: size (413), integration (404), IP allowlist (403), shared secret "
        "(401, current or previous during its grace period), body (400). Every delivery is stored; "
        "deletions queue nothing.",
        parameters=[
            _header(
                "X-Webhook-Secret",
                "The integration's shared NetSuite secret (or send it as the `secret` query parameter).",
                {"type": "string"},
                required=False,
            ),
            {
                "name": "secret",
                "in": "query",
                "required": False,
                "description": "The shared secret, for scripts that cannot set headers.",
                "schema": {"type": "string"},
            },
        ],
        body=NETSUITE_EVENT,
        ok_status=202,
        ok=_accepted(),
    ),
    "/webhooks/zuora/{integration}": _webhook(
        "zuora",
        summary="A Zuora callout notification",
        description="Checks, in order: size (413), integration (404), HMAC-SHA256 signature over the raw "
        f"body (401), {NOTIFICATION_HEADER} (400), body (400). A notification id already stored answers "
        "200 again and stores nothing; Zuora counts only 200 as delivered.",
        parameters=[
            _header(
                SIGNATURE_HEADER,
                "sha256=<hex HMAC-SHA256 of the raw body keyed with the integration's Zuora HMAC secret>.",
                {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
                required=True,
            ),
            _header(
                NOTIFICATION_HEADER,
                "Zuora's notification id, the same on every retry: how redeliveries are recognised.",
                {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,100}$"},
                required=True,
            ),
        ],
        body=ZUORA_CALLOUT,
        ok_status=200,
        ok=_accepted({"success": {"const": True, "description": "For Zuora's 'parse response' mode."}}),
    ),
    "/webhooks/zoho/{integration}": _webhook(
        "zoho",
        summary="A Zoho CRM channel notification",
        description="Checks, in order: size (413), integration (404), channel_id and token (400/401), "
        "channel of this integration (401), token (401), channel not disabled (410), then module, "
        "operation, ids and server_time (400). An identical redelivery answers 200 and stores nothing.",
        parameters=[],
        body=ZOHO_NOTIFICATION,
        ok_status=200,
        ok=_accepted(),
    ),
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "tags": ["operations"],
            "summary": "Whether the database answers and the scheduler runs",
            "responses": {
                str(status): {
                    "description": meaning,
                    "content": {
                        JSON: {
                            "schema": {
                                "type": "object",
                                "required": ["ok", "database", "scheduler"],
                                "properties": {
                                    "ok": {"type": "boolean"},
                                    "database": {"type": "string"},
                                    "scheduler": {"type": "string", "enum": ["running", "stopped"]},
                                    "oldest_queued_job_seconds": {"type": ["number", "null"]},
                                    "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
                                },
                            }
                        }
                    },
                }
                for status, meaning in (
                    (200, "Healthy."),
                    (503, "Unhealthy: `database` or `scheduler` says why."),
                )
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": ["operations"],
            "summary": "Prometheus metrics (text exposition format)",
            "responses": {
                "200": {
                    "description": "The metrics.",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    },
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "tags": ["operations"],
            "summary": "This description",
            "responses": {
                "200": {"description": "OpenAPI 3.1.", "content": {JSON: {"schema": {"type": "object"}}}}
            },
        }
    },
}


def describe(routes: Iterable[BaseRoute], *, version: str = "1") -> dict[str, Any]:
    """The OpenAPI document for `routes` (an app's route list); raises LookupError for a route or a
    method that `OPERATIONS` does not describe."""
    paths: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route):
            continue
        described = OPERATIONS.get(route.path)
        if described is None:
            raise LookupError(f"route {route.path} has no entry in runner.openapi.OPERATIONS")
        methods = {m.lower() for m in route.methods or ()} - {"head"}
        missing = methods - described.keys()
        if missing:
            raise LookupError(f"{route.path}: {', '.join(sorted(missing))} not described in OPERATIONS")
        paths[route.path] = {method: described[method] for method in sorted(methods)}
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "ml-connector runner",
            "version": version,
            "description": "Webhook intake for NetSuite, Zuora and Zoho CRM, and the runner's health. "
            'Every refusal is a 4xx with {"error", "message"}; 503 means nothing was stored.',
        },
        "paths": paths,
        "components": {"schemas": {"Error": error_schema()}},
    }
