"""Approving access from the app: NetSuite's OAuth 2.0 authorization code grant and Zoho's self-client
grant code, each ending with a refresh token stored encrypted on the connection.

NetSuite (shared/api/netsuite.md §1b), in two calls the pages make:

    start_netsuite_consent    check the connection's fields, keep a pending approval server-side (a random
                              `state` and a PKCE verifier, RFC 7636), and return NetSuite's authorize URL
    finish_netsuite_consent   NetSuite sent the browser back to the redirect URI with `?code=…&state=…`:
                              check the state (known, unexpired, started by this user, used once), exchange
                              the code through `NetSuiteClient.exchange_code` with the verifier, save the
                              refresh token through `runner.onboarding.save_connection`, keep the access
                              token in the connection's token cache, and ping

Zoho (shared/api/zoho.md §1b): `exchange_zoho_grant_code` trades a grant code pasted from the API
console's self client for a refresh token (`connectors.zoho.client.exchange_grant_code`) and saves it.

Pending approvals live in a `ConsentBook` in the app's process, never in the browser: the state the
browser carries is only a 256-bit key into it. That avoids a table, and the app is one process; an
approval outlives neither an app restart nor `CONSENT_TTL`, and the person then presses the button again.
Every refusal is a `ConsentError` (or, for fields, `runner.onboarding.InputError`) whose message says
what to fix; none ever contains a secret, a code or a token.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

import httpx2
from sqlalchemy.engine import Engine

from connectors.auth import TokenGrant
from connectors.errors import ConfigurationError, ConnectorError
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.spec import AUTH_CODE
from connectors.ping import PingResult
from connectors.registry import SYSTEMS, default_base_url
from connectors.sync import run, with_client
from connectors.zoho.client import exchange_grant_code
from runner import onboarding
from runner.onboarding import AUTH_MODE, BASE_URL, NAME, InputError
from storage import crud
from storage.crypto import Vault
from storage.models import ConnectionPublic
from storage.tokens import StoredTokens

CONSENT_TTL = 600.0  # seconds a started approval stays valid (sign-in and consent in NetSuite included)
RENEW_MARGIN = 120.0  # seconds: a prepared approval with less left than this is replaced by a fresh one
FINISH_WAIT = 30.0  # seconds a second delivery of one approval waits for the first to finish exchanging
PENDING_PER_USER = 20  # approvals one person may have open; the oldest goes first
VERIFIER_BYTES = 64  # random bytes of the PKCE verifier: 86 characters, within RFC 7636's 43 to 128
STATE_BYTES = 32  # random bytes of the state: 256 bits, never guessed
REDIRECT_PAGE = "connections"  # the page NetSuite sends people back to (views/connections.py's URL path)
REFRESH_TOKEN, GRANT_CODE = "refresh_token", "grant_code"
# The scopes a Zoho self-client grant code needs for everything the product does (shared/api/zoho.md
# §1b; the search scope for reconciliation's record searches), as the API console takes them.
ZOHO_SCOPES = (
    "ZohoCRM.modules.ALL,ZohoCRM.notifications.ALL,ZohoCRM.org.READ,ZohoCRM.settings.fields.READ,"
    "ZohoSearch.securesearch.READ"
)
NETSUITE, ZOHO = "netsuite", "zoho"

# What NetSuite's authorization response `error` (RFC 6749 §4.1.2.1) asks the person to do.
AUTHORIZE_HINTS = {
    "access_denied": "Access was not approved. Press Connect to NetSuite again and choose Allow; the role you "
    "sign in with needs the REST Web Services and Log in using OAuth 2.0 Access Tokens permissions.",
    "unauthorized_client": "The integration record does not allow this: tick Authorization Code Grant on it "
    "(Setup > Integration > Manage Integrations) and check the Client ID.",
    "invalid_scope": "The integration record lacks the REST Web Services scope: tick it on the record.",
    "invalid_request": "NetSuite refused the request: check that the redirect URI on the integration record "
    "is exactly the one shown beside the Connect to NetSuite button.",
}
# What the code exchange's `error` (RFC 6749 §5.2) asks the person to do.
EXCHANGE_HINTS = {
    "invalid_grant": "Authorization codes work once and for a few minutes only, and the redirect URI must be "
    "the one on the integration record: press Connect to NetSuite again.",
    "invalid_client": "NetSuite did not accept the Client ID and secret: copy both again from the integration "
    "record (the secret is shown only when the record is saved; reset it there if it is lost).",
}


class ConsentError(Exception):
    """An approval that cannot go on; `message` says what the person should do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class ConsentStart:
    """An approval waiting for the person: send them to `url`; NetSuite comes back to `redirect_uri`."""

    state: str
    url: str
    redirect_uri: str
    expires_at: float  # epoch seconds


