"""The NetSuite REST client: OAuth 2.0 client credentials (PS256 JWT assertion), record API, SuiteQL."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

import httpx2
import jwt
from oauthlib import oauth1

from connectors.auth import TokenGrant
from connectors.errors import (
    AmbiguousLogin,
    ConfigurationError,
    ConnectorError,
    CredentialsRevoked,
    RemoteError,
    TransientError,
)
from connectors.http import STATUS_REACTIONS, ApiClient, wait_hint
from connectors.netsuite.spec import AUTH_CODE, M2M, SPEC, TBA, realm_for_account

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
AUTHORIZE_PATH = "/app/login/oauth2/authorize.nl"  # UNCONFIRMED (shared/api/netsuite.md §1b)
RECORD_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
ASSERTION_LIFETIME = 300  # seconds; NetSuite refuses exp more than 60 minutes after iat
SUITEQL_PAGE = 1000  # rows, NetSuite's maximum page size
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


class NetSuiteClient(ApiClient):
    """Async client for one NetSuite account."""

    system = "netsuite"
    spec = SPEC
    # INVALID_LOGIN is NetSuite's catch-all 401: expired token, permissions, concurrency, or no visible
    # cause at all (shared/api/netsuite.md §5). Every 401 is retried with fresh tokens (AmbiguousLogin)
    # before the credentials are blamed.
    status_reactions: ClassVar[Mapping[int, type[ConnectorError]]] = {**STATUS_REACTIONS, 401: AmbiguousLogin}

    def __init__(
        self,
        *,
        account_id: str = "",
        auth_mode: str = M2M,
        client_id: str = "",
        certificate_id: str = "",
        private_key: str = "",
        client_secret: str = "",
        refresh_token: str = "",
        consumer_key: str = "",
        consumer_secret: str = "",
        token_id: str = "",
        token_secret: str = "",
        algorithm: str = "PS256",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.auth_mode = auth_mode or M2M
        self.client_id = client_id
        self.certificate_id = certificate_id
        self._private_key = private_key
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._tba = (consumer_key, consumer_secret, token_id, token_secret)
        self.algorithm = algorithm

    # --- authentication ---------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return f"{self.base_url}{TOKEN_PATH}"

    def client_assertion(self, now: float | None = None) -> str:
        """A signed JWT for the client-credentials grant (shared/api/netsuite.md §1a)."""
        issued = int(now if now is not None else time.time())
        claims = {
            "iss": self.client_id,
            "scope": ["rest_webservices"],
            "aud": self.token_url,
            "iat": issued,
            "exp": issued + ASSERTION_LIFETIME,
            "jti": uuid.uuid4().hex,
        }
        try:
            return jwt.encode(
                claims,
                self._private_key,
                algorithm=self.algorithm,
                headers={"kid": self.certificate_id, "typ": "JWT"},
            )
        except (ValueError, TypeError, jwt.InvalidKeyError) as exc:
            raise ConfigurationError(
                f"the private key cannot sign a {self.algorithm} assertion: paste the PEM private key of the "
                "certificate mapped in NetSuite",
                system=self.system,
                method="POST",
                url=self.token_url,
            ) from exc

    async def fetch_token(self) -> TokenGrant:
        """A new access token: a fresh signed assertion (M2M; no refresh token exists for that grant) or
        the refresh-token grant (authorization code mode)."""
        if self.auth_mode == AUTH_CODE:
            form = {"grant_type": "refresh_token", "refresh_token": self._refresh_token}
            return await self._token_request(form, basic=True)
        form = {
            "grant_type": "client_credentials",
            "client_assertion_type": JWT_BEARER,
            "client_assertion": self.client_assertion(),
        }
        return await self._token_request(form, basic=False)

    async def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """Authorization code → tokens (step 2 of the consent); the caller stores the refresh token."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
        }
        response = await self._post_token(form, basic=True)
        return _json(response)

    def authorize_url(
        self, *, redirect_uri: str, state: str, code_challenge: str, ui_base: str | None = None
    ) -> str:
        """Where to send a person to approve access (step 1). The UI host is `<account>.app.netsuite.com`
        (UNCONFIRMED in shared/api/netsuite.md §1b); emulators serve it at their own base URL."""
        base = ui_base or f"https://{self.account_id.lower().replace('_', '-')}.app.netsuite.com"
        query = httpx2.QueryParams(
            {
                "response_type": "code",
                "client_id": self.client_id,
                "redirect_uri": redirect_uri,
                "scope": "rest_webservices",
                "state": state,
                "code_challenge": code_challenge,
                "code_challenge_method": "S256",
            }
        )
        return f"{base.rstrip('/')}{AUTHORIZE_PATH}?{query}"

    async def _post_token(self, form: dict[str, str], *, basic: bool) -> httpx2.Response:
        headers = {}
        if basic:
            pair = f"{self.client_id}:{self._client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        return await self.send("POST", TOKEN_PATH, data=form, headers=headers, record_body=False)

    async def _token_request(self, form: dict[str, str], *, basic: bool) -> TokenGrant:
        response = await self._post_token(form, basic=basic)
        unavailable = self.token_unavailable(response, "the token endpoint is unavailable")
        if unavailable is not None:
            raise unavailable
        body = _json(response)
        if response.status_code != 200 or "access_token" not in body:
            reason = body.get("error_description") or body.get("error") or f"HTTP {response.status_code}"
            if body.get("error") == "invalid_grant" and self.auth_mode == AUTH_CODE:
                reason = (
                    f"{reason}: the refresh token has expired (7 days) or was revoked; approve access again"
                )
            raise ConfigurationError(
                f"NetSuite refused the token request: {reason}",
                system=self.system,
                method="POST",
                url=self.token_url,
                status=response.status_code,
                excerpt=str(body.get("error", ""))[:200],
            )
        # expires_in arrives as "3600" (a string) in Oracle's sample; accept a number too.
        return TokenGrant(
            access_token=str(body["access_token"]), expires_in=float(body.get("expires_in", 3600))
        )

    async def credentials(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        stale: str | None = None,
        reason: str = "",
    ) -> tuple[dict[str, str], str]:
        if self.auth_mode != TBA:
            return await super().credentials(method, path, params, stale=stale, reason=reason)
        return self.tba_header(method, str(httpx2.URL(self.url(path), params=params or {})))

    def tba_header(self, method: str, url: str) -> tuple[dict[str, str], str]:
        """OAuth 1.0a HMAC-SHA256 for one attempt: a fresh nonce and timestamp every time (a reused pair is
        refused with nonce_used), query parameters in the base string, the realm in upper case."""
        consumer_key, consumer_secret, token_id, token_secret = self._tba
        signer = oauth1.Client(
            consumer_key,
            client_secret=consumer_secret,
            resource_owner_key=token_id,
            resource_owner_secret=token_secret,
            signature_method=oauth1.SIGNATURE_HMAC_SHA256,
            realm=realm_for_account(self.account_id),
        )
        _uri, headers, _body = signer.sign(url, http_method=method)
        authorization = headers["Authorization"]
        nonce = authorization.split('oauth_nonce="', 1)[1].split('"', 1)[0]
        return {"Authorization": authorization}, nonce

    # --- errors -----------------------------------------------------------------------------
    def describe_error(self, response: httpx2.Response) -> str:
        body = _json(response)
        details = body.get("o:errorDetails") or []
        if details and isinstance(details, list):
            first = details[0]
            code = first.get("o:errorCode", "")
            path = first.get("o:errorPath")
            detail = first.get("detail", "")
            text = f"{code}: {detail}" + (f" (field {path})" if path else "")
        else:
            text = body.get("title") or f"HTTP {response.status_code}"
        if response.status_code == 401:
            text += (
                " — NetSuite refused the login; check the integration record, the certificate mapping and "
                "the role's REST web services permission"
            )
        return text

    def classify(self, response: httpx2.Response) -> ConnectorError | None:
        # Our own concurrency: NetSuite's account-wide limit answers 429 (and sometimes, reportedly,
        # 400 SSS_REQUEST_LIMIT_EXCEEDED); both mean "slow down", not "this record is bad". The body
        # decides, so this stays here rather than in the status table.
        if response.status_code == 400 and "SSS_REQUEST_LIMIT_EXCEEDED" in response.text:
            return self.error(TransientError, self.describe_error(response), response)
        return super().classify(response)

    # --- ping -------------------------------------------------------------------------------
    async def probe(self) -> dict[str, str]:
        """Token exchange plus one SuiteQL row; learns the company from the root subsidiary."""
        learned = {"account": self.account_id} if self.account_id else {}
        try:
            page = await self.suiteql_page("SELECT id, name FROM subsidiary WHERE parent IS NULL", limit=1)
            items = page.get("items") or []
            if items and items[0].get("name"):
                learned["company"] = str(items[0]["name"])
        except RemoteError:
            # Accounts without OneWorld have no subsidiary table; any readable table proves the login.
            await self.suiteql_page("SELECT id FROM customer", limit=1)
        return learned

    def explain(self, error: ConnectorError) -> str:
        waiting = wait_hint(error)
        if waiting:
            return waiting
        account = self.account_id or "this account"
        if isinstance(error, CredentialsRevoked):
            return (
                f"NetSuite stopped accepting these credentials for account {account}: the certificate mapping, "
                "the integration record or the access token was revoked or changed (a sandbox refresh clears "
                "them too). Set them up again in NetSuite and re-enter them on the connection."
            )
        text = f"{error.message} {error.excerpt or ''}".lower()
        rules = [
            (
                # A wrong Account ID reaches another account (its host is made from the id), and that
                # account knows none of our certificates: NetSuite answers exactly as for an unknown
                # Certificate ID (invalid_client). What an account id with no account behind it answers is
                # UNCONFIRMED; if its host does not resolve, the ping says it could not reach it.
                ("unknown certificate", "(kid)"),
                f"NetSuite account {account} does not know this Certificate ID. First check the Account ID "
                "(Setup > Company > Company Information; a sandbox is 1234567_SB1): a wrong one reaches another "
                "account, which knows none of your certificates. If it is right, copy the Certificate ID from "
                "Setup > Integration > Manage Authentication > OAuth 2.0 Client Credentials (M2M) Setup, and "
                "check the certificate is mapped to this integration (mappings are cleared when a sandbox is "
                "refreshed).",
            ),
            (
                ("signature", "does not fit"),
                "The private key does not match the certificate uploaded to NetSuite. Paste the private key of "
                "the certificate you mapped, or upload the certificate that belongs to this key.",
            ),
            (
                ("in the future", "expired at", "(exp", "after iat", "clock"),
                "NetSuite rejected the sign-in because of the time in it: this server's clock and NetSuite's "
                "disagree. Synchronise this server's clock (NTP) and try again.",
            ),
            (
                ("iss ", "client id"),
                "The Client ID does not belong to the mapped certificate. Copy the Client ID of the integration "
                "record the certificate is mapped to.",
            ),
            (
                ("bad aud", "audience", "token endpoint url"),
                "The sign-in was addressed to the wrong account. Check the Account ID (for a sandbox, "
                "1234567_SB1).",
            ),
            (
                ("insufficient_permission",),
                "NetSuite signed in but the role may not do this. Give the integration's role the REST Web "
                "Services permission and access to customers, vendors, contacts and invoices.",
            ),
            (
                ("invalid_login",),
                "NetSuite keeps refusing the login (INVALID_LOGIN). Check the Account ID (token-based "
                "authentication signs it in: a sandbox is 1234567_SB1), that the integration record is enabled, "
                "the certificate or token is mapped to an active role, and the role has REST Web Services "
                "permission.",
            ),
        ]
        for needles, message in rules:
            if any(needle in text for needle in needles):
                return message
        return f"NetSuite refused the request: {error.message}"

    # --- operations -------------------------------------------------------------------------
    async def get_record(self, record_type: str, record_id: str, *, expand: bool = False) -> dict[str, Any]:
        """One record by internal id (or `eid:<external id>`), sublists inlined with `expand`."""
        params = {"expandSubResources": "true"} if expand else None
        response = await self.request("GET", f"{RECORD_PATH}/{record_type}/{record_id}", params=params)
        return _json(response)

    async def upsert_by_external_id(self, record_type: str, external_id: str, body: dict[str, Any]) -> str:
        """Create or update by external id (PUT …/eid:<id>); returns the internal id from Location."""
        response = await self.request("PUT", f"{RECORD_PATH}/{record_type}/eid:{external_id}", json=body)
        return self._id_from_location(response, fallback=f"eid:{external_id}")

    async def update_record(self, record_type: str, record_id: str, body: dict[str, Any]) -> None:
        """PATCH the fields in `body` onto one record; fields left out keep their values (204 back)."""
        await self.request("PATCH", f"{RECORD_PATH}/{record_type}/{record_id}", json=body)

    async def create_record(self, record_type: str, body: dict[str, Any]) -> str:
        """POST a new record; NetSuite answers 204 with the new record's URL in Location."""
        response = await self.request("POST", f"{RECORD_PATH}/{record_type}", json=body)
        return self._id_from_location(response, fallback="")

    def _id_from_location(self, response: httpx2.Response, *, fallback: str) -> str:
        """The internal id at the end of the Location header NetSuite answers a write with."""
        location = response.headers.get("location", "")
        if not location and not fallback:
            raise self.refusal(
                RemoteError,
                "NetSuite accepted the record but sent no Location header",
                method=response.request.method,
                path=str(response.request.url),
                response=response,
            )
        return location.rstrip("/").rsplit("/", 1)[-1] if location else fallback

    async def suiteql_page(self, query: str, *, limit: int = SUITEQL_PAGE, offset: int = 0) -> dict[str, Any]:
        """One page of a SuiteQL query (the `{items, hasMore, offset, count, totalResults}` envelope)."""
        return _json(await self._suiteql(query, limit=limit, offset=offset))

    async def _suiteql(self, query: str, *, limit: int, offset: int) -> httpx2.Response:
        return await self.request(
            "POST",
            SUITEQL_PATH,
            params={"limit": limit, "offset": offset},
            json={"q": query},
            headers={"Prefer": "transient"},
        )

    async def scan(
        self, columns: str, table: str, *, where: str = "", key: str = "id", page: int = SUITEQL_PAGE
    ) -> AsyncIterator[dict[str, Any]]:
        """Every row of `table`, page by page on the key (`WHERE key > last ORDER BY key`), never by offset.

        Each page is a fresh query returning at most `page` rows, so NetSuite's 100,000-row cap per query
        never applies and rows inserted meanwhile cannot shift later pages.
        """
        after: int | None = None
        while True:
            query = keyset_query(columns, table, where=where, key=key, after=after)
            response = await self._suiteql(query, limit=page, offset=0)
            body = _json(response)
            items = body.get("items") or []
            for row in items:
                yield {k: v for k, v in row.items() if k != "links"}
            if len(items) < page or (not body.get("hasMore", len(items) == page) and len(items) < page):
                return
            last = items[-1].get(key.split(".")[-1].lower())
            if last is None or (after is not None and int(last) <= after):
                raise self.refusal(
                    RemoteError,
                    f"keyset scan of {table} did not advance past {after}",
                    method="POST",
                    path=SUITEQL_PATH,
                    response=response,
                )
            after = int(last)

    async def suiteql(self, query: str, *, limit: int = SUITEQL_PAGE) -> AsyncIterator[dict[str, Any]]:
        """Every row of a query, page by page; stops when NetSuite says there is no more."""
        offset = 0
        while True:
            page = await self.suiteql_page(query, limit=limit, offset=offset)
            items = page.get("items") or []
            for row in items:
                yield {k: v for k, v in row.items() if k != "links"}
            if not page.get("hasMore") or not items:
                return
            offset += len(items)


def keyset_query(
    columns: str, table: str, *, where: str = "", key: str = "id", after: int | None = None
) -> str:
    """One page of a keyset scan: rows with `key` above `after`, in key order."""
    conditions = [where] if where else []  # AND-joined; SuiteQL has no trouble, the emulator has no OR
    if after is not None:
        conditions.append(f"{key} > {int(after)}")
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {columns} FROM {table}{clause} ORDER BY {key}"


def _json(response: httpx2.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"items": body}
