"""What can go wrong talking to a remote system, grouped by what to do about it.

    ConnectorError                 anything a connector raises; carries the evidence
    ├── ConfigurationError         fix the credentials or settings; retrying will not help
    │   └── CredentialsRevoked     credentials that worked were refused after a 401: re-enter them
    ├── TransientError             try again later (429, 5xx, timeouts, network)
    │   ├── Deferred               wait longer than a request should (a token cool-down, a token budget):
    │   │                          not retried in-process; the job is requeued for `retry_after`
    │   └── AmbiguousLogin         a 401 that may pass (NetSuite's catch-all INVALID_LOGIN); becomes a
    │                              ConfigurationError once the retries are used up
    └── RemoteError                the remote system rejected this record; fix the data or mapping

Every error carries the system, method, URL (query strings stripped, so no secret travels), status,
an excerpt of the remote body and the Retry-After the system asked for. A status of None with a method
and URL means the request was never answered: refused before sending (an oversized batch, a host outside
the system's list) or unreachable. The text of an error never contains a credential: excerpts of token
responses are never taken, only the error code they name.
"""

from __future__ import annotations

from typing import ClassVar

EXCERPT_LIMIT = 2000  # characters of a remote body kept as evidence


class ConnectorError(Exception):
    """Base class; `reaction` names what the caller should do."""

    reaction: ClassVar[str] = "bug"

    def __init__(
        self,
        message: str,
        *,
        system: str,
        method: str = "",
        url: str = "",
        status: int | None = None,
        excerpt: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.system = system
        self.method = method
        self.url = url
        self.status = status
        self.excerpt = excerpt[:EXCERPT_LIMIT] if excerpt else excerpt
        self.retry_after = retry_after

    def __str__(self) -> str:
        where = f" ({self.method} {self.url} → {self.status})" if self.method else ""
        return f"{self.system}: {self.message}{where}"


class ConfigurationError(ConnectorError):
    """Credentials, permissions, region or base URL are wrong: a person has to fix the connection."""

    reaction = "config"


class CredentialsRevoked(ConfigurationError):
    """An access token was refused (401) and the credentials that minted it are now refused too: someone
    revoked or changed them in the remote system, and only a person re-entering them helps."""


class TransientError(ConnectorError):
    """The system is busy or unreachable; the same request may well succeed later."""

    reaction = "transient"


class Deferred(TransientError):
    """Retry later, but not inside this request: the wait belongs to the job queue, not a sleeping task."""


class AmbiguousLogin(TransientError):
    """A login refusal that is sometimes transient: retried with fresh tokens, then a ConfigurationError."""

    def as_configuration_error(self) -> ConfigurationError:
        return ConfigurationError(
            self.message,
            system=self.system,
            method=self.method,
            url=self.url,
            status=self.status,
            excerpt=self.excerpt,
        )


class RemoteError(ConnectorError):
    """The system understood us and refused this record (validation, business rule, not found)."""

    reaction = "remote"


def strip_query(url: str) -> str:
    """The URL without its query string or credentials in the authority, safe for logs and audit."""
    base = url.split("?", 1)[0].split("#", 1)[0]
    scheme, sep, rest = base.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"
