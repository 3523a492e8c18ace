"""The ml-connector web app: `streamlit run app.py`.

This file only sets the page up and routes to views/. The database is prepared once per process by
`views._ui.database()` (migrations to head, then the shared engine); each page asks for it again, which
costs nothing after the first run.
"""

from __future__ import annotations

import streamlit as st

from views._auth import require_login
from views._ui import database, database_kind

CONSENT_PAGES = ("connections", "onboarding")  # pages that finish a NetSuite approval from the address


def navigation_pages() -> dict[str, list[st.Page]]:
    """The pages by sidebar section, in order; adding a page is one line here."""
    return {
        "Operate": [
            st.Page("views/health.py", title="Health", icon=":material/monitor_heart:", default=True),
            st.Page("views/audit.py", title="Audit log", icon=":material/receipt_long:"),
            st.Page("views/triage.py", title="Error triage", icon=":material/troubleshoot:"),
            st.Page("views/reconcile.py", title="Reconciliation", icon=":material/fact_check:"),
            st.Page("views/alerts.py", title="Alerts", icon=":material/notifications_active:"),
        ],
        "Set up": [
            st.Page("views/workspaces.py", title="Workspaces", icon=":material/workspaces:"),
            st.Page("views/onboarding.py", title="New integration", icon=":material/add_link:"),
            st.Page("views/connections.py", title="Connections", icon=":material/cable:"),
            st.Page("views/mappings.py", title="Mappings", icon=":material/schema:"),
        ],
    }


def main() -> None:
    st.set_page_config(page_title="ml-connector", page_icon=":material/sync_alt:", layout="wide")
    engine = database()
    user = require_login(engine)
    if user is None:
        return  # the sign-in form is showing
    page = st.navigation(navigation_pages())
    params = st.query_params
    if "state" in params and ("code" in params or "error" in params) and page.url_path not in CONSENT_PAGES:
        # NetSuite sent this tab back from its consent page, and signing in again (a new session) landed
        # it elsewhere: the Connections page finishes the approval, whichever page started it.
        st.switch_page("views/connections.py", query_params=params.to_dict())
    st.sidebar.caption(f"Signed in as {user} · database: {database_kind(engine)}")
    page.run()


main()
