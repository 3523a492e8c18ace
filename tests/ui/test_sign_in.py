"""Sign-in in front of the app, through Streamlit's AppTest: the real app.py on a fresh SQLite file."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from argon2 import PasswordHasher
from streamlit.testing.v1 import AppTest

import storage.users as users
from storage.db import get_engine
from storage.migrate import upgrade
from storage.users import LOCKOUT_AFTER, AuthResult, AuthStatus, create_user
from tests.ui.conftest import APP_PATH, signed_in
from views._auth import SESSION_USER, failure_message

RUN_TIMEOUT = 30.0  # seconds; the first run imports pandas and migrates the database
PASSWORD = "correct horse battery"
NOW = datetime(2026, 3, 1, 14, 0, 0, tzinfo=UTC)

SSO_SECRETS = {
    "auth": {
        "redirect_uri": "http://localhost:8501/oauth2callback",
        "cookie_secret": "a-test-cookie-secret",
        "google": {
            "client_id": "client-id",
            "client_secret": "client-secret",
            "server_metadata_url": "https://accounts.google.com/.well-known/openid-configuration",
        },
    }
}


@pytest.fixture(autouse=True)
def fast_hashes(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Cheap Argon2 parameters (the app runs in this process), and no remembered unknown usernames."""
    monkeypatch.setattr(users, "HASHER", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    users._unknown_names.clear()
    yield
    users._unknown_names.clear()


@pytest.fixture
def with_admin(ui_database_url: str) -> str:
    """A migrated database with the account admin / PASSWORD."""
    upgrade(get_engine())
    create_user(get_engine(), username="admin", password=PASSWORD, is_admin=True)
    return ui_database_url


def open_app() -> AppTest:
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sign_in(at: AppTest, username: str, password: str) -> AppTest:
    at.text_input(key="sign_in_username").input(username)
    at.text_input(key="sign_in_password").input(password)
    at.button[-1].click().run()  # the form's submit button
    assert not at.exception, [e.value for e in at.exception]
    return at


def titles(at: AppTest) -> list[str]:
    return [t.value for t in at.title]


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def shows_the_app(at: AppTest) -> bool:
    """Whether a page of the app (not the sign-in form) was drawn."""
    return any("Signed in as" in str(c.value) for c in at.sidebar.caption)


def test_first_start_asks_for_the_admin_account(empty_database: str) -> None:
    at = open_app()

    assert titles(at) == ["Create the admin account"]
    assert at.text_input(key="admin_username").value == "admin"
    assert not shows_the_app(at)


def test_creating_the_admin_signs_in_and_shows_the_app(empty_database: str) -> None:
    at = open_app()
    at.text_input(key="admin_password").input(PASSWORD)
    at.text_input(key="admin_confirmation").input(PASSWORD)
    at.button[-1].click().run()

    assert not at.exception, [e.value for e in at.exception]
    assert at.session_state[SESSION_USER] == "admin"
    assert shows_the_app(at)
    assert "Create the admin account" not in titles(at)
    assert users.has_users(get_engine())


@pytest.mark.parametrize(
    ("username", "password", "confirmation", "expected"),
    [
        ("admin", "short", "short", ["Password: at least 12 characters (this one has 5)."]),
        ("admin", PASSWORD, PASSWORD + "!", ["Confirm password: does not match the password."]),
        ("", PASSWORD, PASSWORD, ["Username: enter a username."]),
    ],
)
def test_first_start_form_names_the_field_at_fault(
    empty_database: str, username: str, password: str, confirmation: str, expected: list[str]
) -> None:
    at = open_app()
    at.text_input(key="admin_username").input(username)
    at.text_input(key="admin_password").input(password)
    at.text_input(key="admin_confirmation").input(confirmation)
    at.button[-1].click().run()

    assert errors(at) == expected
    assert SESSION_USER not in at.session_state
    assert not users.has_users(get_engine())


def test_sign_in_form_shows_once_an_account_exists(with_admin: str) -> None:
    at = open_app()

    assert titles(at) == ["Sign in"]
    assert not shows_the_app(at)


def test_signing_in_shows_the_app(with_admin: str) -> None:
    at = sign_in(open_app(), "admin", PASSWORD)

    assert at.session_state[SESSION_USER] == "admin"
    assert shows_the_app(at)
    assert any("Signed in as admin" in str(c.value) for c in at.sidebar.caption)


@pytest.mark.parametrize("username", ["admin", "nobody"])
def test_a_wrong_password_or_unknown_user_shows_the_same_error_and_no_page(
    with_admin: str, username: str
) -> None:
    at = sign_in(open_app(), username, "not the password")

    assert errors(at) == ["Wrong username or password."]
    assert SESSION_USER not in at.session_state
    assert not shows_the_app(at)


def test_repeated_failures_lock_the_account_and_say_when_to_try_again(with_admin: str) -> None:
    at = open_app()
    for _ in range(LOCKOUT_AFTER):
        sign_in(at, "admin", "not the password")
    sign_in(at, "admin", PASSWORD)  # the right password, but the account is locked

    (message,) = errors(at)
    assert message.startswith("Too many failed sign-ins. Try again after ")
    assert " UTC (in " in message
    assert SESSION_USER not in at.session_state
    assert not shows_the_app(at)


@pytest.mark.parametrize(
    ("status", "wait", "expected"),
    [
        (AuthStatus.WRONG, None, "Wrong username or password."),
        (
            AuthStatus.WRONG,
            timedelta(seconds=1),
            "Wrong username or password. Try again after 2026-03-01 14:00:01 UTC (in 1 second).",
        ),
        (
            AuthStatus.LOCKED,
            timedelta(minutes=15),
            "Too many failed sign-ins. Try again after 2026-03-01 14:15:00 UTC (in about 15 minutes).",
        ),
    ],
)
def test_failure_message_tells_when_to_try_again(
    status: AuthStatus, wait: timedelta | None, expected: str
) -> None:
    result = AuthResult(status, retry_at=NOW + wait if wait is not None else None)

    assert failure_message(result, now=NOW) == expected


# The page scripts live in views/, not pages/: Streamlit runs a `pages/` folder beside the main script as
# pages of their own (app.py and its sign-in skipped) until the process's first st.navigation call.


def test_signing_out_shows_the_sign_in_form_again(with_admin: str) -> None:
    at = sign_in(open_app(), "admin", PASSWORD)

    at.sidebar.button(key="sign_out").click().run()

    assert SESSION_USER not in at.session_state
    assert titles(at) == ["Sign in"]
    assert not shows_the_app(at)


def test_no_page_runs_without_a_signed_in_session(with_admin: str) -> None:
    at = sign_in(open_app(), "admin", PASSWORD)
    at.switch_page("views/audit.py").run()
    assert titles(at) == ["Audit log"]

    del at.session_state[SESSION_USER]  # the session no longer has a user: an expired or new session
    at.run()

    assert titles(at) == ["Sign in"]
    assert not shows_the_app(at)


def test_a_signed_in_session_reaches_the_pages(with_admin: str) -> None:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)).run()
    at.switch_page("views/audit.py").run()

    assert titles(at) == ["Audit log"]


def test_without_auth_secrets_there_is_no_single_sign_on_button(with_admin: str) -> None:
    at = open_app()

    assert [b.label for b in at.button] == ["Sign in"]


def test_auth_secrets_offer_single_sign_on(with_admin: str) -> None:
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)
    at.secrets = dict(SSO_SECRETS)
    at.user = {"is_logged_in": False}
    at.run()

    assert "Sign in with Google" in [b.label for b in at.button]
    assert not shows_the_app(at)


def test_a_single_sign_on_user_is_signed_in_by_email(with_admin: str) -> None:
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)
    at.secrets = dict(SSO_SECRETS)
    user: dict[str, Any] = {"is_logged_in": True, "email": "ada@example.com", "name": "Ada"}
    at.user = user
    at.run()

    assert not at.exception, [e.value for e in at.exception]
    assert any("Signed in as ada@example.com" in str(c.value) for c in at.sidebar.caption)


def test_st_user_is_ignored_without_auth_secrets(with_admin: str) -> None:
    at = AppTest.from_file(APP_PATH, default_timeout=RUN_TIMEOUT)
    at.user = {"is_logged_in": True, "email": "mallory@example.com"}
    at.run()

    assert titles(at) == ["Sign in"]
    assert not shows_the_app(at)
