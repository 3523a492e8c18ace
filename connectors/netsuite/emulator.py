"""NetSuite REST web services emulator: OAuth 2.0 and TBA, record API, SuiteQL, User Event webhooks.

Paths, bodies and error shapes follow /work/shared/api/netsuite.md (cited as "notes §n"; the notes
cite Oracle's help pages). State lives in memory on a `NetSuiteEmulator`; `create_app` serves it.
Behaviours the notes mark UNCONFIRMED are attributes on the emulator so tests can flip them.

    POST  /services/rest/auth/oauth2/v1/token          client credentials, authorization code, refresh
    GET   /app/login/oauth2/authorize.nl               authorize step (auto-consent; emulator_auth.py)
    GET   /services/rest/record/v1/{type}/{id|eid:x}   PATCH same: update; PUT .../eid:x: upsert;
                                                       DELETE same: 204
    POST  /services/rest/record/v1/{type}              create: 204 + Location
    POST  /services/rest/query/v1/suiteql              SuiteQL (Prefer: transient; suiteql.py)

Record types: customer, vendor, contact, invoice (with its `item` sublist) and customrecord_*.
API calls authenticate with `Authorization: Bearer <token>` or TBA (`Authorization: OAuth ...`).

Hosts: the emulator answers whatever the Host header says, so the base URL is the only thing a
client changes. The real REST host lower-cases the account id and turns `_` into `-`: account
`1234567_SB1` is served at `https://1234567-sb1.suitetalk.api.netsuite.com`, while its TBA realm
stays `1234567_SB1` with `_SB1` in upper case (notes §0). The authorize step really lives on
`https://1234567-sb1.app.netsuite.com` (UNCONFIRMED, notes §1b); here it shares the base URL.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from http import HTTPStatus
from typing import Any

import httpx2
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.emulator_kit import (
    HOOK_PREFIX,
    BaseEmulator,
    EmulatorMiddleware,
    InvalidJson,
    Outbox,
    RouteKind,
    hook_routes,
    iso_utc,
    json_response,
    parse_iso,
    read_json_object,
)
from connectors.emulator_sql import SqlError
from connectors.netsuite.emulator_auth import TOKEN_PATH, NetSuiteAuth, OAuthError, auth_routes
from connectors.netsuite.suiteql import (
    INVOICE_STATUSES,
    SUITEQL_ROW_CAP,
    InvoiceError,
    PagingError,
    check_paging,
    invoice_total,
    merge_invoice,
    run_suiteql,
    status_code,
    suiteql_page,
    table_rows,
)

RECORD_PREFIX = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
SINGULAR = "application/vnd.oracle.resource+json; type=singular"
COLLECTION = "application/vnd.oracle.resource+json; type=collection"
ERROR_TYPE = "application/vnd.oracle.resource+json; type=error"
FIRST_ID = 1000
WEBHOOK_TIMEOUT = httpx2.Timeout(45.0, connect=5.0)  # seconds: N/https 5 s connect, 45 s total (notes §6)
INVALID_LOGIN = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)
NONEXISTENT = "The record instance does not exist. Provide a valid record instance ID."
ENTITY_TYPES = ("customer", "vendor", "contact")
TRANSACTION_TYPES = ("invoice",)
# Server-side casing is UNCONFIRMED (notes §3): with `case_insensitive_properties` (the default)
# property names match case-insensitively and are stored under these canonical spellings, so
# `companyname` and `companyName` are one field.
_KNOWN_FIELDS = (
    "companyName entityId firstName middleName lastName isPerson isInactive email phone altPhone fax url "
    "externalId subsidiary currency terms category parent company title comments salesRep defaultTaxReg "
    "addressBook contactList customForm entity tranId tranDate dueDate memo otherRefNum location "
    "department class postingPeriod status item"
)
KNOWN_FIELDS = _KNOWN_FIELDS.split()
READ_ONLY_FIELDS = frozenset({"id", "links", "datecreated", "createddate", "lastmodifieddate", "total"})
# Which record type a reference field points at, for the `links` of a `{links, id, refName}` object.
# The record types our User Event script is deployed on (connectors/netsuite/suitescript/INSTALL.md);
# writes to other types (the custom records the subscription flow upserts) fire no webhook.
SCRIPTED_TYPES = frozenset({"customer", "vendor", "contact", "invoice"})
REFERENCE_TYPES = {"parent": "customer", "company": "customer", "entity": "customer", "terms": "term"}
# refName of the currencies a US account starts with (ids UNCONFIRMED; notes §3 shows 1 = USD).
CURRENCIES = {"1": "USD", "2": "GBP", "3": "CAD", "4": "EUR"}
_RFC9110 = {400: "15.5.1", 401: "15.5.2", 403: "15.5.4", 404: "15.5.5", 405: "15.5.6", 500: "15.6.1"}


class RecordError(ValueError):
    """A record API request refused with a NetSuite status, error code and detail."""

    def __init__(self, status: int, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.path = status, code, detail, path

    def response(self) -> Response:
        extra = {"errorPath": self.path} if self.path else {}
        return ns_error(self.status, self.code, self.detail, **extra)


@dataclass
class StoredRecord:
    id: str
    fields: dict[str, Any]
    created: float  # epoch seconds
    modified: float  # epoch seconds


def ns_error(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None, **extra: str
) -> Response:
    """NetSuite's error body {type, title, status, o:errorDetails[{detail, o:errorCode, o:...}]}.

    Shape per notes §5 (ORA:section_156570709583); `extra` adds o:errorPath, o:errorHeader, ....
    """
    section = _RFC9110.get(status)
    kind = f"https://www.rfc-editor.org/rfc/rfc9110.html#section-{section}" if section else "about:blank"
    if status == 429:
        kind = "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"
    item = {"detail": detail, "o:errorCode": code, **{f"o:{k}": v for k, v in extra.items()}}
    body = {"type": kind, "title": HTTPStatus(status).phrase, "status": status, "o:errorDetails": [item]}
    return json_response(body, status, headers, media_type=ERROR_TYPE)


class NetSuiteEmulator(NetSuiteAuth, BaseEmulator):
    """One NetSuite account in memory; see the module docstring for the routes it answers."""

    def __init__(
        self,
        account_id: str = "1234567_SB1",
        *,
        concurrency_limit: int = 5,
        company_name: str = "Honeycomb Mfg.",
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock=clock, concurrency_limit=concurrency_limit)
        self.account_id = account_id
        self._init_auth()
        # UNCONFIRMED (notes §5): whether the REST 429 carries Retry-After (seconds); None sends none.
        self.concurrency_retry_after: int | None = None
        # UNCONFIRMED (notes §5): the REST 429's o:errorCode; a third-party agent doc names this one.
        self.concurrency_error_code = "CONCURRENCY_LIMIT_EXCEEDED"
        # UNCONFIRMED (notes §3): PATCH success code. 204 expected; LedgerSync's stubs answer 200 with a
        # Location header, which any other status here also sends.
        self.patch_status = 204
        # UNCONFIRMED (notes §3): request property names match case-insensitively (Oracle's own create
        # example sends `companyname`), stored under KNOWN_FIELDS spellings. False: names as sent.
        self.case_insensitive_properties = True
        # UNCONFIRMED (notes §4): null columns are left out of SuiteQL rows. False: sent as JSON null.
        self.suiteql_omit_nulls = True
        # UNCONFIRMED (notes §4): the time zone SuiteQL compares and shows dates in (the user's
        # preference on a real account). TO_TIMESTAMP literals and date columns are read in it.
        self.suiteql_time_zone: tzinfo = UTC
        # UNCONFIRMED (notes §4): third parties say offset must be a multiple of limit.
        self.require_offset_multiple_of_limit = False
        # UNCONFIRMED (notes §4): default date output follows user preferences, e.g. "5/2/2024".
        self.suiteql_date_format: Callable[[datetime], str] = lambda d: f"{d.month}/{d.day}/{d.year}"
        self.suiteql_row_cap = SUITEQL_ROW_CAP  # tests lower it instead of seeding 100,000 rows
        # UNCONFIRMED: invoice item lines show quantity and netamount negative in transactionline.
        self.suiteql_sales_lines_negative = True
        self.allow_custom_records = True  # customrecord_* types: the subscription-event flow writes them
        self.webhooks: list[tuple[str, str]] = []
        # The root subsidiary is the company (OneWorld accounts); a ping reads its name.
        self.subsidiaries: list[dict[str, Any]] = [
            {"id": 1, "name": company_name, "parent": None, "country": "US", "currency": 1, "isinactive": "F"}
        ]
        self.outbox = Outbox(WEBHOOK_TIMEOUT)
        self._records: dict[str, dict[str, StoredRecord]] = {}
        self._next_id = FIRST_ID

    @property
    def app(self) -> Starlette:
        return create_app(self)

    # Setup -------------------------------------------------------------------------------
    def add_webhook(self, url: str, secret: str) -> None:
        """Deploy 'our User Event script': POST every record create/edit to `url` with `secret`."""
        with self.lock:
            self.webhooks.append((url, secret))

    def clear_webhooks(self) -> None:
        with self.lock:
            self.webhooks.clear()

    def _clear_state(self) -> None:
        # Clients, certificates, TBA tokens and webhooks are account setup, not data: they survive.
        self._records.clear()
        self._next_id = FIRST_ID
        self.outbox.clear()

    # Middleware hooks ---------------------------------------------------------------------
    def route_kind(self, path: str) -> RouteKind:
        if path.startswith(HOOK_PREFIX):
            return RouteKind.HOOK
        if path.rstrip("/") == TOKEN_PATH:
            return RouteKind.TOKEN
        return RouteKind.API if path.startswith("/services/rest/") else RouteKind.OTHER

    def fault_response(self, status: int) -> Response:
        if status == 401:
            return ns_error(401, "INVALID_LOGIN", INVALID_LOGIN)
        if status == 429:
            return self.busy_response()
        code = {400: "USER_ERROR", 403: "INSUFFICIENT_PERMISSION", 404: "NONEXISTENT_ID"}.get(
            status, "UNEXPECTED_ERROR"
        )
        return ns_error(status, code, f"Injected failure (HTTP {status}).")

    def busy_response(self) -> Response:
        # HTTP 429 per third parties; the o:errorCode and Retry-After are UNCONFIRMED (notes §5).
        retry = self.concurrency_retry_after
        headers = {} if retry is None else {"Retry-After": str(retry)}
        message = "Concurrent request limit exceeded. Request blocked."
        return ns_error(429, self.concurrency_error_code, message, headers)

    async def login_refused(self, request: Request) -> Response | None:
        """The 401 INVALID_LOGIN for a call without valid credentials (notes §5), else None."""
        rejected = await self.check_caller(request)
        if rejected is None:
            return None
        headers = {}
        if rejected.problem and self.tba_www_authenticate:
            # UNCONFIRMED (notes §5): one third-party capture of a TBA 401 carries this header.
            headers["WWW-Authenticate"] = (
                f'OAuth realm="{self.account_id}", error="{rejected.problem}", '
                'error_description="Invalid login attempt."'
            )
        return ns_error(401, "INVALID_LOGIN", INVALID_LOGIN, headers)

    # Records (notes §3) ---------------------------------------------------------------------
    def known_type(self, record_type: str) -> bool:
        return record_type in ENTITY_TYPES + TRANSACTION_TYPES or (
            self.allow_custom_records and record_type.startswith("customrecord_")
        )

    def records(self, record_type: str) -> list[dict[str, Any]]:
        """Stored records of a type as flat dicts: fields plus id and the created/modified dates."""
        if not self.known_type(record_type):
            raise KeyError(record_type)
        with self.lock:
            return [_flat(record_type, r) for r in self._records.get(record_type, {}).values()]

    def seed(self, record_type: str, record: dict[str, Any], *, notify: bool = False) -> str:
        """Store a record without the write checks; created/lastModifiedDate (ISO) may be given.

        Invoices take `entity`, `tranDate`, `item: {"items": [{item: {id}, quantity, rate|amount}]}`
        and optionally `status` ('A' or 'Open', 'B' or 'Paid In Full', ...); lines are numbered and
        their amounts worked out as on a write. A malformed line raises `ValueError`.
        """
        if not self.known_type(record_type):
            raise KeyError(record_type)
        given = record.get("dateCreated") or record.get("createdDate")
        created = parse_iso(given) if given else self.clock()
        modified = parse_iso(record["lastModifiedDate"]) if "lastModifiedDate" in record else created
        fields = {**_defaults(record_type), **_canonical(record, self.case_insensitive_properties)}
        _derive_entity_id(record_type, fields)
        with self.lock:
            record_id = str(record.get("id") or self._take_id())
            if record_type in TRANSACTION_TYPES:
                fields = self._invoice_fields(None, fields, frozenset(), record_id, check=False)
                fields["status"] = status_code(record.get("status", "A"))
            if record_id.isdigit():  # a seeded id must never be handed out again by a create
                self._next_id = max(self._next_id, int(record_id) + 1)
            self._records.setdefault(record_type, {})[record_id] = StoredRecord(
                record_id, fields, created, modified
            )
        if notify:
            self._notify(record_type, record_id, "create")
        return record_id

    def find(self, record_type: str, key: str) -> StoredRecord | None:
        """Look a record up by internal id or by `eid:<externalId>` (notes §3)."""
        with self.lock:
            table = self._records.get(record_type, {})
            if not key.startswith("eid:"):
                return table.get(key)
            return next((r for r in table.values() if r.fields.get("externalId") == key[4:]), None)

    def write(
        self,
        record_type: str,
        key: str | None,
        body: dict[str, Any],
        *,
        upsert: bool = False,
        replace: frozenset[str] = frozenset(),
    ) -> str:
        """Create (key None), update (key) or upsert (PUT eid:key); returns the internal id.

        `replace` names sublists the body replaces whole (`?replace=item`); otherwise body lines
        with a `line` number update that line and the rest are added. Raises `RecordError` for
        validation failures and unknown ids; a refused write changes nothing.
        """
        incoming = _canonical(body, self.case_insensitive_properties)
        with self.lock:
            existing = self.find(record_type, key) if key else None
            if key and existing is None and not upsert:
                raise RecordError(404, "NONEXISTENT_ID", NONEXISTENT)
            if key and existing is None:
                incoming.setdefault("externalId", key.removeprefix("eid:"))
            record_id = existing.id if existing else str(self._next_id)
            if record_type in TRANSACTION_TYPES:
                incoming.pop("status", None)  # NetSuite sets a transaction's status, not the caller
                merged = self._invoice_fields(existing, incoming, replace, record_id, check=True)
            else:
                merged = {**(existing.fields if existing else _defaults(record_type)), **incoming}
                merged = {k: v for k, v in merged.items() if v is not None}
                _validate(record_type, merged)
                _derive_entity_id(record_type, merged)
            now = self.clock()
            if existing is not None:
                existing.fields, existing.modified = merged, now
                event = "edit"
            else:
                record_id, event = str(self._take_id()), "create"
                self._records.setdefault(record_type, {})[record_id] = StoredRecord(
                    record_id, merged, now, now
                )
        self._notify(record_type, record_id, event)
        return record_id

    def delete(self, record_type: str, key: str) -> str:
        """Delete a record by internal id or `eid:`; returns its id. RecordError 404 when missing."""
        with self.lock:
            found = self.find(record_type, key)
            if found is None:
                raise RecordError(404, "NONEXISTENT_ID", NONEXISTENT)
            del self._records[record_type][found.id]
        self._notify(record_type, found.id, "delete")
        return found.id

    def _invoice_fields(
        self,
        existing: StoredRecord | None,
        incoming: dict[str, Any],
        replace: frozenset[str],
        record_id: str,
        *,
        check: bool,
    ) -> dict[str, Any]:
        today = datetime.fromtimestamp(self.clock(), tz=UTC).strftime("%Y-%m-%d")
        try:
            merged = merge_invoice(existing.fields if existing else None, incoming, "item" in replace, today)
        except InvoiceError as exc:
            raise RecordError(*exc.args) from exc
        merged.setdefault("tranId", f"INV{record_id}")
        entity_id = str(merged["entity"]["id"])
        if check and self.find("customer", entity_id) is None:
            # NetSuite checks references; the exact wording is UNCONFIRMED.
            raise RecordError(400, "USER_ERROR", f"Invalid entity reference key {entity_id}.", "entity")
        return merged

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def render(self, record_type: str, record: StoredRecord, base: str, expand: bool) -> dict[str, Any]:
        """A record as the record API returns it: flat fields, references as {links, id, refName}."""
        href = f"{base}{RECORD_PREFIX}/{record_type}/{record.id}"
        out: dict[str, Any] = {"links": [{"rel": "self", "href": href}]}
        for name, value in _flat(record_type, record).items():
            if isinstance(value, dict) and "items" in value:
                # Sublists come back link-only unless expandSubResources=true (notes §3).
                links = [{"rel": "self", "href": f"{href}/{name}"}]
                lines = value["items"]
                if record_type in TRANSACTION_TYPES:
                    lines = [self._render_line(line, base) for line in lines]
                out[name] = {"links": links, "items": lines} if expand else {"links": links}
            elif name == "status" and record_type in TRANSACTION_TYPES:
                # UNCONFIRMED: REST shows a transaction status as {id, refName}, both the name.
                label = INVOICE_STATUSES.get(str(value), str(value))
                out[name] = {"id": label, "refName": label}
            elif isinstance(value, dict) and "id" in value:
                out[name] = self._reference(name, value, base)
            else:
                out[name] = value
        return out

    def _render_line(self, line: dict[str, Any], base: str) -> dict[str, Any]:
        out: dict[str, Any] = {"links": []}
        for name, value in line.items():
            out[name] = (
                self._reference(name, value, base) if isinstance(value, dict) and "id" in value else value
            )
        return out

    def _reference(self, name: str, value: dict[str, Any], base: str) -> dict[str, Any]:
        target, ref_id = REFERENCE_TYPES.get(name, name.lower()), str(value["id"])
        found = self.find(target, ref_id) if target in ENTITY_TYPES else None
        known = CURRENCIES.get(ref_id) if target == "currency" else None
        ref_name = value.get("refName") or (found.fields.get("entityId") if found else known) or ref_id
        links = [{"rel": "self", "href": f"{base}{RECORD_PREFIX}/{target}/{ref_id}"}]
        return {"links": links, "id": ref_id, "refName": ref_name}

    # SuiteQL (notes §4) -------------------------------------------------------------------
    def suiteql(self, sql: str) -> list[dict[str, Any]]:
        """Run a query (see connectors/netsuite/suiteql.py): rendered rows, at most `suiteql_row_cap`."""

        def stored(record_type: str) -> list[StoredRecord]:
            return list(self._records.get(record_type, {}).values())

        def rows_of(table: str) -> list[dict[str, Any]]:
            with self.lock:
                if table == "subsidiary":
                    return [{k: v for k, v in row.items() if v is not None} for row in self.subsidiaries]
                return table_rows(table, stored, self.suiteql_sales_lines_negative, self.suiteql_time_zone)

        rows = run_suiteql(
            sql,
            rows_of,
            self.suiteql_date_format,
            omit_nulls=self.suiteql_omit_nulls,
            tz=self.suiteql_time_zone,
        )
        return rows[: self.suiteql_row_cap]  # the result of one query stops at 100,000 rows (notes §4)

    # Webhooks: our User Event script's contract (notes §6) --------------------------------------
    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """Webhook attempts so far: {url, body, headers, status} or {..., error}."""
        return self.outbox.deliveries

    @property
    def pending_deliveries(self) -> int:
        return self.outbox.pending

    async def drain(self) -> None:
        """Wait until every scheduled webhook delivery has finished (works from any event loop)."""
        await self.outbox.drain()

    def _notify(self, record_type: str, record_id: str, event: str) -> None:
        # afterSubmit fires once and N/https does not retry, so neither does the outbox (notes §6).
        if record_type not in SCRIPTED_TYPES:
            return  # the User Event script is deployed on these record types only
        with self.lock:
            hooks = list(self.webhooks)
        # Exactly the payload of connectors/netsuite/suitescript/ml_connector_user_event.js: REST
        # writes run as create, edit or delete, which the script sends as both eventType and the
        # raw contextType; occurredAt is JavaScript's Date.toISOString() (milliseconds, Z).
        body = {"recordType": record_type, "id": record_id, "eventType": event, "contextType": event}
        body.update(accountId=self.account_id, occurredAt=js_iso(self.clock()))
        for url, secret in hooks:
            headers = {"X-Webhook-Secret": secret, "Content-Type": "application/json"}
            self.outbox.schedule(url, body, headers, self.loop)


# ---------------------------------------------------------------------------------------------
# Record helpers


def js_iso(ts: float) -> str:
    """Epoch seconds as JavaScript's `new Date(ms).toISOString()`: `2024-05-02T10:11:12.345Z`."""
    millis = round(ts * 1000)  # Date keeps whole milliseconds
    moment = datetime.fromtimestamp(millis // 1000, tz=UTC)
    return f"{moment.strftime('%Y-%m-%dT%H:%M:%S')}.{millis % 1000:03d}Z"


def _canonical(body: dict[str, Any], fold_case: bool) -> dict[str, Any]:
    by_lower = {name.lower(): name for name in KNOWN_FIELDS} if fold_case else {}
    return {by_lower.get(k.lower(), k): v for k, v in body.items() if k.lower() not in READ_ONLY_FIELDS}


def _defaults(record_type: str) -> dict[str, Any]:
    if record_type in ("customer", "vendor"):
        return {"isPerson": False, "isInactive": False}
    return {"isInactive": False} if record_type == "contact" else {}


def _validate(record_type: str, fields: dict[str, Any]) -> None:
    """Mandatory fields: a company name, or first and last name for a person (contacts: a name)."""
    missing: list[tuple[str, str]] = []
    if record_type in ("customer", "vendor") and fields.get("isPerson"):
        missing = [
            (f, label)
            for f, label in (("firstName", "First Name"), ("lastName", "Last Name"))
            if not fields.get(f)
        ]
    elif record_type in ("customer", "vendor") and not fields.get("companyName"):
        missing = [("companyName", "Company Name")]
    elif record_type == "contact" and not any(fields.get(f) for f in ("firstName", "lastName", "entityId")):
        missing = [("lastName", "Last Name")]
    if missing:
        labels = ", ".join(label for _, label in missing)
        raise RecordError(400, "USER_ERROR", f"Please enter value(s) for: {labels}.", missing[0][0])


def _derive_entity_id(record_type: str, fields: dict[str, Any]) -> None:
    # NetSuite fills the entity name in when it is not given.
    if record_type in ENTITY_TYPES and not fields.get("entityId"):
        person = " ".join(str(fields[f]) for f in ("firstName", "lastName") if fields.get(f))
        fields["entityId"] = fields.get("companyName") or person


def _flat(record_type: str, record: StoredRecord) -> dict[str, Any]:
    if record_type in TRANSACTION_TYPES:
        # Transactions say createdDate where entities say dateCreated; total is worked out.
        dates = {"createdDate": iso_utc(record.created), "lastModifiedDate": iso_utc(record.modified)}
        return {"id": record.id, **record.fields, "total": invoice_total(record.fields), **dates}
    dates = {"dateCreated": iso_utc(record.created), "lastModifiedDate": iso_utc(record.modified)}
    return {"id": record.id, **record.fields, **dates}


# ---------------------------------------------------------------------------------------------
# HTTP layer

Endpoint = Callable[[Request], Awaitable[Response]]


def create_app(emulator: NetSuiteEmulator) -> Starlette:
    """Serve `emulator` on NetSuite's real paths plus the shared and NetSuite `/_emulator/` hooks."""

    def guarded(handler: Endpoint) -> Endpoint:
        # Credentials, then record type; the same checks front every record and query call.
        async def wrapped(request: Request) -> Response:
            refused = await emulator.login_refused(request)
            if refused is not None:
                return refused
            record_type = request.path_params.get("type")
            if record_type is not None and not emulator.known_type(record_type):
                # The real code for an unknown record type is UNCONFIRMED; 404 stops client retries.
                return ns_error(404, "INVALID_RECORD_TYPE", f"Record type '{record_type}' does not exist.")
            try:
                return await handler(request)
            except InvalidJson as exc:
                return ns_error(400, "INVALID_CONTENT", f"Invalid JSON content: {exc}.")
            except RecordError as exc:
                return exc.response()

        return wrapped

    async def create(request: Request) -> Response:
        record_type = request.path_params["type"]
        record_id = emulator.write(record_type, None, await read_json_object(request))
        return Response(status_code=204, headers={"Location": _location(request, record_type, record_id)})

    async def item(request: Request) -> Response:
        record_type, key = request.path_params["type"], request.path_params["key"]
        if request.method == "DELETE":
            emulator.delete(record_type, key)
            return Response(status_code=204)
        if request.method == "GET":
            found = emulator.find(record_type, key)
            if found is None:
                return ns_error(404, "NONEXISTENT_ID", NONEXISTENT)
            expand = request.query_params.get("expandSubResources", "").lower() == "true"
            return json_response(
                emulator.render(record_type, found, _base(request), expand), media_type=SINGULAR
            )
        if request.method == "PUT" and not key.startswith("eid:"):
            return ns_error(400, "INVALID_PARAMETER", "Upsert (PUT) works only with an eid:<externalId> URL.")
        replace = frozenset(
            s.strip() for s in request.query_params.get("replace", "").split(",") if s.strip()
        )
        body = await read_json_object(request)
        record_id = emulator.write(record_type, key, body, upsert=request.method == "PUT", replace=replace)
        # The upsert says where the record is; PATCH's status is `patch_status` (UNCONFIRMED, notes §3).
        status = 204 if request.method == "PUT" else emulator.patch_status
        located = request.method == "PUT" or status != 204
        headers = {"Location": _location(request, record_type, record_id)} if located else {}
        return Response(status_code=status, headers=headers)

    async def suiteql(request: Request) -> Response:
        if "transient" not in request.headers.get("prefer", "").lower():
            message = "SuiteQL requests need the header 'Prefer: transient'."
            return ns_error(400, "INVALID_PARAMETER", message, errorHeader="Prefer")
        try:
            params = request.query_params
            limit, offset = check_paging(
                params.get("limit"),
                params.get("offset"),
                emulator.suiteql_row_cap,
                emulator.require_offset_multiple_of_limit,
            )
            body = await read_json_object(request)
            if not isinstance(body.get("q"), str):
                raise InvalidJson('the body must be {"q": "<SuiteQL>"}')
            rows = emulator.suiteql(body["q"])
        except PagingError as exc:
            return ns_error(400, "INVALID_PARAMETER", str(exc), errorQueryParam=exc.param)
        except SqlError as exc:
            detail = f"Invalid search query. Detailed unprocessed description follows. {exc}"
            return ns_error(400, "INVALID_PARAMETER", detail)
        page = suiteql_page(_base(request) + SUITEQL_PATH, rows, limit, offset)
        return json_response(page, media_type=COLLECTION)

    async def webhooks(request: Request) -> Response:
        if request.method == "DELETE":
            emulator.clear_webhooks()
            return json_response({"ok": True})
        try:
            body = await read_json_object(request)
            emulator.add_webhook(str(body["url"]), str(body["secret"]))
        except (InvalidJson, KeyError) as exc:
            return json_response({"error": f"need JSON {{url, secret}}: {exc}"}, 400)
        return json_response({"ok": True})

    async def deliveries(request: Request) -> Response:
        return json_response(list(emulator.deliveries))

    async def expire_refresh(request: Request) -> Response:
        emulator.expire_refresh_tokens()
        return json_response({"ok": True})

    routes = [
        *hook_routes(emulator),
        Route("/_emulator/webhooks", webhooks, methods=["POST", "DELETE"]),
        Route("/_emulator/deliveries", deliveries, methods=["GET"]),
        Route("/_emulator/expire-refresh-tokens", expire_refresh, methods=["POST"]),
        *auth_routes(emulator),
        Route(SUITEQL_PATH, guarded(suiteql), methods=["POST"]),
        Route(RECORD_PREFIX + "/{type}", guarded(create), methods=["POST"]),
        Route(RECORD_PREFIX + "/{type}/{key}", guarded(item), methods=["GET", "PATCH", "PUT", "DELETE"]),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(EmulatorMiddleware, emulator=emulator)])
    app.state.emulator = emulator
    return app


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/")


def _location(request: Request, record_type: str, record_id: str) -> str:
    return f"{_base(request)}{RECORD_PREFIX}/{record_type}/{record_id}"


__all__ = ["INVALID_LOGIN", "NetSuiteEmulator", "OAuthError", "RecordError", "create_app", "ns_error"]
