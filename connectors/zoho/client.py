"""The Zoho CRM client: refresh-token grant on the accounts server, then calls on the `api_domain`
the token response names (shared/api/zoho.md §0, §1)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import httpx2

from connectors.auth import TokenGrant, minutes
from connectors.errors import (
    ConfigurationError,
    ConnectorError,
    CredentialsRevoked,
    RemoteError,
    TransientError,
)
from connectors.http import ApiClient, AttemptHook, wait_hint
from connectors.zoho.spec import SPEC

API_VERSION = "v8"
BATCH_LIMIT = 100  # records per insert/upsert call
PAGE_SIZE = 200  # records per list page, Zoho's maximum (shared/api/zoho.md §2d)
MAX_PAGES = 1000  # pages one listing may read before we call it a loop rather than a long list
SEARCH_LIMIT = 2000  # records one search can page through; Zoho answers LIMIT_REACHED past it
TOKEN_PATH = "/oauth/v2/token"
THROTTLE_WAIT = 600.0  # seconds: Zoho blocks token creation for the rest of its 10-minute window (§1a)
# Methods whose answer can be a batch of per-item results (records, watch channels): all of them failed
# is HTTP 400 with the items still listed (shared/api/zoho.md §2a), read item by item like a 207.
BATCH_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
SEARCH_OPERATORS = frozenset(
    {
        "equals",
        "not_equal",
        "starts_with",
        "in",
        "greater_equal",
        "greater_than",
        "less_equal",
        "less_than",
        "between",
    }
)
_CRITERIA_SPECIALS = str.maketrans({"\\": "\\\\", "(": "\\(", ")": "\\)", ",": "\\,"})


class SearchLimitReached(RemoteError):
    """More records match a search than one Zoho search can return (2,000)."""


def criteria_value(value: Any) -> str:
    """One value for a search criteria, with `\\`, `(`, `)` and `,` escaped by a backslash (Zoho's
    search docs), in one pass so the escapes added are not escaped again."""
    return str(value).translate(_CRITERIA_SPECIALS)


def search_criteria(criteria: str | dict[str, Any]) -> str:
    """The `criteria=` text for `ZohoClient.search_records`.

    A string is sent as it is (the caller escaped its values). A dict is {api_name: value} for `equals`,
    or {api_name: (operator, value)}; for `in` and `between` the value is a list or tuple of values.
    Several entries are joined with `and`: `{"NetSuite_Id": "12", "Phone": ("starts_with", "555")}` ->
    `((NetSuite_Id:equals:12)and(Phone:starts_with:555))`. At most 10 conditions (Zoho's limit).
    """
    if isinstance(criteria, str):
        return criteria
    if not criteria or len(criteria) > 10:
        raise ValueError("a Zoho search takes 1 to 10 conditions")
    parts = []
    for field, spec in criteria.items():
        operator, value = (
            spec
            if isinstance(spec, tuple) and len(spec) == 2 and spec[0] in SEARCH_OPERATORS
            else ("equals", spec)
        )
        if isinstance(value, list | tuple | set | frozenset):
            if operator not in ("in", "between"):
                raise ValueError(f"{field}: several values need the in or between operator, not {operator}")
            text = ",".join(criteria_value(v) for v in value)
        else:
            text = criteria_value(value)
        if not text:
            raise ValueError(f"the search value for {field} is empty")
        parts.append(f"({field}:{operator}:{text})")
    return parts[0] if len(parts) == 1 else "(" + "and".join(parts) + ")"


async def exchange_grant_code(
    http: httpx2.AsyncClient,
    *,
    accounts_url: str,
    client_id: str,
    client_secret: str,
    code: str,
    sandbox: bool | None = None,
    on_attempt: AttemptHook | None = None,
) -> dict[str, Any]:
    """The self-client grant code → refresh token exchange (shared/api/zoho.md §1b).

    Returns the token response (refresh_token, access_token, api_domain); raises ConfigurationError with
    Zoho's error when the code is expired, used or for another client, or when `accounts_url` is not a
    Zoho accounts server (loopback emulators pass in sandbox mode: `sandbox`, by default the app's
    ML_CONNECTOR_SANDBOX setting). The exchange is reported to `on_attempt` like every other call, its
    answer withheld (it holds the new refresh token).
    """
    client = ZohoClient(
        base_url=accounts_url,
        http=http,
        client_id=client_id,
        client_secret=client_secret,
        refresh_token="",
        on_attempt=on_attempt,
    )
    client.restrict_hosts(sandbox=_app_sandbox() if sandbox is None else sandbox)
    return await client.redeem_grant_code(code)


def _app_sandbox() -> bool:
    """Whether this process runs in sandbox mode (the setting every other app call is given)."""
    from storage.settings import get_settings  # the app's settings; read only when not told

    return get_settings().sandbox


class ZohoClient(ApiClient):
    """Async client for one Zoho CRM org. `base_url` is the accounts server of the data centre."""

    system = "zoho"
    spec = SPEC
    # Also reachable as ZohoClient.exchange_grant_code(http, accounts_url=..., ...).
    exchange_grant_code = staticmethod(exchange_grant_code)

    def __init__(self, *, client_id: str, client_secret: str, refresh_token: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token

    def auth_header(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Zoho-oauthtoken {token}"}

    async def fetch_token(self) -> TokenGrant:
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        response = await self.send("POST", TOKEN_PATH, data=form, record_body=False)
        body = _json(response)
        unavailable = self.token_unavailable(response, "the Zoho accounts server is busy or unavailable")
        if unavailable is not None:
            raise unavailable
        if response.status_code == 400 and body.get("error") == "Access Denied":
            raise TransientError(
                "Zoho is throttling token requests for this refresh token (10 per 10 minutes)",
                system=self.system,
                method="POST",
                url=self.url(TOKEN_PATH),
                status=400,
                excerpt="Access Denied",
                retry_after=THROTTLE_WAIT,
            )
        if "access_token" not in body:
            error = body.get("error") or f"HTTP {response.status_code}"
            hint = {
                "invalid_client": "the client id or secret is wrong, or the data centre does not match the org",
                "invalid_code": "the refresh token is invalid or revoked; generate a new one",
            }.get(str(error), "check the client id, secret and refresh token")
            raise self._token_refused(f"Zoho refused the token request ({error}): {hint}", response, error)
        extra = {"api_domain": body.get("api_domain") or ""}
        return TokenGrant(
            access_token=str(body["access_token"]),
            expires_in=float(body.get("expires_in", 3600)),
            extra=extra,
        )

    async def redeem_grant_code(self, code: str) -> dict[str, Any]:
        """Exchange a self-client grant code for tokens on this client's accounts server (see the
        module's `exchange_grant_code`)."""
        form = {
            "grant_type": "authorization_code",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "code": code,
        }
        response = await self.send("POST", TOKEN_PATH, data=form, record_body=False)
        unavailable = self.token_unavailable(response, "the Zoho accounts server is busy or unavailable")
        if unavailable is not None:
            raise unavailable
        body = _json(response)
        if "refresh_token" not in body:
            error = body.get("error") or f"HTTP {response.status_code}"
            hint = {
                "invalid_code": "the grant code expired (they last a few minutes) or was already used; generate a new one",
                "invalid_client": "the client id or secret is wrong, or the data centre does not match the org",
            }.get(str(error), "check the client id, secret and code")
            raise self._token_refused(f"Zoho refused the grant code ({error}): {hint}", response, error)
        return body

    def _token_refused(self, message: str, response: httpx2.Response, error: Any) -> ConfigurationError:
        """A refused token request, with the evidence but only Zoho's error code from the body."""
        refused = self.refusal(
            ConfigurationError, message, method="POST", path=TOKEN_PATH, response=response, excerpt=str(error)
        )
        assert isinstance(refused, ConfigurationError)
        return refused

    def url(self, path: str) -> str:
        # API calls go to the api_domain the token response named (send() checks it is one of Zoho's).
        if path.startswith(("http", "/oauth/")):
            return super().url(path)
        api_domain = (self.tokens.extra.get("api_domain") or self.base_url).rstrip("/")
        return f"{api_domain}{path}"

    async def probe(self) -> dict[str, str]:
        """Token exchange plus GET /crm/v8/org; learns the org and the api_domain to use."""
        response = await self.request("GET", f"/crm/{API_VERSION}/org")
        orgs = _json(response).get("org") or [{}]
        learned = {"org": str(orgs[0].get("company_name") or orgs[0].get("id") or "")}
        learned["api_domain"] = str(self.tokens.extra.get("api_domain") or "")
        return learned

    def explain(self, error: ConnectorError) -> str:
        # Most specific first: a throttled token request's message names the refresh token too, so the
        # throttling rules come before the refresh-token rule.
        waiting = wait_hint(error)  # our own budget or cool-down held the request back
        if waiting:
            return waiting
        text = f"{error.message} {error.excerpt or ''}".lower()
        if isinstance(error, TransientError) and ("throttl" in text or "access denied" in text):
            wait = minutes(error.retry_after or THROTTLE_WAIT)
            return (
                "Zoho is refusing new tokens for this refresh token: too many were asked for (at most 10 in 10 "
                f"minutes). Wait {wait} and try again."
            )
        if isinstance(error, CredentialsRevoked):
            return (
                "Zoho stopped accepting this connection's refresh token: it was revoked (API console, or Zoho "
                "Accounts > Connected apps) or the client secret was changed. Generate a new grant code, "
                "exchange it and re-enter the refresh token on the connection."
            )
        if "invalid_client" in text:
            return (
                "Zoho did not accept the client ID and secret. Check them in the API console, and that the data "
                "centre matches where the org lives (zoho.com, zoho.eu, zoho.in, ...): the wrong one answers "
                "invalid_client."
            )
        if "oauth_scope_mismatch" in text or "scope" in text:
            return (
                "The refresh token lacks a scope this needs: ZohoCRM.modules.ALL, ZohoCRM.notifications.ALL, "
                "ZohoCRM.org.READ (and, for record searches, ZohoSearch.securesearch.READ)."
            )
        if "invalid_code" in text or "refresh token" in text:
            return "Zoho rejected the refresh token (revoked or mistyped). Generate a new one from a self-client grant code."
        return f"Zoho refused the request: {error.message}"

    def classify(self, response: httpx2.Response) -> ConnectorError | None:
        # Zoho answers a batch write (records, watch channels) whose items all failed with HTTP 400 and the
        # per-item errors listed, as it lists them inside a 207 when only some failed (shared/api/zoho.md
        # §2a, Zoho's v8 OpenAPI examples): that is a batch answer to read item by item, not a refused
        # request. The body decides (a request-level 400 has a top-level `code`), so it is not a status
        # override.
        if (
            response.status_code == 400
            and response.request.method in BATCH_METHODS
            and _per_item_results(response) is not None
        ):
            return None
        return super().classify(response)

    def describe_error(self, response: httpx2.Response) -> str:
        body = _json(response)
        # Batch endpoints (records, watch) put the errors inside the list, one per item.
        items = body.get("data") or body.get("watch")
        if isinstance(items, list) and items and isinstance(items[0], dict) and "code" not in body:
            first = items[0]
            detail = first.get("details") or {}
            field = detail.get("api_name") or detail.get("param_name")
            return f"{first.get('code')}: {first.get('message', '')}" + (f" (field {field})" if field else "")
        return f"{body.get('code', response.status_code)}: {body.get('message', '')}".strip()

    async def upsert(
        self, module: str, records: list[dict[str, Any]], *, duplicate_check_fields: list[str]
    ) -> list[dict[str, Any]]:
        """Upsert up to 100 records; returns one result per record, in input order (Zoho's item: `status`
        "success" or "error", `code`, `message`, `details`, and `action` insert/update), whether some, all
        or none of them were refused."""
        path = f"/crm/{API_VERSION}/{module}/upsert"
        if len(records) > BATCH_LIMIT:
            raise self.refusal(
                RemoteError,
                f"at most {BATCH_LIMIT} records per upsert, not {len(records)}",
                method="POST",
                path=path,
            )
        body = {"data": records, "duplicate_check_fields": duplicate_check_fields}
        response = await self.request("POST", path, json=body)
        return list(_json(response).get("data") or [])

    async def get_records(self, module: str, ids: list[str], *, fields: list[str]) -> list[dict[str, Any]]:
        """Records by id, up to 100 per call (what a change notice names). v8 requires `fields`."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(ids), BATCH_LIMIT):
            chunk = ids[start : start + BATCH_LIMIT]
            params = {"ids": ",".join(chunk), "fields": ",".join(fields or ["id"])}
            response = await self.request("GET", f"/crm/{API_VERSION}/{module}", params=params)
            found += list(_json(response).get("data") or [])
        return found

    # --- notification channels (watch) ----------------------------------------------------------
    async def watch(self, channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Enable notification channels (POST /actions/watch); returns per-channel results."""
        response = await self.request("POST", f"/crm/{API_VERSION}/actions/watch", json={"watch": channels})
        return list(_json(response).get("watch") or [])

    async def renew_watch(self, channels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Update channels in place (PATCH), e.g. a new channel_expiry; a lapsed channel fails here."""
        response = await self.request("PATCH", f"/crm/{API_VERSION}/actions/watch", json={"watch": channels})
        return list(_json(response).get("watch") or [])

    async def list_watches(self) -> list[dict[str, Any]]:
        """Every live channel entry, one per (channel_id, module), all pages (GET /actions/watch, §3c).
        Nothing subscribed is a 204, read as an empty list."""
        entries: list[dict[str, Any]] = []
        path = f"/crm/{API_VERSION}/actions/watch"
        response: httpx2.Response | None = None
        for page in range(1, MAX_PAGES + 1):
            params = {"page": page, "per_page": PAGE_SIZE}
            response = await self.request("GET", path, params=params)
            body = _json(response)
            entries += list(body.get("watch") or [])
            if not (body.get("info") or {}).get("more_records"):
                return entries
        raise self.refusal(
            RemoteError,
            f"the channel list ran past {MAX_PAGES} pages",
            method="GET",
            path=path,
            response=response,
        )

    async def disable_watch(self, channel_ids: list[str]) -> list[dict[str, Any]]:
        response = await self.request(
            "DELETE", f"/crm/{API_VERSION}/actions/watch", params={"channel_ids": ",".join(channel_ids)}
        )
        return list(_json(response).get("watch") or [])

    async def get_record(self, module: str, record_id: str) -> dict[str, Any] | None:
        """One full record by id; None when Zoho has no such record (it answers 204, no body)."""
        response = await self.request("GET", f"/crm/{API_VERSION}/{module}/{record_id}")
        data = _json(response).get("data") or []
        return data[0] if data else None

    async def modified_since(
        self, module: str, since: datetime, *, fields: list[str], per_page: int = PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Records of `module` modified after `since` (an aware datetime), oldest change first.

        `GET /crm/v8/{module}` with the `If-Modified-Since` header, sorted by Modified_Time (shared/api/
        zoho.md §2d): 304 (nothing changed since) and 204 (no records) end the listing at once. Pages
        follow `info.next_page_token` when Zoho gives one (it must past 2,000 records) and `page` numbers
        otherwise; a repeated token, or more than MAX_PAGES pages, raises rather than loops.
        """
        headers = {"If-Modified-Since": since.isoformat(timespec="seconds")}
        base = {"fields": ",".join(dict.fromkeys(["id", *fields])), "per_page": per_page}
        base |= {"sort_by": "Modified_Time", "sort_order": "asc"}
        async for record in self._pages(module, base, headers=headers):
            yield record

    async def list_records(
        self, module: str, *, fields: list[str], per_page: int = PAGE_SIZE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record of `module` in id order (`GET /crm/v8/{module}?fields=..&per_page=200`), each with
        `id` and the `fields` asked for (at most 50 names a call).

        Pages follow `info.next_page_token` when Zoho gives one (it must past 2,000 records) and `page`
        numbers otherwise; 204 (no records) ends the listing; a repeated token, or more than MAX_PAGES
        pages, raises rather than loops (shared/api/zoho.md §2d).
        """
        base = {"fields": ",".join(dict.fromkeys(["id", *fields])), "per_page": per_page, "sort_by": "id"}
        async for record in self._pages(module, base):
            yield record

    async def _pages(
        self, module: str, base: dict[str, Any], *, headers: dict[str, str] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """The records of every page of `GET /crm/v8/{module}` with `base` parameters: `page_token` once
        Zoho gives one, `page` numbers before; 204 (no records) or 304 (not modified) end it; a repeated
        token or more than MAX_PAGES pages raises rather than loops."""
        page, token, tokens = 1, "", set()
        path = f"/crm/{API_VERSION}/{module}"
        response: httpx2.Response | None = None
        for _ in range(MAX_PAGES):
            params = {**base, **({"page_token": token} if token else {"page": page})}
            response = await self.request("GET", path, params=params, headers=headers)
            if response.status_code in (204, 304):
                return
            body = _json(response)
            for record in body.get("data") or []:
                yield record
            info = body.get("info") or {}
            if not info.get("more_records"):
                return
            token = str(info.get("next_page_token") or "")
            if token in tokens:
                raise self.refusal(
                    RemoteError,
                    f"Zoho repeated page token {token!r} listing {module}",
                    method="GET",
                    path=path,
                    response=response,
                )
            if token:
                tokens.add(token)
            else:
                page += 1
        raise self.refusal(
            RemoteError,
            f"listing {module} ran past {MAX_PAGES} pages",
            method="GET",
            path=path,
            response=response,
        )

    async def search_records(
        self, module: str, criteria: str | dict[str, Any], fields: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Records of `module` that match `criteria` (`GET /crm/v8/{module}/search?criteria=..`), every page.

        `criteria` is Zoho's criteria text, or a dict `search_criteria` turns into it with the values
        escaped. Pages of 200 are followed while `info.more_records`; nothing found (204) is []. Zoho lets
        one search read at most 2,000 records, so more than that raises SearchLimitReached (a RemoteError)
        rather than answer with a silent part.

        Zoho's `equals` behaves like *contains* (Company:equals:ABC also finds "ABC Inc"), and its search
        index can lag a few seconds behind writes: callers that need an exact match compare the values
        that come back, and callers that must not miss a record just written read it another way.
        """
        params: dict[str, Any] = {"criteria": search_criteria(criteria), "per_page": PAGE_SIZE}
        if fields:
            params["fields"] = ",".join(dict.fromkeys(["id", *fields]))
        found: list[dict[str, Any]] = []
        path = f"/crm/{API_VERSION}/{module}/search"
        response: httpx2.Response | None = None
        for page in range(1, SEARCH_LIMIT // PAGE_SIZE + 2):
            response = await self.request("GET", path, params={**params, "page": page})
            if response.status_code == 204:
                return found
            body = _json(response)
            found += list(body.get("data") or [])
            if not (body.get("info") or {}).get("more_records"):
                return found
            if len(found) >= SEARCH_LIMIT:
                break
        raise self.refusal(
            SearchLimitReached,
            f"more than {SEARCH_LIMIT} {module} records match {params['criteria']!r}, more than one Zoho search "
            "can return: narrow the criteria",
            method="GET",
            path=path,
            response=response,
        )

    async def update_record(self, module: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """`PUT /crm/v8/{module}/{id}` with the fields to change; Zoho's per-record result (a refusal
        raises RemoteError naming the field)."""
        body = {"data": [fields]}
        response = await self.request("PUT", f"/crm/{API_VERSION}/{module}/{record_id}", json=body)
        [result] = list(_json(response).get("data") or [{}])[:1] or [{}]
        if str(result.get("status")) != "success":
            raise self.refusal(
                RemoteError,
                f"Zoho refused the {module} update: {self.describe_error(response)}",
                method="PUT",
                path=f"/crm/{API_VERSION}/{module}/{record_id}",
                response=response,
            )
        return dict(result)


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _per_item_results(response: httpx2.Response) -> list[dict[str, Any]] | None:
    """The per-item results of a batch answer (`data[]` or `watch[]` of Zoho error/success objects, and no
    request-level `code`), or None when the body is a request-level error."""
    body = _json(response)
    if "code" in body:
        return None
    items = body.get("data", body.get("watch"))
    if not isinstance(items, list) or not items:
        return None
    if not all(isinstance(item, dict) and "status" in item and "code" in item for item in items):
        return None
    return items
