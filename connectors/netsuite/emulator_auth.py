"""How the NetSuite emulator decides who is calling: OAuth 2.0 (three grants) and TBA (OAuth 1.0a).

`NetSuiteAuth` is a mixin for `NetSuiteEmulator`: its settings are attributes on the emulator
object, so tests flip them where they flip everything else. Sources are cited as "notes §n"
(/work/shared/api/netsuite.md, which cites Oracle's help pages as ORA:<id>).

    POST /services/rest/auth/oauth2/v1/token
        grant_type=client_credentials   JWT assertion signed PS*/ES* by a mapped certificate (§1a)
        grant_type=authorization_code    Basic client_id:client_secret, code, redirect_uri,
                                         code_verifier when PKCE was used (§1b)
        grant_type=refresh_token         Basic auth, refresh_token (7 days by default, §1b)
    GET  /app/login/oauth2/authorize.nl  step 1 of the code grant: consents at once and redirects
                                         (the path is UNCONFIRMED, §1b: `authorize_path`)
    Authorization: Bearer <token>        an access token from any grant
    Authorization: OAuth realm=...       TBA, HMAC-SHA256 only (§2)

`revoke()` plays the administrator taking access away: a certificate mapping revoked (Setup >
Integration > Manage Authentication > OAuth 2.0 Client Credentials (M2M) Setup, "Revoke"), an
authorized application's refresh tokens revoked, a TBA access token revoked.

Every OAuth 2.0 refusal is an RFC 6749 §5.2 body `{"error", "error_description"}`; every refused
API call is NetSuite's catch-all 401 INVALID_LOGIN (§5), with TBA's reason in `www-authenticate`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlencode

import jwt
from cryptography import x509
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from connectors.emulator_kit import TokenStore, credential, form_or_query, iso_utc, json_response

TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
# UNCONFIRMED (notes §1b): commonly https://<accountid>.app.netsuite.com/app/login/oauth2/authorize.nl.
AUTHORIZE_PATH = "/app/login/oauth2/authorize.nl"
TOKEN_TTL = 3600.0  # seconds; "valid 60 min" (notes §1a, §1b)
REFRESH_TOKEN_TTL = 7 * 86400.0  # seconds; 7 days for a confidential client (notes §1b)
AUTH_CODE_TTL = 600.0  # seconds; UNCONFIRMED, RFC 6749 §4.1.2 recommends at most 10 minutes
MAX_ASSERTION_LIFETIME = 3600.0  # seconds; exp must be within 60 min of iat (notes §1a)
ASSERTION_SKEW = 30.0  # seconds an iat may sit in the future (clock drift allowance)
TBA_TIMESTAMP_SKEW = 300.0  # seconds; UNCONFIRMED how much NetSuite allows (notes §2)
TBA_MIN_NONCE = 6  # characters; a shorter nonce is nonce_rejected (notes §2)
# PS*/ES* only: Oracle's current list leaves RS256 out (notes §1a).
ASSERTION_ALGORITHMS = frozenset({"PS256", "PS384", "PS512", "ES256", "ES384", "ES512"})
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SCOPES = frozenset({"rest_webservices", "restlets", "suite_analytics"})  # notes §1a
_HEADER_PARAM = re.compile(r'([A-Za-z_]+)\s*=\s*"([^"]*)"')


class OAuthError(Exception):
    """A token or authorize request refused with an RFC 6749 error code and a specific description."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error, self.description, self.status = error, description, status


class LoginRejected(Exception):
    """An API call's credentials refused. `problem` is the TBA problem code (nonce_used, ...) that goes
    in `www-authenticate`, or None for a bearer token; either way the caller sees INVALID_LOGIN."""

    def __init__(self, problem: str | None, reason: str) -> None:
        super().__init__(reason)
        self.problem, self.reason = problem, reason


@dataclass
class Certificate:
    """A certificate mapping (Setup > Integration > OAuth 2.0 Client Credentials (M2M) Setup)."""

    client_id: str
    certificate_id: str
    public_key: Any
    revoked: bool = False  # the "Revoke" button: the mapping stays listed but signs nothing any more


@dataclass
class CodeClient:
    """An integration record with the authorization code grant enabled (a confidential client)."""

    client_id: str
    client_secret: str
    redirect_uri: str


@dataclass
class PendingCode:
    client_id: str
    redirect_uri: str | None  # as sent to the authorize endpoint; the token request must repeat it
    scopes: list[str]
    challenge: str | None  # PKCE S256 code_challenge
    expires_at: float  # epoch seconds


