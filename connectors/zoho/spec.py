"""Zoho CRM as data: data centres (accounts server and API domain), credential fields, hosts.

Hosts per data centre from the official Python SDK's data-centre classes (shared/api/zoho.md §0).
"""

from __future__ import annotations

from connectors.spec import CredentialField, RateLimitHeaders, SystemSpec

# data centre → (accounts server, production API domain)
DATA_CENTRES: dict[str, tuple[str, str]] = {
    "com": ("https://accounts.zoho.com", "https://www.zohoapis.com"),
    "eu": ("https://accounts.zoho.eu", "https://www.zohoapis.eu"),
    "in": ("https://accounts.zoho.in", "https://www.zohoapis.in"),
    "com.au": ("https://accounts.zoho.com.au", "https://www.zohoapis.com.au"),
    "jp": ("https://accounts.zoho.jp", "https://www.zohoapis.jp"),
    "com.cn": ("https://accounts.zoho.com.cn", "https://www.zohoapis.com.cn"),
    "ca": ("https://accounts.zohocloud.ca", "https://www.zohoapis.ca"),
    "sa": ("https://accounts.zoho.sa", "https://www.zohoapis.sa"),
}


# Zoho client ids are "1000." and then letters and digits (the API console; shared/api/zoho.md §1a).
CLIENT_ID_PATTERN = r"1000\.[A-Za-z0-9]+"


def _hosts() -> tuple[str, ...]:
    """Exact host names: each data centre's accounts server and its production, sandbox and developer
    API domains (a `*` pattern would also match `accounts.zoho.evil.test`)."""
    hosts: list[str] = []
    for accounts, api in DATA_CENTRES.values():
        hosts.append(accounts.removeprefix("https://"))
        tld = api.removeprefix("https://www.zohoapis.")
        hosts += [f"{prefix}.zohoapis.{tld}" for prefix in ("www", "sandbox", "developer")]
    return tuple(hosts)


SPEC = SystemSpec(
    system="zoho",
    title="Zoho CRM",
    fields=(
        CredentialField(
            "data_centre",
            "Data centre",
            "The domain you sign in to Zoho at (zoho.com, zoho.eu, ...); a wrong one gives invalid_client",
            choices=tuple(DATA_CENTRES),
        ),
        CredentialField(
            "client_id",
            "Client ID",
            "API console (api-console), starts with 1000.",
            pattern=CLIENT_ID_PATTERN,
        ),
        CredentialField("client_secret", "Client secret", "API console, beside the client id", secret=True),
        CredentialField(
            "refresh_token", "Refresh token", "From the self-client grant-code exchange", secret=True
        ),
    ),
    hosts=_hosts(),
    environments={dc: accounts for dc, (accounts, _api) in DATA_CENTRES.items()},
    # UNCONFIRMED for CRM (shared/api/zoho.md §4): whether a 429 carries Retry-After, and the
    # X-RATELIMIT-* headers seen only in a generated API description (Zoho Books sends X-Rate-Limit-*).
    # Declared so they are honoured if Zoho sends them; a reset given as an epoch time is read as one.
    rate_limit=RateLimitHeaders(
        retry_after=("Retry-After",),
        reset=("X-RATELIMIT-RESET", "X-Rate-Limit-Reset"),
        remaining=("X-RATELIMIT-REMAINING", "X-Rate-Limit-Remaining"),
        limit=("X-RATELIMIT-LIMIT", "X-Rate-Limit-Limit"),
    ),
)
