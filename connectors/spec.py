"""How each system is declared as data: credential fields, environments, allowed hosts, rate-limit headers.

The credentials page renders its form from `SystemSpec.fields`; the clients refuse URLs outside
`SystemSpec.hosts` unless sandbox mode lets them reach emulators on loopback; and they read how long to
wait from the headers `SystemSpec.rate_limit` names.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from connectors.errors import ConfigurationError


@dataclass(frozen=True)
class CredentialField:
    """One field a person fills in for a connection."""

    name: str
    title: str
    help: str = ""
    secret: bool = False
    required: bool = True
    pattern: str | None = None  # a full-match regular expression
    choices: tuple[str, ...] = ()
    multiline: bool = False
    # The authentication modes that need this field; empty = every mode.
    modes: tuple[str, ...] = ()

    def problem(self, value: str | None) -> str | None:
        """A message naming this field when `value` is unacceptable, else None."""
        if not value:
            return f"{self.title} is required" if self.required else None
        if self.choices and value not in self.choices:
            return f"{self.title} must be one of: {', '.join(self.choices)}"
        if self.pattern and not re.fullmatch(self.pattern, value):
            return f"{self.title} does not look right: {self.help or 'check the value'}"
        return None


@dataclass(frozen=True)
class RateLimitHeaders:
    """The response headers in which a system says how long to wait (names are case-insensitive).

    `retry_after` is honoured on any answer (seconds, or an HTTP date: RFC 9110 §10.2.3). `reset`, the
    seconds until the rate-limit window resets, is honoured on a 429 only: a system that sends it on every
    answer (Zuora) is not asking us to wait each time. `remaining` and `limit` are evidence, shown in the
    error of a 429; nothing waits on them.
    """

    retry_after: tuple[str, ...] = ("Retry-After",)
    reset: tuple[str, ...] = ()
    remaining: tuple[str, ...] = ()
    limit: tuple[str, ...] = ()


@dataclass(frozen=True)
class SystemSpec:
    """Everything about a system that is data rather than code."""

    system: str
    title: str
    fields: tuple[CredentialField, ...]
    hosts: tuple[str, ...]  # shell-style patterns for the hosts we may call
    environments: dict[str, str] = field(default_factory=dict)  # name → REST base URL
    default_mode: str | None = None  # for systems with several authentication modes
    rate_limit: RateLimitHeaders = field(default_factory=RateLimitHeaders)

    def fields_for(self, mode: str | None) -> tuple[CredentialField, ...]:
        """The fields a connection using authentication `mode` needs (all of them for a single-mode system)."""
        return tuple(f for f in self.fields if not f.modes or mode is None or mode in f.modes)

    def validate(self, values: dict[str, str]) -> dict[str, str]:
        """Problems per field name; empty when the values are acceptable."""
        problems = {}
        for spec_field in self.fields_for(values.get("auth_mode") or self.default_mode):
            problem = spec_field.problem(values.get(spec_field.name))
            if problem:
                problems[spec_field.name] = problem
        return problems

    def check_host(self, url: str, *, sandbox: bool) -> None:
        """Refuse a URL outside this system's hosts (loopback allowed in sandbox mode)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        if sandbox and _is_loopback(host):
            return
        if parts.scheme != "https":
            raise ConfigurationError(
                f"{url!r} is not an https URL; {self.title} is only reached over https", system=self.system
            )
        if not any(fnmatch.fnmatch(host, pattern) for pattern in self.hosts):
            raise ConfigurationError(
                f"{host!r} is not a {self.title} host (expected one of {', '.join(self.hosts)}); "
                "check the region or account id",
                system=self.system,
            )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
