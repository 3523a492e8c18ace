"""Approving access from the app (runner.consent) against the emulators over HTTP, on SQLite and
PostgreSQL: NetSuite's authorization code grant with state and PKCE, and Zoho's self-client grant code.

The test plays the browser: it opens the authorize URL the service made (the NetSuite emulator consents at
once and redirects) and hands the `code` and `state` of the redirect back, as the Connections page does.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from connectors.netsuite.emulator import NetSuiteEmulator
from connectors.netsuite.emulator_auth import AUTH_CODE_TTL, TOKEN_PATH
from connectors.zoho.emulator import ZohoEmulator
from connectors.zoho.emulator_oauth import GRANT_CODE_TTL
from runner import consent, onboarding
from runner.consent import Approved, ConsentBook, ConsentError, ConsentStart
from runner.onboarding import InputError
from storage import crud
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Token
from tests.emulators.conftest import Clock
from tests.support.live import serve

APP_URL = "https://connector.example.test"
REDIRECT_URI = consent.redirect_uri_for(APP_URL)
ACCOUNT = "1234567_SB1"
CLIENT_ID = "code-client-4b1d"
CLIENT_SECRET = "code-secret-9f8e7d6c"
ZOHO_CLIENT_ID = "1000.SELFCLIENT"
ZOHO_SECRET = "zoho-secret-0a1b2c"
ZOHO_SCOPES = "ZohoCRM.modules.ALL,ZohoCRM.notifications.ALL,ZohoCRM.org.READ"
USER = "admin"


@dataclass
class Emulators:
    netsuite: NetSuiteEmulator
    netsuite_url: str
    zoho: ZohoEmulator
    zoho_url: str
    other_zoho_url: str  # another data centre's accounts server: it knows no client of ours
    clock: Clock  # the emulators' time


@pytest.fixture
def emulators() -> Iterator[Emulators]:
    clock = Clock()
    netsuite = NetSuiteEmulator(ACCOUNT, clock=clock)
    netsuite.register_auth_code_client(CLIENT_ID, CLIENT_SECRET, REDIRECT_URI)
    zoho = ZohoEmulator(clock=clock)
    zoho.register_client(ZOHO_CLIENT_ID, ZOHO_SECRET)
    with (
        serve(netsuite.app) as netsuite_url,
        serve(zoho.app) as zoho_url,
        serve(ZohoEmulator(clock=clock).app) as other_zoho_url,
    ):
        yield Emulators(netsuite, netsuite_url, zoho, zoho_url, other_zoho_url, clock)


@pytest.fixture
def clock() -> Clock:
    """The app's time, for the approvals it keeps."""
    return Clock()


@pytest.fixture
def book(clock: Clock) -> ConsentBook:
    return ConsentBook(clock=clock)


@pytest.fixture
def workspace_id(engine: Engine) -> int:
    return onboarding.create_workspace(engine, name="Acme").id or 0


def netsuite_values(**changes: str) -> dict[str, str]:
    return {
        "auth_mode": "auth_code",
        "account_id": ACCOUNT,
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        **changes,
    }


def start(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int, **changes: str
) -> ConsentStart:
    return consent.start_netsuite_consent(
        engine, vault, book=book, user=USER, redirect_uri=REDIRECT_URI, sandbox=True,
        workspace_id=workspace_id, values=netsuite_values(**changes), name="NetSuite SB1",
        base_url=emulators.netsuite_url, origin="onboarding", resume={"step": 2},
    )  # fmt: skip


def approve(started: ConsentStart) -> dict[str, str]:
    """What NetSuite sends the browser back with, after the person approves on its consent page."""
    response = httpx2.get(started.url, follow_redirects=False)
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def finish(
    engine: Engine, vault: Vault, book: ConsentBook, returned: dict[str, str], user: str = USER
) -> Approved:
    return consent.finish_netsuite_consent(
        engine, vault, book=book, user=user, state=returned["state"], code=returned.get("code", ""),
        error=returned.get("error", ""), error_description=returned.get("error_description", ""),
        sandbox=True,
    )  # fmt: skip


def code_grants(emulator: NetSuiteEmulator) -> int:
    """Token requests the NetSuite emulator answered (any grant)."""
    return sum(1 for r in emulator.requests if r["path"] == TOKEN_PATH and r["method"] == "POST")


def cached_token(engine: Engine, connection_id: int) -> Token | None:
    with session_scope(engine) as session:
        return session.exec(select(Token).where(Token.connection_id == connection_id)).first()


