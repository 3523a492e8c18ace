"""Connections: does each system still accept our credentials, and the integrations' webhook secrets and
backfills.

Every action is a `runner.connection_admin` or `runner.backfill` call made in a button's callback, so
the page then renders the state it left behind; what the action said is kept in the session for that
one render (a freshly rotated secret is shown exactly once). Secrets are never shown otherwise.

A NetSuite connection in authorization code mode has a Connect to NetSuite button, and a Zoho CRM
connection takes a self-client grant code: both get a new refresh token through `runner.consent`. This
page is the redirect URI NetSuite sends people back to, so it also finishes an approval that comes back
in the address (`?code=…&state=…`: the approval was made in this browser tab rather than a pop-up).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine

from runner import consent
from runner.backfill import BackfillProgress, BackfillRefused, start_backfill
from runner.backfill import backfill_progress as backfill_progress_of
from runner.connection_admin import (
    ConnectionStatus,
    IntegrationAdmin,
    connection_overview,
    integration_overview,
    reping,
    rotate_secret,
)
from runner.health import describe_duration, system_title
from runner.onboarding import InputError
from storage import crud
from storage.crypto import get_vault
from storage.settings import get_settings
from storage.types import utcnow
from views._auth import SESSION_USER, sso_user
from views._ui import app_url, consent_return, consent_window, database, format_time, md_code, md_escape

ONBOARDING_PAGE = "views/onboarding.py"
BACKFILL_REFRESH = 3.0  # seconds between progress refreshes while a backfill runs
FLASH = "connections_flash"  # session key: what the last action said, shown on the next render only
APPROVALS = "connections_approvals"  # session key: the NetSuite approval prepared per connection id
WIZARD = "onb"  # views/onboarding.py's session key, restored when its approval ends on this page
WIZARD_PATH = "onboarding"  # views/onboarding.py's URL path, the origin of the approvals it starts
PAGE_PATH = "connections"  # this page's URL path (from its file name): where NetSuite sends people back
CLOSED_EARLY = "The NetSuite window was closed before access was approved: press Connect to NetSuite again."

PING_BADGES = {
    "ok": ":green-badge[:material/check_circle: connected]",
    "failed": ":red-badge[:material/error: failing]",
    "never": ":gray-badge[:material/help: never pinged]",
}
TOKEN_BADGES = {
    "valid": ":green-badge[valid]",
    "expiring": ":orange-badge[expiring]",
    "expired": ":orange-badge[expired]",
    "failing": ":red-badge[refresh failing]",
    "cooling down": ":red-badge[cooling down]",
    "none": ":gray-badge[none yet]",
}
# Grace choices for a rotation: label → seconds the old secret keeps working (None: the integration's).
GRACE_CHOICES: dict[str, float | None] = {
    "Default": None,
    "1 hour": 3600.0,
    "Revoke the old one now": 0.0,
}

NO_CONNECTIONS = (
    "No connections yet. Set up an integration first: it asks for each system's credentials and pings "
    "them before saving."
)


def main() -> None:
    engine = database()
    st.title("Connections")
    st.caption(
        "Whether each system still accepts the saved credentials, the access token the runner holds, "
        "and each integration's webhook secrets and backfills."
    )
    if (returned := consent_return()) is not None:
        approval_returned(returned)
    statuses = connection_overview(engine)
    if not statuses:
        st.info(NO_CONNECTIONS, icon=":material/cable:")
        st.page_link(ONBOARDING_PAGE, label="Set up an integration", icon=":material/add_link:")
        return
    kinds = {c.id: consent.approval_kind(c) for c in crud.list_connections(engine)}
    for status in statuses:
        connection_card(status, kinds.get(status.id))
    integrations = integration_overview(engine, get_vault())
    if integrations:
        st.header("Integrations")
        names = {s.id: s.name for s in statuses}
        for admin in integrations:
            integration_card(engine, admin, names)


# --- connections ------------------------------------------------------------------------------


def connection_card(status: ConnectionStatus, approval: str | None = None) -> None:
    with st.container(border=True):
        head, action = st.columns([5, 1], vertical_alignment="center")
        head.markdown(
            f"#### {md_escape(status.name)} · {md_escape(status.system_title)} &nbsp; {PING_BADGES[status.ping_state]}"
        )
        where = " · ".join(md_escape(p) for p in (status.workspace, status.environment, status.base_url) if p)
        head.caption(where)
        action.button(
            "Ping now",
            key=f"ping_{status.id}",
            icon=":material/network_check:",
            on_click=_ping,
            args=(status.id,),
            width="stretch",
        )
        _flash(f"ping_{status.id}")
        ping, token, used = st.columns([2, 2, 1])
        with ping:
            st.caption("Last ping")
            if status.last_ping_at is None:
                st.markdown("Never pinged: press **Ping now**.")
            else:
                age = describe_duration((utcnow() - status.last_ping_at).total_seconds())
                st.markdown(f"{format_time(status.last_ping_at, suffix=True)} ({age} ago)")
                if status.last_ping_message:
                    st.markdown(md_escape(status.last_ping_message))
        with token:
            st.caption("Access token")
            st.markdown(_token_text(status))
        with used:
            st.caption("Used by")
            st.markdown("  \n".join(md_escape(n) for n in status.integrations) or "no integration")
        if approval == consent.NETSUITE:
            netsuite_approval(status)
        elif approval == consent.ZOHO:
            zoho_grant_code(status)


def _token_text(status: ConnectionStatus) -> str:
    token = status.token
    if token is None or token.state == "none":
        return f"{TOKEN_BADGES['none']} minted on first use"
    parts = [TOKEN_BADGES.get(token.state, token.state)]
    if token.time_to_expiry is not None:
        left = token.time_to_expiry
        parts.append(
            f"expires in {describe_duration(left)}" if left > 0 else f"expired {describe_duration(-left)} ago"
        )
    if token.refreshed_at is not None:
        parts.append(f"refreshed {format_time(token.refreshed_at, suffix=True)}")
    if token.failures:
        parts.append(f"{token.failures} failed refresh{'es' if token.failures > 1 else ''}")
    if token.cooldown_until is not None and token.state == "cooling down":
        parts.append(f"next try after {format_time(token.cooldown_until, suffix=True)}")
    if token.reason:
        parts.append(md_escape(token.reason))
    return " · ".join(parts)


def _ping(connection_id: int) -> None:
    """Button callback: ping the connection again; the page then renders the verdict it stored."""
    try:
        result = reping(database(), get_vault(), connection_id=connection_id, sandbox=get_settings().sandbox)
    except LookupError as exc:
        _set_flash(f"ping_{connection_id}", "error", str(exc))
        return
    if result.ok:
        _set_flash(f"ping_{connection_id}", "success", f"{result.message} in {result.latency_ms:.0f} ms.")
    else:
        _set_flash(f"ping_{connection_id}", "error", f"{system_title(result.system)}: {result.message}")


# --- new refresh tokens (runner.consent) -------------------------------------------------------


def netsuite_approval(status: ConnectionStatus) -> None:
    """Connect to NetSuite: approve access in a NetSuite window, which gives a new refresh token."""
    try:
        start = consent.reuse_or_start(
            consent.get_book(), st.session_state.setdefault(APPROVALS, {}), status.id,
            lambda: consent.start_netsuite_consent(
                database(), get_vault(), book=consent.get_book(), user=signed_in_user(),
                redirect_uri=consent.redirect_uri_for(app_url(PAGE_PATH)), sandbox=get_settings().sandbox,
                connection_id=status.id,
            ),
        )  # fmt: skip
    except (InputError, LookupError) as exc:
        st.warning(f"Approval in NetSuite cannot start: {md_escape(str(exc))}", icon=":material/warning:")
        return
    st.caption(
        "Authorization code: NetSuite's refresh token lasts 7 days unless the integration record says "
        "otherwise. Approve access again to get a new one."
    )
    returned = consent_window(
        url=start.url, state=start.state, label="Connect to NetSuite", key=f"connect_{status.id}"
    )
    st.caption(f"Redirect URI on the integration record: {md_code(start.redirect_uri)}")
    _flash(f"approval_{status.id}")
    if returned is not None:
        _approved_in_window(status.id, returned)


def _approved_in_window(connection_id: int, returned: dict[str, Any]) -> None:
    """The NetSuite window came back (or was closed): finish the approval, then draw the page again."""
    key, user = f"approval_{connection_id}", signed_in_user()
    if returned.get("closed"):
        outcome = consent.consent_outcome(consent.get_book(), state=str(returned.get("state")), user=user)
        if isinstance(outcome, consent.Approved):
            _set_flash(key, "success", outcome.message)
        else:
            _set_flash(key, "error", CLOSED_EARLY if outcome is None else outcome.message)
    else:
        try:
            approved = _finish(returned)
        except consent.ConsentError as exc:
            _set_flash(key, "error", exc.message)
        else:
            _set_flash(
                key, "success" if approved.ping is None or approved.ping.ok else "error", approved.message
            )
    st.session_state.get(APPROVALS, {}).pop(connection_id, None)
    st.rerun()


def approval_returned(returned: dict[str, str]) -> None:
    """NetSuite sent this tab back with the outcome in its address: finish, and say how it went."""
    try:
        approved = _finish(returned)
    except consent.ConsentError as exc:
        st.error(md_escape(exc.message), icon=":material/error:")
        return
    if approved.ping is None or approved.ping.ok:
        st.success(md_escape(approved.message), icon=":material/check_circle:")
    else:
        st.warning(md_escape(approved.message), icon=":material/warning:")
    if approved.origin == WIZARD_PATH and approved.resume:
        # Started in the wizard: put it back where it was, with the connection just saved.
        wizard = dict(approved.resume)
        wizard["connections"] = {
            **wizard.get("connections", {}),
            approved.connection.system: approved.connection.id,
        }
        st.session_state[WIZARD] = wizard
        st.page_link(ONBOARDING_PAGE, label="Back to the new integration", icon=":material/add_link:")


def _finish(returned: Mapping[str, Any]) -> consent.Approved:
    return consent.finish_netsuite_consent(
        database(), get_vault(), book=consent.get_book(), user=signed_in_user(),
        state=str(returned.get("state") or ""), code=str(returned.get("code") or ""),
        error=str(returned.get("error") or ""), error_description=str(returned.get("error_description") or ""),
        sandbox=get_settings().sandbox,
    )  # fmt: skip


def zoho_grant_code(status: ConnectionStatus) -> None:
    """A new refresh token from a grant code pasted from Zoho's API console."""
    with st.expander("New refresh token from a grant code"):
        st.caption(
            "In Zoho's API console (Self Client > Generate Code) enter these scopes, then paste the code here "
            "within its few minutes. It must come from the data centre this connection uses."
        )
        st.code(consent.ZOHO_SCOPES, language=None)
        st.text_input("Grant code", type="password", key=f"grant_code_{status.id}")
        st.button(
            "Exchange for a refresh token", key=f"exchange_{status.id}", icon=":material/key:",
            on_click=_exchange_grant_code, args=(status.id,),
        )  # fmt: skip
    _flash(f"exchange_{status.id}")


