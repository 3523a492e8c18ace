"""Bad input, generated: whatever arrives at a webhook or goes through the mapping engine, the answer is
a clear 4xx or a success, never a 5xx, never an unsigned event stored, never half an event stored.

Webhooks: hypothesis draws the URL key, the body (random bytes, random JSON, near-valid events with
mutated fields, and a few known troublemakers: deep nesting, numbers of 5,000 digits, NUL characters,
over-size bodies) and the credentials (absent, wrong, right, in the header or the query string), and
sends them to the runner's real Starlette app in process (runner.app.create_app, no workers, so the
jobs an accepted event queues stay put and can be counted). Each answer is checked against what the
sender could know: unsigned or wrongly signed → a 4xx and no new row; a refusal → `{"error",
"message"}` with a code runner.openapi documents for that status and a message naming what to fix;
the credential never echoed. tests/reliability/test_schemathesis.py does the same from the OpenAPI
description against a runner on loopback.

Mapping engine: arbitrary specs and records through `apply` (only MappingError may escape),
`validate_spec` and `preview` (nothing may escape).

Every webhook test runs on SQLite and on PostgreSQL (the module-scoped `module_engine` fixture).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from connectors.zuora.callouts import sign
from runner.app import create_app
from runner.flows.customer_account import DEFAULT_MAPPING as CUSTOMER_MAPPING
from runner.flows.invoice import DEFAULT_MAPPING as INVOICE_MAPPING
from runner.intake import MAX_BODY, NETSUITE_EVENT_TYPES, NETSUITE_RECORD_TYPES
from runner.intake_zuora import SUBSCRIPTION_EVENTS
from runner.mapping import TRANSFORMS, Mapped, MappingError, Preview, apply, preview, validate_spec
from runner.openapi import ERROR_CODES
from storage.crypto import Vault
from storage.settings import Settings
from tests.support.doors import ACTIVE_CHANNEL, DISABLED_CHANNEL, KEY, TOKEN, ZOHO_KEY, Doors, build_doors

# Examples per property (and database); ML_CONNECTOR_FUZZ_EXAMPLES=5000 makes a longer hunt.
WEBHOOK_EXAMPLES = int(os.environ.get("ML_CONNECTOR_FUZZ_EXAMPLES", "120"))  # ~1 s per 100
MAPPING_EXAMPLES = 3 * WEBHOOK_EXAMPLES
# What each refusal's message must mention, by error code: the thing the sender has to fix.
NAMES_THE_FIX = {
    "bad_content_length": ("Content-Length",),
    "malformed_json": ("JSON", "body"),
    "invalid_event": ("field", "JSON object"),
    "unstorable_value": ("cannot be stored",),
    "unknown_integration": ("check the URL",),
    "not_found": ("webhooks go to",),
    "body_too_large": (f"{MAX_BODY} bytes",),
    "missing_secret": ("X-Webhook-Secret",),
    "bad_secret": ("shared secret",),
    "ip_not_allowed": ("ip_allowlist",),
    "missing_signature": ("X-Zuora-Signature",),
    "bad_signature": ("X-Zuora-Signature", "HMAC secret"),
    "missing_notification_id": ("Zuora-Notification-Id",),
    "invalid_notification_id": ("Zuora-Notification-Id",),
    "missing_token": ("'token'",),
    "unknown_channel": ("channel",),
    "bad_token": ("token",),
    "channel_disabled": ("disabled",),
}
# Answers seen by the property tests, by (database, system, status): how far past the front door they got.
SEEN: Counter[tuple[str, str, int]] = Counter()


# The runner under test ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Intake:
    """The runner app in process and the doors it serves."""

    client: TestClient
    doors: Doors


@pytest.fixture(scope="module")
def intake(module_engine: Engine, module_vault: Vault, module_settings: Settings) -> Iterator[Intake]:
    doors = build_doors(module_engine, module_vault)
    # No `with`: the lifespan (scheduler, workers) never starts, so accepted jobs stay queued.
    app = create_app(engine=module_engine, settings=module_settings, vault=module_vault, run_workers=False)
    client = TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 50000))
    yield Intake(client, doors)
    client.close()


def check_answer(
    intake: Intake, response: Any, system: str, *, authentic: bool, before: tuple[int, int]
) -> None:
    """The properties every webhook answer has, whatever was sent."""
    SEEN[intake.doors.engine.dialect.name, system, response.status_code] += 1
    assert response.status_code < 500, f"{response.status_code}: {response.text}"
    for secret in intake.doors.secrets:
        assert secret not in response.text
    after = intake.doors.stored()
    if response.status_code >= 400:
        answer = response.json()
        assert set(answer) == {"error", "message"}, answer
        documented = ERROR_CODES[system].get(response.status_code, [])
        assert answer["error"] in documented, f"{response.status_code} {answer} is not in runner.openapi"
        assert any(word in answer["message"] for word in NAMES_THE_FIX[answer["error"]]), answer
        assert after == before, f"refused with {answer} but stored {before} → {after}"
        return
    assert authentic, f"an unauthenticated {system} request was accepted: {response.text}"
    answer = response.json()
    assert answer["accepted"] is True
    events = before[0] + (0 if answer["duplicate"] else 1)
    assert after == (events, before[1] + len(answer["jobs"]))


# Strategies --------------------------------------------------------------------------------------------

SCALARS = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=10**200, max_value=10**300)  # too long for a key, in range for JSON
    | st.floats()  # with NaN and ±Infinity, which Python's json writes and reads
    | st.text(max_size=20)
    | st.sampled_from(["", " ", "\x00", "a\x00b", "é", "𝔘𝔫𝔦", "'; DROP TABLE job; --", "%s", "{}"])
)
JSON_VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)  # fmt: skip
TROUBLEMAKERS = st.sampled_from(
    [
        b"",
        b"{}",
        b"[]",
        b"null",
        b"{not json",
        b"\xff\xfe{}",
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark, which json.loads refuses in str
        b'{"a": 1, "a": 2}',
        b"[" * 100_000 + b"]" * 100_000,  # deeper than the parser's recursion limit
        b'{"id": ' + b"9" * 5_000 + b"}",  # more digits than int() reads
        b'{"recordType": "customer", "id": "1\\u0000"}',
        b'{"event": "Subscription Created\\u0000"}',
        b"x" * (MAX_BODY + 1),
    ]
)


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def _event(
    fields: dict[str, st.SearchStrategy[Any]], *, scalar: frozenset[str] = frozenset()
) -> st.SearchStrategy[dict[str, Any]]:
    """Documented fields, each either plausible or any JSON (`scalar` ones: any JSON scalar), each maybe
    missing, plus stray keys."""
    other = {name: SCALARS if name in scalar else JSON_VALUES for name in fields}
    return st.tuples(
        st.fixed_dictionaries({}, optional={name: values | other[name] for name, values in fields.items()}),
        st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=2),
    ).map(lambda parts: {**parts[1], **parts[0]})


IDS = st.text(min_size=1, max_size=12) | st.integers(min_value=0) | st.just("x" * 101)
GOOD_TEXT = st.text(min_size=1, max_size=12).filter(str.strip)
GOOD_IDS = GOOD_TEXT | st.integers(min_value=0, max_value=10**12)
NETSUITE_VALID = st.fixed_dictionaries(
    {"recordType": st.sampled_from(sorted(NETSUITE_RECORD_TYPES)), "id": GOOD_IDS},
    optional={"eventType": st.sampled_from(sorted(NETSUITE_EVENT_TYPES))},
)
NETSUITE_EVENTS = _event(
    {
        "recordType": st.sampled_from([*sorted(NETSUITE_RECORD_TYPES), "Customer", "salesorder", ""]),
        "id": IDS,
        "eventType": st.sampled_from([*sorted(NETSUITE_EVENT_TYPES), "EDIT", "purge"]),
    }
)
ZUORA_VALID = st.fixed_dictionaries(
    {"event": st.sampled_from(sorted(SUBSCRIPTION_EVENTS)), "subscriptionId": GOOD_TEXT, "subscriptionNumber": GOOD_TEXT},
    optional={"version": st.integers(1, 10), "eventCategory": st.sampled_from([1210, None]), "accountId": GOOD_TEXT},
)  # fmt: skip
ZUORA_EVENTS = _event(
    {
        "event": st.sampled_from([*sorted(SUBSCRIPTION_EVENTS), "Account Created", " "]),
        "eventCategory": st.sampled_from([1210, 1310, None, True]),
        "notification": st.text(max_size=12) | st.none(),
        "accountId": st.text(max_size=12) | st.none(),
        "subscriptionId": st.text(max_size=12) | st.none(),
        "subscriptionNumber": st.text(max_size=12) | st.none(),
        "version": st.integers(min_value=-1, max_value=5) | st.none(),
    }
)
ZOHO_VALID = st.fixed_dictionaries(
    {
        "channel_id": st.just(ACTIVE_CHANNEL),
        "token": st.just(TOKEN),
        "module": st.sampled_from(["Accounts", "Contacts", "Vendors"]),
        "operation": st.sampled_from(["insert", "update", "delete"]),
        "ids": st.lists(GOOD_IDS, min_size=1, max_size=3),
        "server_time": st.integers(min_value=1, max_value=2**53),
    }
)
ZOHO_NOTICES = _event(
    {
        "channel_id": st.sampled_from([ACTIVE_CHANNEL, DISABLED_CHANNEL, "1000000000000999", "abc"])
        | st.integers(min_value=0),
        "token": st.sampled_from([TOKEN, TOKEN.upper(), "", "guess"]),
        "module": st.sampled_from(["Accounts", "Contacts", " ", "M" * 101]),
        "operation": st.sampled_from(["insert", "update", "delete", "upsert"]),
        "ids": st.lists(IDS, max_size=3),
        "server_time": st.integers(min_value=-1) | st.integers(min_value=10**200, max_value=10**300),
    },
)
ANY_BODY = st.binary(max_size=200) | JSON_VALUES.map(dumps) | TROUBLEMAKERS
BODIES = {
    "netsuite": ANY_BODY | NETSUITE_VALID.map(dumps) | NETSUITE_EVENTS.map(dumps),
    "zuora": ANY_BODY | ZUORA_VALID.map(dumps) | ZUORA_EVENTS.map(dumps),
    # A notice carries its own credential: these keep the channel and token right, and vary the rest.
    "zoho": ANY_BODY
    | ZOHO_VALID.map(dumps)
    | ZOHO_NOTICES.map(lambda note: dumps({**note, "channel_id": ACTIVE_CHANNEL, "token": TOKEN})),
}
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=80
)


def keys(own: str) -> st.SearchStrategy[str]:
    """The integration's key, the other integration's, or any text at all."""
    return st.sampled_from([own, own, own, KEY if own == ZOHO_KEY else ZOHO_KEY]) | st.text(
        min_size=1, max_size=80
    )


def url(system: str, key: str, query: str = "") -> str:
    return f"/webhooks/{system}/{quote(key, safe='')}{query}"


def latin1(value: str) -> bytes:
    return value.encode("latin-1")


COMMON = settings(
    max_examples=WEBHOOK_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)


# Webhooks ----------------------------------------------------------------------------------------------


def netsuite_secret(intake: Intake, choice: str) -> str | None:
    return {
        "absent": None,
        "right": intake.doors.netsuite_secret,
        "wrong": "not-the-secret",
        "empty": "",
    }.get(choice, choice)


def post_netsuite(intake: Intake, key: str, body: bytes, secret: str | None, place: str) -> Any:
    headers: dict[str, bytes] = {"content-type": b"application/json"}
    query = ""
    if secret is not None and place in ("header", "both"):
        headers["x-webhook-secret"] = latin1(secret)
    if secret is not None and place in ("query", "both"):
        query = "?secret=" + quote(secret, safe="")
    return intake.client.post(url("netsuite", key, query), content=body, headers=headers)


def post_zuora(
    intake: Intake, key: str, body: bytes, signature: str | None, notification_id: str | None
) -> Any:
    headers = {"content-type": b"application/json"}
    if signature is not None:
        headers["x-zuora-signature"] = latin1(signature)
    if notification_id is not None:
        headers["zuora-notification-id"] = latin1(notification_id)
    return intake.client.post(url("zuora", key), content=body, headers=headers)


def zuora_signature(intake: Intake, choice: str, body: bytes) -> str | None:
    right = sign(intake.doors.zuora_secret, body)
    return {
        "absent": None,
        "right": right,
        "RIGHT": "sha256=" + right.removeprefix("sha256=").upper(),  # Zuora's HEX may be upper case
        "other-secret": sign("not-the-secret", body),
        "other-body": sign(intake.doors.zuora_secret, body + b" "),
    }.get(choice, choice)


NOTIFICATION_IDS = st.uuids().map(lambda u: u.hex) | HEADER_TEXT


@COMMON
@given(
    key=keys(KEY),
    body=BODIES["netsuite"],
    secret=st.sampled_from(["absent", "right", "wrong", "empty"]) | HEADER_TEXT,
    place=st.sampled_from(["header", "query", "both"]),
)
def test_netsuite_webhook_answers_anything_with_success_or_a_clear_4xx(
    intake: Intake, key: str, body: bytes, secret: str, place: str
) -> None:
    value = netsuite_secret(intake, secret)
    # The header wins when present and not empty, so a right secret in the query alone counts too.
    authentic = key == KEY and value == intake.doors.netsuite_secret
    before = intake.doors.stored()

    response = post_netsuite(intake, key, body, value, place)

    check_answer(intake, response, "netsuite", authentic=authentic, before=before)


@COMMON
@given(body=BODIES["netsuite"], place=st.sampled_from(["header", "query", "both"]))
def test_netsuite_webhook_with_the_right_secret_stores_a_good_event_or_refuses_the_body(
    intake: Intake, body: bytes, place: str
) -> None:
    before = intake.doors.stored()

    response = post_netsuite(intake, KEY, body, intake.doors.netsuite_secret, place)

    check_answer(intake, response, "netsuite", authentic=True, before=before)


@COMMON
@given(
    key=keys(KEY),
    body=BODIES["zuora"],
    signature=st.sampled_from(["absent", "right", "RIGHT", "other-secret", "other-body"]) | HEADER_TEXT,
    notification_id=st.none() | NOTIFICATION_IDS,
)
def test_zuora_webhook_answers_anything_with_success_or_a_clear_4xx(
    intake: Intake, key: str, body: bytes, signature: str, notification_id: str | None
) -> None:
    authentic = key == KEY and signature in ("right", "RIGHT")
    before = intake.doors.stored()

    response = post_zuora(intake, key, body, zuora_signature(intake, signature, body), notification_id)

    check_answer(intake, response, "zuora", authentic=authentic, before=before)


@COMMON
@given(body=BODIES["zuora"], signature=st.sampled_from(["right", "RIGHT"]), notification_id=NOTIFICATION_IDS)
def test_zuora_webhook_with_the_right_signature_stores_a_good_event_or_refuses_the_body(
    intake: Intake, body: bytes, signature: str, notification_id: str
) -> None:
    before = intake.doors.stored()

    response = post_zuora(intake, KEY, body, zuora_signature(intake, signature, body), notification_id)

    check_answer(intake, response, "zuora", authentic=True, before=before)


MISSING = "(missing)"


def zoho_body(note: dict[str, Any], channel_id: Any, token: Any) -> bytes:
    """`note` with the credential fields set as drawn (MISSING leaves a field out)."""
    note = dict(note)
    for field, value in (("channel_id", channel_id), ("token", token)):
        note.pop(field, None)
        if value != MISSING:
            note[field] = value
    return dumps(note)


CREDENTIALS = st.sampled_from(
    [
        (ACTIVE_CHANNEL, TOKEN),
        (DISABLED_CHANNEL, TOKEN),
        (ACTIVE_CHANNEL, "guess"),
        (DISABLED_CHANNEL, "guess"),
        ("1000000000000999", TOKEN),
        ("abc", TOKEN),
        (MISSING, TOKEN),
        (ACTIVE_CHANNEL, MISSING),
        (ACTIVE_CHANNEL, ""),
    ]
) | st.tuples(JSON_VALUES, JSON_VALUES)
ZOHO_FRONT_DOOR = st.builds(
    lambda note, credentials: zoho_body(note, *credentials), ZOHO_VALID | ZOHO_NOTICES, CREDENTIALS
)


@COMMON
@given(key=keys(ZOHO_KEY), body=ANY_BODY | ZOHO_FRONT_DOOR)
def test_zoho_webhook_answers_anything_with_success_or_a_clear_4xx(
    intake: Intake, key: str, body: bytes
) -> None:
    try:
        note = json.loads(body)
    except (ValueError, RecursionError):
        note = None
    authentic = (
        key == ZOHO_KEY
        and isinstance(note, dict)
        and note.get("token") == TOKEN
        and str(note.get("channel_id")) == ACTIVE_CHANNEL
    )
    before = intake.doors.stored()

    response = intake.client.post(
        url("zoho", key), content=body, headers={"content-type": "application/json"}
    )

    check_answer(intake, response, "zoho", authentic=authentic, before=before)


@COMMON
@given(body=BODIES["zoho"])
def test_zoho_webhook_with_the_right_token_stores_a_good_notice_or_refuses_the_body(
    intake: Intake, body: bytes
) -> None:
    before = intake.doors.stored()

    response = intake.client.post(
        url("zoho", ZOHO_KEY), content=body, headers={"content-type": "application/json"}
    )

    check_answer(intake, response, "zoho", authentic=True, before=before)


@pytest.mark.parametrize(
    ("system", "statuses"),
    [
        ("netsuite", {202, 400, 401, 404}),
        ("zuora", {200, 400, 401, 404}),
        ("zoho", {200, 400, 401, 404}),
    ],
)
def test_fuzzing_reached_past_authentication(intake: Intake, system: str, statuses: set[int]) -> None:
    """The properties above hold for more than 401s: the drawn requests were accepted, refused for
    their body, and refused at each door (this test reads what the property tests above saw)."""
    seen = {
        status
        for (db, sys, status), n in SEEN.items()
        if db == intake.doors.engine.dialect.name and sys == system
    }
    if not seen:
        pytest.skip("reads the answers the property tests of this module saw; run them first")

    assert statuses <= seen, f"{system}: never answered {sorted(statuses - seen)}; saw {sorted(seen)}"


def test_a_signed_event_with_a_nul_character_is_stored_or_refused_never_503(intake: Intake) -> None:
    body = b'{"recordType": "customer", "id": "7\\u0000"}'
    before = intake.doors.stored()

    response = intake.client.post(
        url("netsuite", KEY), content=body, headers={"x-webhook-secret": intake.doors.netsuite_secret}
    )

    check_answer(intake, response, "netsuite", authentic=True, before=before)
    # SQLite keeps a NUL in text; PostgreSQL cannot, so there it is refused and nothing is stored.
    expected = (400, "unstorable_value") if intake.doors.engine.dialect.name == "postgresql" else (202, None)
    assert (response.status_code, response.json().get("error")) == expected


@pytest.mark.parametrize("system", ["netsuite", "zuora", "zoho"])
@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_webhook_paths_refuse_other_methods_with_json_and_allow(
    intake: Intake, system: str, method: str
) -> None:
    response = intake.client.request(method, url(system, KEY))

    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert response.json() == {
        "error": "method_not_allowed",
        "message": f"/webhooks/{system}/{KEY} does not take {method}; use POST",
    }


@settings(max_examples=WEBHOOK_EXAMPLES // 2, deadline=None, database=None)
@given(
    path=st.text(min_size=1, max_size=40) | st.text(max_size=20).map(lambda p: "webhooks/" + p),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]),
)
def test_any_path_and_method_gets_a_json_answer_never_5xx(intake: Intake, path: str, method: str) -> None:
    response = intake.client.request(method, "/" + quote(path, safe="/"))

    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        answer = response.json()
        assert set(answer) == {"error", "message"} and answer["message"], answer


@pytest.mark.parametrize("operation", [["insert"], {"op": "insert"}])
def test_zoho_operation_that_is_not_text_is_refused_as_invalid(intake: Intake, operation: Any) -> None:
    note = {
        "channel_id": ACTIVE_CHANNEL,
        "token": TOKEN,
        "module": "Accounts",
        "ids": ["1"],
        "server_time": 1,
    }
    before = intake.doors.stored()

    response = intake.client.post(url("zoho", ZOHO_KEY), content=dumps({**note, "operation": operation}))

    check_answer(intake, response, "zoho", authentic=True, before=before)
    assert response.json()["error"] == "invalid_event"


# The mapping engine --------------------------------------------------------------------------------------

PATHS = st.sampled_from(["name", "a.b", "a", "addressbook.items.0.addr1", "$.id", "", "a..b", "x[0]", "$"])
TRANSFORM_PARAMS = st.fixed_dictionaries(
    {"name": st.sampled_from(sorted(TRANSFORMS)) | JSON_VALUES},
    optional={
        "format": st.sampled_from(["%Y-%m-%d", "%", "%Q", "%Y\x00", "%-d", ""]) | JSON_VALUES,
        "map": st.dictionaries(st.text(max_size=4), JSON_VALUES, max_size=3) | JSON_VALUES,
        "fallback": st.sampled_from(["keep"]) | JSON_VALUES,
        "table": st.sampled_from(["gl", "missing"]) | JSON_VALUES,
        "column": st.sampled_from(["code"]) | JSON_VALUES,
        "separator": st.sampled_from([" ", ", "]) | JSON_VALUES,
        "value": JSON_VALUES,
    },
)
STEPS = st.sampled_from(sorted(TRANSFORMS)) | TRANSFORM_PARAMS | JSON_VALUES
RULE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "target": PATHS | JSON_VALUES,
    "source": PATHS | st.lists(PATHS, max_size=3) | JSON_VALUES,
    "value": JSON_VALUES,
    "transform": STEPS | st.lists(STEPS, max_size=3),
    "default": JSON_VALUES,
    "required": st.booleans() | JSON_VALUES,
    "create_only": st.booleans(),
    "flows_back": st.booleans(),
    "each": PATHS | JSON_VALUES,
}
LEAF_RULES = st.fixed_dictionaries({}, optional=RULE_FIELDS)


def _each_rules(fields: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {"target": PATHS, "each": PATHS, "fields": st.lists(fields | JSON_VALUES, max_size=3)},
        optional={"required": st.booleans(), "create_only": st.booleans(), "transform": STEPS},
    )


RULES = LEAF_RULES | _each_rules(LEAF_RULES | _each_rules(LEAF_RULES))  # lists of lists of lists
SPECS = st.fixed_dictionaries({"fields": st.lists(RULES | JSON_VALUES, max_size=5)}) | JSON_VALUES
RECORD_KEYS = st.sampled_from(["name", "a", "b", "id", "addressbook", "items", "Name"]) | st.text(max_size=4)
RECORD_VALUES = st.recursive(
    SCALARS | st.sampled_from(["2024-01-05", "1/5/2024", "12.50", "1e999", " 4000 Income "]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(RECORD_KEYS, inner, max_size=3),
    max_leaves=10,
)
RECORDS = st.dictionaries(RECORD_KEYS, RECORD_VALUES, max_size=6)
LOOKUPS = st.none() | st.just({"gl": {"4000": "C-100", "4100": {"code": "C-200"}}})


@settings(max_examples=MAPPING_EXAMPLES, deadline=None, database=None)
@given(spec=SPECS | st.sampled_from([CUSTOMER_MAPPING, INVOICE_MAPPING]), record=RECORDS, lookups=LOOKUPS)
def test_mapping_apply_raises_nothing_but_mapping_error(
    spec: Any, record: dict[str, Any], lookups: Any
) -> None:
    try:
        mapped = apply(spec, record, lookups=lookups)
    except MappingError as exc:
        assert type(exc) is MappingError and exc.field and exc.message
    else:
        assert isinstance(mapped, Mapped)
        json.dumps(mapped.payload, allow_nan=True)  # what a flow sends is JSON
        mapped.for_update()
        mapped.for_write_back()


@settings(max_examples=MAPPING_EXAMPLES, deadline=None, database=None)
@given(spec=SPECS, record=RECORDS, lookups=LOOKUPS, required=st.lists(PATHS, max_size=2))
def test_mapping_validate_spec_and_preview_never_raise(
    spec: Any, record: dict[str, Any], lookups: Any, required: list[str]
) -> None:
    problems = validate_spec(spec, required=required, lookups=lookups)
    shown = preview(spec, record, lookups=lookups, required=required)

    assert all(isinstance(p, str) and p for p in problems)
    assert isinstance(shown, Preview)
    assert all(isinstance(e, str) and e for e in shown.errors)
    if problems:  # a spec with problems never previews clean
        assert not shown.ok


def test_mapping_number_step_refuses_an_endless_number_as_a_mapping_error() -> None:
    spec = {"fields": [{"target": "amount", "source": "total", "transform": "number"}]}

    with pytest.raises(MappingError, match="amount"):
        apply(spec, {"total": "9" * 5_000})
