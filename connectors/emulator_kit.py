"""Pieces every emulator shares: request log, fault injection, tokens, JSON helpers, test hooks.

The small SQL subset SuiteQL and ZOQL share lives in connectors.emulator_sql.

An emulator is a `BaseEmulator` subclass (state + config) plus a Starlette app built around it. The
shared `EmulatorMiddleware` wraps the app and does, for each request, what every system needs:

    /_emulator/...  test hooks: no auth, no faults, not logged
    token endpoint  logged; `faults.token_latency`; other faults only if `faults.include_token_endpoints`
    API call        logged; periodic token expiry (`faults.expire_tokens_every`) -> system admission
                    (`admit`, e.g. rate limits) -> concurrency gate -> injected latency (fixed plus
                    random) -> injected failure (`fail_next`, then the random `rate_429`/`rate_5xx`)
                    -> the route

Whatever is specific to one system (error shapes, headers, which paths are API calls) comes from
the subclass's hook methods, so nothing here ever asks which system it is serving.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import httpx2
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HOOK_PREFIX = "/_emulator/"
REDACTED = "[redacted]"
# Query/form parameters that carry secrets; the request log must never show them.
SECRET_PARAMS = frozenset({"client_secret", "refresh_token", "client_assertion", "code", "password"})


class RouteKind(Enum):
    """How the shared middleware treats a path."""

    HOOK = "hook"
    TOKEN = "token"
    API = "api"
    OTHER = "other"


# ---------------------------------------------------------------------------------------------
# JSON and time helpers


class InvalidJson(ValueError):
    """The request body is not the JSON the route expects."""


async def read_json(request: Request) -> Any:
    """Parse the request body as JSON, raising `InvalidJson` with a readable reason."""
    raw = await request.body()
    if not raw.strip():
        raise InvalidJson("the request body is empty")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidJson(f"the request body is not valid JSON ({exc})") from exc


async def read_json_object(request: Request) -> dict[str, Any]:
    """Like `read_json`, but the top level must be a JSON object."""
    body = await read_json(request)
    if not isinstance(body, dict):
        raise InvalidJson("the request body must be a JSON object")
    return body


def json_response(
    body: Any, status: int = 200, headers: Mapping[str, str] | None = None, media_type: str | None = None
) -> Response:
    """A JSON response with an optional vendor media type (NetSuite uses its own)."""
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=media_type)


def iso_utc(ts: float) -> str:
    """Epoch seconds -> ISO-8601 UTC with a `Z` suffix, second precision."""
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> float:
    """ISO-8601 (with `Z` or an offset; naive means UTC) -> epoch seconds."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


async def form_or_query(request: Request) -> dict[str, str]:
    """Merge the query string and an urlencoded/multipart form body (the body wins)."""
    params = dict(request.query_params)
    content_type = request.headers.get("content-type", "")
    if "form" in content_type:
        form = await request.form()
        params.update({k: v for k, v in form.items() if isinstance(v, str)})
    return params


# ---------------------------------------------------------------------------------------------
# Request log


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lower-cased headers with `Authorization` cut down to its scheme (`Bearer`, `Zoho-oauthtoken`)."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        out[key] = value.split(" ", 1)[0] if key == "authorization" else value
    return out


def redact_query(query: Mapping[str, str]) -> dict[str, str]:
    """Query parameters with secret-bearing ones (Zoho sends its refresh token here) masked."""
    return {k: (REDACTED if k in SECRET_PARAMS else v) for k, v in query.items()}


# ---------------------------------------------------------------------------------------------
# Fault injection


RANDOM_5XX = (500, 502, 503, 504)  # what `rate_5xx` answers with, picked at random


