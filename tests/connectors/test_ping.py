"""Ping: what a good connection learns, and the message each kind of failure gives a person."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.ping import ping
from connectors.sync import ping_connection
from connectors.zoho.client import exchange_grant_code
from connectors.zuora.emulator import ZuoraEmulator
from tests.connectors.conftest import Harness
from tests.support.live import serve


def another_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_ping_ok_reports_latency_and_what_it_learned(harness: Harness) -> None:
    result = await ping(harness.client)

    assert result.ok is True, result.message
    assert result.latency_ms > 0
    expected = {
        "netsuite": {"account": "1234567_SB1", "company": "Honeycomb Mfg."},
        "zuora": {"tenant": "19"},
        "zoho": {"api_domain": harness.url},
    }[harness.system]
    assert expected.items() <= result.learned.items()
    if harness.system == "zoho":
        assert result.learned["org"]
    assert result.message.startswith("Connected")


@pytest.mark.parametrize("harness", ["netsuite"], indirect=True)
@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("clock_ahead", "clock"),
        ("clock_behind", "clock"),
        ("unknown_certificate", "Certificate ID"),
        ("other_key", "private key does not match"),
        ("wrong_client_id", "Client ID does not belong"),
        ("no_permission", "REST Web Services permission"),
    ],
)
async def test_netsuite_ping_failures_say_what_to_fix(harness: Harness, condition: str, says: str) -> None:
    emulator = harness.emulator
    client = harness.client
    if condition == "clock_ahead":
        emulator.clock = lambda: time.time() + 2 * 3600  # type: ignore[method-assign]
    elif condition == "clock_behind":
        emulator.clock = lambda: time.time() - 2 * 3600  # type: ignore[method-assign]
    elif condition == "unknown_certificate":
        client = harness.make(certificate_id="never-mapped")
    elif condition == "other_key":
        client = harness.make(private_key=another_private_key())
    elif condition == "wrong_client_id":
        client = harness.make(client_id="someone-else")
    elif condition == "no_permission":
        await ping(client)  # a token first
        emulator.faults.fail_next(403, 5)

    try:
        result = await ping(client)
    finally:
        emulator.clock = time.time  # type: ignore[method-assign]

    assert result.ok is False and result.reaction == "config"
    assert says in result.message


@pytest.mark.parametrize(
    ("system", "settings", "secrets", "says"),
    [
        ("netsuite", {"account_id": "12 34 567", "client_id": "c", "certificate_id": "k"}, {"private_key": "x"}, "Account ID"),
        ("zuora", {"environment": "Mars", "client_id": "c"}, {"client_secret": "s"}, "Environment must be one of"),
        ("zoho", {"data_centre": "uk", "client_id": "c"}, {"client_secret": "s", "refresh_token": "r"}, "Data centre must be one of"),
    ],
)  # fmt: skip
def test_ping_refuses_malformed_settings_before_any_call(
    system: str, settings: dict[str, str], secrets: dict[str, str], says: str
) -> None:
    result = ping_connection(
        system, base_url="http://127.0.0.1:9", settings=settings, secrets=secrets, sandbox=True
    )

    assert result.ok is False and says in result.message


def test_ping_refuses_a_host_outside_the_system_without_calling_it() -> None:
    result = ping_connection(
        "zuora",
        base_url="https://rest.zuora.com.attacker.test",
        settings={"environment": "US Production (Cloud 1)", "client_id": "c"},
        secrets={"client_secret": "s"},
        sandbox=False,
    )

    assert result.ok is False and "not a Zuora host" in result.message


@pytest.mark.parametrize("harness", ["zoho"], indirect=True)
async def test_zoho_wrong_data_centre_reads_as_invalid_client(harness: Harness) -> None:
    client = harness.make(client_id="1000.FROM-ANOTHER-DC")

    result = await ping(client)

    assert result.ok is False and "data centre" in result.message


def test_sync_ping_from_the_app_reaches_a_real_emulator() -> None:
    emulator = ZuoraEmulator()
    emulator.register_client("app-client", "app-secret")
    with serve(emulator.app) as url:
        result = ping_connection(
            "zuora",
            base_url=url,
            settings={"environment": "US API Sandbox (Cloud 1)", "client_id": "app-client"},
            secrets={"client_secret": "app-secret"},
            sandbox=True,
        )

    assert result.ok is True and result.learned["tenant"] == "19"


@pytest.mark.parametrize("harness", ["zuora"], indirect=True)
async def test_zuora_wrong_environment_says_to_check_the_environment(harness: Harness) -> None:
    # Another environment is another Zuora: it has never heard of this OAuth client, and its token
    # endpoint answers 401 invalid_client, exactly as for a wrong secret (shared/api/zuora.md §2).
    other_environment = ZuoraEmulator()
    with serve(other_environment.app) as url:
        result = await ping(harness.make_at(url))

    assert result.ok is False and result.reaction == "config"
    assert "Check the Environment first" in result.message
    assert url.split("//", 1)[1] in result.message  # names the environment it tried


@pytest.mark.parametrize("harness", ["netsuite"], indirect=True)
async def test_netsuite_wrong_account_id_says_to_check_the_account_id(harness: Harness) -> None:
    # The account id decides the host: a wrong one reaches another account, which knows none of this
    # integration's certificates and refuses the assertion (invalid_client, unknown kid).
    another_account = NetSuiteEmulator("7654321")
    with serve(another_account.app) as url:
        result = await ping(harness.make_at(url, account_id="7654321"))

    assert result.ok is False and result.reaction == "config"
    assert "First check the Account ID" in result.message and "7654321" in result.message


@pytest.mark.parametrize("harness", ["zuora"], indirect=True)
async def test_zuora_missing_permission_says_the_user_lacks_it(harness: Harness) -> None:
    await ping(harness.client)  # a token first
    harness.emulator.faults.fail_next(403, 5)

    result = await ping(harness.client)

    assert result.ok is False and result.reaction == "config"
    assert "lacks a permission" in result.message


@pytest.mark.parametrize("harness", ["zoho"], indirect=True)
async def test_zoho_scope_mismatch_names_the_scopes_needed(harness: Harness) -> None:
    creds = harness.credentials
    code = harness.emulator.grant_code(creds.zoho_client_id, "ZohoCRM.modules.ALL")  # type: ignore[attr-defined]
    tokens = await exchange_grant_code(
        harness.client.http,
        accounts_url=harness.url,
        client_id=creds.zoho_client_id,
        client_secret=creds.zoho_client_secret,
        code=code,
        sandbox=True,
    )

    result = await ping(harness.make(refresh_token=tokens["refresh_token"]))  # the org needs ZohoCRM.org.READ

    assert result.ok is False and result.reaction == "config"
    assert "lacks a scope" in result.message and "ZohoCRM.org.READ" in result.message