def _exchange_grant_code(connection_id: int) -> None:
    """Button callback: exchange the pasted code, and forget it either way (it works once)."""
    key = f"exchange_{connection_id}"
    code = str(st.session_state.get(f"grant_code_{connection_id}") or "")
    st.session_state[f"grant_code_{connection_id}"] = ""
    try:
        approved = consent.exchange_zoho_grant_code(
            database(), get_vault(), code=code, sandbox=get_settings().sandbox, connection_id=connection_id,
            verify=True,
        )  # fmt: skip
    except (InputError, LookupError) as exc:
        problems = exc.problems.values() if isinstance(exc, InputError) else [str(exc)]
        _set_flash(key, "error", " ".join(problems))
        return
    _set_flash(key, "success" if approved.ping is None or approved.ping.ok else "error", approved.message)


def signed_in_user() -> str:
    """Who is signed in (app.py lets no page run otherwise): approvals are bound to them."""
    return sso_user() or str(st.session_state.get(SESSION_USER) or "")


# --- integrations -----------------------------------------------------------------------------


def integration_card(engine: Engine, admin: IntegrationAdmin, names: dict[int, str]) -> None:
    with st.container(border=True):
        state = "" if admin.active else " &nbsp; :gray-badge[inactive]"
        st.markdown(f"#### {md_escape(admin.name)}{state}")
        source, target = (
            names.get(i, f"#{i}") for i in (admin.source_connection_id, admin.target_connection_id)
        )
        flows = ", ".join(admin.flows) or "none"
        st.caption(
            f"{md_escape(source)} → {md_escape(target)} · key {md_code(admin.key)} · flows: {md_escape(flows)}"
        )
        secrets_column, backfill_column = st.columns(2, gap="large")
        with secrets_column:
            webhook_secrets(admin)
        with backfill_column:
            backfills(engine, admin)