class Faults:
    """Latency, failures and a concurrency cap, shared by the test thread and the server.

    Deterministic faults: `latency` (seconds) is added before answering each API call, or, with
    `latency_is_total`, is the time each API call takes from its arrival to its answer, the emulator's own
    work included (as a remote system's latency is: a benchmark then measures the client against exactly
    that latency, not that plus the emulator's CPU); `fail_next(status,
    count)` makes the next `count` API calls answer `status` in the system's own error shape;
    `concurrency_limit` caps API calls in flight (None = no cap).

    Random faults, for load under a misbehaving system: `latency_jitter` adds a uniform random extra of up
    to that many seconds; `rate_429` and `rate_5xx` answer that share of API calls (not already given a
    `fail_next` status) with a 429 (the system's own, Retry-After included when the system sends one) or
    one of RANDOM_5XX; `expire_tokens_every` (seconds) makes every issued token stop working that often,
    counted from the first API call after it was set; `token_latency` (seconds) slows the token endpoint
    down, and `tokens_in_flight` says how many token requests it is answering right now (a test kills a
    client mid-refresh with it). `injected` counts the injected failures answered, by status; `expiries`
    counts the periodic expiries.

    Token endpoints are exempt from latency and failures unless `include_token_endpoints`.
    """

    def __init__(self, *, concurrency_limit: int | None = None, seed: int | None = None) -> None:
        self._lock = threading.Lock()
        self._default_limit = concurrency_limit
        self._random = random.Random(seed)
        self.latency = 0.0  # seconds
        self.latency_jitter = 0.0  # seconds: up to this much more, uniform, per API call
        self.latency_is_total = False  # the latency counts from the call's arrival, the work included
        self.concurrency_limit = concurrency_limit
        self.include_token_endpoints = False
        self.rate_429 = 0.0  # share of API calls answered 429
        self.rate_5xx = 0.0  # share of API calls answered with one of RANDOM_5XX
        self.token_latency = 0.0  # seconds added before a token endpoint answers
        self.expire_tokens_every: float | None = None  # seconds; None: tokens live their full life
        self.injected: Counter[int] = Counter()
        self.expiries = 0
        self._next_expiry: float | None = None  # epoch seconds of the next periodic expiry
        self._failures: list[int] = []
        self._in_flight = 0
        self._tokens_in_flight = 0

    def fail_next(self, status: int, count: int = 1) -> None:
        """Make the next `count` API calls answer HTTP `status` (queued after earlier ones)."""
        if not 400 <= status <= 599 or count < 0:
            raise ValueError("fail_next needs a 4xx/5xx status and a non-negative count")
        with self._lock:
            self._failures.extend([status] * count)

    def set_rates(self, *, rate_429: float | None = None, rate_5xx: float | None = None) -> None:
        """Set the random failure shares (each 0..1, together at most 1); None keeps a share as it is."""
        new_429 = self.rate_429 if rate_429 is None else float(rate_429)
        new_5xx = self.rate_5xx if rate_5xx is None else float(rate_5xx)
        if not (0.0 <= new_429 <= 1.0 and 0.0 <= new_5xx <= 1.0 and new_429 + new_5xx <= 1.0):
            raise ValueError("rate_429 and rate_5xx are shares between 0 and 1 that add up to at most 1")
        with self._lock:
            self.rate_429, self.rate_5xx = new_429, new_5xx

    def take_failure(self) -> int | None:
        """The status this API call fails with: the next scheduled one, else a random draw, else None."""
        with self._lock:
            if self._failures:
                status: int | None = self._failures.pop(0)
            else:
                draw = self._random.random()
                if draw < self.rate_429:
                    status = 429
                elif draw < self.rate_429 + self.rate_5xx:
                    status = self._random.choice(RANDOM_5XX)
                else:
                    status = None
            if status is not None:
                self.injected[status] += 1
            return status

    def delay(self) -> float:
        """Seconds to wait before answering this API call: the fixed latency plus the random extra."""
        with self._lock:
            jitter = self._random.uniform(0.0, self.latency_jitter) if self.latency_jitter > 0 else 0.0
        return self.latency + jitter

    def expiry_due(self, now: float) -> bool:
        """True once per `expire_tokens_every` seconds (the caller then expires every token)."""
        with self._lock:
            every = self.expire_tokens_every
            if every is None:
                self._next_expiry = None
                return False
            if self._next_expiry is None:
                self._next_expiry = now + every
                return False
            if now < self._next_expiry:
                return False
            self._next_expiry = now + every
            self.expiries += 1
            return True

    @property
    def pending_failures(self) -> int:
        with self._lock:
            return len(self._failures)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    @property
    def tokens_in_flight(self) -> int:
        with self._lock:
            return self._tokens_in_flight

    def enter(self) -> bool:
        """Count one more API call in flight; False (and not counted) if that breaks the cap."""
        with self._lock:
            if self.concurrency_limit is not None and self._in_flight >= self.concurrency_limit:
                return False
            self._in_flight += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def token_request(self, delta: int) -> None:
        """Count a token request in (+1) or out (-1) of the endpoint."""
        with self._lock:
            self._tokens_in_flight += delta

    def configure(self, payload: Mapping[str, Any]) -> None:
        """Apply the `/_emulator/faults` JSON (the attributes above, `fail_next`, and `seed` for a repeatable
        random sequence); keys left out keep their value."""
        if "latency" in payload:
            self.latency = max(0.0, float(payload["latency"]))
        if "latency_jitter" in payload:
            self.latency_jitter = max(0.0, float(payload["latency_jitter"]))
        if "latency_is_total" in payload:
            self.latency_is_total = bool(payload["latency_is_total"])
        if "concurrency_limit" in payload:
            limit = payload["concurrency_limit"]
            self.concurrency_limit = None if limit is None else int(limit)
        if "include_token_endpoints" in payload:
            self.include_token_endpoints = bool(payload["include_token_endpoints"])
        if "rate_429" in payload or "rate_5xx" in payload:
            self.set_rates(rate_429=payload.get("rate_429"), rate_5xx=payload.get("rate_5xx"))
        if "token_latency" in payload:
            self.token_latency = max(0.0, float(payload["token_latency"]))
        if "expire_tokens_every" in payload:
            every = payload["expire_tokens_every"]
            if every is not None and float(every) <= 0:
                raise ValueError("expire_tokens_every is a number of seconds above 0, or null for never")
            with self._lock:
                self.expire_tokens_every = None if every is None else float(every)
                self._next_expiry = None
        if "seed" in payload:
            with self._lock:
                self._random.seed(payload["seed"])
        fail = payload.get("fail_next")
        if fail:
            self.fail_next(int(fail["status"]), int(fail.get("count", 1)))

    def reset(self) -> None:
        """Back to the constructor's configuration with nothing scheduled."""
        with self._lock:
            self._failures.clear()
            self.injected.clear()
            self.expiries = 0
            self._next_expiry = None
            self.rate_429 = self.rate_5xx = 0.0
        self.latency = self.latency_jitter = self.token_latency = 0.0
        self.latency_is_total = False
        self.expire_tokens_every = None
        self.concurrency_limit = self._default_limit
        self.include_token_endpoints = False

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            injected = {str(status): n for status, n in sorted(self.injected.items())}
        return {
            "latency": self.latency,
            "latency_jitter": self.latency_jitter,
            "latency_is_total": self.latency_is_total,
            "concurrency_limit": self.concurrency_limit,
            "include_token_endpoints": self.include_token_endpoints,
            "rate_429": self.rate_429,
            "rate_5xx": self.rate_5xx,
            "token_latency": self.token_latency,
            "expire_tokens_every": self.expire_tokens_every,
            "pending_failures": self.pending_failures,
            "in_flight": self.in_flight,
            "tokens_in_flight": self.tokens_in_flight,
            "injected": injected,
            "expiries": self.expiries,
        }


