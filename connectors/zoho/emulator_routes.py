"""HTTP layer of the Zoho CRM emulator: Zoho's real paths, request checks and status codes.

State and behaviour live on `ZohoEmulator` (connectors.zoho.emulator) and its parts; this module only
turns requests into calls on them and answers in Zoho's shapes (/work/shared/api/zoho.md, "notes §n";
OAS examples from GitHub zoho/crm-oas `v8.0/*/operations/*/examples/`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from email.utils import parsedate_to_datetime
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
    parse_iso,
    read_json_object,
)
from connectors.zoho.emulator_limits import write_cost
from connectors.zoho.emulator_records import EMULATOR_USER, MANDATORY, MODULE_IDS, field_metadata, item_error
from connectors.zoho.emulator_search import MAX_RESULTS, SearchError
from connectors.zoho.emulator_watch import MAX_ITEMS

if TYPE_CHECKING:
    from connectors.zoho.emulator import ZohoEmulator

TOKEN_PATH = "/oauth/v2/token"
API = "/crm/v8"
MAX_RECORDS = 100  # records per insert/update/upsert/delete call (notes §2a; OAS deleteRecords)
MAX_IDS = 100  # ids per GET ?ids= (UNCONFIRMED, notes §2d): the default of ZohoEmulator.max_ids
MAX_PER_PAGE = 200  # records per list page (notes §2d)
MAX_FIELDS = 50  # field names per `fields=` (OAS example getRecords/400-limitexceeded)
SORT_FIELDS = ("id", "Created_Time", "Modified_Time")  # sort_by values (OAS getRecords)
ORG_ID = "5725767000000001001"
# HTTP method -> the operation a scope must allow (notes §1b scopes: READ, CREATE, UPDATE, DELETE).
OPERATIONS = {"GET": "read", "POST": "create", "PUT": "update", "PATCH": "update", "DELETE": "delete"}

Endpoint = Callable[[Request], Awaitable[Response]]


def zoho_error(code: str, message: str, status: int, **details: Any) -> Response:
    """Zoho's error object {code, details, message, status:"error"} as a whole response (notes §5)."""
    return json_response({"code": code, "details": details, "message": message, "status": "error"}, status)