def webhook_secrets(admin: IntegrationAdmin) -> None:
    st.markdown("**Webhook secrets**")
    if not admin.secrets:
        st.caption("No system of this integration sends webhooks signed with a secret.")
        return
    for secret in admin.secrets:
        line = f"{md_escape(secret.title)}: " + ("set" if secret.is_set else ":red[not set]")
        if secret.rotated_at is not None:
            line += f" · rotated {format_time(secret.rotated_at, suffix=True)}"
        if secret.previous_valid_until is not None:
            line += f" · the previous one works until {format_time(secret.previous_valid_until, suffix=True)}"
        st.markdown(line)
    titles = {s.name: s.title for s in admin.secrets}
    pick, grace = st.columns(2)
    name = pick.selectbox(
        "Secret", list(titles), format_func=titles.__getitem__, key=f"secret_name_{admin.id}"
    )
    default = f"Default ({describe_duration(admin.default_grace)})"
    choice = grace.selectbox(
        "Keep the old one working",
        list(GRACE_CHOICES),
        format_func=lambda c: default if c == "Default" else c,
        key=f"secret_grace_{admin.id}",
        help="How long senders may still use the old secret, so they can switch over without losing events. "
        "Revoke at once only when the old secret leaked.",
    )
    st.button(
        "Rotate secret",
        key=f"rotate_{admin.id}",
        icon=":material/key:",
        on_click=_rotate,
        args=(admin.id, name, GRACE_CHOICES[choice]),
    )
    _flash(f"rotate_{admin.id}")