# ---------------------------------------------------------------------------------------------
# Access tokens


@dataclass
class IssuedToken:
    """An opaque access token and what it was issued to."""

    token: str
    subject: str
    expires_at: float  # epoch seconds
    claims: dict[str, Any] = field(default_factory=dict)


class TokenStore:
    """Opaque bearer tokens with an expiry read from an injectable clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, IssuedToken] = {}

    def issue(self, subject: str, ttl: float, **claims: Any) -> IssuedToken:
        """Mint a token for `subject` valid for `ttl` seconds from now."""
        issued = IssuedToken(secrets.token_hex(16), subject, self._clock() + ttl, dict(claims))
        with self._lock:
            self._tokens[issued.token] = issued
        return issued

    def lookup(self, token: str | None) -> IssuedToken | None:
        """The token's record if it exists and has not expired, else None."""
        if not token:
            return None
        with self._lock:
            issued = self._tokens.get(token)
        if issued is None or issued.expires_at <= self._clock():
            return None
        return issued

    def expire_all(self) -> None:
        """Every token issued so far stops working now."""
        self.revoke(lambda issued: True)

    def revoke(self, match: Callable[[IssuedToken], bool]) -> int:
        """Every live token `match` picks stops working now; returns how many did."""
        now = self._clock()
        revoked = 0
        with self._lock:
            for issued in self._tokens.values():
                if issued.expires_at > now and match(issued):
                    issued.expires_at = now
                    revoked += 1
        return revoked


