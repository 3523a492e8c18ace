"""Zuora REST emulator: one tenant in memory, served on Zuora's real paths (routes in emulator_routes.py).

Shapes follow /work/shared/api/zuora.md ("notes §n", citing developer.zuora.com and Zuora's generated
SDK). Behaviours the notes mark UNCONFIRMED are attributes on `ZuoraEmulator`, each with a comment.

    POST     /oauth/token                                   client credentials (form body)
    POST     /v1/accounts                                   create; Idempotency-Key honoured
    GET|PUT  /v1/accounts/{id|number}                       read (basicInfo, ...) / update
    GET      /object-query/accounts[/{key}]                 filter[]=crmid.EQ:x (or .IN:[x,y]), fields[], pageSize, cursor
    POST     /v1/action/query, /queryMore                   ZOQL: select ... from Account where ... and ...
    POST     /v1/invoices                                   standalone invoice (Draft or Posted)
    POST     /v1/invoices/bulk-post                         post up to 50 Draft invoices
    GET      /v1/invoices/{id|number}[/items]               the flat invoice / its items
    GET      /v1/transactions/invoices/accounts/{key}       an account's invoices, newest updatedDate first
    GET      /v1/subscriptions/{number|id}[/versions/{n}]   latest version (by number) or that version
    GET      /v1/subscriptions/accounts/{key}               an account's subscriptions
    GET      /v1/payments[/{id|number}]                     filters, sort, page/pageSize
    GET      /v1/transactions/payments/accounts/{key}       an account's payments with paidInvoices

Module map: emulator_accounts (accounts, Object Query, ZOQL), emulator_billing (catalog, invoices),
emulator_subscriptions (versions, callout events), emulator_payments, callouts (the signed sender),
emulator_common (error envelope, paging, Idempotency-Key), emulator_routes (HTTP and test hooks).

Python test API (each also reachable over /_emulator/... for other processes): accounts(),
invoices(), subscriptions(), payments(), catalog(), add_product_rate_plan_charge(), add_payment(),
update_payment(), create_subscription(), amend_subscription(), cancel_subscription(),
register_callout(), callouts, drain_callouts(), configure(), revoke(), hold_writes()/release_writes().
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

from connectors.emulator_kit import (
    HOOK_PREFIX,
    Admission,
    BaseEmulator,
    MinuteWindow,
    RouteKind,
    credential,
    json_response,
)
from connectors.zuora.callouts import DEFAULT_ATTEMPTS, CalloutSender
from connectors.zuora.emulator_accounts import Accounts
from connectors.zuora.emulator_billing import DEFAULT_ACCOUNTING_CODES, Catalog, Invoices
from connectors.zuora.emulator_common import INVALID, LIMIT, UNKNOWN_FIELD, IdempotencyKeys, new_id, v1_error
from connectors.zuora.emulator_payments import Payments
from connectors.zuora.emulator_routes import create_app
from connectors.zuora.emulator_subscriptions import Change, Subscriptions, create_options, event_bodies

__all__ = ["ZuoraEmulator", "create_app"]

TOKEN_PATH = "/oauth/token"
TOKEN_TTL = 3599  # seconds, as in Zuora's sample response (notes §1)
API_RATE_LIMIT = 2500  # requests per minute: API Sandbox tenant (notes §7)
TOKEN_RATE_LIMIT = 100  # token requests per minute per IP (notes §7, AUTH "100 per IP")
CONCURRENCY_LIMIT = 40  # requests in flight, default class (notes §7)
HIGH_VOLUME_CONCURRENCY_LIMIT = 200  # requests in flight, high-volume class (notes §7)
CALLOUT_INTERVAL = 0.05  # seconds between callout attempts; Zuora's is ≥30 minutes (notes §6)
AUTH_ERROR = {"success": False, "reasons": [{"code": 90000011, "message": "Authentication error"}]}
# The high-volume operations (developer.zuora.com guides/rate-limits "Concurrent request limits"):
# create account, create/preview order, create/preview/update/cancel/renew subscription.
HIGH_VOLUME = (
    ("POST", re.compile(r"/v1/accounts/?")),
    ("POST", re.compile(r"/v1/orders(/preview)?/?")),
    ("POST", re.compile(r"/v1/subscriptions(/preview)?/?")),
    ("PUT", re.compile(r"/v1/subscriptions/[^/]+(/cancel|/renew)?/?")),
)
# Concurrency-Limit-Type values: "Default" is the notes' §7; the high-volume spelling is UNCONFIRMED.
LIMIT_TYPES = {False: "Default", True: "High-volume transactions"}
SETTINGS = [
    "orders_tenant",
    "not_found_status",
    "error_http_status",
    "reject_unknown_fields",
    "reject_duplicate_invoice_numbers",
    "closed_period_end",
    "accounting_codes",
    "high_volume_concurrency_limit",
    "callout_interval",
    "rate_limit_per_minute",
    "token_rate_limit_per_minute",
    "token_ttl",
    "currencies",
    "subscription_id_reads_latest",
    "rate_limited_body",
    "token_rate_limited_body",
    "zoql_error_format",
    "zoql_error_status",
]  # what configure() and /_emulator/settings may change
ZOQL_ERROR_FORMATS = ("actions", "v1")
# ZOQL error code -> the v1 category it reads as when `zoql_error_format` is "v1" (notes §8).
ZOQL_CATEGORIES = {
    "INVALID_FIELD": UNKNOWN_FIELD,
    "MALFORMED_QUERY": INVALID,
    "INVALID_QUERY_LOCATOR": INVALID,
}


class ZuoraEmulator(BaseEmulator):
    """One Zuora tenant in memory; see the module docstring for what it answers."""

    def __init__(self, *, clock: Callable[[], float] = time.time, token_ttl: int = TOKEN_TTL) -> None:
        super().__init__(clock=clock, concurrency_limit=CONCURRENCY_LIMIT)
        self.token_ttl = token_ttl
        self.rate_limit_per_minute = API_RATE_LIMIT
        self.token_rate_limit_per_minute = TOKEN_RATE_LIMIT
        self.high_volume_concurrency_limit: int | None = HIGH_VOLUME_CONCURRENCY_LIMIT
        # UNCONFIRMED (notes §8): not found as HTTP 404 or as 200 + category 40. 404 by default.
        self.not_found_status = 404
        # Validation failures answer HTTP 200 + success:false, as the notes describe for v1 (§8).
        self.error_http_status = 200
        self.reject_unknown_fields = True
        self.currencies = {"USD", "EUR", "GBP", "CAD", "AUD", "JPY"}
        self.indexed_custom_fields: set[str] = set()  # lower-case __c names Object Query may filter on
        # UNCONFIRMED (notes §4): whether a custom invoiceNumber may repeat. Refused (category 30).
        self.reject_duplicate_invoice_numbers = True
        # UNCONFIRMED but likely (notes §4): accounting codes sent without a charge must exist in the
        # chart of accounts. None accepts any code.
        self.accounting_codes: set[str] | None = set(DEFAULT_ACCOUNTING_CODES)
        # Invoice dates up to and including this yyyy-mm-dd fall in a closed period (notes §4).
        self.closed_period_end: str | None = None
        # Orders tenants raise Order Processed / Order Action Processed instead of the Billing
        # events 1210/1310 (notes §6); which one a tenant is, is tenant configuration.
        self.orders_tenant = False
        # UNCONFIRMED (notes §5 say only "number or ID"): an old version's id reads that version.
        self.subscription_id_reads_latest = False
        # UNCONFIRMED (notes §7): the body of an API 429 (rate or concurrency limit). None: the v1
        # envelope with a category-70 ("limit") code; a dict: that JSON as it is.
        self.rate_limited_body: dict[str, Any] | None = None
        # UNCONFIRMED: the token endpoint's 429 body; its X-RateLimit-*-minute headers are an API
        # gateway's, so the gateway's body is the guess.
        self.token_rate_limited_body: dict[str, Any] = {"message": "API rate limit exceeded"}
        # UNCONFIRMED (notes §8): ZOQL errors. "actions": the Actions error schema {code, message};
        # "v1": the v1 envelope {success:false, reasons[{code, message}]}. Sent with zoql_error_status.
        self.zoql_error_format = "actions"
        self.zoql_error_status = 400
        self.tenant_id = "19"  # as in the token scope `tenant.19` of Zuora's sample (notes §1)
        self.user_id = new_id()  # createdById/postedBy of what the API creates
        self.clients: dict[str, str] = {}
        self.account_store = Accounts(self)
        self.catalog_store = Catalog(self)
        self.invoice_store = Invoices(self)
        self.subscription_store = Subscriptions(self)
        self.payment_store = Payments(self)
        self.catalog_store.seed_defaults()
        self.sender = CalloutSender(interval=CALLOUT_INTERVAL, clock=clock)
        self.idempotency = IdempotencyKeys(self.lock, clock)
        self._api_window = MinuteWindow()
        self._token_windows: dict[str, MinuteWindow] = {}
        self._high_volume_in_flight = 0
        self._writes_open = threading.Event()
        self._writes_open.set()

    @property
    def app(self) -> Starlette:
        return create_app(self)

    def register_client(self, client_id: str, client_secret: str) -> None:
        """Create an OAuth client (Settings > Administration > Manage Users > OAuth clients)."""
        with self.lock:
            self.clients[client_id] = client_secret

    def register_json(self, body: dict[str, Any]) -> None:
        self.register_client(str(body["client_id"]), str(body["client_secret"]))

    def revoke(self, client_id: str | None = None) -> dict[str, int]:
        """Delete an OAuth client (every client when None), as an administrator does under Manage
        Users > OAuth clients: the token endpoint then answers it 401 `invalid_client`, like any
        unknown client, and its access tokens answer 401 with the 90000011 body. KeyError for an
        unknown client id; `register_client` creates it again."""
        with self.lock:
            if client_id is not None and client_id not in self.clients:
                raise KeyError(f"no OAuth client {client_id!r} is registered")
            gone = [c for c in self.clients if client_id is None or c == client_id]
            for name in gone:
                del self.clients[name]
        access = self.tokens.revoke(lambda t: t.subject in gone)
        return {"clients": len(gone), "access_tokens": access}

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change tenant settings by name (see SETTINGS), e.g. `configure(orders_tenant=True)`.

        Returns every setting's current value; unknown names raise ValueError and change nothing.
        """
        unknown = [name for name in settings if name not in SETTINGS]
        if unknown:
            raise ValueError(f"unknown settings: {', '.join(unknown)} (known: {', '.join(SETTINGS)})")
        if "currencies" in settings and not settings["currencies"]:
            raise ValueError("a tenant needs at least one active currency")
        if settings.get("zoql_error_format", ZOQL_ERROR_FORMATS[0]) not in ZOQL_ERROR_FORMATS:
            raise ValueError(f"zoql_error_format is one of {', '.join(ZOQL_ERROR_FORMATS)}")
        for name, value in settings.items():
            if name in ("accounting_codes", "currencies") and value is not None:
                value = set(value)
            setattr(self, name, value)
        return {name: sorted(v) if isinstance(v := getattr(self, name), set) else v for name in SETTINGS}

    @property
    def callout_interval(self) -> float:
        """Seconds between callout attempts (Zuora's minimum is 30 minutes; tests want milliseconds)."""
        return self.sender.interval

    @callout_interval.setter
    def callout_interval(self, seconds: float) -> None:
        self.sender.interval = float(seconds)

    def hold_writes(self) -> None:
        """Park writes after they claimed their Idempotency-Key, so a test can observe 'in flight'."""
        self._writes_open.clear()

    def release_writes(self) -> None:
        self._writes_open.set()

    async def wait_for_writes(self) -> None:
        while not self._writes_open.is_set():
            await asyncio.sleep(0.01)

    @property
    def idempotency_keys_in_flight(self) -> list[str]:
        return self.idempotency.in_flight

    def _clear_state(self) -> None:
        # The catalog, OAuth clients and callout targets are tenant setup, so they survive a reset.
        for store in (self.account_store, self.invoice_store, self.subscription_store, self.payment_store):
            store.clear()
        self.idempotency.clear()
        self.sender.clear_history()
        self._api_window = MinuteWindow()
        self._token_windows.clear()
        self._writes_open.set()

    # Middleware hooks ---------------------------------------------------------------------
    def route_kind(self, path: str) -> RouteKind:
        if path.startswith(HOOK_PREFIX):
            return RouteKind.HOOK
        if path.rstrip("/") == TOKEN_PATH:
            return RouteKind.TOKEN
        return RouteKind.API if path.startswith(("/v1/", "/object-query/")) else RouteKind.OTHER

    @staticmethod
    def is_high_volume(method: str, path: str) -> bool:
        """Whether the call counts against the high-volume concurrency class (200) or the default (40)."""
        return any(method == m and pattern.fullmatch(path) for m, pattern in HIGH_VOLUME)

    def admit(self, request: Request, kind: RouteKind) -> Admission:
        headers = {"Zuora-Request-Id": uuid.uuid4().hex}
        track = request.headers.get("zuora-track-id")
        if track:
            headers["Zuora-Track-Id"] = track
        now = self.clock()
        if kind is RouteKind.TOKEN:
            return self._admit_token(request, headers, now)
        with self.lock:
            used = self._api_window.hit(now)  # failed and refused requests count too (notes §7)
            reset = self._api_window.reset_in(now)
        limit = self.rate_limit_per_minute
        headers["RateLimit-Limit"] = f"{limit}, {limit};w=60"
        headers["RateLimit-Remaining"] = str(max(0, limit - used))
        headers["RateLimit-Reset"] = str(reset)
        headers.update(self._concurrency_headers(self.is_high_volume(request.method, request.url.path)))
        if used <= limit:
            return Admission(headers)
        message = "The request exceeded the rate limit; retry after RateLimit-Reset seconds."
        return Admission(headers, self.limited(message, {"Retry-After": str(reset)}))

    def _admit_token(self, request: Request, headers: dict[str, str], now: float) -> Admission:
        ip = request.client.host if request.client else "unknown"
        with self.lock:
            window = self._token_windows.setdefault(ip, MinuteWindow())
            used = window.hit(now)
            reset = window.reset_in(now)
        limit = self.token_rate_limit_per_minute
        headers["X-RateLimit-Limit-minute"] = str(limit)
        headers["X-RateLimit-Remaining-minute"] = str(max(0, limit - used))
        if used > limit:
            body = self.token_rate_limited_body
            return Admission(headers, json_response(body, 429, {"Retry-After": str(reset)}))
        return Admission(headers)

    def _concurrency_headers(self, high_volume: bool) -> dict[str, str]:
        if high_volume:
            limit, in_flight = self.high_volume_concurrency_limit, self._high_volume_in_flight
        else:
            limit, in_flight = self.faults.concurrency_limit, self.faults.in_flight
        if limit is None:
            return {}
        remaining = max(0, limit - in_flight - 1)
        kind = {"Concurrency-Limit-Type": LIMIT_TYPES[high_volume]}
        return {**kind, "Concurrency-Limit-Limit": str(limit), "Concurrency-Limit-Remaining": str(remaining)}

    def enter_gate(self, scope: Scope) -> bool:
        # Two pools (notes §7): high-volume operations have their own cap; the rest use `faults`'.
        if not self.is_high_volume(scope["method"], scope["path"]):
            return super().enter_gate(scope)
        with self.lock:
            limit = self.high_volume_concurrency_limit
            if limit is not None and self._high_volume_in_flight >= limit:
                return False
            self._high_volume_in_flight += 1
            return True

    def leave_gate(self, scope: Scope) -> None:
        if not self.is_high_volume(scope["method"], scope["path"]):
            super().leave_gate(scope)
            return
        with self.lock:
            self._high_volume_in_flight -= 1

    @property
    def high_volume_in_flight(self) -> int:
        with self.lock:
            return self._high_volume_in_flight

    def fault_response(self, status: int) -> Response:
        if status == 401:
            return json_response(AUTH_ERROR, 401)
        if status == 429:
            retry = str(self._api_window.reset_in(self.clock()))
            return self.limited(f"Injected failure (HTTP {status}).", {"Retry-After": retry})
        category = {400: 20, 403: 10, 404: 40, 409: 50, 503: 61}.get(status, 60)
        return v1_error(category, f"Injected failure (HTTP {status}).", status)

    def busy_response(self) -> Response:
        message = "The number of concurrent requests exceeds the concurrency limit of the tenant."
        return self.limited(message, {"Retry-After": "1"})

    def limited(self, message: str, headers: dict[str, str]) -> Response:
        """The 429 for a spent rate or concurrency limit, its body per `rate_limited_body`."""
        if self.rate_limited_body is not None:
            return json_response(self.rate_limited_body, 429, headers)
        return v1_error(LIMIT, message, 429, headers)

    def zoql_error(self, code: str, message: str) -> Response:
        """A refused ZOQL query or query locator, shaped per `zoql_error_format` (UNCONFIRMED, notes §8)."""
        if self.zoql_error_format == "v1":
            return v1_error(ZOQL_CATEGORIES.get(code, INVALID), message, self.zoql_error_status)
        return json_response({"code": code, "message": message}, self.zoql_error_status)

    # OAuth ------------------------------------------------------------------------------
    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Client-credentials grant: (status, body). Error bodies follow RFC 6749 (UNCONFIRMED, notes §1)."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type", "error_description": "use client_credentials"}
        client_id, secret = form.get("client_id", ""), form.get("client_secret", "")
        with self.lock:
            known = self.clients.get(client_id)
        if known is None or not secret or known != secret:
            return 401, {"error": "invalid_client", "error_description": "Bad client credentials"}
        issued = self.tokens.issue(client_id, self.token_ttl)
        scope = f"user.{uuid.uuid4().hex} entity.{uuid.uuid4().hex} service.echo.read tenant.{self.tenant_id}"
        body = {"access_token": issued.token, "token_type": "bearer", "expires_in": self.token_ttl}
        return 200, {**body, "scope": scope, "jti": uuid.uuid4().hex}

    def authorized(self, request: Request) -> bool:
        return self.tokens.lookup(credential(request, "Bearer")) is not None

    # State for tests ---------------------------------------------------------------------------
    def accounts(self) -> list[dict[str, Any]]:
        """Stored accounts (flat: account fields plus billToContact/soldToContact dicts)."""
        return self.account_store.all()

    def find_account(self, key: str) -> dict[str, Any] | None:
        """A copy of the account with this id or number, or None."""
        found = self.account_store.find(key)
        return None if found is None else next(a for a in self.accounts() if a["id"] == found["id"])

    def invoices(self) -> list[dict[str, Any]]:
        """Stored invoices (flat, as GET /v1/invoices/{key} shows them) each with `invoiceItems`."""
        return self.invoice_store.all()

    def subscriptions(self) -> list[dict[str, Any]]:
        """Every subscription version, oldest first, as GET /v1/subscriptions/{id} shows it."""
        return self.subscription_store.all()

    def payments(self) -> list[dict[str, Any]]:
        return self.payment_store.all()

    def catalog(self) -> list[dict[str, Any]]:
        """Product rate plan charges: id, name, productId/Name, productRatePlanId/Name, price, codes."""
        return self.catalog_store.all()

    RECORD_TYPES = ("accounts", "invoices", "subscriptions", "payments", "productRatePlanCharges", "callouts")

    def records(self, record_type: str) -> list[dict[str, Any]]:
        """`/_emulator/records/{type}` for the types in RECORD_TYPES (KeyError for others)."""
        readers: dict[str, Callable[[], list[dict[str, Any]]]] = {
            "accounts": self.accounts,
            "invoices": self.invoices,
            "subscriptions": self.subscriptions,
            "payments": self.payments,
            "productrateplancharges": self.catalog,
            "callouts": lambda: self.callouts,
        }
        name = record_type.lower()
        reader = readers.get(name) or readers.get(name + "s")
        if reader is None:
            raise KeyError(record_type)
        return reader()

    def seed(self, record_type: str, record: dict[str, Any], *, notify: bool = False) -> str:
        """Store a record without API validation and return its id.

        accounts: a create-style body. payments: see `add_payment` (camelCase keys). subscriptions:
        `{"account": key, ...create_subscription keyword names in camelCase}`; `notify` fires its
        callout. productRatePlanCharges: see `add_product_rate_plan_charge` (camelCase keys).
        """
        name = record_type.lower().rstrip("s")
        if name == "account":
            return str(self.account_store.store(record)["id"])
        if name == "payment":
            return str(self.payment_store.add(record)["id"])
        if name == "productrateplancharge":
            return str(self.catalog_store.add(record)["id"])
        if name == "subscription":
            return str(self.create_subscription(**create_options(record), notify=notify)["id"])
        raise KeyError(record_type)

    def add_product_rate_plan_charge(
        self,
        name: str,
        *,
        accounting_code: str | None = None,
        price: float = 0,
        product_name: str | None = None,
        rate_plan_name: str | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Add a charge to the catalog; `fields` are other camelCase charge fields (type, sku, uom,
        taxCode, deferredRevenueAccountingCode, ...). Invoice items naming it take its codes."""
        record = {"name": name, "accountingCode": accounting_code, "price": price, **fields}
        record.update(
            productName=product_name or name, productRatePlanName=rate_plan_name or product_name or name
        )
        return self.catalog_store.add(record)

    def add_payment(
        self, account_key: str, amount: float, *, invoices: Sequence[Mapping[str, Any]] = (), **fields: Any
    ) -> dict[str, Any]:
        """Record a payment (status Processed, type External unless `fields` say otherwise).

        `invoices=[{"invoiceId" or "invoiceNumber": ..., "amount": ...}]` applies it to posted invoices.
        """
        return self.payment_store.add(
            {"accountId": account_key, "amount": amount, "invoices": list(invoices), **fields}
        )

    def update_payment(self, key: str, **fields: Any) -> dict[str, Any]:
        """Change a payment's fields (e.g. status="Canceled"); its updatedDate moves to now."""
        return self.payment_store.update(key, fields)

    # Subscriptions and callouts -------------------------------------------------------------------
    def create_subscription(self, account_key: str, *, notify: bool = True, **options: Any) -> dict[str, Any]:
        """Create a subscription (version 1) for an Active account and fire its callout.

        Options: rate_plans=[{"productRatePlanId", "chargeOverrides": [{"productRatePlanChargeId",
        "price", "quantity"}]}] (default: the first recurring catalog plan), term_type ("TERMED" or
        "EVERGREEN"), initial_term, renewal_term (months), auto_renew, contract_effective_date,
        subscription_number, fields (notes and custom __c fields). Returns the version as GET shows it.
        """
        return self._announce(self.subscription_store.create(account_key, **options), notify)

    def amend_subscription(self, key: str, amendment_type: str, **options: Any) -> dict[str, Any]:
        """Make the next version with one amendment and fire Amendment Processed (or the Orders events).

        amendment_type: NewProduct (add_rate_plans=[...]), RemoveProduct (remove_rate_plans=[rate plan
        id or productRatePlanId]), UpdateProduct (update_charges=[{"chargeNumber" or
        "productRatePlanChargeId", "price", "quantity"}]), TermsAndConditions (fields={"termType", ...}),
        Renewal, OwnerTransfer (new_owner=account key), SuspendSubscription, ResumeSubscription.
        Also: effective_date (yyyy-mm-dd, default today), fields (notes, custom fields).
        """
        return self._announce(self.subscription_store.amend(key, amendment_type, **options), True)

    def cancel_subscription(
        self, key: str, *, cancellation_date: str | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        """Cancel as a new version (status Cancelled) and fire Amendment Processed / Cancellation."""
        change = self.subscription_store.cancel(key, cancellation_date=cancellation_date, reason=reason)
        return self._announce(change, True)

    def _announce(self, change: Change, notify: bool) -> dict[str, Any]:
        if notify:
            for body in event_bodies(change, orders_tenant=self.orders_tenant, tenant_id=self.tenant_id):
                self.sender.dispatch(body, self.loop)
        return change.version

    def register_callout(
        self,
        url: str,
        *,
        secret: str,
        events: Collection[str] | None = None,
        retries: int = DEFAULT_ATTEMPTS,
        interval: float | None = None,
    ) -> str:
        """Point a callout template at `url`, signed with `secret`; returns the registration id.

        events: None for every event, else event names ("Amendment Processed"), notification names
        ("Cancel Subscription") or category codes ("1210"). retries: attempts in all, the first
        included (Zuora's default 3, at most 5). interval: seconds between attempts (default
        `callout_interval`). Registrations survive `reset()`.
        """
        return self.sender.register(url, secret=secret, events=events, attempts=retries, interval=interval).id

    def unregister_callout(self, registration_id: str) -> bool:
        return self.sender.unregister(registration_id)

    @property
    def callouts(self) -> list[dict[str, Any]]:
        """Every callout attempt so far (see CalloutSender for the keys), oldest first."""
        return self.sender.attempts()

    @property
    def pending_callouts(self) -> int:
        return self.sender.pending

    async def drain_callouts(self) -> None:
        """Wait until every callout is delivered or given up (works from any event loop)."""
        await self.sender.drain()
