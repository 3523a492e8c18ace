"""Every supported system, declared once: its spec and how to build its client from a connection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connectors.errors import ConfigurationError
from connectors.http import ApiClient
from connectors.netsuite.client import NetSuiteClient
from connectors.netsuite.spec import SPEC as NETSUITE
from connectors.netsuite.spec import base_url_for_account
from connectors.spec import SystemSpec
from connectors.zoho.client import ZohoClient
from connectors.zoho.spec import DATA_CENTRES
from connectors.zoho.spec import SPEC as ZOHO
from connectors.zuora.client import ZuoraClient
from connectors.zuora.spec import ENVIRONMENTS as ZUORA_ENVIRONMENTS
from connectors.zuora.spec import SPEC as ZUORA


@dataclass(frozen=True)
class SystemEntry:
    spec: SystemSpec
    client: type[ApiClient]
    # credential field name → client constructor argument
    arguments: dict[str, str]
    # (token refreshes, window in seconds) a connection may make; None = no budget needed
    refresh_budget: tuple[int, float] | None = None
    # (token requests, window in seconds) the app's own calls (pings, channel set-up) may make per
    # credential, on top of `refresh_budget`; None = no budget needed
    app_refresh_budget: tuple[int, float] | None = None


SYSTEMS: dict[str, SystemEntry] = {
    "netsuite": SystemEntry(
        NETSUITE,
        NetSuiteClient,
        {
            name: name
            for name in (
                "account_id",
                "auth_mode",
                "client_id",
                "certificate_id",
                "private_key",
                "client_secret",
                "refresh_token",
                "consumer_key",
                "consumer_secret",
                "token_id",
                "token_secret",
            )
        },
    ),
    "zuora": SystemEntry(ZUORA, ZuoraClient, {"client_id": "client_id", "client_secret": "client_secret"}),
    "zoho": SystemEntry(
        ZOHO,
        ZohoClient,
        {"client_id": "client_id", "client_secret": "client_secret", "refresh_token": "refresh_token"},
        # Zoho allows 10 access tokens per refresh token per 10 minutes (shared/api/zoho.md §1a). The
        # runner's processes share 5 (counted in the database), the app's pings 4 (counted in its
        # process): together 9, so our own requests never lock the refresh token out, with one to spare.
        refresh_budget=(5, 600.0),
        app_refresh_budget=(4, 600.0),
    ),
}

ZOHO_TOKEN_LIMIT = (10, 600.0)  # access tokens per refresh token, per seconds (shared/api/zoho.md §1a)


def build_client(
    system: str,
    *,
    base_url: str,
    settings: dict[str, Any],
    secrets: dict[str, Any],
    sandbox: bool,
    **kwargs: Any,
) -> ApiClient:
    """A client for `system` from a connection's fields, sending only to the system's hosts (loopback
    emulators too in sandbox mode): ConfigurationError for a base URL elsewhere. Its concurrency cap is
    the connection's `max_concurrency` setting unless the caller names one."""
    entry = SYSTEMS[system]
    entry.spec.check_host(base_url, sandbox=sandbox)
    values = {**settings, **secrets}
    arguments = {arg: values.get(name, "") for name, arg in entry.arguments.items()}
    if kwargs.get("max_concurrency") is None and settings.get("max_concurrency"):
        kwargs["max_concurrency"] = int(settings["max_concurrency"])
    client = entry.client(base_url=base_url, **arguments, **kwargs)
    client.spec = entry.spec
    client.restrict_hosts(sandbox=sandbox)
    return client


def default_base_url(system: str, settings: dict[str, Any]) -> str:
    """The real base URL a connection's settings point at (account id, environment or data centre).

    Raises ConfigurationError naming the field when the setting is missing or unknown.
    """
    if system == "netsuite":
        account = str(settings.get("account_id") or "")
        problem = NETSUITE.validate({"account_id": account}).get("account_id")
        if problem:
            raise ConfigurationError(problem, system=system)
        return base_url_for_account(account)
    if system == "zuora":
        environment = str(settings.get("environment") or "")
        if environment not in ZUORA_ENVIRONMENTS:
            raise ConfigurationError(f"Environment {environment!r} is not one of Zuora's", system=system)
        return ZUORA_ENVIRONMENTS[environment]
    data_centre = str(settings.get("data_centre") or "")
    if data_centre not in DATA_CENTRES:
        raise ConfigurationError(f"Data centre {data_centre!r} is not one of Zoho's", system=system)
    return DATA_CENTRES[data_centre][0]


ClientFactory = Callable[..., ApiClient]
