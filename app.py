"""The ml-connector web app: `streamlit run app.py`.

This file only sets the page up and routes to pages/. The database is prepared once per process by
`pages._ui.database()` (migrations to head, then the shared engine); each page asks for it again, which
costs nothing after the first run.
"""

from __future__ import annotations

import streamlit as st

from pages._ui import database, database_kind


def navigation_pages() -> list[st.Page]:
    """The pages in the order the sidebar lists them; adding a page is one line here."""
    return [
        st.Page("pages/audit.py", title="Audit log", icon=":material/receipt_long:", default=True),
    ]


def main() -> None:
    st.set_page_config(page_title="ml-connector", page_icon=":material/sync_alt:", layout="wide")
    page = st.navigation(navigation_pages())
    engine = database()
    st.sidebar.caption(f"Database: {database_kind(engine)}")
    page.run()


main()
