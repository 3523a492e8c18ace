"""Zoho CRM emulator: the accounts server and the v8 API of one org on one base URL, in memory.

Shapes follow /work/shared/api/zoho.md ("notes §n", citing Zoho's docs, its v8 OpenAPI and its Python
SDK); where the notes cite the OpenAPI, its examples (GitHub zoho/crm-oas `v8.0/*/operations/*/
examples/`) decide details ("OAS example <op>"). A client written from Zoho's documentation, Zoho's
own `zohocrmsdk8_0` included, works against it with only the base URL changed.

    POST   /oauth/v2/token                 authorization_code (self-client code) and refresh_token grants
    POST   /crm/v8/{module}[/upsert]       insert / upsert, <= 100 records, per-record results
    PUT    /crm/v8/{module}[/{id}]         update, ids in the body or in the URL
    DELETE /crm/v8/{module}[/{id}]         delete, ?ids= for several
    GET    /crm/v8/{module}[/{id}]         list (fields=, page=, per_page=, ids=, sort_*), or one record
    GET    /crm/v8/{module}/search         criteria= | email= | phone= | word=, page=, per_page=, fields=
    *      /crm/v8/actions/watch           Notification API: POST, PATCH, PUT, GET, DELETE
    GET    /crm/v8/settings/{modules,fields}, /crm/v8/users, /crm/v8/org   metadata the SDK reads

Modules: Accounts, Vendors, Contacts (connectors.zoho.emulator_records). Search: connectors.zoho.
emulator_search. Channels and deliveries:
connectors.zoho.emulator_watch. Tokens and scopes: connectors.zoho.emulator_oauth. Credits and
concurrency per edition: connectors.zoho.emulator_limits.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from connectors.emulator_kit import HOOK_PREFIX, BaseEmulator, RouteKind, credential, json_response
from connectors.zoho.emulator_limits import CREDIT_WINDOW, DEFAULT_COSTS, EDITIONS, CreditWindow
from connectors.zoho.emulator_oauth import GRANT_CODE_TTL, Client, OAuthServer, scope_allows
from connectors.zoho.emulator_records import Change, RecordStore, StoredRecord
from connectors.zoho.emulator_routes import MAX_IDS, TOKEN_PATH, create_app, zoho_error
from connectors.zoho.emulator_search import record_filter
from connectors.zoho.emulator_watch import WatchRegistry

__all__ = ["INVALID_TOKEN", "ZohoEmulator", "create_app"]

INVALID_TOKEN = {"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token", "status": "error"}


class ZohoEmulator(BaseEmulator):
    """One Zoho CRM org: accounts server, Records API, Notification API, limits, all in memory.

    `edition` picks the concurrency cap and the daily credit budget (`EDITIONS`, notes §4); `users`
    counts toward the budget the way Zoho's formula does. `clock` drives token, code, channel and
    credit expiry, so tests move time instead of waiting.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, edition: str = "professional", users: int = 1
    ) -> None:
        plan = EDITIONS[edition]
        super().__init__(clock=clock, concurrency_limit=plan.concurrency)
        self.edition = edition
        self.api_domain: str | None = None  # None: the base URL the token request came in on
        self.oauth = OAuthServer(clock, self.lock, self.tokens)
        self.store = RecordStore(clock, self.lock)
        self.watch = WatchRegistry(clock, self.lock)
        self.credits = CreditWindow(clock, plan.credits(users))
        self.credit_costs = dict(DEFAULT_COSTS)
        # UNCONFIRMED (notes §2d): `fields` is required on list GETs; the v8 OpenAPI marks it required
        # and documents REQUIRED_PARAM_MISSING for it (OAS example getRecords/400-requiredparammissing).
        self.require_fields_param = True
        # UNCONFIRMED (notes §2d): the default list order; the OAS example info says id/desc.
        self.default_sort_order = "asc"
        # UNCONFIRMED (notes §2d): at most this many ids in one `GET ?ids=` (LIMIT_EXCEEDED past it).
        self.max_ids = MAX_IDS
        # UNCONFIRMED (notes §2b): `PUT /{module}/{id}` takes exactly one record (INVALID_DATA
        # otherwise). False: every record of the body is applied to that id in turn, one result each.
        self.single_record_put_takes_one = True
        # UNCONFIRMED (notes §4): the 429 code for an exhausted credit budget (LIMIT_REACHED is the
        # other candidate) and whether a Retry-After header comes with any 429.
        self.credits_error_code = "TOO_MANY_REQUESTS"
        self.send_retry_after = False
        # Search (connectors.zoho.emulator_search). `equals` behaves like contains (search docs). The docs
        # also list ZohoSearch.securesearch.READ beside the module scope; whether Zoho enforces it for a
        # token with ZohoCRM.modules.* is UNCONFIRMED, so it is only checked when this is set. Records
        # made less than `search_index_lag` seconds ago are not found yet (the docs' indexing delay).
        self.search_equals_contains = True
        self.require_search_scope = False
        self.search_index_lag = 0.0

    @property
    def app(self) -> Starlette:
        return create_app(self)

    # Setup ---------------------------------------------------------------------------------------
    def register_client(self, client_id: str, client_secret: str, refresh_token: str | None = None) -> None:
        """A self client and (optionally) one refresh token granted to it with every scope."""
        self.oauth.register_client(client_id, client_secret, refresh_token)

    def register_json(self, body: dict[str, Any]) -> None:
        refresh_token = body.get("refresh_token")
        self.register_client(
            str(body["client_id"]),
            str(body["client_secret"]),
            None if refresh_token is None else str(refresh_token),
        )

    def revoke(self, refresh_token: str | None = None, client_id: str | None = None) -> dict[str, int]:
        """Revoke a refresh token, every one of a self client, or (neither given) all of them: a refresh
        then answers HTTP 200 `{"error": "invalid_code"}` and their access tokens 401 INVALID_TOKEN."""
        return self.oauth.revoke(refresh_token, client_id)

    def grant_code(self, client_id: str, scopes: Iterable[str] | str, ttl: float = GRANT_CODE_TTL) -> str:
        """Mint a self-client grant code (API console "Generate Code"), valid `ttl` seconds, used once.

        Exchange it at `POST /oauth/v2/token?grant_type=authorization_code&client_id=..&client_secret=..
        &code=..` for an access token and a refresh token that both carry `scopes` (a list or Zoho's
        comma-separated string, e.g. "ZohoCRM.modules.ALL,ZohoCRM.notifications.ALL").
        """
        return self.oauth.grant_code(client_id, scopes, ttl)

    @property
    def clients(self) -> dict[str, Client]:
        return self.oauth.clients

    @property
    def token_requests(self) -> int:
        return self.oauth.token_requests

    @property
    def unique_fields(self) -> dict[str, set[str]]:
        """Unique custom fields per module (upsert may match on them; duplicates are DUPLICATE_DATA)."""
        return self.store.unique_fields

    def _clear_state(self) -> None:
        self.oauth.clear()
        self.store.clear()
        self.watch.clear()
        self.credits.clear()

    # Middleware hooks ------------------------------------------------------------------------------
    def route_kind(self, path: str) -> RouteKind:
        if path.startswith(HOOK_PREFIX):
            return RouteKind.HOOK
        if path.rstrip("/") == TOKEN_PATH:
            return RouteKind.TOKEN
        return RouteKind.API if path.startswith("/crm/") else RouteKind.OTHER

    def fault_response(self, status: int) -> Response:
        if status == 401:
            return json_response(INVALID_TOKEN, 401)
        if status == 429:
            return self.busy_response()
        codes = {400: "INVALID_DATA", 403: "NO_PERMISSION", 404: "INVALID_URL_PATTERN"}
        return zoho_error(codes.get(status, "INTERNAL_ERROR"), f"injected failure (HTTP {status})", status)

    def busy_response(self) -> Response:
        # The code and body shape are OAS example getAvailableApis/429 (notes §4 has it UNCONFIRMED).
        limit = self.faults.concurrency_limit
        response = zoho_error(
            "TOO_MANY_REQUESTS", "too many requests in flight for this org", 429, limit=limit
        )
        if self.send_retry_after:
            response.headers["Retry-After"] = "1"
        return response

    # Auth, scopes, credits ---------------------------------------------------------------------------
    def token_response(self, params: dict[str, str], base_url: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint's (status, body); `api_domain` is this emulator unless set (notes §0)."""
        return self.oauth.token(params, self.api_domain or base_url)

    def auth_error(
        self, request: Request, service: str, resource: str | None, operation: str
    ) -> Response | None:
        """None when `Authorization: Zoho-oauthtoken <live token>` grants this call (notes §1c)."""
        token = credential(request, "Zoho-oauthtoken")
        if token is None:
            return zoho_error("AUTHENTICATION_FAILURE", "Authentication failed", 401)
        issued = self.tokens.lookup(token)
        if issued is None:
            return json_response(INVALID_TOKEN, 401)
        if not scope_allows(issued.claims.get("scopes"), service, resource, operation):
            # OAS example createRecords/401-oauthscopemismatch.
            return zoho_error("OAUTH_SCOPE_MISMATCH", "Unauthorized", 401)
        return None

    def extra_scope_error(self, request: Request, scope: str) -> Response | None:
        """OAUTH_SCOPE_MISMATCH when a second scope is enforced (`require_search_scope`) and not granted."""
        if not self.require_search_scope:
            return None
        token = credential(request, "Zoho-oauthtoken")
        issued = self.tokens.lookup(token) if token else None
        granted = issued.claims.get("scopes") if issued else None
        if granted is None:
            return None
        service = scope.lower().rsplit(".", 1)[0]
        if any(g.lower() in (scope.lower(), f"{service}.all") for g in granted):
            return None
        return zoho_error("OAUTH_SCOPE_MISMATCH", "Unauthorized", 401)

    def charge(self, cost: int) -> Response | None:
        """Spend `cost` API credits, or the 429 that says the 24-hour budget is spent (notes §4)."""
        wait = self.credits.charge(cost)
        if wait is None:
            return None
        details = {"limit": self.credits.budget, "window": int(CREDIT_WINDOW), "retry_after": int(wait)}
        message = "the API credits of the last 24 hours are used up"
        response = zoho_error(self.credits_error_code, message, 429, **details)
        if self.send_retry_after:
            response.headers["Retry-After"] = str(int(wait))
        return response

    @property
    def credit_budget(self) -> int:
        """Credits per rolling 24 hours (set it to test exhaustion)."""
        return self.credits.budget

    @credit_budget.setter
    def credit_budget(self, value: int) -> None:
        self.credits.budget = int(value)

    def credits_used(self) -> int:
        """Credits spent in the last 24 hours by the emulator's clock."""
        return self.credits.used()

    # Records --------------------------------------------------------------------------------------------
    def records(self, record_type: str) -> list[dict[str, Any]]:
        """Stored records of a module: fields plus id, Created_Time, Modified_Time."""
        return self.store.flat(record_type)

    def seed(self, record_type: str, record: dict[str, Any], *, notify: bool = False) -> str:
        """Store a record with no validation; returns its id. `notify=True` tells watching channels."""
        record_id, changes = self.store.seed(record_type, record)
        if notify:
            self.publish(changes)
        return record_id

    def update_record(
        self, module: str, record_id: str, fields: dict[str, Any], *, notify: bool = True
    ) -> None:
        """Edit a record as a person in the CRM would (no validation); channels hear of it by default."""
        changes = self.store.patch(module, record_id, fields)
        if notify:
            self.publish(changes)

    def delete_record(self, module: str, record_id: str, *, notify: bool = True) -> None:
        """Delete a record as a person in the CRM would; KeyError if there is no such record."""
        results, changes = self.store.delete(module, [record_id])
        if results[0]["status"] != "success":
            raise KeyError(record_id)
        if notify:
            self.publish(changes)

    def search(
        self,
        module: str,
        *,
        criteria: str | None = None,
        email: str | None = None,
        phone: str | None = None,
        word: str | None = None,
    ) -> list[StoredRecord]:
        """Records matching one of criteria, email, phone, word (that order wins, as in Zoho); unsorted.

        Raises emulator_search.SearchError for a missing parameter or a malformed criteria."""
        test = record_filter(
            module,
            criteria=criteria,
            email=email,
            phone=phone,
            word=word,
            equals_contains=self.search_equals_contains,
        )
        indexed_before = self.clock() - self.search_index_lag
        with self.lock:
            return [
                stored
                for stored in self.store.select(module, None)
                if (self.search_index_lag <= 0 or stored.created <= indexed_before)
                and test(self.store.render(module, stored))
            ]

    # Notifications ------------------------------------------------------------------------------------
    def publish(self, changes: list[Change]) -> None:
        """Offer record changes to the notification channels (delivery is asynchronous)."""
        if changes:
            self.watch.publish(changes, self.loop)

    def channels(self) -> list[dict[str, Any]]:
        """Every channel entry, one per (channel_id, module), lapsed ones too (`expired`)."""
        return self.watch.snapshot()

    @property
    def notifications(self) -> list[dict[str, Any]]:
        """Notifications sent, oldest first: {channel_id, url, body, at} (+ error if none could go)."""
        return self.watch.notifications

    @property
    def deliveries(self) -> list[dict[str, Any]]:
        """Finished delivery attempts: {url, body, headers, status} or {..., error}."""
        return self.watch.outbox.deliveries

    @property
    def pending_deliveries(self) -> int:
        return self.watch.outbox.pending

    async def drain(self) -> None:
        """Wait until every scheduled notification has been delivered (works from any event loop)."""
        await self.watch.outbox.drain()