class MinuteWindow:
    """A fixed one-minute rate-limit window aligned to the clock (Zuora-style per-minute limits)."""

    LENGTH = 60.0  # seconds

    def __init__(self) -> None:
        self.start = 0.0  # epoch seconds
        self.used = 0

    def hit(self, now: float) -> int:
        """Count one request at `now`; returns how many the current window has seen."""
        if now - self.start >= self.LENGTH:
            self.start, self.used = now - (now % self.LENGTH), 0
        self.used += 1
        return self.used

    def reset_in(self, now: float) -> int:
        """Whole seconds until the window rolls over (at least 1)."""
        return max(1, math.ceil(self.start + self.LENGTH - now))


def spawn(coro: Coroutine[Any, Any, None], loop: asyncio.AbstractEventLoop | None, tasks: set[Any]) -> None:
    """Run an outgoing delivery without delaying the API answer: on the running loop, or on the serving
    `loop` when called from another thread (a test seeding data). Raises RuntimeError when neither runs."""
    try:
        task = asyncio.get_running_loop().create_task(coro)
    except RuntimeError:
        if loop is None or not loop.is_running():
            coro.close()
            raise RuntimeError(
                "no running server loop for outbound calls: serve the emulator first"
            ) from None
        asyncio.run_coroutine_threadsafe(coro, loop)
        return
    tasks.add(task)  # keep a reference so the task is not garbage-collected mid-flight
    task.add_done_callback(tasks.discard)


class Outbox:
    """Fire-and-forget JSON POSTs from the emulator (webhooks), logged in `deliveries`, no retries.

    Sends run as tasks on the serving event loop so an API answer never waits for them; `schedule`
    also works from a test thread once the app has served a request. Each delivery is logged as
    {url, body, headers, status} or {url, body, headers, error}.
    """

    def __init__(self, timeout: httpx2.Timeout) -> None:
        self.timeout = timeout
        self.deliveries: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._pending = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        with self._lock:
            return self._pending

    def clear(self) -> None:
        with self._lock:
            self.deliveries.clear()

    def schedule(
        self, url: str, body: Any, headers: Mapping[str, str], loop: asyncio.AbstractEventLoop | None
    ) -> None:
        """Queue one POST; `loop` is the serving loop, used when called from outside it."""
        with self._lock:
            self._pending += 1
        try:
            spawn(self._send(url, body, dict(headers)), loop, self._tasks)
        except RuntimeError:
            with self._lock:
                self._pending -= 1
            raise

    async def drain(self) -> None:
        """Wait until every scheduled delivery finished (callable from any event loop)."""
        while self.pending:
            await asyncio.sleep(0.01)

    async def _send(self, url: str, body: Any, headers: dict[str, str]) -> None:
        entry: dict[str, Any] = {"url": url, "body": body, "headers": headers}
        try:
            async with httpx2.AsyncClient(timeout=self.timeout) as client:
                entry["status"] = (await client.post(url, json=body, headers=headers)).status_code
        except httpx2.HTTPError as exc:
            entry["error"] = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self.deliveries.append(entry)
            self._pending -= 1


def credential(request: Request, scheme: str) -> str | None:
    """The credential after `scheme` in `Authorization` (scheme matched case-insensitively)."""
    header = request.headers.get("authorization", "")
    given, _, value = header.partition(" ")
    if given.lower() != scheme.lower() or not value.strip():
        return None
    return value.strip()


# ---------------------------------------------------------------------------------------------
# The emulator base class


@dataclass
class Admission:
    """What a system's `admit` hook decides for one API call: extra headers, or an early answer."""

    headers: dict[str, str] = field(default_factory=dict)
    response: Response | None = None