def _rotate(integration_id: int, name: str, grace_seconds: float | None) -> None:
    """Button callback: rotate, and keep the new value for the next render only."""
    key = f"rotate_{integration_id}"
    try:
        rotated = rotate_secret(
            database(), get_vault(), integration_id=integration_id, name=name, grace_seconds=grace_seconds
        )
    except (ValueError, LookupError) as exc:
        _set_flash(key, "error", str(exc))
        return
    until = (
        f"The old one keeps working until {format_time(rotated.previous_valid_until, suffix=True)}."
        if rotated.previous_valid_until is not None
        else "The old one no longer works."
    )
    message = f"New {rotated.title}. Copy it now: it is not shown again. {rotated.where} {until}"
    _set_flash(key, "secret", message, secret=rotated.secret)


def backfills(engine: Engine, admin: IntegrationAdmin) -> None:
    st.markdown("**Backfill**")
    if not admin.backfillable:
        st.caption("No flow of this integration reads a NetSuite table, so there is nothing to backfill.")
        return
    flow = st.selectbox(
        "Flow",
        list(admin.backfillable),
        format_func=lambda f: f"{admin.backfillable[f]} ({f})",
        key=f"backfill_flow_{admin.id}",
        help="Queues a sync of every existing record of the flow's NetSuite table, a page at a time.",
    )
    from_start = st.checkbox(
        "From the start",
        key=f"backfill_from_start_{admin.id}",
        help="A failed backfill resumes from where it stopped unless this is ticked.",
    )
    st.button(
        "Start backfill",
        key=f"backfill_{admin.id}",
        icon=":material/playlist_add:",
        on_click=_start_backfill,
        args=(admin.id, flow, from_start),
    )
    _flash(f"backfill_{admin.id}")
    live = any(p.status == "running" for p in latest_backfills(engine, admin))
    st.fragment(backfill_progress, run_every=BACKFILL_REFRESH if live else None)(admin, live)


def latest_backfills(engine: Engine, admin: IntegrationAdmin) -> list[BackfillProgress]:
    """The latest backfill of each backfillable flow that ever had one."""
    found = (backfill_progress_of(engine, integration_id=admin.id, flow=f) for f in admin.backfillable)
    return [p for p in found if p is not None]


def backfill_progress(admin: IntegrationAdmin, live: bool) -> None:
    """A progress bar per flow's latest backfill, re-read each time the fragment refreshes; once none
    is running any more, the whole page reruns so the refreshing stops."""
    found = latest_backfills(database(), admin)
    if live and not any(p.status == "running" for p in found):
        st.rerun()
    for progress in found:
        st.progress(progress.fraction, text=_progress_text(progress, admin.backfillable))
        if progress.note:
            st.caption(md_escape(progress.note))


def _progress_text(progress: BackfillProgress, titles: dict[str, str]) -> str:
    title = titles.get(progress.flow, progress.flow)
    settled = progress.done + progress.failed + progress.skipped
    of = "?" if progress.total is None else f"{progress.total:,}"
    failed = f", {progress.failed:,} failed" if progress.failed else ""
    return f"{title} · {progress.status} · {settled:,} of {of} records{failed} · started {format_time(progress.started_at)}"


def _start_backfill(integration_id: int, flow: str, from_start: bool) -> None:
    """Button callback: queue the backfill (the runner pages through it) or say why not."""
    key = f"backfill_{integration_id}"
    user = str(st.session_state.get(SESSION_USER) or "app")
    try:
        job = start_backfill(
            database(), integration_id=integration_id, flow=flow, requested_by=user, from_start=from_start
        )
    except BackfillRefused as exc:
        _set_flash(key, "error", str(exc))
        return
    _set_flash(key, "success", f"Backfill queued (job {job.id}); the runner pages through it from here.")


# --- what an action said, for one render ------------------------------------------------------


def _set_flash(key: str, kind: str, message: str, **extra: Any) -> None:
    st.session_state[FLASH] = {"key": key, "kind": kind, "message": message, **extra}


def _flash(key: str) -> None:
    """Show, then forget, what the action behind `key` said."""
    flash = st.session_state.get(FLASH)
    if not flash or flash.get("key") != key:
        return
    del st.session_state[FLASH]
    message = md_escape(flash["message"])
    if flash["kind"] == "success":
        st.success(message, icon=":material/check_circle:")
    elif flash["kind"] == "secret":
        st.warning(message, icon=":material/key:")
        st.code(flash["secret"], language=None)
    else:
        st.error(message, icon=":material/error:")


main()