def create_app(emulator: ZohoEmulator) -> Starlette:
    """Serve `emulator`: the token URL, the v8 API and the `/_emulator/` hooks."""

    def guarded(
        handler: Endpoint, service: str, cost: str, *, module: bool = False, also: str | None = None
    ) -> Endpoint:
        # The token, its scope(s), then the module; only a call that gets this far spends credits.
        # `also` names a second scope the call needs when the emulator enforces it (search's
        # ZohoSearch.securesearch.READ).
        async def wrapped(request: Request) -> Response:
            name = request.path_params.get("module") or request.path_params.get("part")
            resource = name.lower() if name else None
            need = (
                service,
                resource if module or service == "settings" else None,
                OPERATIONS[request.method],
            )
            denied = emulator.auth_error(request, *need)
            if denied is None and also is not None:
                denied = emulator.extra_scope_error(request, also)
            if denied is None and module and name not in MANDATORY:
                message = "the module name given seems to be invalid"
                denied = zoho_error("INVALID_MODULE", message, 400, resource_path_index=0)
            if denied is None:
                denied = emulator.charge(await _cost(emulator, request, cost))
            return denied or await handler(request)

        return wrapped

    async def token(request: Request) -> Response:
        # Zoho's docs put the parameters in the query string; its SDK sends a form body (notes §1a).
        status, body = emulator.token_response(
            await form_or_query(request), str(request.base_url).rstrip("/")
        )
        return json_response(body, status)

    # Records (notes §2) ------------------------------------------------------------------------------
    async def write(request: Request) -> Response:
        module, upsert = request.path_params["module"], request.url.path.endswith("/upsert")
        data = await _data(request)
        if isinstance(data, Response):
            return data
        check = (await request.json()).get("duplicate_check_fields") if upsert else None
        allowed = emulator.store.duplicate_fields(module)
        if check is not None and (not isinstance(check, list) or not set(check) <= set(allowed)):
            details = {"api_name": "duplicate_check_fields", "supported_values": allowed}
            return zoho_error("INVALID_DATA", "invalid data", 400, **details)
        results, changes = emulator.store.insert(module, data, upsert=upsert, duplicate_check=check)
        emulator.publish(changes)
        return json_response({"data": results}, _status(results, 200 if upsert else 201))

    async def update(request: Request) -> Response:
        module, path_id = request.path_params["module"], request.path_params.get("id")
        data = await _data(request)
        if isinstance(data, Response):
            return data
        if path_id is not None and len(data) != 1 and emulator.single_record_put_takes_one:
            return zoho_error("INVALID_DATA", "only one record can be updated by id", 400, api_name="data")
        results, changes = emulator.store.update(module, data, path_id=path_id)
        emulator.publish(changes)
        return json_response({"data": results}, _status(results, 200))

    async def delete(request: Request) -> Response:
        module, path_id = request.path_params["module"], request.path_params.get("id")
        ids = [path_id] if path_id else [i for i in request.query_params.get("ids", "").split(",") if i]
        if not ids:
            message = "One of the expected parameter is missing"  # OAS example deleteRecords/400-missingparam
            return zoho_error("REQUIRED_PARAM_MISSING", message, 400, param_name="ids")
        if len(ids) > MAX_RECORDS:
            return zoho_error("LIMIT_EXCEEDED", "limit exceeded", 400, param_name="ids", limit=MAX_RECORDS)
        results, changes = emulator.store.delete(module, ids)
        emulator.publish(changes)
        if path_id and not changes:
            # OAS example deleteRecord/400-invalidrecordid: a flat error naming the URL segment.
            return zoho_error("INVALID_DATA", "invalid record id", 400, resource_path_index=1)
        return json_response({"data": results}, _status(results, 200))

    async def get_one(request: Request) -> Response:
        module = request.path_params["module"]
        found = emulator.store.find(module, request.path_params["id"])
        if found is None:
            # An unknown id reads as an empty result: 204, no body (notes §2d; a 404 is UNCONFIRMED).
            return Response(status_code=204)
        with emulator.lock:
            return json_response({"data": [emulator.store.render(module, found, _fields(request))]})

    async def get_many(request: Request) -> Response:
        module, params = request.path_params["module"], request.query_params
        fields = _fields(request)
        if fields is None and emulator.require_fields_param:
            return zoho_error("REQUIRED_PARAM_MISSING", "required param is missing", 400, param_name="fields")
        if fields is not None and len(fields) > MAX_FIELDS:
            return zoho_error("LIMIT_EXCEEDED", "limit exceeded", 400, param_name="fields", limit=MAX_FIELDS)
        paging = _paging(request)
        if isinstance(paging, Response):
            return paging
        page, per_page = paging
        ids = [i for i in params.get("ids", "").split(",") if i]
        if len(ids) > emulator.max_ids:
            return zoho_error(
                "LIMIT_EXCEEDED", "limit exceeded", 400, param_name="ids", limit=emulator.max_ids
            )
        sort_by, sort_order = params.get("sort_by"), params.get("sort_order", emulator.default_sort_order)
        if sort_by is not None and sort_by not in SORT_FIELDS:
            details = {"param_name": "sort_by", "supported_values": list(SORT_FIELDS)}
            return zoho_error("INVALID_DATA", "invalid data", 400, **details)
        if sort_order not in ("asc", "desc"):
            details = {"param_name": "sort_order", "supported_values": ["asc", "desc"]}
            return zoho_error("INVALID_DATA", "invalid data", 400, **details)
        stored = emulator.store.select(module, ids or None)
        since = _if_modified_since(request)
        if isinstance(since, Response):
            return since
        if since is not None:
            # Zoho times have whole seconds, so compare at that precision.
            stored = [r for r in stored if int(r.modified) > since]
            if not stored:
                return Response(status_code=304)  # nothing changed since (notes §2d)
        if sort_by is not None or not ids:  # ids alone come back in the order asked
            keys = {
                "id": lambda r: int(r.id),
                "Created_Time": lambda r: r.created,
                "Modified_Time": lambda r: r.modified,
            }
            stored.sort(key=keys[sort_by or "id"], reverse=sort_order == "desc")
        window = stored[(page - 1) * per_page : page * per_page]
        if not window:
            return Response(status_code=204)  # an empty result has no body (notes §2d)
        with emulator.lock:
            data = [emulator.store.render(module, r, fields) for r in window]
        info = {"per_page": per_page, "count": len(data), "page": page, "sort_by": sort_by or "id"}
        info |= {"sort_order": sort_order, "more_records": page * per_page < len(stored)}
        info |= {"next_page_token": None, "previous_page_token": None, "page_token_expiry": None}
        return json_response({"data": data, "info": info})

    async def search(request: Request) -> Response:
        # GET /{module}/search (connectors.zoho.emulator_search has the rules and their sources).
        module = request.path_params["module"]
        fields = _fields(request)
        if fields is not None and len(fields) > MAX_FIELDS:
            return zoho_error("LIMIT_EXCEEDED", "limit exceeded", 400, param_name="fields", limit=MAX_FIELDS)
        paging = _paging(request)
        if isinstance(paging, Response):
            return paging
        page, per_page = paging
        params = {k: request.query_params.get(k) for k in ("criteria", "email", "phone", "word")}
        try:
            found = emulator.search(module, **params)
        except SearchError as exc:
            return zoho_error(exc.code, exc.message, exc.status, **exc.details)
        if (page - 1) * per_page >= MAX_RESULTS:
            # Search docs: at most 2,000 records through one search. UNCONFIRMED: the details.
            return zoho_error(
                "LIMIT_REACHED", "Maximum response iteration limit reached", 400, limit=MAX_RESULTS
            )
        sort_order = emulator.default_sort_order
        found.sort(key=lambda r: int(r.id), reverse=sort_order == "desc")
        window = found[(page - 1) * per_page : min(page * per_page, MAX_RESULTS)]
        if not window:
            return Response(status_code=204)  # nothing matches: no body (search docs; notes §2d)
        with emulator.lock:
            data = [emulator.store.render(module, r, fields) for r in window]
        info = {"per_page": per_page, "count": len(data), "page": page, "sort_by": "id"}
        info |= {"sort_order": sort_order, "more_records": page * per_page < len(found)}
        return json_response({"data": data, "info": info})

    # Notification API (notes §3) -----------------------------------------------------------------------
    async def watch(request: Request) -> Response:
        base = emulator.api_domain or str(request.base_url).rstrip("/")
        if request.method == "GET":
            return _watch_list(emulator, request)
        if request.method == "DELETE":
            ids = [i for i in request.query_params.get("channel_ids", "").split(",") if i]
            if not ids:
                message = "One of the expected parameter is missing"
                return zoho_error("REQUIRED_PARAM_MISSING", message, 400, param_name="channel_ids")
            status, body = emulator.watch.disable(ids)
            return json_response(body, status)
        try:
            items = (await read_json_object(request)).get("watch")
        except InvalidJson as exc:
            return zoho_error("INVALID_DATA", f"body: {exc}", 400)
        if not isinstance(items, list) or not items:
            return zoho_error("MANDATORY_NOT_FOUND", "required field not found", 400, api_name="watch")
        if len(items) > MAX_ITEMS:
            return zoho_error(
                "LIMIT_EXCEEDED", "limit exceeded", 400, api_name="watch", maximum_length=MAX_ITEMS
            )
        if request.method == "POST":
            status, body = emulator.watch.enable(items, base)
        else:
            status, body = emulator.watch.update(items, base, replace=request.method == "PUT")
        return json_response(body, status)

    # Metadata the SDK reads before record calls ----------------------------------------------------------
    async def settings(request: Request) -> Response:
        if request.path_params["part"] not in ("modules", "fields"):
            return await not_found(request, LookupError(request.url.path))
        if request.path_params["part"] == "modules":
            return json_response({"modules": [_module_meta(m) for m in MANDATORY]})
        module = request.query_params.get("module")
        if not module:
            message = "required param is missing"
            return zoho_error("REQUIRED_PARAM_MISSING", message, 400, param_name="module")
        if module not in MANDATORY:
            return zoho_error(
                "INVALID_MODULE", "the module name given seems to be invalid", 400, param_name="module"
            )
        unique = emulator.store.unique_fields.get(module, set())
        return json_response({"fields": field_metadata(module, unique)})

    async def users(request: Request) -> Response:
        user = {**EMULATOR_USER, "full_name": EMULATOR_USER["name"], "status": "active", "confirm": True}
        user |= {"role": {"name": "CEO", "id": "5725767000000026005"}, "profile": {"name": "Administrator"}}
        return json_response(
            {"users": [user], "info": {"per_page": 200, "count": 1, "page": 1, "more_records": False}}
        )

    async def org(request: Request) -> Response:
        company = {"id": ORG_ID, "company_name": "Emulated Org", "zgid": "700000001", "time_zone": "UTC"}
        company |= {"primary_email": EMULATOR_USER["email"], "currency": "US Dollar", "iso_code": "USD"}
        return json_response({"org": [company]})

    async def not_found(request: Request, exc: Exception) -> Response:
        message = "Please check if the URL trying to access is a correct one"
        return zoho_error("INVALID_URL_PATTERN", message, 404)

    async def wrong_method(request: Request, exc: Exception) -> Response:
        return zoho_error("INVALID_REQUEST_METHOD", "The http request method type is not a valid one", 400)

    routes = [
        *hook_routes(emulator),
        *_zoho_hooks(emulator),
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route(API + "/actions/watch", guarded(watch, "notifications", "watch"), methods=list(OPERATIONS)),
        Route(API + "/settings/{part:str}", guarded(settings, "settings", "settings"), methods=["GET"]),
        Route(API + "/users", guarded(users, "users", "settings"), methods=["GET"]),
        Route(API + "/org", guarded(org, "org", "settings"), methods=["GET"]),
        Route(API + "/{module}/upsert", guarded(write, "modules", "write", module=True), methods=["POST"]),
        Route(API + "/{module}", guarded(write, "modules", "write", module=True), methods=["POST"]),
        Route(API + "/{module}", guarded(update, "modules", "write", module=True), methods=["PUT"]),
        Route(API + "/{module}", guarded(get_many, "modules", "read", module=True), methods=["GET"]),
        Route(API + "/{module}", guarded(delete, "modules", "delete", module=True), methods=["DELETE"]),
        Route(
            API + "/{module}/search",
            guarded(search, "modules", "read", module=True, also="ZohoSearch.securesearch.READ"),
            methods=["GET"],
        ),
        Route(API + "/{module}/{id}", guarded(get_one, "modules", "read", module=True), methods=["GET"]),
        Route(API + "/{module}/{id}", guarded(update, "modules", "write", module=True), methods=["PUT"]),
        Route(API + "/{module}/{id}", guarded(delete, "modules", "delete", module=True), methods=["DELETE"]),
    ]
    middleware = [Middleware(EmulatorMiddleware, emulator=emulator)]
    handlers = {404: not_found, 405: wrong_method}
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers)
    app.state.emulator = emulator
    return app


