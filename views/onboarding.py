"""New integration: a six-step wizard from choosing the pair to switching the integration on.

1 pair, workspace and name · 2 credentials per system (forms generated from the connectors' declared
fields) · 3 ping each system · 4 review the default mappings · 5 webhook settings to paste into NetSuite
and Zuora, and the Zoho channel · 6 activate.

Every action is a call into `runner.onboarding`; the wizard's own state (step, ids, ping outcomes) lives
in `st.session_state[WIZARD]` and never holds a secret: credential widgets are cleared once saved, and
webhook secrets are read from the database each time step 5 draws them.

Refresh tokens the person has no way to type come through `runner.consent`: NetSuite in authorization
code mode is saved by approving access in a NetSuite window (Connect to NetSuite, after the form), and a
Zoho CRM form takes a self-client grant code instead of a refresh token.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from connectors.errors import ConfigurationError
from connectors.netsuite.spec import AUTH_CODE
from connectors.registry import default_base_url
from connectors.spec import CredentialField
from runner import consent, onboarding
from runner import onboarding_webhooks as webhooks
from runner.onboarding import BASE_URL, NAME, PAIRS, InputError
from storage import crud
from storage.crypto import Vault, get_vault
from storage.models import ConnectionPublic
from storage.settings import get_settings
from views._auth import SESSION_USER, sso_user
from views._ui import app_url, consent_return, consent_window, database, format_time, md_code, md_escape

WIZARD = "onb"  # st.session_state key of the wizard's state; widget keys start with "onb_"
STEPS = ("Pair", "Credentials", "Ping", "Mappings", "Webhooks", "Activate")
NEW = 0  # the "create a new one" option of a picker (ids start at 1)
SAVED_SECRET = "saved — enter a new value to replace"
MODE_LABELS = {"m2m": "M2M (certificate)", "auth_code": "Authorization code", "tba": "Token-based (TBA)"}
APPROVALS = "onb_approvals"  # session key: NetSuite approvals prepared by the credentials step
CLOSED_EARLY = "The NetSuite window was closed before access was approved: press Connect to NetSuite again."
ORIGIN = "onboarding"  # this page's URL path, recorded on approvals started here
GRANT_CODE_HELP = (
    "Instead of a refresh token: in Zoho's API console choose Self Client > Generate Code with the scopes "
    f"{consent.ZOHO_SCOPES}, and paste the code. It is exchanged for a refresh token when you save; codes "
    "last a few minutes, work once, and only in the data centre chosen above."
)


def main() -> None:
    engine, vault = database(), get_vault()
    wizard = state()
    st.title("New integration")
    st.caption("Connect NetSuite to Zuora or Zoho CRM for one customer: six steps, each saved as you go.")
    if (returned := consent_return()) is not None:
        approval_returned(engine, vault, wizard, returned)
    progress(wizard["step"])
    STEP_PAGES[wizard["step"] - 1](engine, vault, wizard)


def state() -> dict[str, Any]:
    """The wizard's state, created on first visit."""
    if WIZARD not in st.session_state:
        st.session_state[WIZARD] = {
            "step": 1,
            "pair": None,
            "workspace_id": None,
            "name": "",
            "connections": {},
            "forms": {},  # system → generation of its form's widget keys (bumped to clear them)
            "pings": {},
            "integration_id": None,
        }
    return st.session_state[WIZARD]


def progress(step: int) -> None:
    st.progress(step / len(STEPS), text=f"Step {step} of {len(STEPS)} · {STEPS[step - 1]}")
    st.caption(" → ".join(f"**{name}**" if i == step else name for i, name in enumerate(STEPS, start=1)))


def go(wizard: dict[str, Any], step: int) -> None:
    wizard["step"] = step
    st.rerun()


def nav(wizard: dict[str, Any], *, forward: str | None = "Continue", ready: bool = True) -> bool:
    """Back and forward buttons; returns whether forward was clicked."""
    with st.container(horizontal=True):
        back = wizard["step"] > 1 and st.button("Back", key=f"onb_back_{wizard['step']}")
        forth = forward is not None and st.button(
            forward, key=f"onb_next_{wizard['step']}", type="primary", disabled=not ready
        )
    if back:
        go(wizard, wizard["step"] - 1)
    return bool(forth)


