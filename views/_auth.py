"""Sign-in in front of every page: the first-start form that creates the admin, the password form, and
single sign-on through Streamlit's OpenID Connect support (`st.login`) when `.streamlit/secrets.toml`
has an `[auth]` section.

app.py calls `require_login(engine)` before `st.navigation`, so no page script runs until someone is
signed in. The signed-in name is kept in `st.session_state[SESSION_USER]`, on the server, for one browser
session. Checking passwords and the lock-out after failed attempts live in storage.users.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import streamlit as st
from sqlalchemy.engine import Engine
from streamlit.errors import StreamlitSecretNotFoundError

from storage.types import utcnow
from storage.users import (
    AuthResult,
    AuthStatus,
    UserError,
    authenticate,
    create_first_admin,
    has_users,
    new_account_problems,
)
from views._ui import format_time

SESSION_USER = "user"  # st.session_state key holding the signed-in user's name
DEFAULT_ADMIN = "admin"


@dataclass(frozen=True)
class Provider:
    """An identity provider configured in `[auth]`: `name` is what `st.login` takes (None for the
    unnamed one configured in `[auth]` itself)."""

    name: str | None
    label: str


def require_login(engine: Engine) -> str | None:
    """The signed-in user's name; or None after drawing the sign-in (or first-start) form instead of
    any page."""
    if (sso := sso_user()) is not None:
        _sign_out_button(sso=True)
        return sso
    if user := st.session_state.get(SESSION_USER):
        _sign_out_button(sso=False)
        return str(user)
    form = _sign_in_form if has_users(engine) else _first_start_form
    # Signed out, the form is the only page registered, whatever page the URL names. (The page scripts
    # live in views/, not pages/, which Streamlit would serve on their own, without app.py.)
    page = st.navigation(
        [st.Page(_page(form, engine), title="Sign in", url_path="sign-in")], position="hidden"
    )
    page.run()
    return None


def sso_providers() -> list[Provider]:
    """The identity providers in `.streamlit/secrets.toml`'s `[auth]` section; none without the file."""
    auth = _auth_secrets()
    if "client_id" in auth:
        return [
            Provider(None, urlsplit(str(auth.get("server_metadata_url", ""))).hostname or "single sign-on")
        ]
    return [
        Provider(name, name.replace("-", " ").title())
        for name, settings in auth.items()
        if isinstance(settings, Mapping) and "client_id" in settings
    ]


def sso_user() -> str | None:
    """Who signed in through the identity provider, by e-mail (or name); None without single sign-on.

    `st.user` is only trusted when `[auth]` is configured: without it there is no identity cookie to
    read and nothing `st.user` says means anything.
    """
    if not sso_providers():
        return None
    info = st.user.to_dict()
    if info.get("is_logged_in") is not True:
        return None
    name = info.get("email") or info.get("name") or info.get("sub")
    return str(name) if name else None


# -- forms -------------------------------------------------------------------------------------------


def _page(form: Callable[[Engine], None], engine: Engine) -> Callable[[], None]:
    def sign_in_page() -> None:
        form(engine)

    return sign_in_page


def _sign_in_form(engine: Engine) -> None:
    st.title("Sign in")
    _sso_buttons()
    with st.form("sign_in"):
        username = st.text_input("Username", key="sign_in_username", autocomplete="username")
        password = st.text_input(
            "Password", type="password", key="sign_in_password", autocomplete="current-password"
        )
        submitted = st.form_submit_button("Sign in", type="primary")
    if not submitted:
        return
    if not username.strip() or not password:
        st.error("Enter your username and password.")
        return
    result = authenticate(engine, username=username, password=password)
    if result.ok and result.user is not None:
        st.session_state[SESSION_USER] = result.user.username
        st.rerun()
    st.error(failure_message(result))


def _first_start_form(engine: Engine) -> None:
    st.title("Create the admin account")
    st.write(
        "No one can sign in yet. Choose the admin's username and password; "
        "the password is kept only as an Argon2 hash."
    )
    _sso_buttons()
    with st.form("first_start"):
        username = st.text_input(
            "Username", value=DEFAULT_ADMIN, key="admin_username", autocomplete="username"
        )
        password = st.text_input(
            "Password", type="password", key="admin_password", autocomplete="new-password"
        )
        confirmation = st.text_input(
            "Confirm password", type="password", key="admin_confirmation", autocomplete="new-password"
        )
        submitted = st.form_submit_button("Create the admin account", type="primary")
    if not submitted:
        return
    problems = new_account_problems(username=username, password=password, confirmation=confirmation)
    for problem in problems.values():
        st.error(problem)
    if problems:
        return
    try:
        admin = create_first_admin(engine, username=username, password=password)
    except UserError as exc:
        st.error(exc.message)
        return
    st.session_state[SESSION_USER] = admin.username
    st.rerun()


def failure_message(result: AuthResult, *, now: datetime | None = None) -> str:
    """What a failed sign-in tells the person; the same for unknown usernames and wrong passwords."""
    if result.status is AuthStatus.LOCKED:
        text = "Too many failed sign-ins."
    else:
        text = "Wrong username or password."
    if result.retry_at is not None:
        text += (
            f" Try again after {format_time(result.retry_at, suffix=True)} ({_wait(result.retry_at, now)})."
        )
    return text


def _wait(retry_at: datetime, now: datetime | None) -> str:
    seconds = max(1, round((retry_at - (now or utcnow())).total_seconds()))
    if seconds < 90:
        return f"in {seconds} second{'s' if seconds != 1 else ''}"
    return f"in about {round(seconds / 60)} minutes"


def _sign_out_button(*, sso: bool) -> None:
    if st.sidebar.button("Sign out", key="sign_out", icon=":material/logout:"):
        st.session_state.pop(SESSION_USER, None)
        if sso:
            st.logout()  # clears the identity cookie and starts a new session
        st.rerun()


# -- single sign-on ----------------------------------------------------------------------------------


def _sso_buttons() -> None:
    providers = sso_providers()
    if not providers:
        return
    if importlib.util.find_spec("authlib") is None:
        st.warning("Single sign-on is configured in `[auth]`, but Authlib is not installed: use a password.")
        return
    for provider in providers:
        if st.button(f"Sign in with {provider.label}", key=f"sso_{provider.name or 'default'}"):
            st.login(provider.name)
    st.caption("Or sign in with a password:")


def _auth_secrets() -> Mapping[str, Any]:
    """The `[auth]` section of the secrets, or {} when there is none (or no secrets file at all)."""
    try:
        section = st.secrets.get("auth")
    except StreamlitSecretNotFoundError:  # no secrets file: st.secrets raises on any access
        return {}
    return section if isinstance(section, Mapping) else {}