@dataclass
class RefreshGrant:
    client_id: str
    scopes: list[str]
    expires_at: float  # epoch seconds
    revoked: bool = False


@dataclass(frozen=True)
class TbaToken:
    """A TBA token (Setup > Users/Roles > Access Tokens) with its integration's consumer secret."""

    consumer_key: str
    consumer_secret: str
    token_id: str
    token_secret: str


def pct(text: str) -> str:
    """RFC 5849 §3.6 percent-encoding: everything but ALPHA / DIGIT / '-' / '.' / '_' / '~'."""
    return quote(text, safe="-._~")


def signature_base_string(method: str, base_uri: str, params: list[tuple[str, str]]) -> str:
    """RFC 5849 §3.4.1: `METHOD&pct(uri)&pct(sorted, encoded name=value pairs joined by &)`.

    `base_uri` is scheme://host[:non-default port]/path without the query; `params` are the decoded
    query, form-body and oauth_* parameters (never realm or oauth_signature).
    """
    encoded = sorted((pct(name), pct(value)) for name, value in params)
    normalized = "&".join(f"{name}={value}" for name, value in encoded)
    return "&".join((method.upper(), pct(base_uri), pct(normalized)))


def sign_hmac_sha256(base_string: str, consumer_secret: str, token_secret: str) -> str:
    """Base64 HMAC-SHA256 of the base string keyed `pct(consumer secret)&pct(token secret)` (notes §2)."""
    key = f"{pct(consumer_secret)}&{pct(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base_string.encode(), hashlib.sha256).digest()).decode()


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(ASCII(code_verifier))) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _load_public_key(pem: str) -> Any:
    """Accept the uploaded X.509 certificate (what NetSuite takes) or a bare public key."""
    data = pem.encode()
    if b"BEGIN CERTIFICATE" in data:
        return x509.load_pem_x509_certificate(data).public_key()
    return load_pem_public_key(data)


def _scopes(claim: Any) -> list[str]:
    # Both forms appear in Oracle material: "a,b" and ["a", "b"] (notes §1a); authorize uses spaces.
    if isinstance(claim, list):
        return [str(s).strip() for s in claim]
    return [s for s in re.split(r"[,\s]+", claim) if s] if isinstance(claim, str) else []


