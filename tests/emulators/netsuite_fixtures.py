"""Helpers for the NetSuite contract suites beyond conftest.py: TBA signing, OAuth code clients,
invoice seeding. (Plain functions: pytest fixtures imported by name would shadow test arguments,
so each suite declares the few fixtures it needs on top of these.)

The TBA signer here is written from RFC 5849 and the notes (§2), independently of the emulator's
verifier, so a shared misreading would have to be made twice to go unnoticed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx2

from connectors.netsuite.emulator import INVALID_LOGIN, NetSuiteEmulator
from tests.emulators.conftest import Clock

RECORD = "/services/rest/record/v1"
SUITEQL = "/services/rest/query/v1/suiteql"
TOKEN = "/services/rest/auth/oauth2/v1/token"
AUTHORIZE = "/app/login/oauth2/authorize.nl"
TRANSIENT = {"Prefer": "transient"}
ACCOUNT = "1234567_SB1"
UNAUTHORIZED_BODY = {
    "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
    "title": "Unauthorized",
    "status": 401,
    "o:errorDetails": [{"detail": INVALID_LOGIN, "o:errorCode": "INVALID_LOGIN"}],
}
CONSUMER_KEY = "ck-emulated"
CONSUMER_SECRET = "cs secret/with+odd=chars"  # forces real percent-encoding in the signing key
TOKEN_ID = "token-1"
TOKEN_SECRET = "ts-secret"
CODE_CLIENT_ID = "code-client"
CODE_CLIENT_SECRET = "code-secret"
REDIRECT_URI = "https://app.example.test/oauth/netsuite/callback"


def _enc(text: str) -> str:
    # RFC 3986 unreserved characters stay; Python's quote never encodes ALPHA DIGIT - . _ ~.
    return quote(text, safe="")


@dataclass
class TbaSigner:
    """Builds `Authorization: OAuth ...` headers for the registered TBA token (RFC 5849 §3.4)."""

    clock: Clock
    consumer_key: str = CONSUMER_KEY
    consumer_secret: str = CONSUMER_SECRET
    token_id: str = TOKEN_ID
    token_secret: str = TOKEN_SECRET
    realm: str | None = ACCOUNT

    def header(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        form: list[tuple[str, str]] | None = None,
        sign_query: bool = True,
        oauth: dict[str, str | None] | None = None,
        sha1: bool = False,
    ) -> str:
        """The header for `method url`; `oauth` overrides (None drops) any oauth_* parameter."""
        params: dict[str, str | None] = {
            "oauth_consumer_key": self.consumer_key,
            "oauth_token": self.token_id,
            "oauth_signature_method": "HMAC-SHA1" if sha1 else "HMAC-SHA256",
            "oauth_timestamp": str(int(self.clock.now)),
            "oauth_nonce": secrets.token_hex(10),
            "oauth_version": "1.0",
        }
        if body:
            params["oauth_body_hash"] = base64.b64encode(hashlib.sha1(body).digest()).decode()
        params.update(oauth or {})
        present = {k: v for k, v in params.items() if v is not None}
        parts = urlsplit(url)
        pairs = [(k, v) for k, v in present.items() if k != "oauth_signature"]
        pairs += parse_qsl(parts.query, keep_blank_values=True) if sign_query else []
        pairs += form or []
        normalized = "&".join(f"{k}={v}" for k, v in sorted((_enc(k), _enc(v)) for k, v in pairs))
        base_uri = f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path}"
        base = f"{method.upper()}&{_enc(base_uri)}&{_enc(normalized)}"
        key = f"{_enc(self.consumer_secret)}&{_enc(self.token_secret)}".encode()
        digest = hmac.new(key, base.encode(), hashlib.sha1 if sha1 else hashlib.sha256).digest()
        if "oauth_signature" not in (oauth or {}):  # an override (or None: left out) wins
            present["oauth_signature"] = base64.b64encode(digest).decode()
        realm = [f'realm="{self.realm}"'] if self.realm is not None else []
        return "OAuth " + ", ".join(realm + [f'{k}="{_enc(v)}"' for k, v in present.items()])


def register_tba(netsuite: NetSuiteEmulator, clock: Clock) -> TbaSigner:
    """Register the suite's TBA token on `netsuite` and return a signer for it."""
    netsuite.register_tba(CONSUMER_KEY, CONSUMER_SECRET, TOKEN_ID, TOKEN_SECRET)
    return TbaSigner(clock)


def basic(client_id: str = CODE_CLIENT_ID, secret: str = CODE_CLIENT_SECRET) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def error_code(response: httpx2.Response) -> str:
    return str(response.json()["o:errorDetails"][0]["o:errorCode"])


def error_detail(response: httpx2.Response) -> dict[str, Any]:
    return dict(response.json()["o:errorDetails"][0])


def seed_customer(netsuite: NetSuiteEmulator, name: str = "Acme Ltd", **fields: Any) -> str:
    return netsuite.seed("customer", {"companyName": name, **fields})


def invoice_body(entity: str, *lines: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """An invoice create body: `lines` default to one 1 x 100.00 line of item 86."""
    items = list(lines) or [{"item": {"id": "86"}, "quantity": 1, "rate": 100.0}]
    return {"entity": {"id": entity}, "item": {"items": items}, **fields}


def seed_invoice(netsuite: NetSuiteEmulator, entity: str, *lines: dict[str, Any], **fields: Any) -> str:
    return netsuite.seed("invoice", invoice_body(entity, *lines, **fields))
