"""Outbound calls go only to each system's real hosts, or to loopback emulators in sandbox mode."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest

from connectors.errors import ConfigurationError
from connectors.http import Attempt
from connectors.registry import SYSTEMS, build_client, default_base_url
from connectors.zoho.client import exchange_grant_code
from connectors.zuora.client import ZuoraClient
from tests.connectors.conftest import Harness


@pytest.mark.parametrize(
    ("system", "url"),
    [
        ("netsuite", "https://1234567-sb1.suitetalk.api.netsuite.com"),
        ("netsuite", "https://tstdrv123.suitetalk.api.netsuite.com"),
        ("zuora", "https://rest.na.zuora.com"),
        ("zuora", "https://rest.zuora.com"),
        ("zuora", "https://rest.sandbox.eu.zuora.com"),
        ("zoho", "https://accounts.zoho.eu"),
        ("zoho", "https://accounts.zohocloud.ca"),
        ("zoho", "https://www.zohoapis.com.au"),
    ],
)
def test_real_hosts_are_allowed(system: str, url: str) -> None:
    SYSTEMS[system].spec.check_host(url, sandbox=False)


@pytest.mark.parametrize(
    ("system", "url", "says"),
    [
        ("netsuite", "https://evil.example.com", "not a NetSuite host"),
        ("netsuite", "http://1234567.suitetalk.api.netsuite.com", "not an https URL"),
        ("zuora", "https://rest.zuora.com.evil.test", "not a Zuora host"),
        ("zoho", "https://accounts.zoho.evil.test/x", "not a Zoho CRM host"),
        ("zoho", "http://127.0.0.1:8803", "not an https URL"),
        ("zuora", "https://10.0.0.5", "not a Zuora host"),
    ],
)
def test_other_hosts_are_refused_naming_the_problem(system: str, url: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        SYSTEMS[system].spec.check_host(url, sandbox=False)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8801", "http://localhost:9", "http://[::1]:80"])
def test_sandbox_mode_allows_loopback_only(url: str) -> None:
    SYSTEMS["zuora"].spec.check_host(url, sandbox=True)
    with pytest.raises(ConfigurationError):
        SYSTEMS["zuora"].spec.check_host("http://192.168.1.10:80", sandbox=True)


@pytest.mark.parametrize(
    ("system", "settings", "expected"),
    [
        ("netsuite", {"account_id": "1234567_SB1"}, "https://1234567-sb1.suitetalk.api.netsuite.com"),
        ("netsuite", {"account_id": "1234567"}, "https://1234567.suitetalk.api.netsuite.com"),
        ("zuora", {"environment": "EU Production"}, "https://rest.eu.zuora.com"),
        ("zoho", {"data_centre": "eu"}, "https://accounts.zoho.eu"),
        ("zoho", {"data_centre": "ca"}, "https://accounts.zohocloud.ca"),
    ],
)
def test_default_base_url_follows_the_settings(system: str, settings: dict[str, str], expected: str) -> None:
    assert default_base_url(system, settings) == expected


@pytest.mark.parametrize(
    ("system", "settings", "says"),
    [
        ("netsuite", {"account_id": "12 34"}, "Account ID does not look right"),
        ("netsuite", {}, "Account ID is required"),
        ("zuora", {"environment": "Mars"}, "not one of Zuora's"),
        ("zoho", {"data_centre": "uk"}, "not one of Zoho's"),
    ],
)
def test_default_base_url_names_the_bad_setting(system: str, settings: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        default_base_url(system, settings)


class Recorder:
    """A stand-in for the far side of the network (an httpx2 transport): answers from a script and
    records where each request went. For what no emulator can produce: a system handing out links to
    another host."""

    def __init__(self, answer: Callable[[httpx2.Request], httpx2.Response]) -> None:
        self.answer = answer
        self.hosts: list[str] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.hosts.append(request.url.host)
        return self.answer(request)


def zuora_with_a_foreign_next_page(request: httpx2.Request) -> httpx2.Response:
    if request.url.path == "/oauth/token":
        return httpx2.Response(200, json={"access_token": "t", "expires_in": 3599, "scope": "tenant.1"})
    page = {"payments": [{"id": "P1"}], "nextPage": "https://rest.zuora.com.attacker.test/v1/payments?page=2"}
    return httpx2.Response(200, json={**page, "success": True})


@pytest.mark.parametrize(
    ("base_url", "sandbox"), [("https://rest.na.zuora.com", False), ("http://127.0.0.1:8802", True)]
)
async def test_zuora_next_page_on_another_host_is_refused_before_the_token_goes_there(
    base_url: str, sandbox: bool
) -> None:
    far_side = Recorder(zuora_with_a_foreign_next_page)
    attempts: list[Attempt] = []
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(far_side)) as http:
        client = build_client(
            "zuora",
            base_url=base_url,
            settings={"client_id": "c"},
            secrets={"client_secret": "s"},
            sandbox=sandbox,
            http=http,
            on_attempt=attempts.append,
        )
        assert isinstance(client, ZuoraClient)
        seen: list[dict[str, object]] = []
        with pytest.raises(ConfigurationError, match="not a Zuora host") as caught:
            async for payment in client.payments():
                seen.append(payment)

    assert seen == [{"id": "P1"}]
    assert set(far_side.hosts) == {httpx2.URL(base_url).host}  # nothing, bearer token included, left
    assert caught.value.method == "GET" and caught.value.url.startswith(
        "https://rest.zuora.com.attacker.test/"
    )
    assert attempts[-1].status is None and "not a Zuora host" in (attempts[-1].error or "")


@pytest.mark.parametrize("harness", ["zoho"], indirect=True)
async def test_zoho_api_domain_outside_zoho_is_refused(harness: Harness) -> None:
    harness.emulator.api_domain = "https://www.zohoapis.com.attacker.test"  # type: ignore[attr-defined]
    try:
        with pytest.raises(ConfigurationError, match="not a Zoho CRM host") as caught:
            await harness.cheap_call()
    finally:
        harness.emulator.api_domain = None  # type: ignore[attr-defined]

    assert caught.value.url.startswith("https://www.zohoapis.com.attacker.test/crm/")
    assert [a.url for a in harness.attempts if a.status is not None] == [f"{harness.url}/oauth/v2/token"]


@pytest.mark.parametrize(
    ("accounts_url", "sandbox", "says"),
    [
        ("https://accounts.zoho.com.attacker.test", False, "not a Zoho CRM host"),
        ("http://127.0.0.1:8803", False, "not an https URL"),
        ("http://10.0.0.5:8803", True, "not an https URL"),
    ],
)
async def test_zoho_grant_exchange_refuses_hosts_outside_zoho_without_sending_the_code(
    accounts_url: str, sandbox: bool, says: str
) -> None:
    far_side = Recorder(lambda request: httpx2.Response(200, json={"refresh_token": "r"}))
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(far_side)) as http:
        with pytest.raises(ConfigurationError, match=says):
            await exchange_grant_code(
                http,
                accounts_url=accounts_url,
                client_id="1000.C",
                client_secret="s",
                code="1000.code",
                sandbox=sandbox,
            )

    assert far_side.hosts == []


async def test_zoho_grant_exchange_on_a_real_accounts_server_goes_through_the_attempt_hook() -> None:
    far_side = Recorder(
        lambda request: httpx2.Response(200, json={"refresh_token": "r", "access_token": "a"})
    )
    attempts: list[Attempt] = []
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(far_side)) as http:
        tokens = await exchange_grant_code(
            http,
            accounts_url="https://accounts.zoho.eu",
            client_id="1000.C",
            client_secret="s",
            code="1000.code",
            sandbox=False,
            on_attempt=attempts.append,
        )

    assert tokens["refresh_token"] == "r" and far_side.hosts == ["accounts.zoho.eu"]
    assert [(a.method, a.url, a.status) for a in attempts] == [
        ("POST", "https://accounts.zoho.eu/oauth/v2/token", 200)
    ]
    assert attempts[0].response_excerpt == "(withheld: token response)"