def _basic_client(authorization: str | None) -> tuple[str, str] | None:
    """RFC 6749 §2.3.1: Basic base64(urlencoded client_id ':' urlencoded client_secret)."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        client_id, sep, secret = base64.b64decode(value.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return None
    return (unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))) if sep else None


class NetSuiteAuth:
    """Auth state and checks, mixed into `NetSuiteEmulator` (which provides clock, lock and tokens)."""

    clock: Callable[[], float]
    lock: Any  # the emulator's RLock
    tokens: TokenStore
    account_id: str

    def _init_auth(self) -> None:
        self.token_ttl = TOKEN_TTL
        self.refresh_token_ttl = REFRESH_TOKEN_TTL  # configurable on the integration since 2025.2 (§1b)
        self.auth_code_ttl = AUTH_CODE_TTL
        self.authorize_path = AUTHORIZE_PATH  # read when the app is built
        self.authorize_denies = False  # True: the user clicks "Deny" (error=access_denied)
        # UNCONFIRMED: NetSuite is said to add role, entity and company to the consent redirect.
        self.authorize_redirect_extras: dict[str, str] = {"role": "3", "entity": "-5"}
        # UNCONFIRMED (§1b): RFC 6749 §5.2 answers 401 when Basic client auth fails.
        self.basic_invalid_client_status = 401
        # UNCONFIRMED (notes §1a): string or number; Oracle says "always 3600" and shows a string.
        self.expires_in_as_string = True
        self.assertion_skew = ASSERTION_SKEW
        self.extra_audiences: set[str] = set()
        self.tba_timestamp_skew = TBA_TIMESTAMP_SKEW
        # UNCONFIRMED (notes §5): one third-party capture shows this header on TBA 401s.
        self.tba_www_authenticate = True
        self.tba_blocked_consumers: set[str] = set()  # consumer_key_refused: integration blocked
        self.tba_revoked: set[str] = set()  # TBA token ids revoked (Setup > Users/Roles > Access Tokens)
        # UNCONFIRMED (notes §1a, §8): RS256 is missing from Oracle's current list of assertion algorithms,
        # though an older Oracle sample uses it. Refused by default; add "RS256" to accept it.
        self.assertion_algorithms: set[str] = set(ASSERTION_ALGORITHMS)
        self.certificates: dict[str, Certificate] = {}
        self.code_clients: dict[str, CodeClient] = {}
        self.tba_tokens: dict[str, TbaToken] = {}
        self._codes: dict[str, PendingCode] = {}
        self._refresh: dict[str, RefreshGrant] = {}
        self._nonces: dict[tuple[str, str, str], float] = {}  # (token, nonce, timestamp) -> seen at

    # Setup -------------------------------------------------------------------------------
    def register_m2m_client(self, client_id: str, certificate_id: str, public_key_pem: str) -> None:
        """Map a certificate (PEM public key or X.509 certificate) to an integration's client id."""
        certificate = Certificate(client_id, certificate_id, _load_public_key(public_key_pem))
        with self.lock:
            self.certificates[certificate_id] = certificate

    def register_auth_code_client(self, client_id: str, client_secret: str, redirect_uri: str) -> None:
        """An integration record with the authorization code grant and this exact redirect URI."""
        with self.lock:
            self.code_clients[client_id] = CodeClient(client_id, client_secret, redirect_uri)

    def register_tba(self, consumer_key: str, consumer_secret: str, token_id: str, token_secret: str) -> None:
        """An integration's consumer key/secret and one access token's id/secret, for TBA calls."""
        with self.lock:
            self.tba_tokens[token_id] = TbaToken(consumer_key, consumer_secret, token_id, token_secret)
            self.tba_revoked.discard(token_id)  # a newly created token, even under a reused id

    def register_json(self, body: dict[str, Any]) -> None:
        """`/_emulator/clients`: the keys of one register_* method pick which kind of client it is."""
        if "consumer_key" in body:
            self.register_tba(
                body["consumer_key"], body["consumer_secret"], body["token_id"], body["token_secret"]
            )
        elif "redirect_uri" in body:
            self.register_auth_code_client(body["client_id"], body["client_secret"], body["redirect_uri"])
        else:
            self.register_m2m_client(body["client_id"], body["certificate_id"], body["public_key_pem"])

    def revoke(
        self, client_id: str | None = None, certificate_id: str | None = None, token_id: str | None = None
    ) -> dict[str, int]:
        """Take access away; every argument left out means "all of that kind" (none given: everything).

        certificate_id: that certificate mapping is revoked; the token endpoint then refuses its
        assertions with `invalid_client` and the access tokens it minted answer 401 INVALID_LOGIN.
        client_id: the integration's whole access: its certificate mappings, its refresh tokens (the
        code grant then answers `invalid_grant`), the TBA tokens under that consumer key and every
        access token issued to it. token_id: one TBA access token (401 INVALID_LOGIN, token_rejected).
        Registering the certificate or TBA token again restores access. KeyError for an id never
        registered; revoking what is revoked already changes nothing (all counts 0).
        """
        everything = client_id is None and certificate_id is None and token_id is None
        with self.lock:
            known = {
                "client_id": {c.client_id for c in self.certificates.values()}
                | set(self.code_clients)
                | {t.consumer_key for t in self.tba_tokens.values()},
                "certificate_id": set(self.certificates),
                "token_id": set(self.tba_tokens),
            }
            given = {"client_id": client_id, "certificate_id": certificate_id, "token_id": token_id}
            unknown = [f"{k} {v!r}" for k, v in given.items() if v is not None and v not in known[k]]
            if unknown:
                raise KeyError(f"no {', '.join(unknown)} is registered")
            certificates = [
                c
                for c in self.certificates.values()
                if not c.revoked
                and (everything or c.certificate_id == certificate_id or c.client_id == client_id)
            ]
            grants = [
                g
                for g in self._refresh.values()
                if not g.revoked and (everything or g.client_id == client_id)
            ]
            tba = [
                t.token_id
                for t in self.tba_tokens.values()
                if t.token_id not in self.tba_revoked
                and (everything or t.token_id == token_id or t.consumer_key == client_id)
            ]
            for certificate in certificates:
                certificate.revoked = True
            for grant in grants:
                grant.revoked = True
            self.tba_revoked.update(tba)
        kids = {c.certificate_id for c in certificates}
        access = self.tokens.revoke(
            lambda t: everything or t.subject == client_id or t.claims.get("certificate_id") in kids
        )
        return {
            "certificates": len(certificates),
            "refresh_tokens": len(grants),
            "tba_tokens": len(tba),
            "access_tokens": access,
        }

    def expire_refresh_tokens(self) -> None:
        """Every refresh token issued so far stops working: the user has to authorize again."""
        now = self.clock()
        with self.lock:
            for grant in self._refresh.values():
                grant.expires_at = min(grant.expires_at, now)

    # The token endpoint ---------------------------------------------------------------------
    def issue_token(
        self, form: dict[str, str], token_url: str, authorization: str | None = None
    ) -> dict[str, Any]:
        """Answer one token request (any grant) with the response body, or raise `OAuthError`."""
        grant = form.get("grant_type")
        if grant == "client_credentials":
            certificate, scopes = self._client_credentials(form, token_url)
            # The certificate is noted on the token so revoking the mapping ends the tokens it minted.
            return self._token_body(certificate.client_id, scopes, certificate_id=certificate.certificate_id)
        if grant in ("authorization_code", "refresh_token"):
            client = self._basic_auth(authorization)
            if grant == "authorization_code":
                return self._redeem_code(client, form)
            return self._refresh_grant(client, form)
        raise OAuthError(
            "unsupported_grant_type",
            "grant_type must be client_credentials, authorization_code or refresh_token",
        )

    def _token_body(
        self, client_id: str, scopes: list[str], refresh: bool = False, **claims: str
    ) -> dict[str, Any]:
        issued = self.tokens.issue(client_id, self.token_ttl, scope=scopes, **claims)
        ttl = int(self.token_ttl)
        body: dict[str, Any] = {"access_token": issued.token}
        if refresh:
            token = secrets.token_urlsafe(32)
            with self.lock:
                self._refresh[token] = RefreshGrant(client_id, scopes, self.clock() + self.refresh_token_ttl)
            body["refresh_token"] = token
        body.update(expires_in=str(ttl) if self.expires_in_as_string else ttl, token_type="bearer")
        return body

    def _basic_auth(self, authorization: str | None) -> CodeClient:
        # The code and refresh grants authenticate the client with Basic auth (notes §1b).
        given = _basic_client(authorization)
        with self.lock:
            client = self.code_clients.get(given[0]) if given else None
        if given is None or client is None or not hmac.compare_digest(given[1], client.client_secret):
            reason = "missing Basic client credentials" if given is None else "unknown client or bad secret"
            raise OAuthError("invalid_client", reason, self.basic_invalid_client_status)
        return client

    def _redeem_code(self, client: CodeClient, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            pending = self._codes.pop(form.get("code", ""), None)  # single use, even when refused
        if pending is None or pending.expires_at <= self.clock():
            raise OAuthError("invalid_grant", "the authorization code is unknown, used or expired")
        if pending.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the authorization code was issued to another client")
        if pending.redirect_uri is not None and form.get("redirect_uri") != pending.redirect_uri:
            raise OAuthError("invalid_grant", "redirect_uri differs from the one sent to the authorize step")
        verifier = form.get("code_verifier")
        if pending.challenge is None and verifier:
            raise OAuthError(
                "invalid_grant", "code_verifier sent, but the authorize step had no code_challenge"
            )
        if pending.challenge is not None:
            # A bad verifier gives HTTP 400 (notes §1b); RFC 7636 §4.6 names it invalid_grant.
            if not verifier:
                raise OAuthError("invalid_grant", "code_verifier is missing (PKCE was used)")
            if not hmac.compare_digest(pkce_challenge(verifier), pending.challenge):
                raise OAuthError("invalid_grant", "code_verifier does not match the code_challenge")
        return self._token_body(client.client_id, pending.scopes, refresh=True)

    def _refresh_grant(self, client: CodeClient, form: dict[str, str]) -> dict[str, Any]:
        with self.lock:
            grant = self._refresh.get(form.get("refresh_token", ""))
        if grant is None or grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "the refresh token is unknown or belongs to another client")
        if grant.revoked:
            # RFC 6749 §5.2: a revoked grant is invalid_grant; the user has to authorize again.
            raise OAuthError(
                "invalid_grant", "the refresh token was revoked; authorize the application again"
            )
        if grant.expires_at <= self.clock():
            # The user has to authorize again (notes §1b).
            raise OAuthError("invalid_grant", f"the refresh token expired at {iso_utc(grant.expires_at)}")
        # Confidential clients keep their refresh token until it expires; no new one is sent (§1b).
        return self._token_body(client.client_id, grant.scopes)

    # Client credentials (notes §1a) -------------------------------------------------------------
    def _client_credentials(self, form: dict[str, str], token_url: str) -> tuple[Certificate, list[str]]:
        if form.get("client_assertion_type") != JWT_BEARER:
            raise OAuthError("invalid_request", f"client_assertion_type must be {JWT_BEARER}")
        if not form.get("client_assertion"):
            raise OAuthError("invalid_request", "client_assertion is missing")
        return self._verify_assertion(form["client_assertion"], token_url)

    def _verify_assertion(self, assertion: str, token_url: str) -> tuple[Certificate, list[str]]:
        # RFC 7523 §3.2 style: who signed -> invalid_client; claim values -> invalid_grant. NetSuite's
        # code per failure is UNCONFIRMED, so the descriptions carry the specifics.
        try:
            header = jwt.get_unverified_header(assertion)
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_request", f"client_assertion is not a JWT: {exc}") from exc
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.assertion_algorithms:
            allowed = ", ".join(sorted(self.assertion_algorithms))
            raise OAuthError("invalid_client", f"JWT alg {alg!r} is not accepted; use one of {allowed}")
        with self.lock:
            certificate = self.certificates.get(str(kid))
        if certificate is None:
            raise OAuthError("invalid_client", f"unknown certificate id (kid) {kid!r}")
        if certificate.revoked:
            # A revoked mapping needs a new one (ORA:section_162686838198). The wire error is
            # UNCONFIRMED; it is refused like any other client NetSuite cannot authenticate.
            raise OAuthError(
                "invalid_client",
                f"the certificate {kid!r} was revoked; map a new certificate to the integration",
            )
        claims = self._decode(assertion, certificate, str(alg))
        if claims.get("iss") != certificate.client_id:
            raise OAuthError(
                "invalid_client", f"iss {claims.get('iss')!r} is not the client id mapped to {kid!r}"
            )
        self._check_times(claims)
        self._check_audience(claims.get("aud"), token_url)
        scopes = _scopes(claims.get("scope"))
        if "rest_webservices" not in scopes:
            raise OAuthError(
                "invalid_scope", f"scope must include rest_webservices, got {claims.get('scope')!r}"
            )
        return certificate, scopes

    @staticmethod
    def _decode(assertion: str, certificate: Certificate, alg: str) -> dict[str, Any]:
        # Times are checked by hand against the injectable clock, not PyJWT's time.time().
        options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False, "verify_aud": False}
        try:
            key = certificate.public_key
            return jwt.decode(assertion, key, algorithms=[alg], options=options)  # type: ignore[arg-type]
        except jwt.InvalidSignatureError as exc:
            message = f"bad signature: the assertion does not verify with kid {certificate.certificate_id!r}"
            raise OAuthError("invalid_client", message) from exc
        except (jwt.InvalidKeyError, jwt.InvalidAlgorithmError, ValueError, TypeError) as exc:
            raise OAuthError(
                "invalid_client", f"bad signature: alg {alg} does not fit the certificate key"
            ) from exc
        except jwt.PyJWTError as exc:
            raise OAuthError("invalid_request", f"client_assertion cannot be decoded: {exc}") from exc

    def _check_times(self, claims: dict[str, Any]) -> None:
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int | float) or not isinstance(exp, int | float):
            raise OAuthError("invalid_request", "the assertion needs numeric iat and exp claims")
        now = self.clock()
        if exp - iat > MAX_ASSERTION_LIFETIME:
            raise OAuthError(
                "invalid_grant", f"exp is {exp - iat:.0f} s after iat; at most 3600 s is allowed"
            )
        if exp <= now:
            raise OAuthError("invalid_grant", f"the assertion expired at {iso_utc(exp)} (exp is in the past)")
        if iat > now + self.assertion_skew:
            raise OAuthError("invalid_grant", f"iat {iso_utc(iat)} is in the future")

    def _check_audience(self, aud: Any, token_url: str) -> None:
        accepted = {u.rstrip("/") for u in {token_url, *self.extra_audiences}}
        if not any(
            isinstance(a, str) and a.rstrip("/") in accepted
            for a in (aud if isinstance(aud, list) else [aud])
        ):
            raise OAuthError(
                "invalid_grant", f"bad aud {aud!r}: it must be the token endpoint URL {token_url}"
            )

    # Step 1 of the authorization code grant ---------------------------------------------------
    def authorize(self, params: dict[str, str]) -> str:
        """Consent on the user's behalf and return where to redirect: `redirect_uri?code=..&state=..`.

        An unknown client or a redirect_uri other than the registered one raises `OAuthError`
        (shown to the user, never redirected, RFC 6749 §4.1.2.1); other refusals are redirects
        carrying `error` and the caller's `state`.
        """
        with self.lock:
            client = self.code_clients.get(params.get("client_id", ""))
        if client is None:
            raise OAuthError("unauthorized_client", f"unknown client_id {params.get('client_id')!r}")
        redirect_uri = params.get("redirect_uri")
        if redirect_uri is not None and redirect_uri != client.redirect_uri:
            raise OAuthError("invalid_request", "redirect_uri is not the one on the integration record")
        target = redirect_uri or client.redirect_uri
        state = {"state": params["state"]} if "state" in params else {}
        try:
            pending = self._pending_code(client, params, redirect_uri)
        except OAuthError as exc:
            return _with_query(target, {"error": exc.error, "error_description": exc.description, **state})
        code = secrets.token_urlsafe(24)
        with self.lock:
            self._codes[code] = pending
        extras = {**self.authorize_redirect_extras, "company": self.account_id}
        return _with_query(target, {"code": code, **state, **extras})

    def _pending_code(
        self, client: CodeClient, params: dict[str, str], redirect_uri: str | None
    ) -> PendingCode:
        if params.get("response_type") != "code":
            raise OAuthError("unsupported_response_type", "response_type must be code")
        scopes = _scopes(params.get("scope"))
        if not scopes or not set(scopes) <= SCOPES:
            raise OAuthError("invalid_scope", f"scope must be among {', '.join(sorted(SCOPES))}")
        challenge = params.get("code_challenge")
        if challenge is not None and params.get("code_challenge_method") != "S256":
            # RFC 7636 defaults to plain; only S256 is emulated.
            raise OAuthError("invalid_request", "code_challenge_method must be S256")
        if self.authorize_denies:
            raise OAuthError("access_denied", "the user denied access")
        expires = self.clock() + self.auth_code_ttl
        return PendingCode(client.client_id, redirect_uri, scopes, challenge, expires)

    # Checking API calls ----------------------------------------------------------------------
    async def check_caller(self, request: Request) -> LoginRejected | None:
        """None when the call may go on (a live bearer token or a valid TBA header); else why not."""
        if request.headers.get("authorization", "").lower().startswith("oauth "):
            try:
                self.verify_tba(request, await request.body())
            except LoginRejected as exc:
                return exc
            return None
        if self.tokens.lookup(credential(request, "Bearer")) is None:
            return LoginRejected(None, "missing, unknown or expired bearer token")
        return None

    def verify_tba(self, request: Request, body: bytes) -> TbaToken:
        """Check a TBA `Authorization: OAuth ...` header per RFC 5849 and NetSuite's rules (notes §2)."""
        oauth = dict(
            (name, unquote(value))
            for name, value in _HEADER_PARAM.findall(request.headers["authorization"][6:])
        )
        required = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_timestamp")
        missing = [n for n in (*required, "oauth_nonce", "oauth_signature") if not oauth.get(n)]
        if missing:
            raise LoginRejected("parameter_absent", f"missing {', '.join(missing)}")
        if oauth.get("realm") != self.account_id:
            # The realm is the account id exactly: `_SB1` upper case (notes §0, pitfall 1).
            raise LoginRejected("token_rejected", f"realm {oauth.get('realm')!r} is not {self.account_id!r}")
        if oauth["oauth_signature_method"] != "HMAC-SHA256":
            # HMAC-SHA1 has not been supported since 2023.1 (notes §2).
            raise LoginRejected("signature_method_rejected", "only HMAC-SHA256 is accepted")
        token = self._tba_token(oauth["oauth_consumer_key"], oauth["oauth_token"])
        if oauth.get("oauth_version", "1.0") != "1.0":
            raise LoginRejected("version_rejected", "oauth_version must be 1.0")
        self._check_tba_freshness(oauth)
        self._check_tba_signature(request, body, oauth, token)
        key = (token.token_id, oauth["oauth_nonce"], oauth["oauth_timestamp"])
        with self.lock:
            if key in self._nonces:
                raise LoginRejected("nonce_used", "this nonce and timestamp were used before")
            now = self.clock()
            # Entries older than the skew window can never match again: their timestamps are refused.
            self._nonces = {k: at for k, at in self._nonces.items() if at > now - 2 * self.tba_timestamp_skew}
            self._nonces[key] = now
        return token

    def _tba_token(self, consumer_key: str, token_id: str) -> TbaToken:
        with self.lock:
            known = {t.consumer_key for t in self.tba_tokens.values()}
            token = self.tba_tokens.get(token_id)
        if consumer_key not in known:
            raise LoginRejected("consumer_key_unknown", "unknown consumer key")
        if consumer_key in self.tba_blocked_consumers:
            raise LoginRejected("consumer_key_refused", "the integration record is blocked")
        if token is None or token.consumer_key != consumer_key:
            raise LoginRejected("token_rejected", "unknown token id for this consumer key")
        if token_id in self.tba_revoked:
            raise LoginRejected("token_rejected", "the access token was revoked")
        return token

    def _check_tba_freshness(self, oauth: dict[str, str]) -> None:
        try:
            stamp = int(oauth["oauth_timestamp"])
        except ValueError:
            raise LoginRejected("timestamp_refused", "oauth_timestamp is not whole epoch seconds") from None
        if abs(self.clock() - stamp) > self.tba_timestamp_skew:
            raise LoginRejected("timestamp_refused", f"oauth_timestamp {stamp} is too far from now")
        if len(oauth["oauth_nonce"]) < TBA_MIN_NONCE:
            raise LoginRejected("nonce_rejected", f"the nonce must be at least {TBA_MIN_NONCE} characters")

    def _check_tba_signature(
        self, request: Request, body: bytes, oauth: dict[str, str], token: TbaToken
    ) -> None:
        if "oauth_body_hash" in oauth:
            # draft-eaton-oauth-bodyhash: authlib signs JSON bodies this way; a mismatch is a changed body.
            expected = base64.b64encode(hashlib.sha1(body).digest()).decode()
            if not hmac.compare_digest(expected, oauth["oauth_body_hash"]):
                raise LoginRejected("signature_invalid", "oauth_body_hash does not match the body")
        params = [(k, v) for k, v in oauth.items() if k not in ("realm", "oauth_signature")]
        # Query parameters belong in the base string (notes §2, pitfall 4), and so does a form body.
        params += parse_qsl(request.url.query, keep_blank_values=True)
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        base = signature_base_string(request.method, _base_uri(request), params)
        expected = sign_hmac_sha256(base, token.consumer_secret, token.token_secret)
        if not hmac.compare_digest(expected, oauth["oauth_signature"]):
            raise LoginRejected("signature_invalid", "the signature does not match the request")