def show_problems(problems: Mapping[str, str]) -> None:
    for message in problems.values():
        st.error(message, icon=":material/error:")


# --- 1 pair ---------------------------------------------------------------------------------------


def step_pair(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    # Once the integration exists, its pair, workspace and name are what they are.
    locked = wizard["integration_id"] is not None
    pair = st.radio(
        "Systems", list(PAIRS), format_func=lambda k: PAIRS[k].title, horizontal=True, key="onb_pair",
        index=list(PAIRS).index(wizard["pair"]) if wizard["pair"] in PAIRS else 0, disabled=locked,
    )  # fmt: skip
    names = {w.id: w.name for w in crud.list_workspaces(engine)}
    options = [*names, NEW]
    chosen = wizard["workspace_id"] if wizard["workspace_id"] in names else options[0]
    workspace_id = st.selectbox(
        "Workspace (one per customer)", options, index=options.index(chosen), key="onb_workspace",
        format_func=lambda v: "New workspace…" if v == NEW else names[v], disabled=locked,
    )  # fmt: skip
    new_name = ""
    if workspace_id == NEW:
        new_name = st.text_input("New workspace name", key="onb_workspace_name", placeholder="e.g. Acme Corp")
    name = st.text_input(
        "Integration name", key="onb_name", value=wizard["name"], placeholder=PAIRS[pair].title,
        help="How the audit log and the workspaces page call this integration.", disabled=locked,
    )  # fmt: skip
    if not nav(wizard):
        return
    if workspace_id == NEW:
        try:
            workspace_id = onboarding.create_workspace(engine, name=new_name).id
        except InputError as exc:
            show_problems(exc.problems)
            return
    if locked:
        go(wizard, 2)
    if (wizard["pair"], wizard["workspace_id"]) != (pair, workspace_id):  # other connections are needed
        wizard["connections"], wizard["pings"] = {}, {}
    wizard.update(pair=pair, workspace_id=workspace_id, name=name.strip() or PAIRS[pair].title)
    go(wizard, 2)


# --- 2 credentials --------------------------------------------------------------------------------


def step_credentials(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    st.write("Enter each system's credentials. Secrets are encrypted when saved and never shown again.")
    sandbox = get_settings().sandbox
    if sandbox:
        st.info(
            "Sandbox mode: a base URL may point at an emulator on this machine (Advanced).",
            icon=":material/science:",
        )
    pair = PAIRS[wizard["pair"]]
    for system in pair.systems:
        with st.container(border=True):
            connection_form(engine, vault, wizard, system, sandbox=sandbox)
    ready = all(wizard["connections"].get(system) for system in pair.systems)
    if nav(wizard, ready=ready):
        go(wizard, 3)


def connection_form(
    engine: Engine, vault: Vault, wizard: dict[str, Any], system: str, *, sandbox: bool
) -> None:
    """Pick an existing connection of the workspace or a new one, and edit it in a generated form."""
    spec = onboarding.spec_of(system)
    st.subheader(spec.title)
    existing = {
        c.id: c
        for c in crud.list_connections(engine, workspace_id=wizard["workspace_id"])
        if c.system == system
    }
    if system not in wizard["connections"] and existing:
        # A workspace's second integration usually shares its NetSuite: offer the newest one first.
        wizard["connections"][system] = max(existing)
    current = wizard["connections"].get(system)
    options = [NEW, *existing]
    pick_key = f"onb_{system}_pick"
    # The wizard's choice drives the picker (set before it is drawn), so a connection just saved shows as
    # picked in the browser too; picking another one updates the wizard through on_change.
    st.session_state[pick_key] = current if current in existing else NEW
    connection_id = st.selectbox(
        "Connection", options, key=pick_key,
        format_func=lambda v: "New connection" if v == NEW else existing[v].name,
        # Once the integration exists its connections are fixed; their credentials stay editable.
        disabled=wizard["integration_id"] is not None,
        on_change=lambda: wizard["connections"].update({system: st.session_state[pick_key] or None}),
    )  # fmt: skip
    loaded = existing.get(connection_id)
    if loaded is not None:
        ping = (
            "never pinged"
            if loaded.last_ping_ok is None
            else ("last ping ok" if loaded.last_ping_ok else "last ping failed")
        )
        st.caption(f"Saved · {md_code(loaded.base_url)} · {md_escape(loaded.environment or '—')} · {ping}")
    settings = dict(loaded.settings) if loaded else {}
    mode = None
    if modes := onboarding.auth_modes(system):
        default = settings.get(onboarding.AUTH_MODE) or spec.default_mode
        mode = st.segmented_control(
            "Authentication", list(modes), default=default, required=True,
            key=f"onb_{system}_{connection_id}_mode", format_func=lambda m: MODE_LABELS.get(m, m),
            help=next(f.help for f in spec.fields if f.name == onboarding.AUTH_MODE),
        )  # fmt: skip
    saved = (
        onboarding.stored_secret_names(engine, vault, connection_id=connection_id) if loaded else frozenset()
    )
    generation = wizard["forms"].get(system, 0)
    prefix = f"onb_{system}_{connection_id}_{mode}_{generation}_"
    with st.form(f"{prefix}form", border=False):
        name = st.text_input(
            "Connection name", value=loaded.name if loaded else spec.title, key=f"{prefix}{NAME}"
        )
        values = {
            f.name: field_widget(f, settings.get(f.name, ""), f.name in saved, f"{prefix}{f.name}")
            for f in onboarding.form_fields(system, mode)
        }
        grant_code = ""
        if system == consent.ZOHO:
            grant_code = st.text_input(
                "Grant code (self client, optional)", type="password", key=f"{prefix}{consent.GRANT_CODE}",
                help=GRANT_CODE_HELP,
            )  # fmt: skip
        with st.expander("Advanced: base URL"):
            implied = _implied_base_url(system, settings)
            base_url = st.text_input(
                "Base URL", value=loaded.base_url if loaded and loaded.base_url != implied else "",
                key=f"{prefix}{BASE_URL}", placeholder=implied or "from the fields above",
                help=f"Leave empty to use the address the fields above imply. Only {spec.title}'s own hosts "
                "are allowed" + (", or an emulator on this machine (sandbox mode)." if sandbox else "."),
            )  # fmt: skip
        submitted = st.form_submit_button(f"Save {spec.title} connection", key=f"onb_{system}_save")
    if submitted:
        form = Form(system, loaded.id if loaded else None, prefix, name, {**values, onboarding.AUTH_MODE: mode or ""},
                    base_url, grant_code, consent.REFRESH_TOKEN in saved)  # fmt: skip
        save_form(engine, vault, wizard, form, sandbox=sandbox)
    if mode == AUTH_CODE:
        netsuite_approval(engine, vault, wizard, system, loaded, sandbox=sandbox)


@dataclass(frozen=True)
class Form:
    """A submitted connection form: its widgets' key prefix and what they held."""

    system: str
    connection_id: int | None
    prefix: str
    name: str
    values: dict[str, str]
    base_url: str
    grant_code: str
    has_refresh_token: bool  # the connection holds one already


def save_form(engine: Engine, vault: Vault, wizard: dict[str, Any], form: Form, *, sandbox: bool) -> None:
    """Save the connection; or, when its refresh token is still to come, prepare the approval that brings it
    (NetSuite) or exchange the grant code pasted for it (Zoho CRM)."""
    common = dict(workspace_id=wizard["workspace_id"], connection_id=form.connection_id, values=form.values,
                 name=form.name, base_url=form.base_url, sandbox=sandbox)  # fmt: skip
    awaiting = form.values.get(onboarding.AUTH_MODE) == AUTH_CODE
    awaiting = awaiting and not form.values.get(consent.REFRESH_TOKEN) and not form.has_refresh_token
    connection = None
    try:
        if awaiting:
            # The fields wait, encrypted, with the approval; the connection is saved once NetSuite says yes.
            approvals()[form.system] = consent.start_netsuite_consent(
                engine, vault, book=consent.get_book(), user=signed_in_user(), origin=ORIGIN,
                redirect_uri=consent.redirect_uri_for(app_url(ORIGIN)), resume=copy.deepcopy(wizard), **common,
            )  # fmt: skip
        elif form.grant_code.strip():
            connection = consent.exchange_zoho_grant_code(
                engine, vault, code=form.grant_code, **common
            ).connection
        else:
            connection = onboarding.save_connection(engine, vault, system=form.system, **common)
    except InputError as exc:
        show_problems(exc.problems)
        return
    # The form's widgets held the secrets as typed: drop them, and draw the next form under new keys.
    for key in [k for k in st.session_state if str(k).startswith(form.prefix)]:
        del st.session_state[key]
    wizard["forms"][form.system] = wizard["forms"].get(form.system, 0) + 1
    if connection is not None:
        wizard["connections"][form.system] = connection.id
        wizard["pings"].pop(form.system, None)
        st.toast(f"{onboarding.spec_of(form.system).title} connection saved", icon=":material/check:")
    st.rerun()


def approvals() -> dict[Any, consent.ConsentStart]:
    return st.session_state.setdefault(APPROVALS, {})


def netsuite_approval(
    engine: Engine,
    vault: Vault,
    wizard: dict[str, Any],
    system: str,
    loaded: ConnectionPublic | None,
    *,
    sandbox: bool,
) -> None:
    """Connect to NetSuite: the approval prepared by the form just saved, or, for a connection saved in
    authorization code mode already, a new approval that renews its refresh token."""
    book = consent.get_book()
    start = approvals().get(system)
    if start is not None and not book.is_open(start.state):
        approvals().pop(system, None)
        start = None
    if start is None and loaded is not None and loaded.settings.get(onboarding.AUTH_MODE) == AUTH_CODE:
        try:
            start = consent.reuse_or_start(
                book, approvals(), ("saved", loaded.id),
                lambda: consent.start_netsuite_consent(
                    engine, vault, book=book, user=signed_in_user(), connection_id=loaded.id, sandbox=sandbox,
                    redirect_uri=consent.redirect_uri_for(app_url(ORIGIN)), origin=ORIGIN,
                    resume=copy.deepcopy(wizard),
                ),
            )  # fmt: skip
        except (InputError, LookupError) as exc:
            st.warning(f"Approval in NetSuite cannot start: {md_escape(str(exc))}", icon=":material/warning:")
            return
    if start is None:
        st.caption(
            "Save the form, then approve access in NetSuite: that gives the refresh token, so leave it empty."
        )
        return
    st.info(
        "Approve access in NetSuite: sign in there with the role the integration should use and choose "
        "Allow. The connection is saved with the refresh token NetSuite gives.",
        icon=":material/open_in_new:",
    )
    returned = consent_window(
        url=start.url, state=start.state, label="Connect to NetSuite", key=f"onb_connect_{system}"
    )
    st.caption(f"Redirect URI on the integration record: {md_code(start.redirect_uri)}")
    if returned is None:
        return
    approvals().pop(system, None)
    if returned.get("closed"):
        outcome = consent.consent_outcome(book, state=str(returned.get("state")), user=signed_in_user())
        if not isinstance(outcome, consent.Approved):
            st.error(
                md_escape(outcome.message if outcome is not None else CLOSED_EARLY), icon=":material/error:"
            )
            return
        approved = outcome
    else:
        try:
            approved = finish(engine, vault, returned)
        except consent.ConsentError as exc:
            st.error(md_escape(exc.message), icon=":material/error:")
            return
    apply_approval(wizard, approved)
    st.toast(approved.message, icon=":material/check:")
    st.rerun()


def approval_returned(
    engine: Engine, vault: Vault, wizard: dict[str, Any], returned: Mapping[str, str]
) -> None:
    """NetSuite sent this tab back with the outcome in its address (the approval was made here rather than
    in a pop-up): finish it, and carry on where the wizard was."""
    try:
        approved = finish(engine, vault, returned)
    except consent.ConsentError as exc:
        st.error(md_escape(exc.message), icon=":material/error:")
        return
    if wizard["workspace_id"] is None and approved.origin == ORIGIN and approved.resume:
        wizard.update(copy.deepcopy(approved.resume))  # a new browser session: the wizard as it was
    apply_approval(wizard, approved)
    st.success(md_escape(approved.message), icon=":material/check_circle:")


def finish(engine: Engine, vault: Vault, returned: Mapping[str, Any]) -> consent.Approved:
    return consent.finish_netsuite_consent(
        engine, vault, book=consent.get_book(), user=signed_in_user(), state=str(returned.get("state") or ""),
        code=str(returned.get("code") or ""), error=str(returned.get("error") or ""),
        error_description=str(returned.get("error_description") or ""), sandbox=get_settings().sandbox,
    )  # fmt: skip


def apply_approval(wizard: dict[str, Any], approved: consent.Approved) -> None:
    """The approved connection becomes the wizard's, with the ping made right after as its ping."""
    system = approved.connection.system
    wizard["connections"][system] = approved.connection.id
    wizard["forms"][system] = wizard["forms"].get(system, 0) + 1
    if approved.ping is None:
        wizard["pings"].pop(system, None)
    else:
        ping = approved.ping
        wizard["pings"][system] = {"ok": ping.ok, "latency_ms": ping.latency_ms, "message": ping.message}


def signed_in_user() -> str:
    """Who is signed in (app.py lets no page run otherwise): approvals are bound to them."""
    return sso_user() or str(st.session_state.get(SESSION_USER) or "")


def field_widget(spec_field: CredentialField, current: str, saved: bool, key: str) -> str:
    """One declared field as a widget: a picker for choices, a masked input for secrets (never filled in)."""
    label = spec_field.title + ("" if spec_field.required else " (optional)")
    if spec_field.choices:
        options = list(spec_field.choices)
        index = options.index(current) if current in options else None
        return (
            st.selectbox(label, options, index=index, key=key, help=spec_field.help, placeholder="Choose…")
            or ""
        )
    if spec_field.secret:
        placeholder = SAVED_SECRET if saved else ""
        if spec_field.multiline:  # a PEM key needs its line breaks, which a one-line input drops
            return st.text_area(
                label, key=key, help=spec_field.help, placeholder=placeholder or "-----BEGIN …"
            )
        return st.text_input(label, type="password", key=key, help=spec_field.help, placeholder=placeholder)
    return st.text_input(label, value=str(current or ""), key=key, help=spec_field.help)


def _implied_base_url(system: str, settings: Mapping[str, Any]) -> str:
    try:
        return default_base_url(system, dict(settings))
    except ConfigurationError:  # the fields are not filled in yet: nothing is implied
        return ""


# --- 3 ping ---------------------------------------------------------------------------------------


def step_ping(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    st.write("Ping each system: the real sign-in plus one cheap call, timed.")
    pair = PAIRS[wizard["pair"]]
    if st.button("Ping both", key="onb_ping_all", icon=":material/network_ping:"):
        for system in pair.systems:
            run_ping(engine, vault, wizard, system)
    for system in pair.systems:
        with st.container(border=True):
            title = onboarding.spec_of(system).title
            left, right = st.columns([5, 1], vertical_alignment="center")
            left.subheader(title)
            if right.button("Ping", key=f"onb_ping_{system}"):
                run_ping(engine, vault, wizard, system)
            show_ping(title, wizard["pings"].get(system))
    ready = all((wizard["pings"].get(s) or {}).get("ok") for s in pair.systems)
    if not ready:
        st.caption("Both systems must answer before you continue; go back to fix credentials.")
    if nav(wizard, ready=ready):
        go(wizard, 4)


def run_ping(engine: Engine, vault: Vault, wizard: dict[str, Any], system: str) -> None:
    with st.spinner(f"Pinging {onboarding.spec_of(system).title}…"):
        result = onboarding.ping(
            engine, vault, connection_id=wizard["connections"][system], sandbox=get_settings().sandbox
        )
    wizard["pings"][system] = {"ok": result.ok, "latency_ms": result.latency_ms, "message": result.message}


def show_ping(title: str, outcome: Mapping[str, Any] | None) -> None:
    if outcome is None:
        st.caption("Not pinged yet.")
        return
    latency = f"{outcome['latency_ms']:.0f} ms"
    if outcome["ok"]:
        st.success(
            f"**{title}** answered in {latency}. {md_escape(outcome['message'])}",
            icon=":material/check_circle:",
        )
    else:
        st.error(
            f"**{title}** failed after {latency}. {md_escape(outcome['message'])}", icon=":material/error:"
        )


# --- 4 mappings -----------------------------------------------------------------------------------


def step_mappings(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    st.write(
        "Each flow starts with these field mappings. Review them here; change them on the Mappings page."
    )
    for review in onboarding.flow_reviews(wizard["pair"]):
        st.markdown(f"**{md_escape(review.title)}** · {md_code(review.name)}")
        st.dataframe(pd.DataFrame(review.rows), hide_index=True, width="stretch")
    st.page_link("views/mappings.py", label="Mappings page", icon=":material/schema:")
    created = wizard["integration_id"] is not None
    if not nav(wizard, forward="Continue" if created else "Create the integration (paused)"):
        return
    if not created:
        try:
            integration = onboarding.create_integration(
                engine, vault, workspace_id=wizard["workspace_id"], name=wizard["name"], pair=wizard["pair"],
                connection_ids=wizard["connections"],
            )  # fmt: skip
        except InputError as exc:
            show_problems(exc.problems)
            return
        wizard["integration_id"] = integration.id
    go(wizard, 5)


# --- 5 webhooks -----------------------------------------------------------------------------------


def step_webhooks(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    settings = get_settings()
    setup = webhooks.webhook_setup(
        engine, vault, integration_id=wizard["integration_id"], runner_url=settings.runner_url
    )
    st.write(
        "Tell each system where to send changes. Copy the secrets now: once this wizard is done they are not "
        "shown again (the Connections page rotates them to give you new ones)."
    )
    if not setup.public and settings.sandbox:
        st.info(
            f"Sandbox mode: the emulators call the runner at {md_code(settings.runner_url)}.",
            icon=":material/science:",
        )
    elif not setup.public:
        st.warning(
            f"The runner's address {md_code(settings.runner_url)} is not https. NetSuite and Zuora only "
            "call https URLs with a public certificate: set ML_CONNECTOR_PUBLIC_URL to the runner's public "
            "address.",
            icon=":material/warning:",
        )
    for system in PAIRS[wizard["pair"]].systems:
        with st.container(border=True):
            WEBHOOK_SECTIONS[system](engine, vault, wizard, setup)
    if nav(wizard):
        go(wizard, 6)


def netsuite_section(
    engine: Engine, vault: Vault, wizard: dict[str, Any], setup: webhooks.WebhookSetup
) -> None:
    st.subheader("NetSuite: the change-notice script")
    st.write("Deploy the User Event script and give it these two parameters.")
    st.caption("Runner URL (custscript_ml_connector_url)")
    st.code(setup.netsuite_url, language=None)
    st.caption("Shared secret (custscript_ml_connector_secret)")
    st.code(setup.netsuite_secret, language=None)
    name, script = webhooks.suitescript()
    st.download_button(
        f"Download {name}", script, file_name=name, mime="application/javascript", key="onb_suitescript",
        icon=":material/download:",
    )  # fmt: skip
    with st.expander("Install steps"):
        st.markdown(webhooks.install_guide())


def zuora_section(engine: Engine, vault: Vault, wizard: dict[str, Any], setup: webhooks.WebhookSetup) -> None:
    st.subheader("Zuora: the callout template")
    st.write(
        "In Zuora (Extension Studio → Events & Notifications), give each callout template these settings."
    )
    rows = webhooks.zuora_callout_settings(setup.zuora_url, setup.zuora_secret)
    public = [(setting, value) for setting, value in rows if value != setup.zuora_secret]
    st.table(pd.DataFrame(public, columns=["Setting", "Value"]).set_index("Setting"))
    st.caption("Callout URL")
    st.code(setup.zuora_url, language=None)
    st.caption("HMAC secret (hmacSecret)")
    st.code(setup.zuora_secret, language=None)
    st.caption(
        "Request body: a JSON object with these keys, null when one does not apply. Where no merge field is "
        "named, pick the matching one with the template's Insert merge fields."
    )
    body = pd.DataFrame(webhooks.CALLOUT_BODY, columns=["Key", "Holds", "Merge field"])
    st.table(body.set_index("Key"))
    with st.expander("Every setting as text"):
        st.code(webhooks.zuora_callout_text(setup.zuora_url, setup.zuora_secret), language=None)


def zoho_section(engine: Engine, vault: Vault, wizard: dict[str, Any], setup: webhooks.WebhookSetup) -> None:
    st.subheader("Zoho CRM: the notification channel")
    channel = webhooks.zoho_channel(engine, integration_id=wizard["integration_id"])
    if channel is None:  # made for the person: nothing to paste into Zoho
        with st.spinner("Creating the Zoho notification channel…"):
            provision(engine, vault, wizard)
        channel = webhooks.zoho_channel(engine, integration_id=wizard["integration_id"])
    if channel is not None and channel.status == "active":
        st.success(
            f"Channel {md_code(channel.channel_id)} is enabled until "
            f"{format_time(channel.expires_at, suffix=True)}; the runner renews it before then.",
            icon=":material/check_circle:",
        )
        return
    problem = channel.last_error if channel is not None else "not created"
    st.error(f"Zoho did not enable the channel: {md_escape(problem or '')}", icon=":material/error:")
    if st.button("Try again", key="onb_channel_retry"):
        provision(engine, vault, wizard)
        st.rerun()


def provision(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    settings = get_settings()
    webhooks.provision_zoho_channel(
        engine, vault, integration_id=wizard["integration_id"], runner_url=settings.runner_url,
        sandbox=settings.sandbox,
    )  # fmt: skip


WEBHOOK_SECTIONS: dict[str, Callable[[Engine, Vault, dict[str, Any], webhooks.WebhookSetup], None]] = {
    "netsuite": netsuite_section,
    "zuora": zuora_section,
    "zoho": zoho_section,
}


# --- 6 activate -----------------------------------------------------------------------------------


def step_activate(engine: Engine, vault: Vault, wizard: dict[str, Any]) -> None:
    integration = crud.get_integration(engine, integration_id=wizard["integration_id"])
    assert integration is not None
    pair = PAIRS[wizard["pair"]].title
    st.markdown(f"**{md_escape(integration.name)}**" + (f" · {pair}" if integration.name != pair else ""))
    st.caption("Flows: " + ", ".join(integration.flows))
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        connection = crud.get_connection(engine, connection_id=connection_id)
        if connection is not None:
            ok = "answered its last ping" if connection.last_ping_ok else "has not answered a ping"
            icon = ":material/check_circle:" if connection.last_ping_ok else ":material/error:"
            st.markdown(f"{icon} {md_escape(onboarding.spec_of(connection.system).title)} {ok}")
    if integration.active:
        st.success("Active: the runner syncs changes from now on.", icon=":material/check_circle:")
        st.page_link("views/workspaces.py", label="Workspaces", icon=":material/workspaces:")
        st.page_link("views/audit.py", label="Audit log", icon=":material/receipt_long:")
        if st.button("Set up another integration", key="onb_restart"):
            for key in [k for k in st.session_state if str(k).startswith(WIZARD)]:
                del st.session_state[key]
            st.rerun()
        return
    if not nav(wizard, forward="Activate"):
        return
    try:
        onboarding.activate(engine, integration_id=integration.id or 0)
    except InputError as exc:
        show_problems(exc.problems)
        return
    st.rerun()


STEP_PAGES = (step_pair, step_credentials, step_ping, step_mappings, step_webhooks, step_activate)

main()