@dataclass(frozen=True)
class Approved:
    """A connection saved with a new refresh token, and what the ping right after said (if made)."""

    connection: ConnectionPublic
    created: bool
    ping: PingResult | None = None
    origin: str = ""  # the page the approval was started on
    resume: dict[str, Any] | None = None  # that page's state, to restore when it ends on another page

    @property
    def message(self) -> str:
        title = onboarding.spec_of(self.connection.system).title
        text = f"{title} connection {self.connection.name!r} {'saved' if self.created else 'updated'} with a new refresh token."
        if self.ping is not None:
            text += (
                f" Ping: {self.ping.message}"
                if self.ping.ok
                else f" But the ping failed: {self.ping.message}"
            )
        return text


@dataclass
class _Pending:
    user: str
    workspace_id: int
    connection_id: int | None
    name: str
    base_url: str
    sealed: str  # the connection's fields, client secret included, encrypted with the vault
    redirect_uri: str
    verifier: str
    expires_at: float
    origin: str
    resume: dict[str, Any] | None = None


@dataclass
class _Settled:
    user: str
    outcome: Approved | ConsentError
    expires_at: float


@dataclass
class ConsentBook:
    """Pending approvals by state, in this process, thread-safe (Streamlit runs sessions in threads).

    A state is claimed once: a second delivery of the same state (NetSuite's redirect reaching the app in
    two browser windows) gets the first one's outcome, waiting up to `FINISH_WAIT` while it is exchanged,
    and only for the person who started it.
    """

    clock: Callable[[], float] = time.time
    ttl: float = CONSENT_TTL
    _open: dict[str, _Pending] = field(default_factory=dict)
    _claimed: set[str] = field(default_factory=set)
    _settled: dict[str, _Settled] = field(default_factory=dict)
    _changed: threading.Condition = field(default_factory=threading.Condition)

    def open(self, pending: _Pending) -> str:
        state = secrets.token_urlsafe(STATE_BYTES)
        with self._changed:
            self._forget_expired()
            mine = [s for s, p in self._open.items() if p.user == pending.user]  # oldest first
            for old in mine[: max(0, len(mine) - PENDING_PER_USER + 1)]:
                del self._open[old]
            self._open[state] = pending
        return state

    def is_open(self, state: str, *, margin: float = 0.0) -> bool:
        """Whether `state` still waits for NetSuite, with at least `margin` seconds left."""
        with self._changed:
            pending = self._open.get(state)
            return pending is not None and pending.expires_at - margin > self.clock()

    def discard(self, state: str) -> None:
        with self._changed:
            self._open.pop(state, None)

    def claim(self, state: str, user: str) -> _Pending | Approved:
        """The pending approval to finish now, or the outcome of the delivery that finished it already.

        Raises ConsentError for a state that is unknown, used, expired or someone else's.
        """
        with self._changed:
            self._forget_expired()
            if state in self._claimed:
                self._changed.wait_for(lambda: state not in self._claimed, timeout=FINISH_WAIT)
            settled = self._settled.get(state)
            if settled is not None and settled.user == user:
                if isinstance(settled.outcome, ConsentError):
                    raise settled.outcome
                return settled.outcome
            pending = self._open.pop(state, None)
            if pending is None or pending.expires_at <= self.clock():
                raise ConsentError(
                    "This approval is unknown, already used or expired (an approval lasts "
                    f"{self.ttl / 60:.0f} minutes and ends when the app restarts): press Connect to NetSuite again."
                )
            if pending.user != user:
                # Someone else's state reached this session: it is spent, so it cannot be replayed either.
                raise ConsentError(
                    f"This approval was started by {pending.user!r}, not by you: the person who pressed "
                    "Connect to NetSuite must finish it, signed in as themselves."
                )
            self._claimed.add(state)
            return pending

    def settle(self, state: str, user: str, outcome: Approved | ConsentError) -> None:
        with self._changed:
            self._claimed.discard(state)
            self._settled[state] = _Settled(user, outcome, self.clock() + self.ttl)
            self._changed.notify_all()

    def outcome(self, state: str, user: str) -> Approved | ConsentError | None:
        """How a finished approval ended, for the person who started it; None while it is still open."""
        with self._changed:
            settled = self._settled.get(state)
            return settled.outcome if settled is not None and settled.user == user else None

    def clear(self) -> None:
        with self._changed:
            self._open.clear()
            self._settled.clear()

    def _forget_expired(self) -> None:
        now = self.clock()
        for state in [s for s, p in self._open.items() if p.expires_at <= now]:
            del self._open[state]
        for state in [s for s, o in self._settled.items() if o.expires_at <= now]:
            del self._settled[state]


