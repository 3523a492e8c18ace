"""The request machinery every client shares: auth header, one refresh on 401, retries, audit hook.

A client subclasses `ApiClient`, names its `system` and `spec`, and overrides `auth_header()` and, where
the system has quirks, `status_reactions` (a status that means something else there) and `classify()`
(an answer whose body decides, e.g. Zuora's HTTP 200 with `success:false`). `request()` then:

1. takes a token from the client's `TokenSource`, sends the request, reports the `Attempt` to the hook;
2. on 401, asks for a fresh token once and resends (credentials refused at that point were revoked);
3. turns the response into an exception by the status table (`STATUS_REACTIONS`, overridable per
   system), and retries `TransientError` with exponential backoff and full jitter, honouring the wait
   the system asked for in the headers its spec declares, at most `RetryPolicy.max_tries` tries in all.

A client built by connectors.registry sends nothing outside its system's hosts (loopback emulators in
sandbox mode): every URL, absolute ones a system hands back (Zuora's nextPage, Zoho's api_domain)
included, is checked before it is sent.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import httpx2
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from connectors.auth import MemoryTokens, TokenFetcher, TokenGrant, TokenSource, minutes, refresh_reason
from connectors.errors import (
    AmbiguousLogin,
    ConfigurationError,
    ConnectorError,
    CredentialsRevoked,
    Deferred,
    RemoteError,
    TransientError,
    strip_query,
)
from connectors.spec import RateLimitHeaders, SystemSpec

RESPONSE_EXCERPT = 1000  # characters of a response body kept on an attempt
DEFAULT_TIMEOUT = httpx2.Timeout(30.0, connect=10.0)  # seconds
URL_TEMPLATES = 256  # (path prefix, query) pairs whose parsed URL a client keeps to build URLs from
# A last path segment that URL parsing leaves exactly as it is: unreserved characters (never quoted)
# without a dot (so never a "." or ".." segment to normalise away). A record id, typically.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9_~-]{1,200}")
_PLACEHOLDER = "0"  # the last segment of the URL a template is parsed from


@dataclass(frozen=True)
class Attempt:
    """One HTTP exchange, as the audit trail records it (never a secret)."""

    system: str
    method: str
    url: str
    status: int | None
    duration_ms: float
    response_excerpt: str | None = None
    error: str | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


AttemptHook = Callable[[Attempt], None]


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `sleep` is injectable so tests never wait for real."""

    max_tries: int = 5
    base: float = 0.5  # seconds
    cap: float = 30.0  # seconds
    max_retry_after: float = 120.0  # seconds: longer requests become a job-level retry instead
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def wait(self, attempt_number: int, retry_after: float | None) -> float:
        jitter = random.uniform(0, min(self.cap, self.base * 2 ** (attempt_number - 1)))
        if retry_after is None:
            return jitter
        return min(self.max_retry_after, max(retry_after, jitter))


# Status → reaction. A system overrides entries through `ApiClient.status_reactions`.
STATUS_REACTIONS: Mapping[int, type[ConnectorError]] = {
    400: RemoteError,
    401: ConfigurationError,
    403: ConfigurationError,
    404: RemoteError,
    405: ConfigurationError,
    408: TransientError,
    409: TransientError,
    422: RemoteError,
    423: TransientError,
    425: TransientError,
    429: TransientError,
}


def reaction_for(status: int, table: Mapping[int, type[ConnectorError]]) -> type[ConnectorError] | None:
    if status < 400:
        return None
    if status in table:
        return table[status]
    return TransientError if status >= 500 else RemoteError


# The headers read when a client declares none: Retry-After anywhere, the common reset headers on a 429.
DEFAULT_RATE_LIMIT = RateLimitHeaders(reset=("RateLimit-Reset", "X-RateLimit-Reset"))
EPOCH_FLOOR = 1e9  # seconds: a "reset" this large is an epoch time (2001 on), not a number of seconds


