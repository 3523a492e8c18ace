"""Approving access through the pages, with Streamlit's AppTest: Connect to NetSuite on the Connections
page and in the wizard, and Zoho's self-client grant code in both, against the sandbox emulators.

AppTest runs no JavaScript, so the test plays the browser around the Connect to NetSuite button: it opens
the URL the button would open in its window (the NetSuite emulator consents at once and redirects), and
brings NetSuite's answer back in the page's address, `?code=…&state=…`, the way a browser tab returns.
The pop-up's own hand-over is covered by tests/ui/test_browser_consent.py in Chromium.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from streamlit.testing.v1 import AppTest

from connectors.sandbox import Sandbox, build
from runner import consent, onboarding
from storage import crud
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.settings import get_settings
from tests.support.live import serve
from tests.ui.conftest import APP_PATH, signed_in

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
CONNECTIONS = "views/connections.py"
WIZARD_PAGE = "views/onboarding.py"
# What the app calls itself when the browser's address is unknown (AppTest has none): views._ui.
APP_URL = "http://localhost:8501"
REDIRECT_URI = consent.redirect_uri_for(APP_URL)
CLIENT_ID = "code-client-7a2c"
CLIENT_SECRET = "code-secret-31d4e5f6"
WIZARD = "onb"
NETSUITE_CODE_FORM = "onb_netsuite_0_auth_code_0_"  # a new NetSuite connection's form in auth code mode
ZOHO_FORM = "onb_zoho_0_None_0_"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    running, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    running.netsuite.register_auth_code_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(running, name).app, sock=sockets[name]))
        yield running


@pytest.fixture
def workspace_id(ui_database_url: str, monkeypatch: pytest.MonkeyPatch) -> int:
    """The app in sandbox mode on a fresh database with one workspace; no approval left from before."""
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    get_settings.cache_clear()
    consent.get_book().clear()
    engine = get_engine()
    upgrade(engine)
    return onboarding.create_workspace(engine, name="Acme").id or 0


def netsuite_connection(sandbox: Sandbox, workspace_id: int) -> int:
    """A NetSuite connection in authorization code mode whose refresh token is still to come."""
    return crud.create_connection(
        get_engine(), get_vault(), workspace_id=workspace_id, system="netsuite", name="NetSuite SB1",
        base_url=sandbox.credentials.netsuite_url, environment=sandbox.credentials.netsuite_account_id,
        settings={"auth_mode": "auth_code", "account_id": sandbox.credentials.netsuite_account_id,
                  "client_id": CLIENT_ID},
        secrets={"client_secret": CLIENT_SECRET},
    ).id  # fmt: skip


def zoho_connection(sandbox: Sandbox, workspace_id: int) -> int:
    c = sandbox.credentials
    return onboarding.save_connection(
        get_engine(), get_vault(), workspace_id=workspace_id, system="zoho", name="Zoho EU",
        values={"data_centre": "eu", "client_id": c.zoho_client_id, "client_secret": c.zoho_client_secret,
                "refresh_token": c.zoho_refresh_token},
        base_url=c.zoho_url, sandbox=True,
    ).id  # fmt: skip


def open_page(page: str, wizard: dict[str, Any] | None = None) -> AppTest:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT))
    if wizard is not None:
        at.session_state[WIZARD] = wizard
    at.run()
    return check(at.switch_page(page).run())


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
        *(i.value for i in at.info),
    ]
    return "\n".join(str(p) for p in parts)


def connect_button(at: AppTest, key: str) -> dict[str, Any]:
    """What the Connect to NetSuite button was drawn with (its URL and state)."""
    [button] = [c for c in at.get("bidi_component") if c.key == key]
    data: dict[str, Any] = json.loads(button.proto.json)
    assert data["label"] == "Connect to NetSuite"
    return data


def approve_in_netsuite(url: str) -> dict[str, str]:
    """The address NetSuite sends the browser back to after the person approves: its query."""
    response = httpx2.get(url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def come_back(at: AppTest, returned: dict[str, str]) -> AppTest:
    for name, value in returned.items():
        at.query_params[name] = value
    return check(at.run())


def stored_secrets(connection_id: int) -> dict[str, Any]:
    connection = crud.get_connection(get_engine(), connection_id=connection_id)
    assert connection is not None
    return crud.connection_secrets(get_vault(), connection)


# --- the Connections page --------------------------------------------------------------------------


def test_connections_page_connects_to_netsuite_and_shows_the_token_valid(
    sandbox: Sandbox, workspace_id: int
) -> None:
    connection_id = netsuite_connection(sandbox, workspace_id)
    at = open_page(CONNECTIONS)
    button = connect_button(at, f"connect_{connection_id}")
    assert f"`{REDIRECT_URI}`" in texts(at)  # to copy onto the integration record
    assert "none yet" in texts(at)

    at = come_back(at, approve_in_netsuite(button["url"]))

    [success] = at.success
    assert "NetSuite connection 'NetSuite SB1' updated with a new refresh token" in success.value
    assert "Connected" in success.value  # the ping made right after
    assert stored_secrets(connection_id)["refresh_token"]
    assert ":green-badge[valid] · expires in" in texts(at) and "approved in NetSuite" in texts(at)
    assert "connected" in texts(at)  # the ping badge
    assert CLIENT_SECRET not in texts(at)
    assert not at.query_params.get("code")  # taken off the address


def test_connections_page_says_what_to_do_with_an_approval_it_did_not_start(
    sandbox: Sandbox, workspace_id: int
) -> None:
    connection_id = netsuite_connection(sandbox, workspace_id)
    at = open_page(CONNECTIONS)

    at = come_back(at, {"code": "a-code", "state": "forged-or-stale-state"})

    [error] = at.error
    assert "unknown, already used or expired" in error.value
    assert "Connect to NetSuite again" in error.value
    assert "refresh_token" not in stored_secrets(connection_id)


def test_connections_page_says_when_netsuite_refused_access(sandbox: Sandbox, workspace_id: int) -> None:
    netsuite_connection(sandbox, workspace_id)
    at = open_page(CONNECTIONS)
    [button] = [c for c in at.get("bidi_component") if c.key.startswith("connect_")]
    state = json.loads(button.proto.json)["state"]

    at = come_back(
        at, {"state": state, "error": "access_denied", "error_description": "the user denied access"}
    )

    [error] = at.error
    assert "NetSuite did not grant access" in error.value and "Allow" in error.value


def test_connections_page_exchanges_a_zoho_grant_code(sandbox: Sandbox, workspace_id: int) -> None:
    connection_id = zoho_connection(sandbox, workspace_id)
    client_id = sandbox.credentials.zoho_client_id
    code = sandbox.zoho.grant_code(client_id, consent.ZOHO_SCOPES)
    at = open_page(CONNECTIONS)
    assert consent.ZOHO_SCOPES in [c.value for c in at.code]  # to paste into the API console

    at.text_input(key=f"grant_code_{connection_id}").input(code)
    check(at.button(key=f"exchange_{connection_id}").click().run())

    [success] = at.success
    assert "Zoho CRM connection 'Zoho EU' updated with a new refresh token" in success.value
    refresh_token = stored_secrets(connection_id)["refresh_token"]
    assert refresh_token != sandbox.credentials.zoho_refresh_token
    assert refresh_token in sandbox.zoho.oauth.clients[client_id].refresh_tokens
    assert at.text_input(key=f"grant_code_{connection_id}").value == ""  # a code works once
    assert code not in repr(at.session_state.to_dict())


def test_connections_page_says_a_zoho_grant_code_expired(sandbox: Sandbox, workspace_id: int) -> None:
    connection_id = zoho_connection(sandbox, workspace_id)
    at = open_page(CONNECTIONS)

    at.text_input(key=f"grant_code_{connection_id}").input("1000.expired.code")
    check(at.button(key=f"exchange_{connection_id}").click().run())

    [error] = at.error
    assert "they last a few minutes" in error.value and "the eu data centre" in error.value
    assert stored_secrets(connection_id)["refresh_token"] == sandbox.credentials.zoho_refresh_token


# --- the wizard ------------------------------------------------------------------------------------


def at_credentials(workspace_id: int) -> AppTest:
    wizard = {
        "step": 2, "pair": "netsuite-zoho", "workspace_id": workspace_id, "name": "CRM",
        "connections": {}, "forms": {}, "pings": {}, "integration_id": None,
    }  # fmt: skip
    return open_page(WIZARD_PAGE, wizard)


def fill_netsuite_code_form(at: AppTest, sandbox: Sandbox) -> None:
    check(at.segmented_control(key="onb_netsuite_0_mode").set_value("auth_code").run())
    for name, value in {
        "name": "NetSuite SB1",
        "account_id": sandbox.credentials.netsuite_account_id,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "base_url": sandbox.credentials.netsuite_url,
    }.items():
        at.text_input(key=NETSUITE_CODE_FORM + name).input(value)


def test_wizard_saves_netsuite_once_access_is_approved(sandbox: Sandbox, workspace_id: int) -> None:
    at = at_credentials(workspace_id)
    fill_netsuite_code_form(at, sandbox)

    check(at.button(key="onb_netsuite_save").click().run())

    assert not at.error, [e.value for e in at.error]
    assert crud.list_connections(get_engine()) == []  # saved once NetSuite says yes
    button = connect_button(at, "onb_connect_netsuite")
    assert CLIENT_SECRET not in repr(at.session_state.to_dict())

    at = come_back(at, approve_in_netsuite(button["url"]))

    [connection] = crud.list_connections(get_engine())
    assert connection.settings["auth_mode"] == "auth_code" and connection.name == "NetSuite SB1"
    assert stored_secrets(connection.id)["refresh_token"]
    wizard = at.session_state[WIZARD]
    assert wizard["connections"]["netsuite"] == connection.id
    assert wizard["pings"]["netsuite"]["ok"] is True  # pinged right after, so step 3 shows it
    assert any("saved with a new refresh token" in s.value for s in at.success)


def test_wizard_approval_ending_on_the_connections_page_resumes_the_wizard(
    sandbox: Sandbox, workspace_id: int
) -> None:
    at = at_credentials(workspace_id)
    fill_netsuite_code_form(at, sandbox)
    check(at.button(key="onb_netsuite_save").click().run())
    returned = approve_in_netsuite(connect_button(at, "onb_connect_netsuite")["url"])

    # NetSuite sends the browser to the Connections page: a new session, signed in again.
    elsewhere = come_back(open_page(CONNECTIONS), returned)

    [connection] = crud.list_connections(get_engine())
    assert any("saved with a new refresh token" in s.value for s in elsewhere.success)
    assert [link.proto.page for link in elsewhere.page_link] == ["onboarding"]
    resumed = elsewhere.session_state[WIZARD]
    assert resumed["step"] == 2 and resumed["workspace_id"] == workspace_id
    assert resumed["connections"]["netsuite"] == connection.id


def test_wizard_exchanges_a_zoho_grant_code_instead_of_a_refresh_token(
    sandbox: Sandbox, workspace_id: int
) -> None:
    c = sandbox.credentials
    code = sandbox.zoho.grant_code(c.zoho_client_id, consent.ZOHO_SCOPES)
    at = at_credentials(workspace_id)
    at.selectbox(key=ZOHO_FORM + "data_centre").set_value("eu")
    for name, value in {
        "client_id": c.zoho_client_id,
        "client_secret": c.zoho_client_secret,
        "grant_code": code,
        "base_url": c.zoho_url,
    }.items():
        at.text_input(key=ZOHO_FORM + name).input(value)

    check(at.button(key="onb_zoho_save").click().run())

    assert not at.error, [e.value for e in at.error]
    [connection] = crud.list_connections(get_engine())
    refresh_token = stored_secrets(connection.id)["refresh_token"]
    assert refresh_token in sandbox.zoho.oauth.clients[c.zoho_client_id].refresh_tokens
    assert at.session_state[WIZARD]["connections"]["zoho"] == connection.id
    assert code not in repr(at.session_state.to_dict())


def test_wizard_says_what_to_fix_when_zoho_refuses_the_grant_code(
    sandbox: Sandbox, workspace_id: int
) -> None:
    c = sandbox.credentials
    at = at_credentials(workspace_id)
    at.selectbox(key=ZOHO_FORM + "data_centre").set_value("eu")
    for name, value in {
        "client_id": c.zoho_client_id,
        "client_secret": "not-the-secret-5f3a",
        "grant_code": sandbox.zoho.grant_code(c.zoho_client_id, consent.ZOHO_SCOPES),
        "base_url": c.zoho_url,
    }.items():
        at.text_input(key=ZOHO_FORM + name).input(value)

    check(at.button(key="onb_zoho_save").click().run())

    [error] = at.error
    assert "invalid_client" in error.value and "data centre" in error.value
    assert "not-the-secret-5f3a" not in error.value
    assert crud.list_connections(get_engine()) == []


def test_a_tab_netsuite_sends_back_to_another_page_is_routed_to_connections_to_finish(
    sandbox: Sandbox, workspace_id: int
) -> None:
    # A tab that NetSuite sent straight back (no pop-up) starts a new session: after signing in it lands
    # on the default page; the app routes the approval to the Connections page, which finishes it.
    connection_id = netsuite_connection(sandbox, workspace_id)
    returned = approve_in_netsuite(connect_button(open_page(CONNECTIONS), f"connect_{connection_id}")["url"])
    fresh = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT))

    fresh = come_back(fresh, returned)

    [success] = fresh.success
    assert "NetSuite connection 'NetSuite SB1' updated with a new refresh token" in success.value
    assert stored_secrets(connection_id)["refresh_token"]
    assert not fresh.query_params.get("code")