def _base_uri(request: Request) -> str:
    """RFC 5849 §3.4.1.2: lower-case scheme and host, the port only if not the scheme's default."""
    url = request.url
    default = {"http": 80, "https": 443}.get(url.scheme)
    port = f":{url.port}" if url.port and url.port != default else ""
    path = request.scope.get("raw_path", url.path.encode()).decode("latin-1").split("?", 1)[0]
    return f"{url.scheme.lower()}://{(url.hostname or '').lower()}{port}{path}"


def _with_query(uri: str, params: dict[str, str]) -> str:
    return f"{uri}{'&' if '?' in uri else '?'}{urlencode(params)}"


def auth_routes(emulator: NetSuiteAuth) -> list[Route]:
    """The token endpoint and the authorize step, on NetSuite's paths (authorize: `authorize_path`)."""

    async def token(request: Request) -> Response:
        token_url = str(request.url.replace(query=""))
        form = await form_or_query(request)
        try:
            body = emulator.issue_token(form, token_url, request.headers.get("authorization"))
        except OAuthError as exc:
            headers = {"WWW-Authenticate": 'Basic realm="token"'} if exc.status == 401 else {}
            return json_response(
                {"error": exc.error, "error_description": exc.description}, exc.status, headers
            )
        return json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    async def authorize(request: Request) -> Response:
        try:
            location = emulator.authorize(dict(request.query_params))
        except OAuthError as exc:
            return json_response({"error": exc.error, "error_description": exc.description}, 400)
        return RedirectResponse(location, status_code=302)

    return [
        Route(TOKEN_PATH, token, methods=["POST"]),
        Route(emulator.authorize_path, authorize, methods=["GET"]),
    ]
