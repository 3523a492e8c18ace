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
from connectors.errors import ConfigurationError, ConnectorError, RemoteError, TransientError
from connectors.http import ApiClient

PAGE_SIZE = 40  # rows per page, the v1 list maximum (larger values are treated as 40)

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
        if response.status_code == 429 or response.status_code >= 500:
            raise self.error(TransientError, "the Zuora token endpoint is busy or unavailable", response)
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            raise ConfigurationError(
                "Zuora refused the client id and secret (check them, and that the environment matches the "
                f"tenant): {body.get('error_description') or body.get('error') or response.status_code}",
                system=self.system,
                method="POST",
                url=self.url("/oauth/token"),
                status=response.status_code,
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

    def explain(self, error: ConnectorError) -> str:
        text = f"{error.message} {error.excerpt or ''}".lower()
        if "client id and secret" in text or "invalid_client" in text or error.status == 401:
            return (
                "Zuora did not accept the client ID and secret. Check them (Settings > Administration > Manage "
                "Users > OAuth Clients) and that the environment matches the tenant: a tenant in another "
                "environment or region answers exactly like a wrong secret."
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