# --- NetSuite --------------------------------------------------------------------------------------


def test_netsuite_consent_creates_the_connection_with_a_refresh_token_and_pings(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    started = start(engine, vault, book, emulators, workspace_id)

    query = parse_qs(urlsplit(started.url).query)
    assert started.url.startswith(emulators.netsuite_url + "/app/login/oauth2/authorize.nl?")
    assert query["state"] == [started.state] and query["redirect_uri"] == [REDIRECT_URI]
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert CLIENT_SECRET not in started.url
    assert crud.list_connections(engine) == []  # nothing saved before NetSuite says yes

    approved = finish(engine, vault, book, approve(started))

    connection = crud.get_connection(engine, connection_id=approved.connection.id)
    assert connection is not None and approved.created
    assert connection.settings["auth_mode"] == "auth_code" and connection.name == "NetSuite SB1"
    secrets = crud.connection_secrets(vault, connection)
    assert secrets["client_secret"] == CLIENT_SECRET and len(secrets["refresh_token"]) > 20
    assert secrets["refresh_token"] not in connection.secrets_encrypted  # stored encrypted
    assert approved.ping is not None and approved.ping.ok, approved.ping
    assert connection.last_ping_ok is True
    token = cached_token(engine, connection.id or 0)
    assert token is not None and token.access_token_encrypted and token.reason == "approved in NetSuite"
    assert approved.origin == "onboarding" and approved.resume == {"step": 2}
    assert "saved with a new refresh token" in approved.message


def test_netsuite_consent_renews_a_saved_connections_refresh_token(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    first = finish(engine, vault, book, approve(start(engine, vault, book, emulators, workspace_id)))
    saved = crud.get_connection(engine, connection_id=first.connection.id)
    assert saved is not None
    old = crud.connection_secrets(vault, saved)
    emulators.netsuite.expire_refresh_tokens()  # seven days later

    again = consent.start_netsuite_consent(
        engine, vault, book=book, user=USER, redirect_uri=REDIRECT_URI, sandbox=True,
        connection_id=first.connection.id,
    )  # fmt: skip
    renewed = finish(engine, vault, book, approve(again))

    assert renewed.connection.id == first.connection.id and not renewed.created
    stored = crud.get_connection(engine, connection_id=first.connection.id)
    assert stored is not None
    assert crud.connection_secrets(vault, stored)["refresh_token"] != old["refresh_token"]
    assert renewed.ping is not None and renewed.ping.ok
    assert [c.id for c in crud.list_connections(engine)] == [first.connection.id]


def test_netsuite_consent_state_is_used_once(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    returned = approve(start(engine, vault, book, emulators, workspace_id))
    first = finish(engine, vault, book, returned)
    grants = code_grants(emulators.netsuite)

    repeated = finish(engine, vault, book, {**returned, "code": "another-code"})

    # The second delivery (NetSuite's redirect reaching a second window) is told the outcome: no new
    # exchange, no second connection.
    assert repeated.connection.id == first.connection.id
    assert code_grants(emulators.netsuite) == grants
    assert len(crud.list_connections(engine)) == 1


def test_netsuite_consent_refuses_another_users_state_and_spends_it(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    returned = approve(start(engine, vault, book, emulators, workspace_id))

    with pytest.raises(ConsentError, match="started by 'admin', not by you"):
        finish(engine, vault, book, returned, user="mallory")
    with pytest.raises(ConsentError, match="unknown, already used or expired"):
        finish(engine, vault, book, returned)

    assert crud.list_connections(engine) == []
    assert code_grants(emulators.netsuite) == 0


@pytest.mark.parametrize("state", ["", "not-a-state-we-issued"])
def test_netsuite_consent_refuses_a_state_it_never_issued(
    engine: Engine, vault: Vault, book: ConsentBook, state: str
) -> None:
    with pytest.raises(ConsentError, match="press Connect to NetSuite again"):
        finish(engine, vault, book, {"state": state, "code": "a-code"})


def test_netsuite_consent_refuses_an_expired_state(
    engine: Engine, vault: Vault, book: ConsentBook, clock: Clock, emulators: Emulators, workspace_id: int
) -> None:
    started = start(engine, vault, book, emulators, workspace_id)
    returned = approve(started)
    clock.advance(consent.CONSENT_TTL + 1)

    assert not book.is_open(started.state)
    with pytest.raises(ConsentError, match=r"expired .*lasts 10 minutes"):
        finish(engine, vault, book, returned)
    assert code_grants(emulators.netsuite) == 0


@dataclass(frozen=True)
class Refusal:
    name: str
    says: tuple[str, ...]


def refuse_late_code(emulators: Emulators, returned: dict[str, str]) -> dict[str, str]:
    emulators.clock.advance(AUTH_CODE_TTL + 1)  # the person took a coffee between consent and return
    return returned


def refuse_denied(emulators: Emulators, returned: dict[str, str]) -> dict[str, str]:
    return {
        "state": returned["state"],
        "error": "access_denied",
        "error_description": "the user denied access",
    }


def refuse_wrong_secret(emulators: Emulators, returned: dict[str, str]) -> dict[str, str]:
    emulators.netsuite.register_auth_code_client(CLIENT_ID, "a-rotated-secret", REDIRECT_URI)
    return returned


REFUSALS = {
    "late code": (
        refuse_late_code,
        ("invalid_grant", "work once and for a few minutes", "Connect to NetSuite again"),
    ),
    "denied": (refuse_denied, ("did not grant access (access_denied", "choose Allow")),
    "wrong secret": (refuse_wrong_secret, ("invalid_client", "copy both again from the integration record")),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_netsuite_consent_refusal_says_what_to_fix_and_saves_nothing(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int, case: str
) -> None:
    change, says = REFUSALS[case]
    returned = change(emulators, approve(start(engine, vault, book, emulators, workspace_id)))

    with pytest.raises(ConsentError) as refused:
        finish(engine, vault, book, returned)

    for words in says:
        assert words in refused.value.message
    assert CLIENT_SECRET not in refused.value.message
    assert returned.get("code", "never") not in refused.value.message
    assert crud.list_connections(engine) == []


def test_netsuite_consent_start_names_each_missing_field_but_the_refresh_token(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    with pytest.raises(InputError) as refused:
        start(engine, vault, book, emulators, workspace_id, client_secret="", account_id="acme corp")

    assert set(refused.value.problems) == {"client_secret", "account_id"}
    assert "Client secret is required" in refused.value.problems["client_secret"]


def test_netsuite_consent_start_refuses_another_authentication_mode(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    with pytest.raises(InputError, match="Authorization code mode"):
        start(engine, vault, book, emulators, workspace_id, auth_mode="m2m")


def test_consent_book_keeps_a_bounded_number_of_approvals_per_person(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    starts = [
        start(engine, vault, book, emulators, workspace_id) for _ in range(consent.PENDING_PER_USER + 1)
    ]

    assert not book.is_open(starts[0].state)
    assert all(book.is_open(s.state) for s in starts[1:])


def test_consent_outcome_is_told_only_to_the_person_who_started_it(
    engine: Engine, vault: Vault, book: ConsentBook, emulators: Emulators, workspace_id: int
) -> None:
    started = start(engine, vault, book, emulators, workspace_id)
    assert consent.consent_outcome(book, state=started.state, user=USER) is None  # still open

    approved = finish(engine, vault, book, approve(started))

    # The pop-up closed after the approval was finished elsewhere: the page that opened it learns how it went.
    outcome = consent.consent_outcome(book, state=started.state, user=USER)
    assert isinstance(outcome, consent.Approved) and outcome.connection.id == approved.connection.id
    assert consent.consent_outcome(book, state=started.state, user="mallory") is None


def test_reuse_or_start_keeps_one_approval_per_button_until_it_nears_expiry(
    engine: Engine, vault: Vault, book: ConsentBook, clock: Clock, emulators: Emulators, workspace_id: int
) -> None:
    prepared: dict[str, ConsentStart] = {}

    def make() -> ConsentStart:
        return start(engine, vault, book, emulators, workspace_id)

    first = consent.reuse_or_start(book, prepared, "netsuite", make)
    assert consent.reuse_or_start(book, prepared, "netsuite", make) is first
    clock.advance(consent.CONSENT_TTL - consent.RENEW_MARGIN + 1)

    renewed = consent.reuse_or_start(book, prepared, "netsuite", make)

    assert renewed.state != first.state and prepared["netsuite"] is renewed
    assert not book.is_open(first.state) and book.is_open(renewed.state)


# --- Zoho ------------------------------------------------------------------------------------------


def zoho_values(**changes: str) -> dict[str, str]:
    return {"data_centre": "eu", "client_id": ZOHO_CLIENT_ID, "client_secret": ZOHO_SECRET, **changes}


def exchange(
    engine: Engine, vault: Vault, workspace_id: int, url: str, code: str, **changes: str
) -> Approved:
    return consent.exchange_zoho_grant_code(
        engine, vault, code=code, sandbox=True, workspace_id=workspace_id, values=zoho_values(**changes),
        name="Zoho EU", base_url=url, verify=True,
    )  # fmt: skip


def test_zoho_grant_code_exchange_saves_the_refresh_token_and_pings(
    engine: Engine, vault: Vault, emulators: Emulators, workspace_id: int
) -> None:
    code = emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES)

    approved = exchange(engine, vault, workspace_id, emulators.zoho_url, f"  {code}\n")

    connection = crud.get_connection(engine, connection_id=approved.connection.id)
    assert connection is not None and approved.created and connection.environment == "eu"
    refresh_token = crud.connection_secrets(vault, connection)["refresh_token"]
    assert refresh_token in emulators.zoho.oauth.clients[ZOHO_CLIENT_ID].refresh_tokens
    assert approved.ping is not None and approved.ping.ok, approved.ping
    token = cached_token(engine, connection.id or 0)
    assert token is not None and token.extra["api_domain"] == emulators.zoho_url
    assert token.reason == "grant code exchanged"


def test_zoho_grant_code_replaces_a_saved_connections_refresh_token(
    engine: Engine, vault: Vault, emulators: Emulators, workspace_id: int
) -> None:
    first = exchange(
        engine,
        vault,
        workspace_id,
        emulators.zoho_url,
        emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES),
    )

    again = consent.exchange_zoho_grant_code(
        engine, vault, code=emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES), sandbox=True,
        connection_id=first.connection.id,
    )  # fmt: skip

    assert again.connection.id == first.connection.id and not again.created
    before = crud.get_connection(engine, connection_id=first.connection.id)
    assert before is not None
    assert crud.connection_secrets(vault, before)["refresh_token"] in (
        emulators.zoho.oauth.clients[ZOHO_CLIENT_ID].refresh_tokens
    )
    assert len(crud.list_connections(engine)) == 1


def zoho_expired(emulators: Emulators) -> tuple[str, str]:
    code = emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES)
    emulators.clock.advance(GRANT_CODE_TTL + 1)  # pasted after the console's three minutes
    return emulators.zoho_url, code


def zoho_used(emulators: Emulators) -> tuple[str, str]:
    code = emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES)
    emulators.zoho.oauth.token(
        {"grant_type": "authorization_code", "client_id": ZOHO_CLIENT_ID, "client_secret": ZOHO_SECRET,
         "code": code}, emulators.zoho_url,
    )  # fmt: skip
    return emulators.zoho_url, code


def zoho_wrong_data_centre(emulators: Emulators) -> tuple[str, str]:
    return emulators.other_zoho_url, emulators.zoho.grant_code(ZOHO_CLIENT_ID, ZOHO_SCOPES)


ZOHO_REFUSALS = {
    "expired": (zoho_expired, ("invalid_code", "they last a few minutes", "generate a new one")),
    "used": (zoho_used, ("invalid_code", "already used")),
    "wrong data centre": (
        zoho_wrong_data_centre,
        ("invalid_client", "data centre does not match", "the eu data centre"),
    ),
}


@pytest.mark.parametrize("case", list(ZOHO_REFUSALS))
def test_zoho_grant_code_refusal_says_what_to_fix_and_saves_nothing(
    engine: Engine, vault: Vault, emulators: Emulators, workspace_id: int, case: str
) -> None:
    make, says = ZOHO_REFUSALS[case]
    url, code = make(emulators)

    with pytest.raises(InputError) as refused:
        exchange(engine, vault, workspace_id, url, code)

    message = refused.value.problems["grant_code"]
    for words in says:
        assert words in message
    assert code not in message and ZOHO_SECRET not in message
    assert crud.list_connections(engine) == []


def test_zoho_grant_code_exchange_names_missing_fields_first(
    engine: Engine, vault: Vault, emulators: Emulators, workspace_id: int
) -> None:
    with pytest.raises(InputError) as refused:
        exchange(engine, vault, workspace_id, emulators.zoho_url, "", client_secret="")

    assert set(refused.value.problems) == {"grant_code"}
    with pytest.raises(InputError) as refused:
        exchange(engine, vault, workspace_id, emulators.zoho_url, "1000.abc.def", client_secret="")
    assert set(refused.value.problems) == {"client_secret"}
    assert not emulators.zoho.requests  # nothing was sent
