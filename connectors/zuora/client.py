"""The Zuora REST client: OAuth client credentials, accounts, lookups by NetSuite id, standalone
invoices, Idempotency-Key.

Zuora answers many errors with HTTP 200 and `{"success": false, "reasons": [{code, message}]}`; the
last two digits of a code are its category (shared/api/zuora.md §8), which decides the reaction.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2

from connectors.auth import TokenGrant
from connectors.errors import (
    ConfigurationError,
    ConnectorError,
    CredentialsRevoked,
    RemoteError,
    TransientError,
)
from connectors.http import ApiClient, wait_hint
from connectors.zuora.spec import SPEC

PAGE_SIZE = 40  # rows per page, the v1 list maximum (larger values are treated as 40)
QUERY_PAGE = 99  # rows per Object Query page, its maximum; also the crmIds one IN filter carries
UNLISTABLE = frozenset(",[]")  # characters that would break an Object Query IN list

# Category (last two digits of a reason code) → reaction. Zuora advises retrying 50 (lock
# contention), 61 (temporary), 70 (limit) and 99 (external system); 10/11 are permission and auth.
CATEGORY_REACTIONS: dict[int, type[ConnectorError]] = {
    10: ConfigurationError,
    11: ConfigurationError,
    50: TransientError,
    60: TransientError,
    61: TransientError,
    70: TransientError,
    99: TransientError,
}


class ZuoraClient(ApiClient):
    """Async client for one Zuora tenant."""

    system = "zuora"
    spec = SPEC

    def __init__(self, *, client_id: str, client_secret: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.client_id = client_id
        self._client_secret = client_secret

    async def fetch_token(self) -> TokenGrant:
        form = {
            "client_id": self.client_id,
            "client_secret": self._client_secret,
            "grant_type": "client_credentials",
        }
        response = await self.send("POST", "/oauth/token", data=form, record_body=False)
        unavailable = self.token_unavailable(response, "the Zuora token endpoint is busy or unavailable")
        if unavailable is not None:
            raise unavailable
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            # A tenant in another environment answers exactly like a wrong secret: its token endpoint
            # has never heard of the client (shared/api/zuora.md §2, "a wrong base URL shows up as an
            # authentication error").
            raise ConfigurationError(
                f"Zuora refused the client id and secret at {self.environment_host} (check them, and that "
                "the environment matches the tenant): "
                f"{body.get('error_description') or body.get('error') or response.status_code}",
                system=self.system,
                method="POST",
                url=self.url("/oauth/token"),
                status=response.status_code,
                excerpt=str(body.get("error") or "")[:200],
            )
        # The scope names the tenant ("... tenant.19"); it is not secret, and a ping shows it.
        scopes = str(body.get("scope", "")).split()
        tenant = next((part.split(".", 1)[1] for part in scopes if part.startswith("tenant.")), "")
        return TokenGrant(
            access_token=str(body["access_token"]),
            expires_in=float(body.get("expires_in", 3599)),
            extra={"tenant": tenant} if tenant else {},
        )

    def describe_error(self, response: httpx2.Response) -> str:
        reasons = _json(response).get("reasons") or []
        if reasons:
            return "; ".join(f"{r.get('code')}: {r.get('message')}" for r in reasons if isinstance(r, dict))
        return f"HTTP {response.status_code}"

    def classify(self, response: httpx2.Response) -> ConnectorError | None:
        problem = super().classify(response)
        if problem is not None:
            return problem
        body = _json(response)
        if body.get("success") is not False:
            return None
        kind: type[ConnectorError] = RemoteError
        for reason in body.get("reasons") or []:
            try:
                category = int(str(reason.get("code", ""))[-2:])
            except ValueError:
                continue
            kind = CATEGORY_REACTIONS.get(category, kind)
        return self.error(kind, self.describe_error(response), response)

    # --- ping -------------------------------------------------------------------------------
    async def probe(self) -> dict[str, str]:
        """Token exchange plus one Object Query page of one account."""
        await self.request("GET", "/object-query/accounts", params={"pageSize": 1, "fields[]": "id"})
        learned = {"environment": self.base_url.split("//", 1)[-1]}
        if self.tokens.extra.get("tenant"):
            learned["tenant"] = str(self.tokens.extra["tenant"])
        return learned

    @property
    def environment_host(self) -> str:
        """The host of the environment this client talks to (`rest.na.zuora.com`)."""
        return self.base_url.split("//", 1)[-1]

    def explain(self, error: ConnectorError) -> str:
        waiting = wait_hint(error)
        if waiting:
            return waiting
        if isinstance(error, CredentialsRevoked):
            return (
                "Zuora stopped accepting this OAuth client: it was revoked (deleted under Settings > "
                "Administration > Manage Users > OAuth Clients) or its secret was changed. Create or look up the "
                "client and re-enter its client ID and secret on the connection."
            )
        text = f"{error.message} {error.excerpt or ''}".lower()
        if "client id and secret" in text or "invalid_client" in text or error.status == 401:
            return (
                f"Zuora at {self.environment_host} did not accept the client ID and secret. Check the Environment "
                "first: a tenant in another environment or region (US Cloud 1 or 2, sandbox or production, EU, "
                "APAC) answers exactly like a wrong secret. Then check the client ID and secret (Settings > "
                "Administration > Manage Users > OAuth Clients)."
            )
        if error.status == 403 or "permission" in text:
            return "Zuora signed in but the OAuth client's user lacks a permission this needs (API access, accounts)."
        return f"Zuora refused the request: {error.message}"

    # --- operations -------------------------------------------------------------------------
    async def find_account_by_crm_id(self, crm_id: str) -> dict[str, Any] | None:
        """The account whose crmId is `crm_id`, through Object Query; None when there is none."""
        response = await self.request(
            "GET",
            "/object-query/accounts",
            params={"filter[]": f"crmid.EQ:{crm_id}", "fields[]": "id,accountnumber,name,crmid"},
        )
        data = _json(response).get("data") or []
        return data[0] if data else None

    async def find_accounts_by_crm_ids(self, crm_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The accounts of many crmIds through Object Query `crmid.IN:[...]`, up to QUERY_PAGE ids a
        call, following `nextPage`: crmId (lower-cased, as Zuora's filters match) → the first account
        found with it. An id holding a comma, a bracket or nothing at all cannot go in a list and is
        looked up on its own."""
        found: dict[str, dict[str, Any]] = {}
        listable = sorted({c for c in crm_ids if c.strip() and not set(c) & UNLISTABLE})
        for single in sorted(set(crm_ids) - set(listable)):
            account = await self.find_account_by_crm_id(single)
            if account is not None:
                found.setdefault(single.lower(), account)
        for start in range(0, len(listable), QUERY_PAGE):
            chunk = listable[start : start + QUERY_PAGE]
            params: dict[str, Any] = {
                "filter[]": f"crmid.IN:[{','.join(chunk)}]",
                "fields[]": "id,accountnumber,name,crmid",
                "pageSize": QUERY_PAGE,
            }
            seen: set[str] = set()
            while True:
                body = _json(await self.request("GET", "/object-query/accounts", params=params))
                for row in body.get("data") or []:
                    crm_id = row.get("crmid") or row.get("crmId")
                    if crm_id is not None:
                        found.setdefault(str(crm_id).lower(), row)
                cursor = body.get("nextPage")
                if not cursor or cursor in seen:  # a paginator that refuses to loop
                    break
                seen.add(cursor)
                params = {**params, "cursor": cursor}
        return found

    async def create_account(self, payload: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """POST /v1/accounts under an Idempotency-Key; returns accountId and accountNumber."""
        response = await self.request(
            "POST", "/v1/accounts", json=payload, headers={"Idempotency-Key": idempotency_key}
        )
        return _json(response)

    async def update_account(self, account_key: str, payload: dict[str, Any]) -> dict[str, Any]:
        """PUT /v1/accounts/{key} with the fields to change."""
        return _json(await self.request("PUT", f"/v1/accounts/{account_key}", json=payload))

    async def get_account(self, account_key: str) -> dict[str, Any]:
        return _json(await self.request("GET", f"/v1/accounts/{account_key}"))

    async def create_invoice(self, payload: dict[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        """POST /v1/invoices (a standalone invoice) under an Idempotency-Key; returns id and number."""
        response = await self.request(
            "POST", "/v1/invoices", json=payload, headers={"Idempotency-Key": idempotency_key}
        )
        return _json(response)

    async def get_invoice(self, invoice_key: str) -> dict[str, Any]:
        return _json(await self.request("GET", f"/v1/invoices/{invoice_key}"))

    async def get_subscription(self, subscription_key: str, *, version: int | None = None) -> dict[str, Any]:
        """A subscription by number or id, or one version of it."""
        path = f"/v1/subscriptions/{subscription_key}"
        if version is not None:
            path += f"/versions/{version}"
        return _json(await self.request("GET", path))

    async def account_invoices(self, account_key: str) -> AsyncIterator[dict[str, Any]]:
        """Every invoice of an account, newest updatedDate first (GET /v1/transactions/invoices/accounts/
        {key}, the older API): `id`, `invoiceNumber`, `invoiceDate`, `dueDate`, `amount`, `balance`,
        `status`; custom fields only through `get_invoice`."""
        async for invoice in self._pages(
            f"/v1/transactions/invoices/accounts/{account_key}", "invoices", {"pageSize": PAGE_SIZE}
        ):
            yield invoice

    async def payments(self, **filters: str) -> AsyncIterator[dict[str, Any]]:
        """Every payment matching `filters` (accountId, status, updatedDate, ...); read only, never
        written back."""
        async for payment in self._pages("/v1/payments", "payments", {"pageSize": PAGE_SIZE, **filters}):
            yield payment

    async def query(self, zoql: str) -> AsyncIterator[dict[str, Any]]:
        """Every record of a ZOQL query (`POST /v1/action/query`, then `queryMore` while `done` is false;
        up to 2,000 records a call, PascalCase keys, null fields left out: shared/api/zuora.md §3)."""
        response = await self.request("POST", "/v1/action/query", json={"queryString": zoql})
        body = _json(response)
        seen: set[str] = set()
        while True:
            for record in body.get("records") or []:
                yield record
            locator = str(body.get("queryLocator") or "")
            if body.get("done", True) or not locator:
                return
            if locator in seen:  # a paginator that refuses to loop
                raise self.refusal(
                    RemoteError,
                    f"Zuora repeated query locator {locator!r}",
                    method="POST",
                    path="/v1/action/queryMore",
                    response=response,
                )
            seen.add(locator)
            response = await self.request("POST", "/v1/action/queryMore", json={"queryLocator": locator})
            body = _json(response)

    async def _pages(self, path: str, key: str, params: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """The `key` rows of a v1 list, following nextPage (a full URL) until Zuora stops sending one."""
        query: dict[str, Any] | None = params
        seen: set[str] = set()
        while path:
            body = _json(await self.request("GET", path, params=query))
            for row in body.get(key) or []:
                yield row
            next_page = body.get("nextPage")
            if not next_page or next_page in seen:  # a paginator that refuses to loop
                return
            seen.add(next_page)
            path, query = next_page, None


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
