"""The Zoho accounts server of the emulator: self-client grant codes, the token endpoint, scopes.

`POST /oauth/v2/token` with `grant_type=authorization_code` (a self-client code) or
`grant_type=refresh_token`, parameters in the query string or a form body, as in
/work/shared/api/zoho.md §1 ("notes §1x"). Errors are HTTP 200 `{"error": ...}`, except the refresh
throttle, which is HTTP 400 "Access Denied" (notes §1a).

Scopes: a refresh token minted from a grant code carries the code's scopes, and so does every
access token refreshed from it; `scope_allows` then decides whether a call may proceed
(`OAUTH_SCOPE_MISMATCH`, notes §1c). Refresh tokens registered directly (`register_client`) grant
every scope, so existing setups keep working.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from connectors.emulator_kit import TokenStore

TOKEN_TTL = 3600  # seconds an access token lives (notes §1a)
TOKENS_PER_WINDOW = 10  # access tokens per refresh token ... (notes §1a, ACC:web-apps/access-token-expiry)
TOKEN_WINDOW = 600.0  # seconds: ... in ten minutes
GRANT_CODE_TTL = 180.0  # seconds: the API console's default code expiry, 3 minutes (notes §1b)
# UNCONFIRMED for CRM (notes §1a, other Zoho products): at most 20 refresh tokens per user; the 21st
# deletes the oldest. Applied to refresh tokens minted from grant codes.
MAX_REFRESH_TOKENS = 20
# UNCONFIRMED: which operations a `.WRITE` scope covers; Zoho lists WRITE beside CREATE/UPDATE/DELETE.
WRITE_COVERS = frozenset({"create", "update", "delete"})
THROTTLED = {
    "error_description": "You have made too many requests continuously. Please try again after some time.",
    "error": "Access Denied",
    "status": "failure",
}

Scopes = frozenset[str] | None  # None: every scope (a directly registered refresh token)


@dataclass
class Client:
    """A self client: its secret and the refresh tokens granted to it, oldest first, with their scopes."""

    secret: str
    refresh_tokens: dict[str, Scopes] = field(default_factory=dict)


@dataclass
class GrantCode:
    client_id: str
    scopes: frozenset[str]
    expires_at: float  # epoch seconds


def scope_allows(granted: Scopes, service: str, resource: str | None, operation: str) -> bool:
    """Whether `granted` covers e.g. ("modules", "accounts", "read") or ("notifications", None, "create").

    Zoho scopes read `ZohoCRM.<service>.<operation>` or `ZohoCRM.<service>.<resource>.<operation>`,
    with `ALL` covering every operation (notes §1b: ZohoCRM.modules.ALL,
    ZohoCRM.modules.accounts.READ, ZohoCRM.notifications.CREATE, ZohoCRM.settings.fields.READ).
    """
    if granted is None:
        return True
    for scope in granted:
        parts = scope.lower().split(".")
        if len(parts) < 3 or parts[0] != "zohocrm" or parts[1] != service:
            continue
        if len(parts) == 4 and parts[2] != resource:
            continue
        last = parts[-1]
        if len(parts) in (3, 4) and (
            last in ("all", operation) or (last == "write" and operation in WRITE_COVERS)
        ):
            return True
    return False


class OAuthServer:
    """Clients, grant codes and refresh tokens of one accounts server; access tokens go to `tokens`."""

    def __init__(self, clock: Callable[[], float], lock: threading.RLock, tokens: TokenStore) -> None:
        self.clock = clock
        self.lock = lock
        self.tokens = tokens
        self.token_ttl = TOKEN_TTL
        self.tokens_per_window = TOKENS_PER_WINDOW
        self.max_refresh_tokens = MAX_REFRESH_TOKENS
        self.clients: dict[str, Client] = {}
        self.token_requests = 0
        self._codes: dict[str, GrantCode] = {}
        self._issued: dict[str, list[float]] = {}

    def clear(self) -> None:
        """Forget counters, throttle history and unused codes; clients and refresh tokens stay."""
        with self.lock:
            self.token_requests = 0
            self._issued.clear()
            self._codes.clear()

    def register_client(self, client_id: str, client_secret: str, refresh_token: str | None = None) -> None:
        with self.lock:
            client = self.clients.setdefault(client_id, Client(client_secret))
            client.secret = client_secret
            if refresh_token is not None:
                client.refresh_tokens[refresh_token] = None

    def revoke(self, refresh_token: str | None = None, client_id: str | None = None) -> dict[str, int]:
        """Revoke refresh tokens: this one, every one of `client_id`, or (neither given) all of them.

        As when the user takes the app's access away: refreshing with a revoked token answers HTTP
        200 `{"error": "invalid_code"}` (notes §1a: "the refresh token is invalid or revoked") and the
        access tokens made from it answer 401 INVALID_TOKEN. The self clients stay. KeyError when the
        named refresh token or client is unknown.
        """
        with self.lock:
            if client_id is not None and client_id not in self.clients:
                raise KeyError(f"no self client {client_id!r} is registered")
            owners = [
                (name, client)
                for name, client in self.clients.items()
                if (client_id is None or name == client_id)
                and (refresh_token is None or refresh_token in client.refresh_tokens)
            ]
            if refresh_token is not None and not owners:
                raise KeyError("no such refresh token is registered")
            gone: set[str] = set()
            for _, client in owners:
                tokens = [refresh_token] if refresh_token is not None else list(client.refresh_tokens)
                for token in tokens:
                    del client.refresh_tokens[token]
                    self._issued.pop(token, None)
                gone.update(tokens)
        access = self.tokens.revoke(lambda t: t.claims.get("refresh_token") in gone)
        return {"refresh_tokens": len(gone), "access_tokens": access}

    def grant_code(self, client_id: str, scopes: Iterable[str] | str, ttl: float = GRANT_CODE_TTL) -> str:
        """Mint a one-time self-client code, as the API console's "Generate Code" does (notes §1b)."""
        wanted = scopes.split(",") if isinstance(scopes, str) else list(scopes)
        cleaned = frozenset(s.strip() for s in wanted if s.strip())
        if not cleaned:
            raise ValueError("a grant code needs at least one scope")
        if ttl <= 0:
            raise ValueError("ttl must be a positive number of seconds")
        with self.lock:
            if client_id not in self.clients:
                raise ValueError(f"no self client {client_id!r} is registered")
            code = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
            self._codes[code] = GrantCode(client_id, cleaned, self.clock() + ttl)
        return code

    def token(self, params: dict[str, str], api_domain: str) -> tuple[int, dict[str, Any]]:
        """The token endpoint: (HTTP status, JSON body) for one request's merged parameters."""
        with self.lock:
            self.token_requests += 1
            grant = params.get("grant_type")
            if grant not in ("refresh_token", "authorization_code"):
                return 200, {"error": "unsupported_grant_type"}
            client = self.clients.get(params.get("client_id", ""))
            if client is None or client.secret != params.get("client_secret"):
                return 200, {"error": "invalid_client"}
            if grant == "authorization_code":
                return self._exchange(params["client_id"], client, params.get("code", ""), api_domain)
            return self._refresh(params["client_id"], client, params.get("refresh_token", ""), api_domain)

    def _exchange(
        self, client_id: str, client: Client, code: str, api_domain: str
    ) -> tuple[int, dict[str, Any]]:
        # One use only: the code is gone whether or not it was still valid (notes §1b).
        found = self._codes.pop(code, None)
        if found is None or found.client_id != client_id or found.expires_at <= self.clock():
            return 200, {"error": "invalid_code"}
        refresh_token = f"1000.{secrets.token_hex(16)}.{secrets.token_hex(16)}"
        client.refresh_tokens[refresh_token] = found.scopes
        while self.max_refresh_tokens and len(client.refresh_tokens) > self.max_refresh_tokens:
            del client.refresh_tokens[next(iter(client.refresh_tokens))]
        body = self._access(client_id, found.scopes, api_domain, refresh_token)
        return 200, {"access_token": body["access_token"], "refresh_token": refresh_token, **body}

    def _refresh(
        self, client_id: str, client: Client, refresh_token: str, api_domain: str
    ) -> tuple[int, dict[str, Any]]:
        if refresh_token not in client.refresh_tokens:
            return 200, {"error": "invalid_code"}
        now = self.clock()
        recent = [t for t in self._issued.get(refresh_token, []) if now - t < TOKEN_WINDOW]
        self._issued[refresh_token] = recent
        if len(recent) >= self.tokens_per_window:
            return 400, dict(THROTTLED)
        recent.append(now)
        # No new refresh_token on refresh: Zoho does not rotate them (notes §1a).
        return 200, self._access(client_id, client.refresh_tokens[refresh_token], api_domain, refresh_token)

    def _access(self, client_id: str, scopes: Scopes, api_domain: str, refresh_token: str) -> dict[str, Any]:
        # The refresh token is noted on the access token so revoking the one ends the other.
        issued = self.tokens.issue(client_id, self.token_ttl, scopes=scopes, refresh_token=refresh_token)
        return {
            "access_token": issued.token,
            "api_domain": api_domain,
            "token_type": "Bearer",
            "expires_in": self.token_ttl,
        }