def parse_retry_after(
    headers: httpx2.Headers, status: int, declared: RateLimitHeaders | None = None
) -> float | None:
    """Seconds the system asked us to wait, from the headers its spec declares: `retry_after` (seconds or
    an HTTP date) on any answer, and the rate-limit window's `reset` only on a 429, since Zuora sends
    RateLimit-Reset on every response. The first header present and readable wins."""
    declared = declared or DEFAULT_RATE_LIMIT
    names = [*declared.retry_after, *(declared.reset if status == 429 else ())]
    for name in names:
        raw = headers.get(name)
        if raw is None:
            continue
        seconds = _seconds(raw, date_allowed=name in declared.retry_after)
        if seconds is not None:
            return seconds
    return None


def _seconds(raw: str, *, date_allowed: bool) -> float | None:
    """A wait in seconds from a header value: delta-seconds (the first of a list), an epoch time, or,
    for Retry-After, an HTTP date."""
    try:
        value = float(raw.split(",")[0].strip())
    except ValueError:
        if not date_allowed:
            return None
        try:
            when = parsedate_to_datetime(raw.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(0.0, (when - datetime.now(UTC)).total_seconds())
    if value >= EPOCH_FLOOR:
        # Some systems name the reset as an epoch time (Zoho's is UNCONFIRMED either way).
        value -= time.time()
    return max(0.0, value)


def rate_limit_note(headers: httpx2.Headers, declared: RateLimitHeaders) -> str:
    """What a 429's headers say about the window ("0 of 2500 calls left"), or "" when they say nothing."""
    remaining = next((headers[n] for n in declared.remaining if n in headers), None)
    limit = next((headers[n] for n in declared.limit if n in headers), None)
    if remaining is None:
        return ""
    of = f" of {limit.split(',')[0].strip()}" if limit else ""
    return f"{remaining.strip()}{of} calls left in the rate-limit window"


class ApiClient:
    """Base of the per-system clients."""

    system: ClassVar[str] = ""
    status_reactions: ClassVar[Mapping[int, type[ConnectorError]]] = STATUS_REACTIONS
    # The system's declared data (hosts, rate-limit headers); each client names its own.
    spec: SystemSpec | None = None

    def __init__(
        self,
        *,
        base_url: str,
        http: httpx2.AsyncClient,
        tokens_from: Callable[[TokenFetcher], TokenSource] = MemoryTokens,
        on_attempt: AttemptHook | None = None,
        retry: RetryPolicy | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = http
        # The source calls back into fetch_token when it needs a new token.
        self.tokens: TokenSource = tokens_from(self.fetch_token)
        self.on_attempt = on_attempt
        self.retry = retry or RetryPolicy()
        # Calls in flight at once, at most (None: no cap); callers with many calls to make can run that
        # many at a time instead of queueing the rest on the semaphore.
        self.max_concurrency = max_concurrency or None
        self._slots = asyncio.Semaphore(max_concurrency) if max_concurrency else None
        # Set by `restrict_hosts` (connectors.registry.build_client does it): every URL sent must be on
        # one of the system's declared hosts, or on loopback in sandbox mode. Origins already checked are
        # remembered, so the check costs a set lookup per request.
        self.sandbox = False
        self.hosts_restricted = False
        self._allowed_origins: set[str] = set()
        self._templates: dict[tuple[str, tuple[tuple[str, type, Any], ...] | None], Any] = {}

    # --- hooks a system overrides -------------------------------------------------------------
    async def fetch_token(self) -> TokenGrant:
        """Get a new access token from the system's token endpoint."""
        raise NotImplementedError

    def auth_header(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def classify(self, response: httpx2.Response) -> ConnectorError | None:
        """The error this response stands for, or None when it is a success."""
        kind = reaction_for(response.status_code, self.status_reactions)
        if kind is None:
            return None
        message = self.describe_error(response)
        if response.status_code == 429:
            note = rate_limit_note(response.headers, self.rate_limit_headers)
            message = f"{message} ({note})" if note else message
        return self.error(kind, message, response)

    def describe_error(self, response: httpx2.Response) -> str:
        """A one-line explanation from the system's error body."""
        return f"HTTP {response.status_code}"

    async def probe(self) -> dict[str, str]:
        """One cheap authenticated call for `connectors.ping`; returns what it learned."""
        raise NotImplementedError

    def explain(self, error: ConnectorError) -> str:
        """What a person should do about `error`, in plain words."""
        return wait_hint(error) or error.message

    # --- shared machinery ---------------------------------------------------------------------
    @property
    def title(self) -> str:
        return self.spec.title if self.spec is not None else self.system

    @property
    def rate_limit_headers(self) -> RateLimitHeaders:
        return self.spec.rate_limit if self.spec is not None else DEFAULT_RATE_LIMIT

    def url(self, path: str) -> str:
        return path if path.startswith("http") else f"{self.base_url}{path}"

    def restrict_hosts(self, *, sandbox: bool) -> None:
        """From now on send only to the system's declared hosts (and loopback when `sandbox`); the base
        URL is checked at once. ConfigurationError names the problem."""
        if self.spec is None:
            raise TypeError(f"{type(self).__name__} declares no spec: it has no hosts to keep to")
        self.sandbox = sandbox
        self.hosts_restricted = True
        self._allowed_origins.clear()
        self.check_url("GET", self.base_url)

    def check_url(self, method: str, url: str) -> None:
        """Refuse `url` when it is outside the system's hosts (a no-op until `restrict_hosts`)."""
        if not self.hosts_restricted or self.spec is None:
            return
        origin = _origin(url)
        if origin in self._allowed_origins:
            return
        safe = strip_query(url)  # the refusal's message quotes the URL: never its query
        try:
            self.spec.check_host(safe, sandbox=self.sandbox)
        except ConfigurationError as exc:
            raise ConfigurationError(exc.message, system=self.system, method=method, url=safe) from None
        self._allowed_origins.add(origin)

    def error(self, kind: type[ConnectorError], message: str, response: httpx2.Response) -> ConnectorError:
        return kind(
            message,
            system=self.system,
            method=response.request.method,
            url=strip_query(str(response.request.url)),
            status=response.status_code,
            excerpt=response.text[:RESPONSE_EXCERPT],
            retry_after=parse_retry_after(response.headers, response.status_code, self.rate_limit_headers),
        )

    def refusal(
        self,
        kind: type[ConnectorError],
        message: str,
        *,
        method: str,
        path: str,
        response: httpx2.Response | None = None,
        excerpt: str | None = None,
    ) -> ConnectorError:
        """An error the client itself raises (a batch too large to send, a paginator that would loop, a
        record the system refused inside a success): the evidence of `response` when there was one,
        else the method and URL it would have gone to, with no status (nothing was answered)."""
        if response is not None:
            error = self.error(kind, message, response)
            if excerpt is not None:
                error.excerpt = excerpt
            return error
        return kind(
            message, system=self.system, method=method, url=strip_query(self.url(path)), excerpt=excerpt
        )

    def token_unavailable(self, response: httpx2.Response, message: str) -> TransientError | None:
        """A token endpoint's answer as a transient failure when the shared status table says so (429,
        5xx, ...), else None. The shared table, not the system's overrides: those describe API answers
        (NetSuite's 401 on an API call is ambiguous; on its token endpoint it is a plain refusal)."""
        if reaction_for(response.status_code, STATUS_REACTIONS) is TransientError:
            error = self.error(TransientError, message, response)
            assert isinstance(error, TransientError)
            return error
        return None

    def revoked(self, refused: ConfigurationError) -> CredentialsRevoked:
        """The error for credentials refused right after a token they minted got a 401."""
        return CredentialsRevoked(
            f"{self.title} refused a token these credentials minted, and now refuses the credentials "
            f"themselves: they were revoked or changed in {self.title}. Re-enter them on the connection "
            f"({refused.message})",
            system=self.system,
            method=refused.method,
            url=refused.url,
            status=refused.status,
            excerpt=refused.excerpt,
            retry_after=refused.retry_after,
        )

    def report(self, attempt: Attempt) -> None:
        if self.on_attempt is not None:
            self.on_attempt(attempt)

    async def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx2.Response:
        """Send with auth, one refresh on 401 and retries on transient failures; raise on failure."""
        kwargs = {"json": json, "params": params, "headers": headers}
        try:
            # The first try on its own: most calls succeed at once, and building the retry loop for
            # them cost more CPU than the call. A failure worth retrying goes on to the loop below.
            return await self._authenticated(method, path, **kwargs)
        except TransientError as exc:
            if not self._retry_here(exc) or self.retry.max_tries <= 1:
                if isinstance(exc, AmbiguousLogin):
                    raise exc.as_configuration_error() from exc
                raise
            first = exc
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retry.max_tries - 1),
            wait=self._wait_after(1),
            retry=retry_if_exception(self._retry_here),
            sleep=self.retry.sleep,
            reraise=True,
        )
        await self.retry.sleep(self.retry.wait(1, first.retry_after))
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._authenticated(method, path, **kwargs)
        except AmbiguousLogin as exc:
            # Every try, each with a freshly minted token, was refused: now it is the credentials.
            raise exc.as_configuration_error() from exc
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _retry_here(self, exc: BaseException) -> bool:
        """Transient errors are retried in-process unless the wait belongs to the job queue."""
        if not isinstance(exc, TransientError) or isinstance(exc, Deferred):
            return False
        return exc.retry_after is None or exc.retry_after <= self.retry.max_retry_after

    def _wait_after(self, done: int) -> Callable[[RetryCallState], float]:
        """The wait before each try of a retry loop that starts after `done` tries already made."""

        def wait(state: RetryCallState) -> float:
            exc = state.outcome.exception() if state.outcome else None
            retry_after = exc.retry_after if isinstance(exc, ConnectorError) else None
            return self.retry.wait(done + state.attempt_number, retry_after)

        return wait

    async def _authenticated(self, method: str, path: str, **kwargs: Any) -> httpx2.Response:
        auth, credential = await self.credentials(method, path, kwargs.get("params"))
        response = await self.send(method, path, auth=auth, **kwargs)
        if response.status_code == 401:
            reason = f"401 from {method} {strip_query(self.url(path))}"
            try:
                auth, credential = await self.credentials(
                    method, path, kwargs.get("params"), stale=credential, reason=reason
                )
            except CredentialsRevoked:
                raise
            except ConfigurationError as exc:
                # A token these credentials minted was refused, and now the credentials are too.
                raise self.revoked(exc) from exc
            response = await self.send(method, path, auth=auth, **kwargs)
        problem = self.classify(response)
        if problem is not None:
            raise problem
        return response

    async def credentials(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        *,
        stale: str | None = None,
        reason: str = "",
    ) -> tuple[dict[str, str], str]:
        """Authorization headers for one attempt, and the credential they carry (to name it stale on 401).

        Token-based systems take a token from the token source; a signing scheme (NetSuite TBA) overrides
        this to sign each attempt afresh.
        """
        token = await self.tokens.get(stale=stale, reason=reason) if stale else await self.tokens.get()
        return self.auth_header(token), token

    async def send(
        self,
        method: str,
        path: str,
        *,
        auth: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        record_body: bool = True,
        **kwargs: Any,
    ) -> httpx2.Response:
        """One HTTP exchange, reported to the attempt hook; network failures become TransientError.

        `kwargs` go to httpx2 (json, params, data, content). `record_body=False` keeps the response out
        of the attempt (token endpoints answer with secrets).
        """
        url = self.url(path)
        try:
            self.check_url(method, url)
        except ConfigurationError as exc:
            self.report(Attempt(self.system, method, exc.url, None, 0.0, error=exc.message))
            raise
        all_headers = dict(headers or {})
        all_headers.update(auth or {})
        target: str | httpx2.URL = url
        built = self._built_url(url, kwargs.get("params"))
        if built is not None:  # the same URL, built without parsing it: the query is in it already
            target = built
            kwargs = {name: value for name, value in kwargs.items() if name != "params"}
        started = time.perf_counter()
        try:
            if self._slots is not None:
                async with self._slots:
                    response = await self.http.request(method, target, headers=all_headers, **kwargs)
            else:
                response = await self.http.request(method, target, headers=all_headers, **kwargs)
        except httpx2.TransportError as exc:
            elapsed = (time.perf_counter() - started) * 1000
            message = f"{type(exc).__name__}: could not reach {strip_query(url)}"
            self.report(Attempt(self.system, method, strip_query(url), None, elapsed, error=message))
            raise TransientError(message, system=self.system, method=method, url=strip_query(url)) from exc
        elapsed = (time.perf_counter() - started) * 1000
        excerpt = _excerpt(response) if record_body else _withheld()
        self.report(
            Attempt(
                self.system, method, strip_query(url), response.status_code, elapsed, response_excerpt=excerpt
            )
        )
        return response

    def _built_url(self, url: str, params: Any) -> httpx2.URL | None:
        """The httpx2 URL that `http.request(method, url, params=params)` would send to, built from a
        template instead of parsing `url` and merging `params` again (two URL parses a request, a tenth
        of a bare GET's CPU), or None to let httpx2 build it.

        Only for a URL whose last segment URL parsing leaves as it is (`_PLAIN_SEGMENT`: a record id) and
        simple parameters. The template is what httpx2 itself builds for the same prefix and parameters
        with a placeholder as the last segment (so the host, port, path prefix and query are exactly
        httpx2's), and the URL is that template with the segment put in place of the placeholder."""
        if "?" in url or "#" in url:
            return None
        prefix, _, leaf = url.rpartition("/")
        client_params = getattr(self.http, "params", None)
        # Parameters set on the client would replace the template's query: let httpx2 merge them.
        if not prefix or _PLAIN_SEGMENT.fullmatch(leaf) is None or client_params is None or client_params:
            return None
        if params is None:
            query = None
        elif isinstance(params, dict) and all(type(v) in (str, int) for v in params.values()):
            # The type is in the key: 1 and True are equal keys, but httpx2 writes them "1" and "true".
            query = tuple((str(k), type(v), v) for k, v in params.items())
        else:
            return None
        key = (prefix, query)
        template = self._templates.get(key, _MISSING)
        if template is _MISSING:
            template = self._template(prefix, params)
            if len(self._templates) >= URL_TEMPLATES:
                self._templates.clear()
            self._templates[key] = template
        if template is None:
            return None
        built = httpx2.URL.__new__(httpx2.URL)
        built._uri_reference = template._replace(path=template.path[: -len(_PLACEHOLDER)] + leaf)
        return built

    def _template(self, prefix: str, params: Any) -> Any:
        """httpx2's parsed form of `prefix/<placeholder>` with `params`, or None when it cannot serve as a
        template (its path does not end in the placeholder, or this httpx2 keeps URLs differently)."""
        try:
            parsed = self.http.build_request("GET", f"{prefix}/{_PLACEHOLDER}", params=params).url
        except Exception:  # an invalid URL: the request itself will say so, through httpx2
            return None
        reference = getattr(parsed, "_uri_reference", None)
        path = getattr(reference, "path", None)
        if not isinstance(path, str) or not path.endswith("/" + _PLACEHOLDER):
            return None
        return reference


_MISSING = object()


def _origin(url: str) -> str:
    """`scheme://authority` of an absolute URL, without parsing it (the cache key of checked hosts)."""
    scheme, _, rest = url.partition("://")
    return f"{scheme.lower()}://{rest.split('/', 1)[0].split('?', 1)[0].split('#', 1)[0].lower()}"


def _withheld() -> str:
    """What a token call's attempt keeps of the answer: nothing of it (it holds secrets), and why the
    token was requested when a token source said so, so the audit trail has a reason for every refresh."""
    reason = refresh_reason()
    return "(withheld: token response)" + (f" refresh reason: {reason}" if reason else "")


def wait_hint(error: ConnectorError) -> str | None:
    """The message for a request held back on our side (a token budget or a cool-down): how long to wait."""
    if isinstance(error, Deferred) and error.retry_after is not None:
        return f"{error.message.rstrip('.')}. Wait {minutes(error.retry_after)} and try again."
    return None


def _excerpt(response: httpx2.Response) -> str:
    """`response.text[:RESPONSE_EXCERPT]` without decoding the whole body, nor parsing Content-Type for
    its charset when it names none (httpx then decodes as UTF-8 too): enough bytes for that many
    characters at four bytes a character at most, so no character of the excerpt is cut."""
    content_type = response.headers.get("content-type", "")
    encoding = response.encoding if "charset" in content_type.lower() else "utf-8"
    head = response.content[: RESPONSE_EXCERPT * 4]
    try:
        return head.decode(encoding or "utf-8", errors="replace")[:RESPONSE_EXCERPT]
    except LookupError:  # a charset Python does not know: as httpx would, fall back to its own choice
        return response.text[:RESPONSE_EXCERPT]
