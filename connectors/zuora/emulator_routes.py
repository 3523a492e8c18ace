"""The Zuora emulator's HTTP layer: Zuora's real paths plus the Zuora-specific `/_emulator/` hooks.

Handlers are thin: they parse the request, call the emulator's stores and turn (status, body) pairs
into responses. Every API route needs a bearer token; writes honour Idempotency-Key on POST and PATCH
(notes §7; `idempotent`). Zuora's v1 operations emulated here are POST, PUT and GET only (account
update is PUT, notes §3), so no route takes PATCH yet; the idempotency layer keys on the method, not
the route, and its PATCH behaviour is tested on a route of the test's own.

Zuora-specific hooks (no auth; loopback test tooling), beside the shared ones of emulator_kit:

    POST   /_emulator/subscriptions                 {"account", "ratePlans", "termType", ...} -> 201 version
    POST   /_emulator/subscriptions/{key}/amend     {"amendmentType", "effectiveDate", "fields",
                                                     "addRatePlans", "removeRatePlans", "updateCharges",
                                                     "newOwner"} -> the new version
    POST   /_emulator/subscriptions/{key}/cancel    {"cancellationDate", "reason"} -> the new version
    POST   /_emulator/callouts                      {"url", "secret", "events", "retries", "interval"} -> 201 {"id"}
    GET    /_emulator/callouts                      every delivery attempt
    DELETE /_emulator/callouts                      forget every registration
    GET    /_emulator/settings, POST (JSON)         read / change tenant settings (ZuoraEmulator.configure)
    POST   /_emulator/payments                      {"accountId", "amount", "invoices", ...} -> 201 payment
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.emulator_kit import (
    EmulatorMiddleware,
    InvalidJson,
    form_or_query,
    hook_routes,
    json_response,
    read_json_object,
)
from connectors.emulator_sql import SqlError
from connectors.zuora.emulator_accounts import (
    OBJECT_QUERY_MAX_PAGE,
    OBJECT_QUERY_PAGE,
    InvalidField,
    account_envelope,
    decode_cursor,
    encode_cursor,
)
from connectors.zuora.emulator_billing import transaction_row
from connectors.zuora.emulator_common import (
    BAD_PARAMETER,
    IDEMPOTENCY_KEY_MAX,
    INVALID,
    MALFORMED,
    RULE,
    Answer,
    BadParameter,
    StoredAnswer,
    list_body,
    not_found_answer,
    page_params,
    paginate,
    v1_error,
)
from connectors.zuora.emulator_payments import PAYMENT_PAGE
from connectors.zuora.emulator_subscriptions import SUBSCRIPTION_PAGE, create_options

if TYPE_CHECKING:
    from connectors.zuora.emulator import ZuoraEmulator

Endpoint = Callable[[Request], Awaitable[Response]]
TRANSACTION_PAGE = 20  # default pageSize of the older transactions lists (notes §4)
ITEMS_PAGE = 20  # default pageSize of GET /v1/invoices/{key}/items
IDEMPOTENT_METHODS = frozenset({"POST", "PATCH"})  # "Only on POST and PATCH" (notes §7)
AUTH_ERROR = {"success": False, "reasons": [{"code": 90000011, "message": "Authentication error"}]}


def answer(pair: Answer) -> Response:
    status, body = pair
    return json_response(body, status)


def idempotent(emulator: ZuoraEmulator, handler: Endpoint) -> Endpoint:
    """Wrap a write route in Zuora's Idempotency-Key rules (notes §7), whatever its method.

    POST and PATCH with the header: the first answer (status, headers, body; success or failure) is
    replayed for 24 h, a clash while it is in flight is 409, the key reused for another method, path
    or body is 422. Other methods ignore the header ("Only on POST and PATCH"). Every write waits while
    `hold_writes` is on, so a test can hold a call in flight.
    """

    async def wrapped(request: Request) -> Response:
        key = request.headers.get("idempotency-key")
        if key is None or request.method not in IDEMPOTENT_METHODS:
            if request.method != "GET":
                await emulator.wait_for_writes()
            return await handler(request)
        if len(key) > IDEMPOTENCY_KEY_MAX:
            return v1_error(INVALID, f"Idempotency-Key is longer than {IDEMPOTENCY_KEY_MAX} characters.", 400)
        digest = hashlib.sha256(await request.body()).hexdigest()
        claim = emulator.idempotency.claim(key, (request.method, request.url.path, digest))
        if claim == "mismatch":
            return v1_error(RULE, "This Idempotency-Key was used for a different request.", 422)
        if claim == "conflict":
            return v1_error(50, "A request with this Idempotency-Key is still in progress.", 409)
        if isinstance(claim, StoredAnswer):
            return Response(claim.body, claim.status, headers=claim.headers)
        response = None
        try:
            await emulator.wait_for_writes()
            response = await handler(request)
            return response
        finally:
            emulator.idempotency.settle(key, response)

    return wrapped


def create_app(emulator: ZuoraEmulator) -> Starlette:
    """Serve `emulator` on Zuora's real paths plus the shared and Zuora `/_emulator/` hooks."""

    def authed(handler: Endpoint) -> Endpoint:
        async def wrapped(request: Request) -> Response:
            if not emulator.authorized(request):
                return json_response(AUTH_ERROR, 401)
            return await handler(request)

        return wrapped

    def api(handler: Endpoint) -> Endpoint:
        return authed(idempotent(emulator, handler))

    def listing(handler: Callable[[Request], Response]) -> Endpoint:
        # GET lists: a bad page/pageSize/filter is category 27 with HTTP 400.
        async def wrapped(request: Request) -> Response:
            try:
                return handler(request)
            except BadParameter as exc:
                return v1_error(BAD_PARAMETER, str(exc), 400)

        return authed(wrapped)

    # OAuth and accounts ------------------------------------------------------------------------
    async def token(request: Request) -> Response:
        status, body = emulator.issue_token(await form_or_query(request))
        return json_response(body, status)

    async def create_account(request: Request) -> Response:
        try:
            return answer(emulator.account_store.create(await read_json_object(request)))
        except InvalidJson as exc:
            return json_response(
                account_envelope([(MALFORMED, f"Malformed JSON: {exc}")]), emulator.error_http_status
            )

    async def account(request: Request) -> Response:
        key = request.path_params["key"]
        if request.method == "GET":
            return answer(emulator.account_store.detail(key))
        try:
            return answer(emulator.account_store.update(key, await read_json_object(request)))
        except InvalidJson as exc:
            return json_response(
                account_envelope([(MALFORMED, f"Malformed JSON: {exc}")]), emulator.error_http_status
            )

    async def object_query(request: Request) -> Response:
        params = request.query_params
        try:
            page_size = int(params.get("pageSize", OBJECT_QUERY_PAGE))
            if not 1 <= page_size <= OBJECT_QUERY_MAX_PAGE:
                raise SqlError(f"pageSize must be between 1 and {OBJECT_QUERY_MAX_PAGE}")
            offset = decode_cursor(params["cursor"]) if "cursor" in params else 0
            rows, total = emulator.account_store.object_query(params.getlist("filter[]"), page_size, offset)
        except (SqlError, ValueError) as exc:
            return v1_error(BAD_PARAMETER, str(exc), 400)  # category 27: bad query parameter (notes §8)
        include_nulls = params.get("includeNullFields", "").lower() == "true"
        body: dict[str, Any] = {"data": [_shape(row, _fields(request), include_nulls) for row in rows]}
        if offset + len(rows) < total:
            body["nextPage"] = encode_cursor(offset + len(rows))
        return json_response(body)

    async def object_query_one(request: Request) -> Response:
        found = emulator.account_store.find(request.path_params["key"])
        if found is None:
            return answer(emulator.account_store.not_found(request.path_params["key"]))
        return json_response(_shape(emulator.account_store.query_row(found), _fields(request), False))

    async def action_query(request: Request) -> Response:
        try:
            body = await read_json_object(request)
            records = emulator.account_store.zoql(str(body.get("queryString", "")))
            return json_response(emulator.account_store.query_page(records))
        except (InvalidJson, SqlError) as exc:
            code = "INVALID_FIELD" if isinstance(exc, InvalidField) else "MALFORMED_QUERY"
            return emulator.zoql_error(code, f"You have an error in your ZOQL syntax: {exc}")

    async def action_query_more(request: Request) -> Response:
        try:
            locator = str((await read_json_object(request)).get("queryLocator", ""))
            page = emulator.account_store.query_more(locator)
        except InvalidJson:
            page = None
        if page is None:
            return emulator.zoql_error("INVALID_QUERY_LOCATOR", "invalid query locator")
        return json_response(page)

    # Invoices ----------------------------------------------------------------------------------
    async def create_invoice(request: Request) -> Response:
        store = emulator.invoice_store
        try:
            return answer(store.create(await read_json_object(request)))
        except InvalidJson as exc:
            return answer(store.error([(MALFORMED, f"Malformed JSON: {exc}")]))

    async def bulk_post(request: Request) -> Response:
        store = emulator.invoice_store
        try:
            return answer(store.bulk_post(await read_json_object(request)))
        except InvalidJson as exc:
            return answer(store.error([(MALFORMED, f"Malformed JSON: {exc}")]))

    async def invoice(request: Request) -> Response:
        store, key = emulator.invoice_store, request.path_params["key"]
        found = store.find(key)
        return answer(
            store.not_found(key) if found is None else (200, {**store.view(found), "success": True})
        )

    def invoice_items(request: Request) -> Response:
        store, key = emulator.invoice_store, request.path_params["key"]
        found = store.find(key)
        if found is None:
            return answer(store.not_found(key))
        page, size = page_params(request.query_params, ITEMS_PAGE)
        rows, next_page = paginate(store.items_of(found), page, size, request.url)
        return json_response(list_body("invoiceItems", rows, next_page))

    def account_invoices(request: Request) -> Response:
        key = request.path_params["key"]
        found = emulator.account_store.find(key)
        if found is None:
            return answer(emulator.account_store.not_found(key))
        page, size = page_params(request.query_params, TRANSACTION_PAGE)
        base = str(request.base_url)
        rows = [transaction_row(i, base) for i in emulator.invoice_store.of_account(found["id"])]
        chunk, next_page = paginate(rows, page, size, request.url)
        return json_response(list_body("invoices", chunk, next_page))

    # Subscriptions -----------------------------------------------------------------------------
    async def subscription(request: Request) -> Response:
        store, key = emulator.subscription_store, request.path_params["key"]
        found = store.find(key)
        return answer(
            _not_found(emulator, "subscription", key) if found is None else (200, store.view(found))
        )

    async def subscription_version(request: Request) -> Response:
        store, key = emulator.subscription_store, request.path_params["key"]
        raw = request.path_params["version"]
        found = store.version(key, int(raw)) if raw.isdigit() else None
        if found is None:
            return answer(_not_found(emulator, "subscription version", f"{key}/{raw}"))
        return answer((200, store.view(found)))

    def account_subscriptions(request: Request) -> Response:
        key = request.path_params["key"]
        found = emulator.account_store.find(key)
        if found is None:
            return answer(emulator.account_store.not_found(key))
        page, size = page_params(request.query_params, SUBSCRIPTION_PAGE)
        rows, next_page = paginate(
            emulator.subscription_store.of_account(found["id"]), page, size, request.url
        )
        return json_response(list_body("subscriptions", rows, next_page))

    # Payments ----------------------------------------------------------------------------------
    def payments(request: Request) -> Response:
        page, size = page_params(request.query_params, PAYMENT_PAGE)
        rows, next_page = paginate(
            emulator.payment_store.listing(request.query_params), page, size, request.url
        )
        return json_response(list_body("payments", rows, next_page))

    async def payment(request: Request) -> Response:
        store, key = emulator.payment_store, request.path_params["key"]
        found = store.find(key)
        return answer(
            _not_found(emulator, "payment", key)
            if found is None
            else (200, {**store.view(found), "success": True})
        )

    def account_payments(request: Request) -> Response:
        key = request.path_params["key"]
        found = emulator.account_store.find(key)
        if found is None:
            return answer(emulator.account_store.not_found(key))
        page, size = page_params(request.query_params, TRANSACTION_PAGE)
        rows, next_page = paginate(
            emulator.payment_store.transaction_rows(found["id"]), page, size, request.url
        )
        return json_response(list_body("payments", rows, next_page))

    async def not_found(request: Request, exc: Exception) -> Response:
        # Unknown routes get the API gateway's answer in front of Zuora (UNCONFIRMED).
        return json_response({"message": "no Route matched with those values"}, 404)

    routes = [
        *hook_routes(emulator),
        *zuora_hook_routes(emulator),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/v1/accounts", api(create_account), methods=["POST"]),
        Route("/v1/accounts/{key}", api(account), methods=["GET", "PUT"]),
        Route("/v1/action/query", api(action_query), methods=["POST"]),
        Route("/v1/action/queryMore", api(action_query_more), methods=["POST"]),
        Route("/object-query/accounts", authed(object_query), methods=["GET"]),
        Route("/object-query/accounts/{key}", authed(object_query_one), methods=["GET"]),
        Route("/v1/invoices", api(create_invoice), methods=["POST"]),
        Route("/v1/invoices/bulk-post", api(bulk_post), methods=["POST"]),
        Route("/v1/invoices/{key}", authed(invoice), methods=["GET"]),
        Route("/v1/invoices/{key}/items", listing(invoice_items), methods=["GET"]),
        Route("/v1/transactions/invoices/accounts/{key}", listing(account_invoices), methods=["GET"]),
        Route("/v1/subscriptions/accounts/{key}", listing(account_subscriptions), methods=["GET"]),
        Route("/v1/subscriptions/{key}", authed(subscription), methods=["GET"]),
        Route("/v1/subscriptions/{key}/versions/{version}", authed(subscription_version), methods=["GET"]),
        Route("/v1/payments", listing(payments), methods=["GET"]),
        Route("/v1/payments/{key}", authed(payment), methods=["GET"]),
        Route("/v1/transactions/payments/accounts/{key}", listing(account_payments), methods=["GET"]),
    ]
    middleware = [Middleware(EmulatorMiddleware, emulator=emulator)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers={404: not_found})
    app.state.emulator = emulator
    return app


