"""Workspaces: one per customer, each with its connections and integrations.

Create and rename workspaces, see whether each integration is active or paused, and pause or resume it.
New integrations are made by the onboarding wizard; every action here is a call into `runner.onboarding`.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from runner import onboarding
from runner.onboarding import InputError, IntegrationView, WorkspaceView
from storage.models import ConnectionPublic
from views._ui import EMPTY, database, format_time, md_code, md_escape

STATUS_BADGES = {
    "active": ":green-badge[:material/play_arrow: active]",
    "paused": ":gray-badge[:material/pause: paused]",
}
NO_WORKSPACES = (
    "No workspaces yet: create one below, or start the New integration wizard, which makes one too."
)
CONNECTION_COLUMNS = ["Name", "System", "Where", "Base URL", "Last ping"]


def main() -> None:
    engine = database()
    st.title("Workspaces")
    st.caption("One workspace per customer: its connections, and the integrations between them.")
    st.page_link("views/onboarding.py", label="New integration", icon=":material/add_link:")
    overview = onboarding.workspaces_overview(engine)
    if not overview:
        st.info(NO_WORKSPACES, icon=":material/workspaces:")
    for view in overview:
        with st.container(border=True):
            workspace_card(engine, view)
    create_form(engine)


def create_form(engine: Engine) -> None:
    with st.form("ws_create", clear_on_submit=True):
        st.markdown("**New workspace**")
        name = st.text_input("Workspace name", key="ws_new_name", placeholder="e.g. Acme Corp")
        if not st.form_submit_button("Create workspace", key="ws_create_submit"):
            return
    try:
        created = onboarding.create_workspace(engine, name=name)
    except InputError as exc:
        for message in exc.problems.values():
            st.error(message, icon=":material/error:")
        return
    st.toast(f"Workspace {created.name} created", icon=":material/check:")
    st.rerun()


def workspace_card(engine: Engine, view: WorkspaceView) -> None:
    workspace = view.workspace
    st.subheader(workspace.name)
    st.caption(
        f"Created {format_time(workspace.created_at, suffix=True)} · "
        f"{len(view.integrations)} integration(s) · {len(view.connections)} connection(s)"
    )
    if not view.integrations:
        st.caption("No integrations yet.")
    for item in view.integrations:
        integration_row(engine, item)
    if view.connections:
        st.caption("Connections")
        rows = [
            [c.name, onboarding.spec_of(c.system).title, c.environment or EMPTY, c.base_url, _ping(c)]
            for c in view.connections
        ]
        st.dataframe(pd.DataFrame(rows, columns=CONNECTION_COLUMNS), hide_index=True, width="stretch")
    with st.expander("Rename"), st.form(f"ws_rename_{workspace.id}", border=False):
        name = st.text_input("New name", value=workspace.name, key=f"ws_rename_name_{workspace.id}")
        if st.form_submit_button("Rename", key=f"ws_rename_submit_{workspace.id}"):
            try:
                onboarding.rename_workspace(engine, workspace_id=workspace.id or 0, name=name)
            except InputError as exc:
                for message in exc.problems.values():
                    st.error(message, icon=":material/error:")
            else:
                st.rerun()


def integration_row(engine: Engine, item: IntegrationView) -> None:
    """One integration: name and status, its pair and flows, and a pause/resume button."""
    integration = item.integration
    text, action = st.columns([6, 1], vertical_alignment="center")
    text.markdown(f"**{md_escape(integration.name)}** {STATUS_BADGES[item.status]}")
    source = md_escape(item.source.name) if item.source else EMPTY
    target = md_escape(item.target.name) if item.target else EMPTY
    text.caption(
        f"{source} → {target} · flows: {md_escape(', '.join(integration.flows) or 'none')} · "
        f"key {md_code(integration.key)}"
    )
    label = "Pause" if integration.active else "Resume"
    if action.button(
        label,
        key=f"ws_toggle_{integration.id}",
        icon=":material/pause:" if integration.active else ":material/play_arrow:",
    ):
        onboarding.set_active(engine, integration_id=integration.id, active=not integration.active)
        st.rerun()


def _ping(connection: ConnectionPublic) -> str:
    if connection.last_ping_ok is None:
        return "never"
    outcome = "ok" if connection.last_ping_ok else "failed"
    return f"{outcome} · {format_time(connection.last_ping_at)}"


main()
