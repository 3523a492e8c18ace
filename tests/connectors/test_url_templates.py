"""The client's templated request URLs (connectors.http.ApiClient._built_url) are exactly the URLs httpx2
builds itself for the same base, path and parameters, or the client leaves the building to httpx2."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

from connectors.http import ApiClient

BASES = [
    "https://1234567-sb1.suitetalk.api.netsuite.com/services/rest/record/v1",
    "https://rest.eu.zuora.com",
    "http://127.0.0.1:8801/services/rest/record/v1",
    "http://[::1]:8443/a/b",
    "https://example.com:443/x/../y",
    "https://bücher.example/api",
]
LEAVES = ["customer/1000", "customer/eid:NS-7", "invoice/00042", "customrecord_ml_zuora_subscription/7"]
PARAMS: list[dict[str, Any] | None] = [
    None,
    {"expandSubResources": "true"},
    {"limit": 1000, "offset": 0},
    {"q": "a b&c=d", "n": 1},
]


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


@pytest.mark.parametrize("base", BASES)
@pytest.mark.parametrize("params", PARAMS)
async def test_templated_urls_equal_the_ones_httpx2_builds(
    http: httpx2.AsyncClient, base: str, params: dict[str, Any] | None
) -> None:
    client = ApiClient(base_url=base, http=http)
    for leaf in LEAVES:
        url = f"{base}/{leaf}"
        expected = http.build_request("GET", url, params=params).url
        for _ in range(2):  # the first builds the template, the second reuses it
            built = client._built_url(url, params)
            assert built is None or str(built) == str(expected), (url, params)


@pytest.mark.parametrize(
    "leaf,params",
    [
        ("customer/a b", None),  # httpx2 would encode the space
        ("customer/x.json", None),  # dots are left to httpx2's path normalisation
        ("customer/7?fields=a", None),
        ("customer/7", {"ids": ["1", "2"]}),  # list parameters are httpx2's to encode
    ],
)
async def test_urls_a_template_cannot_serve_are_left_to_httpx2(
    http: httpx2.AsyncClient, leaf: str, params: dict[str, Any] | None
) -> None:
    client = ApiClient(base_url=BASES[0], http=http)
    assert client._built_url(f"{BASES[0]}/{leaf}", params) is None


async def test_a_record_get_takes_the_template(http: httpx2.AsyncClient) -> None:
    client = ApiClient(base_url=BASES[0], http=http)
    built = client._built_url(f"{BASES[0]}/customer/1000", {"expandSubResources": "true"})
    assert built is not None
    assert str(built) == f"{BASES[0]}/customer/1000?expandSubResources=true"