@lru_cache(maxsize=1)
def get_book() -> ConsentBook:
    """The app process's pending approvals."""
    return ConsentBook()


def redirect_uri_for(app_url: str) -> str:
    """Where NetSuite sends people back: this app's Connections page. NetSuite compares it exactly with the
    redirect URI on the integration record, so the page shows it for the person to copy there."""
    return f"{app_url.rstrip('/')}/{REDIRECT_PAGE}"


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 §4.2 S256: BASE64URL(SHA256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def approval_kind(connection: ConnectionPublic) -> str | None:
    """Which approval a saved connection takes: NetSuite's consent (authorization code mode), Zoho's grant
    code, or none (its credentials are entered whole)."""
    if connection.system == NETSUITE and (connection.settings or {}).get(AUTH_MODE) == AUTH_CODE:
        return NETSUITE
    return ZOHO if connection.system == ZOHO else None


# --- NetSuite --------------------------------------------------------------------------------------


def start_netsuite_consent(
    engine: Engine,
    vault: Vault,
    *,
    book: ConsentBook,
    user: str,
    redirect_uri: str,
    sandbox: bool,
    workspace_id: int | None = None,
    connection_id: int | None = None,
    values: Mapping[str, str] | None = None,
    name: str = "",
    base_url: str = "",
    origin: str = REDIRECT_PAGE,
    resume: dict[str, Any] | None = None,
) -> ConsentStart:
    """Prepare an approval in NetSuite for a connection in authorization code mode.

    Either a saved connection (`connection_id`; `values` then override its fields) or a new one of
    `workspace_id` from form `values`: the refresh token is what the approval yields, so it is the one
    field not required here. The fields are kept encrypted with the approval until it is finished.
    Raises InputError naming each field to fix, LookupError for an unknown connection.
    """
    workspace_id, name, base_url, fields = _entered(
        engine, vault, NETSUITE, connection_id, workspace_id, name, base_url, values
    )
    if fields.get(AUTH_MODE) != AUTH_CODE:
        raise InputError(
            {AUTH_MODE: "Approval in NetSuite is for the Authorization code mode: choose it first"}
        )
    address = _checked(
        NETSUITE, fields, name=name, base_url=base_url, sandbox=sandbox, produced=REFRESH_TOKEN
    )
    verifier = secrets.token_urlsafe(VERIFIER_BYTES)
    pending = _Pending(
        user=user,
        workspace_id=workspace_id,
        connection_id=connection_id,
        name=name.strip(),
        base_url=base_url.strip(),
        sealed=vault.encrypt({k: v for k, v in fields.items() if k != REFRESH_TOKEN}),
        redirect_uri=redirect_uri,
        verifier=verifier,
        expires_at=book.clock() + book.ttl,
        origin=origin,
        resume=resume,
    )
    state = book.open(pending)

    async def authorize(client: Any) -> str:
        netsuite: NetSuiteClient = client
        # An emulator serves the consent page at its own address; NetSuite at <account>.app.netsuite.com.
        ui_base = None if _is_netsuite_host(address) else address
        return netsuite.authorize_url(
            redirect_uri=redirect_uri, state=state, code_challenge=pkce_challenge(verifier), ui_base=ui_base
        )

    settings, secret_fields = _split(NETSUITE, fields)
    try:
        url = with_client(
            NETSUITE,
            base_url=address,
            settings=settings,
            secrets=secret_fields,
            sandbox=sandbox,
            call=authorize,
        )
    except Exception:
        book.discard(state)
        raise
    return ConsentStart(state=state, url=url, redirect_uri=redirect_uri, expires_at=pending.expires_at)


def finish_netsuite_consent(
    engine: Engine,
    vault: Vault,
    *,
    book: ConsentBook,
    user: str,
    state: str,
    code: str = "",
    error: str = "",
    error_description: str = "",
    sandbox: bool,
    verify: bool = True,
) -> Approved:
    """Finish the approval `state` names with what NetSuite sent back (`code`, or `error`).

    On success the connection (created if the approval started from a form) holds the new refresh token,
    its token cache the access token that came with it, and, with `verify`, the verdict of a ping. Raises
    ConsentError saying what to do otherwise; a state is spent by its first delivery either way.
    """
    claimed = book.claim(state, user)
    if isinstance(claimed, Approved):
        return claimed
    try:
        approved = _finish(engine, vault, claimed, code=code, error=error, description=error_description,
                           sandbox=sandbox, verify=verify)  # fmt: skip
    except ConsentError as exc:
        book.settle(state, user, exc)
        raise
    except Exception:
        book.settle(
            state, user, ConsentError("Saving the approval failed unexpectedly: press Connect again.")
        )
        raise
    book.settle(state, user, approved)
    return approved


def reuse_or_start(
    book: ConsentBook, prepared: dict[Any, ConsentStart], key: Any, start: Callable[[], ConsentStart]
) -> ConsentStart:
    """The approval `prepared[key]` while it has `RENEW_MARGIN` left, else a fresh one from `start()`.

    A page draws its Connect to NetSuite button with an approval prepared ahead (a pop-up must open on
    the click itself, so there is no time to ask the server then); `prepared` is the page's session
    store, so each session keeps one approval per button instead of one per rerun.
    """
    current = prepared.get(key)
    if current is not None and book.is_open(current.state, margin=RENEW_MARGIN):
        return current
    if current is not None:
        book.discard(current.state)
    prepared[key] = start()
    return prepared[key]


def consent_outcome(book: ConsentBook, *, state: str, user: str) -> Approved | ConsentError | None:
    """How the approval `state` ended (finished in another window, say), or None if it never did."""
    return book.outcome(state, user)


def _finish(
    engine: Engine,
    vault: Vault,
    pending: _Pending,
    *,
    code: str,
    error: str,
    description: str,
    sandbox: bool,
    verify: bool,
) -> Approved:
    if error or not code:
        reason = f"{error}: {description}" if description else error or "no authorization code came back"
        hint = AUTHORIZE_HINTS.get(error, "Press Connect to NetSuite again.")
        raise ConsentError(f"NetSuite did not grant access ({reason}). {hint}")
    fields = dict(vault.decrypt(pending.sealed) or {})
    address = pending.base_url or default_base_url(NETSUITE, fields)

    async def exchange(client: Any) -> dict[str, Any]:
        netsuite: NetSuiteClient = client
        return await netsuite.exchange_code(
            code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.verifier
        )

    try:
        settings, secret_fields = _split(NETSUITE, fields)
        body = with_client(
            NETSUITE,
            base_url=address,
            settings=settings,
            secrets=secret_fields,
            sandbox=sandbox,
            call=exchange,
        )
    except ConnectorError as exc:  # unreachable, or a host outside NetSuite's
        raise ConsentError(
            f"NetSuite's token endpoint could not be reached: {exc.message}. Try again."
        ) from exc
    if not body.get(REFRESH_TOKEN) or not body.get("access_token"):
        kind = str(body.get("error") or "no refresh token in the answer")
        reason = f"{kind}: {body['error_description']}" if body.get("error_description") else kind
        hint = EXCHANGE_HINTS.get(
            kind, "Press Connect to NetSuite again; if it keeps failing, check the integration record."
        )
        raise ConsentError(f"NetSuite refused the authorization code ({reason}). {hint}")
    grant = TokenGrant(
        access_token=str(body["access_token"]), expires_in=float(body.get("expires_in") or 3600)
    )
    try:
        connection, created = _save(
            engine, vault, NETSUITE, fields={**fields, REFRESH_TOKEN: str(body[REFRESH_TOKEN])},
            workspace_id=pending.workspace_id, connection_id=pending.connection_id, name=pending.name,
            base_url=pending.base_url, sandbox=sandbox,
        )  # fmt: skip
    except InputError as exc:
        raise ConsentError("; ".join(exc.problems.values())) from exc
    _keep_token(engine, vault, connection, grant, reason="approved in NetSuite")
    ping = onboarding.ping(engine, vault, connection_id=connection.id, sandbox=sandbox) if verify else None
    return Approved(connection, created, ping, origin=pending.origin, resume=pending.resume)


# --- Zoho ------------------------------------------------------------------------------------------


def exchange_zoho_grant_code(
    engine: Engine,
    vault: Vault,
    *,
    code: str,
    sandbox: bool,
    workspace_id: int | None = None,
    connection_id: int | None = None,
    values: Mapping[str, str] | None = None,
    name: str = "",
    base_url: str = "",
    verify: bool = False,
) -> Approved:
    """Trade a self-client grant code for a refresh token and save it on the connection.

    A saved connection (`connection_id`, its fields overridden by non-empty `values`) or a new one of
    `workspace_id` from form `values`. The code goes to the accounts server of the connection's data
    centre, the only one that knows it. Raises InputError: per field for the form, under "grant_code"
    for Zoho's refusal, saying what to fix.
    """
    workspace_id, name, base_url, fields = _entered(
        engine, vault, ZOHO, connection_id, workspace_id, name, base_url, values
    )
    code = code.strip()
    if not code:
        raise InputError(
            {GRANT_CODE: "Grant code is required: generate one in Zoho's API console (Self Client)"}
        )
    accounts = _checked(ZOHO, fields, name=name, base_url=base_url, sandbox=sandbox, produced=REFRESH_TOKEN)
    centre = str(fields.get("data_centre") or "")

    async def exchange(http: httpx2.AsyncClient) -> dict[str, Any]:
        return await exchange_grant_code(
            http, accounts_url=accounts, client_id=str(fields.get("client_id") or ""),
            client_secret=str(fields.get("client_secret") or ""), code=code, sandbox=sandbox,
        )  # fmt: skip

    where = f"the {centre} data centre ({urlsplit(accounts).netloc})"
    try:
        body = run(exchange)
    except ConfigurationError as exc:
        raise InputError({GRANT_CODE: f"{exc.message}. It was sent to {where}: a code only works in the data "
                          "centre it was generated in, so pick the one you sign in to Zoho at."}) from exc  # fmt: skip
    except (ConnectorError, httpx2.TransportError) as exc:  # unreachable or busy: nothing was decided
        raise InputError({GRANT_CODE: f"Zoho's accounts server for {where} did not answer: try again in a "
                          "minute with a new code if this one has expired meanwhile."}) from exc  # fmt: skip
    grant = TokenGrant(
        access_token=str(body.get("access_token") or ""),
        expires_in=float(body.get("expires_in") or 3600),
        extra={"api_domain": str(body.get("api_domain") or "")},
    )
    connection, created = _save(
        engine, vault, ZOHO, fields={**fields, REFRESH_TOKEN: str(body[REFRESH_TOKEN])},
        workspace_id=workspace_id, connection_id=connection_id, name=name, base_url=base_url, sandbox=sandbox,
    )  # fmt: skip
    if grant.access_token:
        _keep_token(engine, vault, connection, grant, reason="grant code exchanged")
    ping = onboarding.ping(engine, vault, connection_id=connection.id, sandbox=sandbox) if verify else None
    return Approved(connection, created, ping)


# --- shared ----------------------------------------------------------------------------------------


def _entered(
    engine: Engine,
    vault: Vault,
    system: str,
    connection_id: int | None,
    workspace_id: int | None,
    name: str,
    base_url: str,
    values: Mapping[str, Any] | None,
) -> tuple[int, str, str, dict[str, Any]]:
    """(workspace id, name, base URL, fields) of a saved connection (`connection_id`, its fields
    overridden by non-empty `values`) or of a new one of `workspace_id` from form `values`."""
    stored: dict[str, Any] = {}
    if connection_id is not None:
        connection = crud.get_connection(engine, connection_id=connection_id)
        if connection is None or connection.system != system:
            raise LookupError(f"no {SYSTEMS[system].spec.title} connection {connection_id}")
        stored = {**connection.settings, **crud.connection_secrets(vault, connection)}
        workspace_id = connection.workspace_id
        name = name or connection.name
        base_url = base_url or connection.base_url
    if workspace_id is None:
        raise LookupError("a new connection needs its workspace")
    return workspace_id, name, base_url, {**stored, **{k: v for k, v in (values or {}).items() if v}}


def _checked(
    system: str, fields: Mapping[str, Any], *, name: str, base_url: str, sandbox: bool, produced: str
) -> str:
    """The connection's address, once its fields are acceptable but for `produced` (what the approval
    yields); InputError naming every field to fix otherwise."""
    spec = onboarding.spec_of(system)
    problems = {
        k: v for k, v in spec.validate({k: str(v) for k, v in fields.items()}).items() if k != produced
    }
    if not name.strip():
        problems[NAME] = "Connection name is required"
    address = base_url.strip()
    if not problems:
        try:
            address = address or default_base_url(system, dict(fields))
            spec.check_host(address, sandbox=sandbox)
        except ConfigurationError as exc:
            problems[BASE_URL] = f"Base URL: {exc.message}"
    if problems:
        raise InputError(problems)
    return address


def _is_netsuite_host(url: str) -> bool:
    """Whether `url` is on NetSuite's own hosts (else an emulator, which sandbox mode allows)."""
    try:
        onboarding.spec_of(NETSUITE).check_host(url, sandbox=False)
    except ConfigurationError:
        return False
    return True


def _save(
    engine: Engine,
    vault: Vault,
    system: str,
    *,
    fields: dict[str, Any],
    workspace_id: int,
    connection_id: int | None,
    name: str,
    base_url: str,
    sandbox: bool,
) -> tuple[ConnectionPublic, bool]:
    """Save through the wizard's own service, so the same checks and encryption apply; InputError."""
    try:
        saved = onboarding.save_connection(
            engine, vault, workspace_id=workspace_id, system=system, name=name,
            values={k: str(v) for k, v in fields.items()}, base_url=base_url, sandbox=sandbox,
            connection_id=connection_id,
        )  # fmt: skip
    except LookupError as exc:
        raise InputError({NAME: "The connection was removed meanwhile: set it up again"}) from exc
    return saved, connection_id is None


def _split(system: str, fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings, secrets) as a saved connection keeps them, for building a client."""
    secret = {f.name for f in onboarding.spec_of(system).fields if f.secret}
    return (
        {k: v for k, v in fields.items() if k not in secret},
        {k: v for k, v in fields.items() if k in secret},
    )


def _keep_token(
    engine: Engine, vault: Vault, connection: ConnectionPublic, grant: TokenGrant, *, reason: str
) -> None:
    """Cache the access token that came with the refresh token, as a refresh would (storage.tokens): the
    runner uses it until it expires, and the Connections page shows it valid."""

    async def granted() -> TokenGrant:
        return grant

    tokens = StoredTokens(
        granted, engine=engine, vault=vault, connection_id=connection.id, system=connection.system
    )
    asyncio.run(tokens.get(reason=reason))