def _zoho_hooks(emulator: ZohoEmulator) -> list[Route]:
    """Zoho-only `/_emulator/` hooks (no auth: loopback test tooling)."""

    async def grant_codes(request: Request) -> Response:
        try:
            body = await read_json_object(request)
            code = emulator.grant_code(str(body["client_id"]), body["scopes"], float(body.get("ttl", 180)))
        except (InvalidJson, KeyError, TypeError, ValueError) as exc:
            return json_response({"error": f"cannot mint a grant code: {exc}"}, 400)
        return json_response({"code": code}, 201)

    async def record(request: Request) -> Response:
        module, record_id = request.path_params["type"], request.path_params["id"]
        notify = request.query_params.get("notify", "true").lower() not in ("0", "false", "no")
        try:
            if request.method == "DELETE":
                emulator.delete_record(module, record_id, notify=notify)
            else:
                emulator.update_record(module, record_id, await read_json_object(request), notify=notify)
        except InvalidJson as exc:
            return json_response({"error": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": f"no such record {exc}"}, 404)
        return json_response({"id": record_id})

    async def notifications(request: Request) -> Response:
        with emulator.lock:
            return json_response(list(emulator.notifications))

    async def channels(request: Request) -> Response:
        return json_response(emulator.channels())

    async def credits(request: Request) -> Response:
        if request.method == "POST":
            try:
                emulator.credit_budget = int((await read_json_object(request))["budget"])
            except (InvalidJson, KeyError, TypeError, ValueError) as exc:
                return json_response({"error": f"expected {{'budget': <credits>}}: {exc}"}, 400)
        used = emulator.credits_used()
        return json_response({"budget": emulator.credit_budget, "used": used, "edition": emulator.edition})

    return [
        Route("/_emulator/grant-codes", grant_codes, methods=["POST"]),
        Route("/_emulator/records/{type}/{id}", record, methods=["PATCH", "DELETE"]),
        Route("/_emulator/notifications", notifications, methods=["GET"]),
        Route("/_emulator/channels", channels, methods=["GET"]),
        Route("/_emulator/credits", credits, methods=["GET", "POST"]),
    ]


async def _cost(emulator: ZohoEmulator, request: Request, kind: str) -> int:
    """Credits for this call: 1, or 1 per started 10 records for batch writes (notes §4)."""
    per_call = emulator.credit_costs.get(kind, 1)
    if kind != "write":
        return per_call
    try:
        data = (await read_json_object(request)).get("data")
    except InvalidJson:
        return per_call
    return write_cost(per_call, len(data) if isinstance(data, list) else 1)


async def _data(request: Request) -> list[Any] | Response:
    """The `data` array of a write body, or the request-level error (notes §2a)."""
    try:
        body = await read_json_object(request)
    except InvalidJson as exc:
        return zoho_error("INVALID_DATA", f"body: {exc}", 400)
    data = body.get("data")
    if not isinstance(data, list) or not data:
        return zoho_error("MANDATORY_NOT_FOUND", "required field not found", 400, api_name="data")
    if len(data) > MAX_RECORDS:
        # OAS example updateRecord/400-limitexceedederror: wrapped in data[] (notes §7 guessed the code).
        error = item_error(
            "LIMIT_EXCEEDED",
            "count of records in your request exceeds the limit",
            maximum_length=MAX_RECORDS,
            api_name="data",
        )
        return json_response({"data": [error]}, 400)
    return data


def _status(results: list[dict[str, Any]], ok_status: int) -> int:
    """`ok_status` if all succeeded (201 insert, 200 upsert/update/delete), 207 mixed, 400 all failed."""
    ok = sum(1 for r in results if r["status"] == "success")
    if ok == len(results):
        return ok_status
    return 207 if ok else 400


def _fields(request: Request) -> list[str] | None:
    raw = request.query_params.get("fields")
    return [f.strip() for f in raw.split(",") if f.strip()] if raw else None


def _paging(request: Request, max_per_page: int = MAX_PER_PAGE) -> tuple[int, int] | Response:
    try:
        page = max(1, int(request.query_params.get("page", 1)))
        per_page = min(max_per_page, max(1, int(request.query_params.get("per_page", max_per_page))))
    except ValueError:
        return zoho_error("INVALID_DATA", "page and per_page must be numbers", 400, param_name="page")
    return page, per_page


def _if_modified_since(request: Request) -> float | Response | None:
    raw = request.headers.get("if-modified-since")
    if raw is None:
        return None
    try:
        return parse_iso(raw)
    except ValueError:
        try:  # an HTTP-date, as generic HTTP clients send it
            return parsedate_to_datetime(raw).timestamp()
        except (TypeError, ValueError):
            return zoho_error("INVALID_DATA", "invalid data", 400, param_name="If-Modified-Since")


def _watch_list(emulator: ZohoEmulator, request: Request) -> Response:
    paging = _paging(request)
    if isinstance(paging, Response):
        return paging
    page, per_page = paging
    params = request.query_params
    entries = emulator.watch.listing(params.get("channel_id"), params.get("module"))
    window = entries[(page - 1) * per_page : page * per_page]
    if not window:
        return Response(status_code=204)  # nothing subscribed (notes §3c)
    more = page * per_page < len(entries)
    info = {"per_page": per_page, "count": len(window), "page": page, "more_records": more}
    return json_response({"watch": window, "info": info})


def _module_meta(module: str) -> dict[str, Any]:
    """`GET /settings/modules` entry with the keys the SDK reads (api_supported, generated_type)."""
    singular = module[:-1]
    return {
        "api_name": module,
        "module_name": module,
        "plural_label": module,
        "singular_label": singular,
        "id": MODULE_IDS[module],
        "api_supported": True,
        "generated_type": "default",
        "creatable": True,
        "editable": True,
        "deletable": True,
        "viewable": True,
    }
