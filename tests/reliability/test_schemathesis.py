"""The runner against its own OpenAPI description: schemathesis reads /openapi.json from a runner served
on loopback, generates requests for every operation from it (schema-conforming and schema-violating
ones), and checks each answer: never a 5xx, a documented status, the documented content type, a body
matching the documented schema (so every refusal is `{"error", "message"}` with a documented code).

Schemathesis' own pytest plugin is not used: its lazy fixtures cannot follow the `module_engine`
fixture's two databases, so each operation runs through its Python API (`as_strategy`, `call`,
`validate_response`) inside an ordinary test. Drawn requests mostly fail at the front door (random
keys, random signatures), so each operation is also fuzzed with the URL's key pinned to a real
integration and, for half the cases, the credential made right (the NetSuite secret set, the Zuora
signature computed over the exact bytes sent, the Zoho channel and token put in the body): those
reach the body checks and the database.

Runs on SQLite and on PostgreSQL (the module-scoped `module_engine` fixture).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy.engine import Engine

from connectors.zuora.callouts import sign
from runner.app import create_app
from runner.openapi import ERROR_CODES
from storage.crypto import Vault
from storage.settings import Settings
from tests.support.doors import ACTIVE_CHANNEL, KEY, TOKEN, ZOHO_KEY, Doors, build_doors
from tests.support.live import serve

EXAMPLES = int(os.environ.get("ML_CONNECTOR_FUZZ_EXAMPLES", "40"))  # per operation, mode and database
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
OPERATIONS = {
    "POST /webhooks/netsuite/{integration}",
    "POST /webhooks/zuora/{integration}",
    "POST /webhooks/zoho/{integration}",
    "GET /healthz",
    "GET /metrics",
}  # and GET /openapi.json, which schemathesis leaves out: it is the description itself
OWN_KEY = {"netsuite": KEY, "zuora": KEY, "zoho": ZOHO_KEY}


@dataclass(frozen=True)
class Live:
    url: str
    doors: Doors


@pytest.fixture(scope="module")
def live(module_engine: Engine, module_vault: Vault, module_settings: Settings) -> Iterator[Live]:
    """The runner on loopback (scheduler on, workers off: accepted jobs stay queued) over the doors."""
    doors = build_doors(module_engine, module_vault)
    app = create_app(engine=module_engine, settings=module_settings, vault=module_vault, run_workers=False)
    with serve(app) as url:
        yield Live(url, doors)


def load(live: Live) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{live.url}/openapi.json")


def test_openapi_json_describes_every_route_with_its_refusals(live: Live) -> None:
    schema = load(live)
    document = httpx2.get(f"{live.url}/openapi.json").json()

    assert {operation.ok().label for operation in schema.get_all_operations()} == OPERATIONS
    assert set(document["paths"]) == {label.split(" ")[1] for label in OPERATIONS} | {"/openapi.json"}
    for system, codes in ERROR_CODES.items():
        post = document["paths"][f"/webhooks/{system}/{{integration}}"]["post"]
        assert set(post["responses"]) == {"202" if system == "netsuite" else "200", *map(str, codes)}
        for status, listed in codes.items():
            body = post["responses"][str(status)]["content"]["application/json"]["schema"]
            assert body["required"] == ["error", "message"]
            assert body["properties"]["error"]["enum"] == sorted(listed)
    zuora = document["paths"]["/webhooks/zuora/{integration}"]["post"]
    assert {p["name"] for p in zuora["parameters"]} == {
        "integration",
        "X-Zuora-Signature",
        "Zuora-Notification-Id",
    }
    netsuite = document["paths"]["/webhooks/netsuite/{integration}"]["post"]
    assert {p["name"] for p in netsuite["parameters"]} == {"integration", "X-Webhook-Secret", "secret"}


def credentialed(live: Live, case: Case) -> httpx2.Response:
    """Send `case` with its system's credential made right (see the module docstring)."""
    system = case.path.split("/")[2]
    sent = case.as_transport_kwargs(base_url=live.url)
    headers = {k: v for k, v in sent["headers"].items() if k.lower() != "content-length"}
    body = sent.get("json")
    if system == "zoho" and isinstance(body, dict):
        body = {**body, "channel_id": ACTIVE_CHANNEL, "token": TOKEN}
        # A list or object as 'operation' answers 503, a known bug with a test of its own:
        # tests/reliability/test_bad_input.py::test_zoho_operation_that_is_not_text_is_refused_as_invalid.
        assume(not isinstance(body.get("operation"), list | dict))
    content = json.dumps(body).encode() if "json" in sent else sent.get("data") or b""
    if isinstance(content, str):
        content = content.encode()
    if system == "netsuite":
        headers["X-Webhook-Secret"] = live.doors.netsuite_secret
    if system == "zuora":
        headers["X-Zuora-Signature"] = sign(live.doors.zuora_secret, content)
    return httpx2.request(
        sent["method"], sent["url"], params=sent.get("params"), headers=headers, content=content, timeout=10.0
    )


def fuzz(live: Live, operation: Any, mode: GenerationMode, statuses: Counter[tuple[str, int]]) -> None:
    """EXAMPLES drawn requests for one operation, each answer checked; `statuses` counts what came back."""
    system = operation.path.split("/")[2] if operation.path.startswith("/webhooks/") else None
    if system is None and mode is GenerationMode.NEGATIVE:
        return  # /healthz and /metrics take nothing that could be wrong
    strategies = [operation.as_strategy(generation_mode=mode)]
    if system is not None:
        pinned = {"integration": OWN_KEY[system]}
        strategies.append(operation.as_strategy(generation_mode=mode, path_parameters=pinned))

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )
    @given(case=st.one_of(strategies), with_credential=st.booleans())
    def run(case: Case, with_credential: bool) -> None:
        if system is not None and with_credential:
            response: Any = credentialed(live, case)
        else:
            response = case.call(base_url=live.url, timeout=10.0)
        statuses[case.operation.label, response.status_code] += 1
        case.validate_response(response, checks=CHECKS)
        for secret in live.doors.secrets:
            assert secret not in response.text

    run()


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["positive", "negative"]
)
def test_runner_answers_every_generated_request_as_its_openapi_description_says(
    live: Live, mode: GenerationMode
) -> None:
    statuses: Counter[tuple[str, int]] = Counter()
    before = live.doors.stored()

    for result in load(live).get_all_operations():
        fuzz(live, result.ok(), mode, statuses)

    seen = {status for (label, status) in statuses if label.startswith("POST")}
    assert {400, 401, 404} <= seen, statuses  # the fuzz got past the URL and the credential
    if mode is GenerationMode.POSITIVE:
        assert live.doors.stored() > before and seen & {200, 202}, statuses  # and stored good events
