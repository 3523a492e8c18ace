"""Zuora as data: environments (REST base URLs), credential fields, hosts.

Base URLs from Zuora's v1 API reference introduction and "Zuora data centers" (shared/api/zuora.md §2).
"""

from __future__ import annotations

from connectors.spec import CredentialField, RateLimitHeaders, SystemSpec

ENVIRONMENTS: dict[str, str] = {
    "US Production (Cloud 1)": "https://rest.na.zuora.com",
    "US Production (Cloud 2)": "https://rest.zuora.com",
    "US API Sandbox (Cloud 1)": "https://rest.sandbox.na.zuora.com",
    "US API Sandbox (Cloud 2)": "https://rest.apisandbox.zuora.com",
    "US Developer & Central Sandbox": "https://rest.test.zuora.com",
    "EU Production": "https://rest.eu.zuora.com",
    "EU API Sandbox": "https://rest.sandbox.eu.zuora.com",
    "EU Developer & Central Sandbox": "https://rest.test.eu.zuora.com",
    "APAC Production": "https://rest.ap.zuora.com",
    "APAC Developer & Central Sandbox": "https://rest.test.ap.zuora.com",
    "US Performance Test (Cloud 2)": "https://rest.pt1.zuora.com",
}

SPEC = SystemSpec(
    system="zuora",
    title="Zuora",
    fields=(
        CredentialField(
            "environment",
            "Environment",
            "Where the tenant lives; a wrong choice shows up as an authentication error",
            choices=tuple(ENVIRONMENTS),
        ),
        CredentialField("client_id", "Client ID", "Settings > Administration > Manage Users > OAuth Clients"),
        CredentialField(
            "client_secret", "Client secret", "Shown once when the OAuth client is created", secret=True
        ),
    ),
    hosts=("rest.zuora.com", "rest.*.zuora.com", "rest.*.*.zuora.com"),
    environments=ENVIRONMENTS,
    # Every API answer carries RateLimit-Limit/-Remaining/-Reset (seconds), and a 429 adds Retry-After
    # (seconds); the token endpoint's gateway sends X-RateLimit-*-minute (shared/api/zuora.md §1, §7).
    rate_limit=RateLimitHeaders(
        retry_after=("Retry-After",),
        reset=("RateLimit-Reset",),
        remaining=("RateLimit-Remaining", "X-RateLimit-Remaining-minute"),
        limit=("RateLimit-Limit", "X-RateLimit-Limit-minute"),
    ),
)
