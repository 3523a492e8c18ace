"""NetSuite as data: credential fields, hosts, and how an account id becomes a host.

Account id → host: lower-case the id and replace `_` with `-` (`1234567_SB1` → `1234567-sb1`), the
convention of jacobsvante/netsuite `_make_hostname` (shared/api/netsuite.md §0).
"""

from __future__ import annotations

from connectors.spec import CredentialField, RateLimitHeaders, SystemSpec

ACCOUNT_ID_PATTERN = r"[0-9]+(_(SB|sb|RP|rp)[0-9]+)?|TSTDRV[0-9]+"

M2M, TBA, AUTH_CODE = "m2m", "tba", "auth_code"

SPEC = SystemSpec(
    system="netsuite",
    title="NetSuite",
    fields=(
        CredentialField(
            "auth_mode",
            "Authentication",
            "m2m: OAuth 2.0 client credentials with a certificate (recommended); auth_code: OAuth 2.0 with a "
            "person's consent (refresh token lasts 7 days); tba: token-based authentication (OAuth 1.0a)",
            choices=(M2M, AUTH_CODE, TBA),
            required=False,
        ),
        CredentialField(
            "account_id",
            "Account ID",
            "Setup > Company > Company Information, e.g. 1234567 or 1234567_SB1 for a sandbox",
            pattern=ACCOUNT_ID_PATTERN,
        ),
        CredentialField(
            "client_id",
            "Client ID",
            "From the integration record (Setup > Integration)",
            modes=(M2M, AUTH_CODE),
        ),
        CredentialField(
            "certificate_id",
            "Certificate ID",
            "Shown after mapping the certificate under OAuth 2.0 Client Credentials (M2M) Setup",
            modes=(M2M,),
        ),
        CredentialField(
            "private_key",
            "Private key (PEM)",
            "The RSA or EC private key of the uploaded certificate",
            secret=True,
            multiline=True,
            pattern=r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.+-----END [A-Z ]*PRIVATE KEY-----\s*",
            modes=(M2M,),
        ),
        CredentialField(
            "client_secret",
            "Client secret",
            "From the integration record, shown once",
            secret=True,
            modes=(AUTH_CODE,),
        ),
        CredentialField(
            "refresh_token",
            "Refresh token",
            "Filled in by the app after you approve access in NetSuite",
            secret=True,
            modes=(AUTH_CODE,),
        ),
        CredentialField("consumer_key", "Consumer key", "From the integration record", modes=(TBA,)),
        CredentialField(
            "consumer_secret", "Consumer secret", "From the integration record", secret=True, modes=(TBA,)
        ),
        CredentialField("token_id", "Token ID", "Setup > Users/Roles > Access Tokens", modes=(TBA,)),
        CredentialField(
            "token_secret", "Token secret", "Shown once with the token ID", secret=True, modes=(TBA,)
        ),
    ),
    hosts=("*.suitetalk.api.netsuite.com",),
    default_mode=M2M,
    # NetSuite answers 429 when the account's concurrency limit is exceeded; whether a Retry-After comes
    # with it is UNCONFIRMED (shared/api/netsuite.md §5), and no rate-limit window headers are documented.
    rate_limit=RateLimitHeaders(retry_after=("Retry-After",)),
)


def host_for_account(account_id: str) -> str:
    """The REST host of an account: `1234567_SB1` → `1234567-sb1.suitetalk.api.netsuite.com`."""
    return f"{account_id.strip().lower().replace('_', '-')}.suitetalk.api.netsuite.com"


def base_url_for_account(account_id: str) -> str:
    return f"https://{host_for_account(account_id)}"


def realm_for_account(account_id: str) -> str:
    """The TBA realm: the original id with the sandbox suffix upper-cased (`1234567_SB1`)."""
    return account_id.strip().upper()