def zuora_hook_routes(emulator: ZuoraEmulator) -> list[Route]:
    """Test hooks for what only Zuora has: subscription changes, callouts, settings, payments."""

    async def guarded(make: Callable[[dict[str, Any]], Any], request: Request, status: int = 200) -> Response:
        # Hook errors: 400 for a bad body or a change the tenant would refuse, 404 for an unknown key.
        try:
            body = await read_json_object(request) if await request.body() else {}
            return json_response(make(body), status)
        except (InvalidJson, ValueError, TypeError) as exc:
            return json_response({"error": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": f"not found: {exc}"}, 404)

    async def create_subscription(request: Request) -> Response:
        return await guarded(lambda b: emulator.create_subscription(**create_options(b)), request, 201)

    async def amend(request: Request) -> Response:
        key = request.path_params["key"]

        def run(body: dict[str, Any]) -> dict[str, Any]:
            names = {
                "effectiveDate": "effective_date",
                "fields": "fields",
                "addRatePlans": "add_rate_plans",
                "removeRatePlans": "remove_rate_plans",
                "updateCharges": "update_charges",
                "newOwner": "new_owner",
            }
            unknown = [k for k in body if k not in names and k != "amendmentType"]
            if unknown:
                raise ValueError(f"unknown amendment keys: {', '.join(unknown)}")
            options = {names[k]: v for k, v in body.items() if k in names}
            return emulator.amend_subscription(key, str(body.get("amendmentType", "")), **options)

        return await guarded(run, request)

    async def cancel(request: Request) -> Response:
        key = request.path_params["key"]
        return await guarded(
            lambda b: emulator.cancel_subscription(
                key, cancellation_date=b.get("cancellationDate"), reason=b.get("reason")
            ),
            request,
        )

    async def callouts(request: Request) -> Response:
        if request.method == "GET":
            return json_response(emulator.callouts)
        if request.method == "DELETE":
            emulator.sender.clear_targets()
            return json_response({"ok": True})

        def register(body: dict[str, Any]) -> dict[str, str]:
            options = {k: body[k] for k in ("events", "retries", "interval") if k in body}
            url, secret = str(body.get("url") or ""), str(body.get("secret") or "")
            return {"id": emulator.register_callout(url, secret=secret, **options)}

        return await guarded(register, request, 201)

    async def settings(request: Request) -> Response:
        if request.method == "GET":
            return json_response(emulator.configure())
        return await guarded(lambda b: emulator.configure(**b), request)

    async def add_payment(request: Request) -> Response:
        return await guarded(emulator.payment_store.add, request, 201)

    return [
        Route("/_emulator/subscriptions", create_subscription, methods=["POST"]),
        Route("/_emulator/subscriptions/{key}/amend", amend, methods=["POST"]),
        Route("/_emulator/subscriptions/{key}/cancel", cancel, methods=["POST"]),
        Route("/_emulator/callouts", callouts, methods=["GET", "POST", "DELETE"]),
        Route("/_emulator/settings", settings, methods=["GET", "POST"]),
        Route("/_emulator/payments", add_payment, methods=["POST"]),
    ]


def _not_found(emulator: ZuoraEmulator, what: str, key: str) -> Answer:
    return not_found_answer(emulator.not_found_status, what, key)


def _fields(request: Request) -> list[str]:
    """`fields[]` values, repeated or comma-separated, lower-cased."""
    raw = request.query_params.getlist("fields[]")
    return [name.strip().lower() for value in raw for name in value.split(",") if name.strip()]


def _shape(row: dict[str, Any], fields: list[str], include_nulls: bool) -> dict[str, Any]:
    picked = {k: row.get(k) for k in fields} if fields else row
    return {k: v for k, v in picked.items() if include_nulls or v is not None}
