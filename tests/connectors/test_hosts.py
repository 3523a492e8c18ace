"""Outbound calls go only to each system's real hosts, or to loopback emulators in sandbox mode."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigurationError
from connectors.registry import SYSTEMS, default_base_url


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
