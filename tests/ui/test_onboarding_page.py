"""The new-integration wizard through Streamlit's AppTest: the real app.py and views/onboarding.py against a
test database and the sandbox emulators over HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from connectors.sandbox import Sandbox, build
from connectors.zuora.spec import ENVIRONMENTS as ZUORA_ENVIRONMENTS
from runner import onboarding
from runner import onboarding_webhooks as webhooks
from storage import crud
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.settings import get_settings
from tests.support.live import serve
from tests.ui.conftest import APP_PATH, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
PUBLIC_URL = "https://runner.example.test"
# From views/onboarding.py, which cannot be imported here: a page module draws itself when imported.
WIZARD = "onb"
SAVED_SECRET = "saved — enter a new value to replace"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators on loopback for the whole module."""
    running, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(running, name).app, sock=sockets[name]))
        yield running


@pytest.fixture
def sandbox_mode(ui_database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The app in sandbox mode (loopback base URLs allowed) with a public runner URL, on a fresh database."""
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    monkeypatch.setenv("ML_CONNECTOR_PUBLIC_URL", PUBLIC_URL)
    get_settings.cache_clear()
    return ui_database_url


def open_wizard(wizard: dict[str, Any] | None = None) -> AppTest:
    """The app switched to the wizard (optionally with its state as a previous visit left it)."""
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT))
    if wizard is not None:
        at.session_state[WIZARD] = wizard
    at.run()
    at.switch_page("views/onboarding.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def check(at: AppTest) -> AppTest:
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(at: AppTest) -> str:
    parts: list[Any] = [
        *(m.value for m in at.markdown),
        *(c.value for c in at.caption),
        *(e.value for e in at.error),
        *(s.value for s in at.success),
        *(w.value for w in at.warning),
        *(c.value for c in at.code),
    ]
    return "\n".join(str(p) for p in parts)


def errors(at: AppTest) -> list[str]:
    return [str(e.value) for e in at.error]


def fill(at: AppTest, prefix: str, values: dict[str, str]) -> None:
    """Type `values` into the form whose widget keys start with `prefix` (selectboxes picked, not typed)."""
    for name, value in values.items():
        key = prefix + name
        boxes = [w for w in at.selectbox if w.key == key]
        areas = [w for w in at.text_area if w.key == key]
        if boxes:
            boxes[0].set_value(value)
        elif areas:
            areas[0].input(value)
        else:
            at.text_input(key=key).input(value)


def netsuite_form(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "name": "NetSuite SB1",
        "account_id": c.netsuite_account_id,
        "client_id": c.netsuite_client_id,
        "certificate_id": c.netsuite_certificate_id,
        "private_key": c.netsuite_private_key,
        "base_url": c.netsuite_url,
    }


def zoho_form(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "name": "Zoho EU",
        "data_centre": "eu",
        "client_id": c.zoho_client_id,
        "client_secret": c.zoho_client_secret,
        "refresh_token": c.zoho_refresh_token,
        "base_url": c.zoho_url,
    }


NETSUITE_PREFIX = "onb_netsuite_0_m2m_0_"  # a new connection (0), mode m2m, first form generation
ZOHO_PREFIX = "onb_zoho_0_None_0_"


def through_step_one(pair: str = "netsuite-zoho") -> AppTest:
    at = open_wizard()
    at.radio(key="onb_pair").set_value(pair)
    at.text_input(key="onb_workspace_name").input("Acme Corp")
    return check(at.button(key="onb_next_1").click().run())


def test_onboarding_page_renders_without_exception(empty_database: str) -> None:
    at = open_wizard()

    assert [t.value for t in at.title] == ["New integration"]
    assert "Step 1 of 6 · Pair" in at.progress[0].proto.text
    assert at.radio(key="onb_pair").options == ["NetSuite ↔ Zuora", "NetSuite ↔ Zoho CRM"]


def test_onboarding_wizard_main_path_against_the_emulators(sandbox_mode: str, sandbox: Sandbox) -> None:
    at = through_step_one()
    assert "Step 2 of 6" in at.progress[0].proto.text

    fill(at, NETSUITE_PREFIX, netsuite_form(sandbox))
    check(at.button(key="onb_netsuite_save").click().run())
    fill(at, ZOHO_PREFIX, zoho_form(sandbox))
    check(at.button(key="onb_zoho_save").click().run())
    assert not errors(at)
    check(at.button(key="onb_next_2").click().run())

    check(at.button(key="onb_ping_all").click().run())
    assert [s.value.split(" answered")[0] for s in at.success] == ["**NetSuite**", "**Zoho CRM**"]
    assert " ms." in texts(at)
    check(at.button(key="onb_next_3").click().run())

    assert len(at.dataframe) == len(onboarding.flow_reviews("netsuite-zoho"))
    check(at.button(key="onb_next_4").click().run())

    engine, vault = get_engine(), get_vault()
    [integration] = crud.list_integrations(engine)
    setup = webhooks.webhook_setup(engine, vault, integration_id=integration.id, runner_url=PUBLIC_URL)
    codes = [c.value for c in at.code]
    assert setup.netsuite_url in codes and setup.netsuite_secret in codes
    assert at.download_button(key="onb_suitescript")
    channel = webhooks.zoho_channel(engine, integration_id=integration.id)
    assert channel is not None and channel.status == "active"
    assert channel.channel_id in {str(c["channel_id"]) for c in sandbox.zoho.channels()}
    assert "enabled until" in texts(at)
    assert not integration.active
    check(at.button(key="onb_next_5").click().run())

    check(at.button(key="onb_next_6").click().run())

    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None and stored.active
    assert any("Active" in s.value for s in at.success)
    assert [w.name for w in crud.list_workspaces(engine)] == ["Acme Corp"]


def test_onboarding_saved_secrets_are_never_shown_or_kept(sandbox_mode: str, sandbox: Sandbox) -> None:
    at = through_step_one()
    form = zoho_form(sandbox)
    fill(at, NETSUITE_PREFIX, netsuite_form(sandbox))
    check(at.button(key="onb_netsuite_save").click().run())
    fill(at, ZOHO_PREFIX, form)

    check(at.button(key="onb_zoho_save").click().run())

    secrets = (form["client_secret"], form["refresh_token"], sandbox.credentials.netsuite_private_key)
    secret_inputs = [w for w in at.text_input if w.key and w.key.endswith(("client_secret", "refresh_token"))]
    assert len(secret_inputs) == 2
    assert all(w.value == "" and w.placeholder == SAVED_SECRET for w in secret_inputs)
    assert all(w.proto.type == w.proto.PASSWORD for w in secret_inputs)
    [private_key] = at.text_area
    assert private_key.value == "" and private_key.placeholder == SAVED_SECRET
    state = repr(at.session_state.to_dict())
    shown = texts(at) + repr([w.value for w in (*at.text_input, *at.text_area, *at.selectbox)])
    for secret in secrets:
        assert secret not in state and secret not in shown
    assert at.session_state[WIZARD]["connections"]["zoho"]


@pytest.mark.parametrize(
    ("changes", "says"),
    [
        ({"account_id": "acme corp"}, "Account ID does not look right"),
        ({"private_key": ""}, "Private key (PEM) is required"),
        ({"base_url": "https://1234567.suitetalk.api.netsuite.com.evil.test"}, "Base URL: "),
        ({"name": " "}, "Connection name is required"),
    ],
)
def test_onboarding_bad_credentials_are_refused_naming_the_field(
    sandbox_mode: str, sandbox: Sandbox, changes: dict[str, str], says: str
) -> None:
    at = through_step_one()
    fill(at, NETSUITE_PREFIX, {**netsuite_form(sandbox), **changes})

    check(at.button(key="onb_netsuite_save").click().run())

    assert any(says in e for e in errors(at)), errors(at)
    assert crud.list_connections(get_engine()) == []
    assert at.button(key="onb_next_2").disabled


def test_onboarding_taken_workspace_name_is_refused(empty_database: str) -> None:
    at = open_wizard()
    onboarding.create_workspace(get_engine(), name="Acme Corp")
    at.run()
    at.selectbox(key="onb_workspace").set_value(0)
    at.text_input(key="onb_workspace_name").input("Acme Corp")

    check(at.button(key="onb_next_1").click().run())

    assert any("Workspace name 'Acme Corp' is taken" in e for e in errors(at))
    assert "Step 1 of 6 · Pair" in at.progress[0].proto.text


def test_onboarding_webhook_step_shows_zuora_callout_settings(sandbox_mode: str, sandbox: Sandbox) -> None:
    engine, vault = get_engine(), get_vault()
    upgrade(engine)
    workspace = onboarding.create_workspace(engine, name="Globex")
    c = sandbox.credentials
    ids = {
        "netsuite": onboarding.save_connection(
            engine, vault, workspace_id=workspace.id, system="netsuite", name="NetSuite",
            values={"account_id": c.netsuite_account_id, "client_id": c.netsuite_client_id,
                    "certificate_id": c.netsuite_certificate_id, "private_key": c.netsuite_private_key},
            base_url=c.netsuite_url, sandbox=True,
        ).id,
        "zuora": onboarding.save_connection(
            engine, vault, workspace_id=workspace.id, system="zuora", name="Zuora",
            values={"environment": "US API Sandbox (Cloud 1)", "client_id": c.zuora_client_id,
                    "client_secret": c.zuora_client_secret},
            base_url=c.zuora_url, sandbox=True,
        ).id,
    }  # fmt: skip
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace.id, name="Billing", pair="netsuite-zuora", connection_ids=ids
    )
    wizard = {
        "step": 5, "pair": "netsuite-zuora", "workspace_id": workspace.id, "name": "Billing",
        "connections": ids, "forms": {}, "pings": {}, "integration_id": integration.id,
    }  # fmt: skip

    at = open_wizard(wizard)

    setup = webhooks.webhook_setup(engine, vault, integration_id=integration.id, runner_url=PUBLIC_URL)
    codes = [c.value for c in at.code]
    assert {setup.zuora_url, setup.zuora_secret, setup.netsuite_url, setup.netsuite_secret} <= set(codes)
    settings = at.table[0].value["Value"].to_dict()
    assert settings["HMAC algorithm (hmacAlgorithm)"] == "SHA-256"
    assert settings["HMAC key, the header name (hmacKey)"] == "X-Zuora-Signature"
    assert settings["HMAC value (hmacValue)"] == "sha256={{Request.HMAC.Signed}}"
    assert setup.zuora_secret not in repr(at.session_state.to_dict())

    check(at.button(key="onb_next_5").click().run())
    check(at.button(key="onb_next_6").click().run())

    assert any("ping it successfully before activating" in e for e in errors(at))
    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None and not stored.active


def test_onboarding_credential_forms_follow_the_declared_modes_and_choices(empty_database: str) -> None:
    at = through_step_one("netsuite-zuora")
    modes = at.segmented_control(key="onb_netsuite_0_mode")
    assert modes.options == ["M2M (certificate)", "Authorization code", "Token-based (TBA)"]
    assert at.selectbox(key="onb_zuora_0_None_0_environment").options == list(ZUORA_ENVIRONMENTS)

    check(modes.set_value("tba").run())

    fields = {
        w.key.removeprefix("onb_netsuite_0_tba_0_") for w in at.text_input if w.key.startswith("onb_netsuite")
    }
    assert fields == {
        "name",
        "account_id",
        "consumer_key",
        "consumer_secret",
        "token_id",
        "token_secret",
        "base_url",
    }
    secrets = [w for w in at.text_input if w.key.endswith(("consumer_secret", "token_secret"))]
    assert all(w.proto.type == w.proto.PASSWORD for w in secrets)
    assert not at.text_area  # the M2M private key is gone


def test_onboarding_failed_ping_says_what_to_do_and_blocks_continuing(
    sandbox_mode: str, sandbox: Sandbox
) -> None:
    engine, vault = get_engine(), get_vault()
    upgrade(engine)
    workspace = onboarding.create_workspace(engine, name="Initech")
    c = sandbox.credentials
    zoho = onboarding.save_connection(
        engine, vault, workspace_id=workspace.id, system="zoho", name="Zoho",
        values={"data_centre": "com", "client_id": c.zoho_client_id, "client_secret": "not-the-secret-5f3a",
                "refresh_token": c.zoho_refresh_token},
        base_url=c.zoho_url, sandbox=True,
    )  # fmt: skip
    wizard = {
        "step": 3, "pair": "netsuite-zoho", "workspace_id": workspace.id, "name": "CRM",
        "connections": {"zoho": zoho.id}, "forms": {}, "pings": {}, "integration_id": None,
    }  # fmt: skip
    at = open_wizard(wizard)

    check(at.button(key="onb_ping_zoho").click().run())

    [failure] = at.error
    assert failure.value.startswith("**Zoho CRM** failed after ")
    assert "not-the-secret-5f3a" not in failure.value
    assert at.button(key="onb_next_3").disabled
    stored = crud.get_connection(engine, connection_id=zoho.id)
    assert stored is not None and stored.last_ping_ok is False


def test_onboarding_offers_the_workspaces_existing_connection(sandbox_mode: str, sandbox: Sandbox) -> None:
    engine, vault = get_engine(), get_vault()
    upgrade(engine)
    workspace = onboarding.create_workspace(engine, name="Umbrella")
    c = sandbox.credentials
    netsuite = onboarding.save_connection(
        engine, vault, workspace_id=workspace.id, system="netsuite", name="Umbrella NetSuite",
        values={"account_id": c.netsuite_account_id, "client_id": c.netsuite_client_id,
                "certificate_id": c.netsuite_certificate_id, "private_key": c.netsuite_private_key},
        base_url=c.netsuite_url, sandbox=True,
    )  # fmt: skip
    at = open_wizard()
    at.radio(key="onb_pair").set_value("netsuite-zoho")

    check(at.button(key="onb_next_1").click().run())

    assert at.selectbox(key="onb_netsuite_pick").value == netsuite.id
    assert at.selectbox(key="onb_zoho_pick").value == 0
    assert at.text_input(key=f"onb_netsuite_{netsuite.id}_m2m_0_account_id").value == c.netsuite_account_id
    assert at.text_area[0].value == "" and at.text_area[0].placeholder == SAVED_SECRET
    assert at.button(key="onb_next_2").disabled  # Zoho CRM is still to be saved
