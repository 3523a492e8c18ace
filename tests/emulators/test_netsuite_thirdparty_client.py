"""A client nobody here wrote: the PyPI `netsuite` package (jacobsvante/netsuite) against the emulator.

It signs TBA requests with authlib's OAuth1 (HMAC-SHA256, realm = account id, a body hash for JSON
bodies, query parameters in the base string) and builds its host from the account id. The only
thing changed here is where it sends requests: `_make_url`, the one method that turns a subpath
into a URL, points at the emulator instead of https://<account>.suitetalk.api.netsuite.com.
"""

from __future__ import annotations

import pytest
from netsuite.config import Config, TokenAuth
from netsuite.exceptions import NetsuiteAPIRequestError
from netsuite.rest_api import NetSuiteRestApi

from connectors.netsuite.emulator import NetSuiteEmulator
from tests.emulators.conftest import Clock
from tests.emulators.netsuite_fixtures import (
    ACCOUNT,
    CONSUMER_KEY,
    CONSUMER_SECRET,
    TOKEN_ID,
    TOKEN_SECRET,
    register_tba,
    seed_customer,
    seed_invoice,
)

# The package's own deprecated calls (JSON as httpx `data=<str>`, oauthlib's old signer name);
# they warn, they work, and they are not ours to fix.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:use sign_hmac_sha256_with_client:DeprecationWarning"),
]


class EmulatedNetSuiteRestApi(NetSuiteRestApi):
    """The package's REST client with its base URL moved to the emulator; signing untouched."""

    def __init__(self, config: Config, base_url: str) -> None:
        super().__init__(config)
        self._base_url = base_url

    def _make_url(self, subpath: str) -> str:
        return f"{self._base_url}/services/rest{subpath}"


def make_api(base_url: str, account: str = ACCOUNT) -> EmulatedNetSuiteRestApi:
    auth = TokenAuth(
        consumer_key=CONSUMER_KEY,
        consumer_secret=CONSUMER_SECRET,
        token_id=TOKEN_ID,
        token_secret=TOKEN_SECRET,
    )
    return EmulatedNetSuiteRestApi(Config(account=account, auth=auth), base_url)


@pytest.fixture
def api(netsuite: NetSuiteEmulator, ns_url: str, clock: Clock) -> EmulatedNetSuiteRestApi:
    # authlib stamps oauth_timestamp with the real time; the emulator's clock starts at real time.
    register_tba(netsuite, clock)
    return make_api(ns_url)


async def test_thirdparty_client_pages_a_suiteql_query_with_tba(
    netsuite: NetSuiteEmulator, api: EmulatedNetSuiteRestApi
) -> None:
    ids = [
        seed_customer(netsuite, name, email=f"ap@{name.lower()}.test") for name in ("Acme", "Beta", "Gamma")
    ]
    q = "SELECT id, companyname, email FROM customer ORDER BY id"

    first = await api.suiteql(q, limit=2, offset=0)
    second = await api.suiteql(q, limit=2, offset=2)

    assert (first["count"], first["hasMore"], first["totalResults"]) == (2, True, 3)
    assert [(r["id"], r["companyname"], r["email"]) for r in first["items"] + second["items"]] == [
        (ids[0], "Acme", "ap@acme.test"),
        (ids[1], "Beta", "ap@beta.test"),
        (ids[2], "Gamma", "ap@gamma.test"),
    ]
    assert second["hasMore"] is False
    signed = [r for r in netsuite.requests if r["path"] == "/services/rest/query/v1/suiteql"]
    assert [(r["status"], r["headers"]["authorization"], r["query"]["offset"]) for r in signed] == [
        (200, "OAuth", "0"),
        (200, "OAuth", "2"),
    ]


async def test_thirdparty_client_queries_invoice_lines(
    netsuite: NetSuiteEmulator, api: EmulatedNetSuiteRestApi
) -> None:
    customer = seed_customer(netsuite)
    invoice = seed_invoice(
        netsuite, customer, {"item": {"id": "86"}, "quantity": 3, "rate": 20.0}, tranId="INV-9"
    )
    q = (
        "SELECT t.tranid, tl.item, tl.rate FROM transaction t JOIN transactionline tl ON tl.transaction = t.id "
        f"WHERE t.id = {invoice} AND tl.mainline = 'F'"
    )

    page = await api.suiteql(q, limit=10)

    assert [{k: v for k, v in r.items() if k != "links"} for r in page["items"]] == [
        {"tranid": "INV-9", "item": "86", "rate": "20"}
    ]


async def test_thirdparty_client_reads_and_writes_records(
    netsuite: NetSuiteEmulator, api: EmulatedNetSuiteRestApi
) -> None:
    created = await api.post("/record/v1/customer", json={"companyName": "Third Party Co"})
    [stored] = netsuite.records("customer")

    record = await api.get(f"/record/v1/customer/{stored['id']}")

    assert created is None  # 204: the package answers None
    assert (record["id"], record["companyName"]) == (stored["id"], "Third Party Co")


async def test_thirdparty_client_with_a_lower_case_sandbox_account_is_refused(
    netsuite: NetSuiteEmulator, ns_url: str, clock: Clock
) -> None:
    register_tba(netsuite, clock)
    api = make_api(ns_url, account=ACCOUNT.lower())  # realm "1234567_sb1": the classic mistake

    with pytest.raises(NetsuiteAPIRequestError) as refused:
        await api.suiteql("SELECT id FROM customer")

    assert refused.value.status_code == 401
    assert "INVALID_LOGIN" in refused.value.response_text
    assert netsuite.requests[-1]["status"] == 401