class BaseEmulator:
    """State, lock, clock, request log, faults and tokens; subclasses add their system's behaviour.

    Subclasses implement the hook methods below; the shared middleware and `hook_routes` call them.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.time, concurrency_limit: int | None = None
    ) -> None:
        self.clock = clock
        # Re-entrant: public helpers that take the lock call each other.
        self.lock = threading.RLock()
        self.requests: list[dict[str, Any]] = []
        self.faults = Faults(concurrency_limit=concurrency_limit)
        self.tokens = TokenStore(clock)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def app(self) -> Any:
        """A fresh Starlette app serving this emulator (same as the module's `create_app(self)`)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Empty state, request log and faults; registered clients and issued tokens are kept."""
        with self.lock:
            self.requests.clear()
            self._clear_state()
        self.faults.reset()

    def expire_tokens(self) -> None:
        """Every access token issued so far becomes invalid now."""
        self.tokens.expire_all()

    def revoke(self, **targets: str) -> dict[str, int]:
        """Revoke credentials as an administrator would: the token endpoint refuses them from now on
        with the system's real error, and access tokens already issued from them answer 401.

        `targets` name what to revoke (system-specific keyword names, e.g. `client_id`); none revokes
        every credential. Returns how many of each kind were revoked; raises KeyError when a named
        target matches nothing and TypeError for a keyword the system does not know. Revocations
        survive `reset()`; registering the client again restores access.
        """
        raise NotImplementedError

    def log_request(self, scope: Scope, status: int) -> None:
        request = Request(scope)
        entry = {
            "method": request.method,
            "path": request.url.path,
            "query": redact_query(request.query_params),
            "headers": redact_headers(request.headers),
            "status": status,
            "at": self.clock(),
        }
        with self.lock:
            self.requests.append(entry)

    # Hooks for subclasses -----------------------------------------------------------------
    def _clear_state(self) -> None:
        raise NotImplementedError

    def route_kind(self, path: str) -> RouteKind:
        raise NotImplementedError

    def fault_response(self, status: int) -> Response:
        """The system's real error for an injected `status` (429 with its rate-limit headers)."""
        raise NotImplementedError

    def busy_response(self) -> Response:
        """The system's real answer when too many API calls are in flight."""
        raise NotImplementedError

    def admit(self, request: Request, kind: RouteKind) -> Admission:
        """System-specific admission for API and token calls (rate limits, per-response headers)."""
        return Admission()

    def enter_gate(self, scope: Scope) -> bool:
        """Count one API call in flight against its concurrency cap; False (not counted) when full.

        One pool (`faults`) by default; a system with several limit classes (Zuora's default and
        high-volume) overrides this and `leave_gate` to pick the pool from the request.
        """
        return self.faults.enter()

    def leave_gate(self, scope: Scope) -> None:
        """Release what `enter_gate` counted for this request."""
        self.faults.leave()

    def register_json(self, body: dict[str, Any]) -> None:
        """Register an API client from the `/_emulator/clients` JSON (keys = register_* arguments)."""
        raise NotImplementedError

    def records(self, record_type: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    def seed(self, record_type: str, record: dict[str, Any], *, notify: bool = False) -> str:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# Middleware


class EmulatorMiddleware:
    """Pure-ASGI wrapper that logs, admits, throttles and fault-injects per `BaseEmulator` hooks."""

    def __init__(self, app: ASGIApp, emulator: BaseEmulator) -> None:
        self.app = app
        self.emulator = emulator

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        emulator = self.emulator
        # Remember the serving loop so test threads can schedule work on it (webhook deliveries).
        emulator.loop = asyncio.get_running_loop()
        kind = emulator.route_kind(scope["path"])
        if kind is RouteKind.HOOK:
            await self.app(scope, receive, send)
            return
        faults = emulator.faults
        if kind is RouteKind.API and faults.expiry_due(emulator.clock()):
            emulator.expire_tokens()
        admission = Admission()
        if kind in (RouteKind.API, RouteKind.TOKEN):
            admission = emulator.admit(Request(scope), kind)
        send = self._logging_send(scope, send, admission.headers)
        guarded = kind is RouteKind.API or (kind is RouteKind.TOKEN and faults.include_token_endpoints)
        if admission.response is not None:
            await admission.response(scope, receive, send)
            return
        if kind is RouteKind.TOKEN:
            faults.token_request(+1)
        try:
            if kind is RouteKind.TOKEN and faults.token_latency > 0:
                await asyncio.sleep(faults.token_latency)
            if guarded:
                await self._guarded(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        except ClientDisconnect:
            # The caller hung up before its body arrived (a client killed mid-request): nobody to answer.
            return
        finally:
            if kind is RouteKind.TOKEN:
                faults.token_request(-1)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        faults = self.emulator.faults
        if not self.emulator.enter_gate(scope):
            await self.emulator.busy_response()(scope, receive, send)
            return
        try:
            delay = faults.delay()
            if delay > 0 and faults.latency_is_total:
                send = _answer_at(asyncio.get_running_loop().time() + delay, send)
            elif delay > 0:
                await asyncio.sleep(delay)
            status = faults.take_failure()
            if status is not None:
                await self.emulator.fault_response(status)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            self.emulator.leave_gate(scope)

    def _logging_send(self, scope: Scope, send: Send, extra: Mapping[str, str]) -> Send:
        emulator = self.emulator

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in extra.items():
                    if name.lower().encode("latin-1") not in present:
                        headers.append((name.lower().encode("latin-1"), str(value).encode("latin-1")))
                message = {**message, "headers": headers}
                # Log before the client can see the answer, so a test reading the log never races.
                emulator.log_request(scope, message["status"])
            await send(message)

        return wrapped


def _answer_at(deadline: float, send: Send) -> Send:
    """`send`, holding the answer back until `deadline` (event-loop time) when the work was quicker."""

    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            wait = deadline - asyncio.get_running_loop().time()
            if wait > 0:
                await asyncio.sleep(wait)
        await send(message)

    return wrapped


# ---------------------------------------------------------------------------------------------
# Test hooks shared by every emulator


def hook_routes(emulator: BaseEmulator) -> list[Route]:
    """The `/_emulator/*` routes every emulator offers (no auth: loopback test tooling)."""

    async def reset(request: Request) -> Response:
        emulator.reset()
        return json_response({"ok": True})

    async def requests_log(request: Request) -> Response:
        with emulator.lock:
            return json_response(list(emulator.requests))

    async def faults(request: Request) -> Response:
        try:
            emulator.faults.configure(await read_json_object(request))
        except (InvalidJson, KeyError, TypeError, ValueError) as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response(emulator.faults.snapshot())

    async def expire(request: Request) -> Response:
        emulator.expire_tokens()
        return json_response({"ok": True})

    async def revoke(request: Request) -> Response:
        try:
            body = await read_json_object(request) if (await request.body()).strip() else {}
            revoked = emulator.revoke(**{str(k): str(v) for k, v in body.items() if v is not None})
        except (InvalidJson, TypeError) as exc:
            return json_response({"error": f"cannot revoke: {exc}"}, 400)
        except KeyError as exc:
            return json_response({"error": f"nothing to revoke: {exc.args[0]}"}, 404)
        return json_response({"ok": True, "revoked": revoked})

    async def list_records(request: Request) -> Response:
        try:
            return json_response(emulator.records(request.path_params["type"]))
        except KeyError as exc:
            return json_response({"error": f"unknown record type {exc}"}, 404)

    async def seed(request: Request) -> Response:
        notify = request.query_params.get("notify", "").lower() in ("1", "true", "yes")
        try:
            body = await read_json_object(request)
            record_id = emulator.seed(request.path_params["type"], body, notify=notify)
        except InvalidJson as exc:
            return json_response({"error": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": f"unknown record type {exc}"}, 404)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return json_response({"id": record_id}, 201)

    async def clients(request: Request) -> Response:
        try:
            emulator.register_json(await read_json_object(request))
        except (InvalidJson, KeyError, TypeError, ValueError) as exc:
            return json_response({"error": f"cannot register this client: {exc}"}, 400)
        return json_response({"ok": True})

    return [
        Route("/_emulator/reset", reset, methods=["POST"]),
        Route("/_emulator/clients", clients, methods=["POST"]),
        Route("/_emulator/requests", requests_log, methods=["GET"]),
        Route("/_emulator/faults", faults, methods=["POST"]),
        Route("/_emulator/expire-tokens", expire, methods=["POST"]),
        Route("/_emulator/revoke", revoke, methods=["POST"]),
        Route("/_emulator/records/{type}", list_records, methods=["GET"]),
        Route("/_emulator/seed/{type}", seed, methods=["POST"]),
    ]
