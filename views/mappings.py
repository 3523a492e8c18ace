"""Mappings: per flow, the rules that turn a source record into the payload we send.

Rules are edited as a table (a row per target field), checked on every edit, tried on a sample record,
and saved as a new version; history shows who changed what, with a diff and a rollback. Lookup tables
(GL account → accounting code, ...) are edited the same way. Everything the page does is a function of
`runner.mapping_admin`; this file only lays the widgets out.

A saved version changes the next sync only: past audit records keep the payload they sent and the
mapping version that made it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from runner import mapping_admin as admin
from runner.mapping_rows import COLUMNS, FLAG_COLUMNS, main_param, step_syntax
from runner.mapping_transforms import TRANSFORMS
from storage.crud import list_integrations
from storage.crypto import get_vault
from storage.lookups import lookup_versions
from storage.models import IntegrationPublic
from storage.settings import get_settings
from views._auth import SESSION_USER
from views._ui import EMPTY, database, format_time, md_code, md_escape

FLASH = "mappings_flash"  # a message to show once, after the rerun that follows a save
GENERATION = "mappings_generation"  # bumped by "Discard edits": every editor starts again from its base
CONFIRM_ROLLBACK = "mappings_confirm_rollback"
SHOW_TABLE = "mappings_show_table"  # the lookup table to select on the next run
NEW_TABLE = "__new__"
STORED, FETCH, PASTE = "Latest audit snapshot", "Fetch by id", "Paste JSON"

NO_INTEGRATION = (
    "No integration yet — mappings belong to an integration's flows. "
    "Add connections and an integration on **New integration** first."
)
NO_FLOWS = "This integration has no flows enabled, so there is nothing to map."

# What the id looks like for flows whose source id is not a plain record id.
SOURCE_ID_HINTS: dict[str, str] = {
    "zoho_change": "Zoho module and record id, e.g. Accounts/5725767000000400001",
    "subscription_event": "Zuora subscription number, optionally with its version: A-S00000001@v2",
}

TRANSFORM_HELP = (
    "Steps run left to right, separated by |. A step is a name (trim), name:argument "
    '(date:%Y-%m-%d, lookup:gl_account_charge) or name {"parameter": value} for several parameters. '
    "See the transform reference below the table."
)
RULE_COLUMNS = {
    "target": st.column_config.TextColumn("Target", help="Dotted path in the payload we send", pinned=True),
    "source": st.column_config.TextColumn(
        "Source", help="Path in the source record; several separated by commas: the first non-empty wins"
    ),
    "value": st.column_config.TextColumn("Constant", help="A fixed value instead of a source"),
    "transform": st.column_config.TextColumn("Transform", help=TRANSFORM_HELP, width="medium"),
    "default": st.column_config.TextColumn("Default", help="Used when the source is empty"),
    "required": st.column_config.CheckboxColumn("Required", help="An empty result fails the record"),
    "create_only": st.column_config.CheckboxColumn("Create only", help="Sent on create, left out of updates"),
    "flows_back": st.column_config.CheckboxColumn(
        "Flows back", help="The write-back flow may send this field back to NetSuite"
    ),
    "each": st.column_config.TextColumn(
        "Each (list)", help="For a list field: the source list mapped element by element"
    ),
    "fields": st.column_config.TextColumn(
        "List rules", disabled=True, help="Edited in the tables below", width="small"
    ),
}
NESTED_COLUMNS = {k: v for k, v in RULE_COLUMNS.items() if k not in ("create_only", "flows_back")}
LOOKUP_COLUMNS = {
    "key": st.column_config.TextColumn("Key", help="The value the mapping looks up (compared as text)"),
    "value": st.column_config.TextColumn("Value", help="What it stands for (JSON when it is not text)"),
}
NOTE_COLUMNS = {
    "target": st.column_config.TextColumn("Target"),
    "source": st.column_config.TextColumn("From"),
    "value": st.column_config.TextColumn("Value"),
    "note": st.column_config.TextColumn("What happened", width="medium"),
    "error": st.column_config.TextColumn("Error", width="medium"),
}


def main() -> None:
    engine = database()
    st.title("Mappings")
    st.caption(
        "How each flow turns a source record into what it sends. Saving makes a new version: the next "
        "sync uses it, and past audit records keep the version they were made with."
    )
    flash = st.session_state.pop(FLASH, None)
    if flash:
        st.success(flash, icon=":material/check_circle:")
    integrations = list_integrations(engine)
    if not integrations:
        st.info(NO_INTEGRATION, icon=":material/schema:")
        return
    integration = pick_integration(integrations)
    flows = admin.flows_of(engine, integration_id=integration.id)
    if not flows:
        st.info(NO_FLOWS, icon=":material/schema:")
        return
    current = pick_flow(integration.id, flows)
    tables = {table.name: table.rows for table in admin.lookup_tables(engine, integration_id=integration.id)}
    rules_tab, preview_tab, history_tab, lookups_tab = st.tabs(
        ["Rules", "Preview", "History", "Lookup tables"]
    )
    with rules_tab:
        edited = rules_panel(engine, integration.id, current, tables)
    with preview_tab:
        preview_panel(engine, integration.id, current, edited, tables)
    with history_tab:
        history_panel(engine, integration.id, current)
    with lookups_tab:
        lookup_panel(engine, integration.id, flows)


def pick_integration(integrations: Sequence[IntegrationPublic]) -> IntegrationPublic:
    if len(integrations) == 1:
        return integrations[0]
    by_id = {i.id: i for i in integrations}
    chosen = st.selectbox(
        "Integration", list(by_id), format_func=lambda i: by_id[i].name, key="mappings_integration"
    )
    return by_id[chosen]


def pick_flow(integration_id: int, flows: Sequence[admin.FlowMapping]) -> admin.FlowMapping:
    by_name = {f.name: f for f in flows}
    name = st.selectbox(
        "Flow",
        list(by_name),
        # The version is shown below, not in the option: a selectbox keeps the label it first drew.
        format_func=lambda n: by_name[n].flow.title,
        key=f"mappings_flow_{integration_id}",
    )
    current = by_name[name]
    if current.version == admin.DEFAULT_VERSION:
        st.markdown(f"Active: **{current.label}** — no version saved yet; saving makes version 1.")
    else:
        st.markdown(
            f"Active: **{current.label}**, saved by {md_escape(current.created_by or EMPTY)} "
            f"on {format_time(current.created_at, suffix=True)}."
        )
    return current


# --- rules -------------------------------------------------------------------------------------------
def rules_panel(
    engine: Engine, integration_id: int, current: admin.FlowMapping, tables: Mapping[str, Any]
) -> dict[str, Any]:
    """The rule editor, its problems and the save button; returns the edited spec (for the preview)."""
    key = f"mappings_rules_{integration_id}_{current.name}_{current.version}_{_generation()}"
    base_rows = admin.rows_of(current.spec)
    required = ", ".join(md_code(f) for f in current.flow.required_fields) or "none"
    st.caption(f"Fields this flow cannot do without: {required}.")
    edited = st.data_editor(
        _rules_frame(base_rows),
        key=key,
        num_rows="dynamic",
        hide_index=True,
        column_config=RULE_COLUMNS,
        column_order=list(COLUMNS),
        width="stretch",
    )
    rows = _records(edited)
    for row in rows:
        row["fields"] = None
        if row.get("each"):
            row["fields"] = list_rules_editor(key, row, base_rows)
    draft = admin.draft(rows, base=current.spec, flow=current.flow, tables=tables)
    problems_box(draft.problems)
    next_version = _next_version(engine, integration_id, current.name)
    with st.container(horizontal=True):
        validate = st.button("Validate", key="mappings_validate", icon=":material/rule:")
        save = st.button(
            f"Save as version {next_version}",
            key="mappings_save",
            type="primary",
            disabled=not (draft.valid and draft.changed),
            help=None if draft.changed else "Nothing edited yet",
        )
        discard = st.button("Discard edits", key="mappings_discard", disabled=not draft.changed)
    if validate and draft.valid:
        st.success("No problems: every rule reads, and the flow's required fields are mapped.")
    if discard:
        _restart_editors()
    if save:
        _save(engine, integration_id, current, draft)
    transform_reference()
    return draft.spec


def list_rules_editor(key: str, row: Mapping[str, Any], base_rows: Sequence[Mapping[str, Any]]) -> list[Any]:
    """The rules of one list rule (`each`), in a table of their own; returns its rows."""
    target = str(row.get("target") or "")
    base = next((r for r in base_rows if r["target"] == target and r.get("fields") is not None), None)
    st.markdown(
        f"**{md_escape(target or '(no target)')}** · one object per element of {md_code(row['each'])}"
    )
    st.caption('Sources are read from each element; start a path with "$." to read the whole record.')
    edited = st.data_editor(
        _rules_frame(base["fields"] if base else []),
        key=f"{key}_each_{target}",
        num_rows="dynamic",
        hide_index=True,
        column_config=NESTED_COLUMNS,
        column_order=[c for c in COLUMNS if c in NESTED_COLUMNS],
        width="stretch",
    )
    nested = _records(edited)
    base_nested = {r["target"]: r for r in (base["fields"] if base else [])}
    for item in nested:
        # A nested list rule keeps its own rules (one level of tables is what the page edits).
        found = base_nested.get(str(item.get("target") or ""))
        item["fields"] = found.get("fields") if found and item.get("each") else None
    return nested


def problems_box(problems: Sequence[str], *, heading: str = "fix them to save") -> None:
    """Every problem as a bullet ("field: problem"), under a count."""
    if not problems:
        return
    listed = "\n".join(f"- {md_escape(problem)}" for problem in problems)
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    st.error(f"**{count}** — {heading}:\n\n{listed}", icon=":material/error:")


def _save(engine: Engine, integration_id: int, current: admin.FlowMapping, draft: admin.Draft) -> None:
    try:
        saved = admin.save(
            engine, integration_id=integration_id, flow=current.name, spec=draft.spec, created_by=_user()
        )
    except admin.InvalidMapping as exc:
        problems_box(exc.problems)
        return
    st.session_state[FLASH] = f"Saved {current.flow.title} as version {saved.version}: the next sync uses it."
    st.rerun()


def transform_reference() -> None:
    with st.expander("Transform reference"):
        rows = [
            {
                "step": step_syntax(name),
                "what it does": transform.help,
                "parameters": ", ".join(
                    f"{p}{' (required)' if spec.required else ''}{' ← argument' if p == main_param(name) else ''}"
                    for p, spec in transform.params.items()
                ),
            }
            for name, transform in TRANSFORMS.items()
        ]
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
        st.caption(
            "Constants, defaults and arguments read as JSON when they are JSON (1, true, null, "
            '"007" for the text 007) and as text otherwise. Write text with spaces at its ends, or with '
            '| " { } [ ], as a JSON string: concat:", ".'
        )


# --- preview -----------------------------------------------------------------------------------------
def preview_panel(
    engine: Engine,
    integration_id: int,
    current: admin.FlowMapping,
    spec: Mapping[str, Any],
    tables: Mapping[str, Any],
) -> None:
    """The edited mapping tried on a sample record, redone on every edit."""
    st.caption("The rules as edited (saved or not) tried on one source record. Nothing is sent anywhere.")
    choice = st.radio("Sample record", [STORED, FETCH, PASTE], horizontal=True, key="mappings_sample_source")
    sample = _sample(engine, integration_id, current, choice)
    if sample is None:
        return
    st.caption(f"Sample: {md_escape(sample.origin)}")
    if sample.attempts:
        with st.expander(f"HTTP calls made to fetch it ({len(sample.attempts)})"):
            for attempt in sample.attempts:
                st.text(f"{attempt.method} {attempt.url} → {attempt.status or attempt.error}")
    result = admin.try_mapping(spec, sample, flow=current.flow, tables=tables)
    if result.errors:
        problems_box(result.errors, heading="this record would fail")
    else:
        st.success("This record maps without errors.", icon=":material/check_circle:")
    payload, notes = st.columns([2, 3])
    with payload:
        st.markdown("**Payload**")
        st.json(result.payload, expanded=True)
    with notes:
        st.markdown("**Field by field**")
        st.dataframe(
            pd.DataFrame(admin.note_rows(result), columns=list(NOTE_COLUMNS)),
            hide_index=True,
            column_config=NOTE_COLUMNS,
            width="stretch",
        )
    with st.expander("Source record"):
        st.json(sample.record, expanded=False)


def _sample(
    engine: Engine, integration_id: int, current: admin.FlowMapping, choice: str | None
) -> admin.Sample | None:
    flow = current.flow
    if choice == FETCH:
        fetched_key = f"mappings_fetched_{integration_id}_{current.name}"
        hint = SOURCE_ID_HINTS.get(current.name, f"{flow.source_system} {flow.source_record or 'record'} id")
        left, right = st.columns([3, 1], vertical_alignment="bottom")
        source_id = left.text_input("Record id", key=f"mappings_fetch_id_{current.name}", placeholder=hint)
        if right.button("Fetch", key="mappings_fetch", icon=":material/download:"):
            try:
                with st.spinner(f"Fetching from {flow.source_system}…"):
                    st.session_state[fetched_key] = admin.fetch_sample(
                        engine,
                        get_vault(),
                        get_settings(),
                        integration_id=integration_id,
                        flow=current.name,
                        source_id=source_id,
                    )
            except admin.SampleUnavailable as exc:
                st.error(md_escape(str(exc)), icon=":material/error:")
                return None
        sample = st.session_state.get(fetched_key)
        if sample is None:
            st.caption(f"Type an id ({md_escape(hint)}) and fetch: the flow reads it the way its jobs do.")
        return sample
    if choice == PASTE:
        text = st.text_area(
            "Source record (JSON)", key="mappings_paste", height=200, placeholder='{"id": "42", ...}'
        )
        if not text.strip():
            st.caption("Paste one source record as a JSON object.")
            return None
        try:
            return admin.parse_sample(text)
        except admin.SampleUnavailable as exc:
            st.error(md_escape(str(exc)), icon=":material/error:")
            return None
    sample = admin.stored_sample(engine, integration_id=integration_id, flow=current.name)
    if sample is None:
        st.info(
            "The audit log holds no source record of this flow yet: fetch one by id, or paste one.",
            icon=":material/inbox:",
        )
    return sample


# --- history -----------------------------------------------------------------------------------------
def history_panel(engine: Engine, integration_id: int, current: admin.FlowMapping) -> None:
    versions = admin.history(engine, integration_id=integration_id, flow=current.name)
    specs = {v.version: v.spec for v in versions}
    specs[admin.DEFAULT_VERSION] = current.flow.default_mapping
    numbers = [*(v.version for v in versions), admin.DEFAULT_VERSION]  # newest first
    rows = []
    for index, number in enumerate(numbers):
        stored = next((v for v in versions if v.version == number), None)
        older = numbers[index + 1] if index + 1 < len(numbers) else None
        rows.append(
            {
                "version": admin.version_label(number),
                "active": number == current.version,
                "saved by": stored.created_by if stored else "",
                "saved at (UTC)": format_time(stored.created_at) if stored else "",
                "changes": admin.changes(specs[older], specs[number]).summary() if older is not None else "",
            }
        )
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    if len(numbers) < 2:
        st.caption("Only the built-in default so far: saved versions appear here, newest first.")
        return
    st.markdown("**Compare two versions**")
    left, right = st.columns(2)
    after = left.selectbox(
        "To", numbers, format_func=admin.version_label, key=f"mappings_diff_to_{current.name}"
    )
    before = right.selectbox(
        "From",
        numbers,
        index=min(numbers.index(after) + 1, len(numbers) - 1),
        format_func=admin.version_label,
        key=f"mappings_diff_from_{current.name}_{after}",
    )
    text = admin.diff(
        specs[before],
        specs[after],
        old_label=admin.version_label(before),
        new_label=admin.version_label(after),
    )
    st.caption(admin.changes(specs[before], specs[after]).summary())
    if text:
        st.code(text, language="diff")
    rollback_box(engine, integration_id, current, [n for n in numbers if n != current.version])


def rollback_box(engine: Engine, integration_id: int, current: admin.FlowMapping, choices: list[int]) -> None:
    st.markdown("**Roll back**")
    left, right = st.columns([2, 1], vertical_alignment="bottom")
    version = left.selectbox(
        "Make this version active again",
        choices,
        format_func=admin.version_label,
        key=f"mappings_rollback_{current.name}",
    )
    if right.button("Roll back…", key="mappings_rollback"):
        st.session_state[CONFIRM_ROLLBACK] = (integration_id, current.name, version)
    if st.session_state.get(CONFIRM_ROLLBACK) != (integration_id, current.name, version):
        return
    st.warning(
        f"Save {admin.version_label(version)} again as the newest version? The next sync uses it; "
        "history and past audit records stay as they are.",
        icon=":material/history:",
    )
    yes, no, _ = st.columns([1, 1, 3])
    if no.button("Cancel", key="mappings_rollback_cancel"):
        del st.session_state[CONFIRM_ROLLBACK]
        st.rerun()
    if yes.button("Yes, roll back", key="mappings_rollback_confirm", type="primary"):
        del st.session_state[CONFIRM_ROLLBACK]
        try:
            saved = admin.rollback(
                engine, integration_id=integration_id, flow=current.name, version=version, created_by=_user()
            )
        except admin.InvalidMapping as exc:
            problems_box(exc.problems)
            return
        st.session_state[FLASH] = (
            f"Rolled back: {admin.version_label(version)} is active again, saved as version {saved.version}."
        )
        _restart_editors()


# --- lookup tables -----------------------------------------------------------------------------------
def lookup_panel(engine: Engine, integration_id: int, flows: Sequence[admin.FlowMapping]) -> None:
    st.caption(
        "Tables a mapping's lookup step reads (lookup:<table>). Saving makes a new version of the table; "
        "the next sync of every flow that names it uses it."
    )
    tables = {t.name: t for t in admin.lookup_tables(engine, integration_id=integration_id)}
    select_key = f"mappings_lookup_table_{integration_id}"
    if SHOW_TABLE in st.session_state:  # a table just saved (perhaps a new one) stays selected
        st.session_state[select_key] = st.session_state.pop(SHOW_TABLE)
    name = st.selectbox(
        "Table",
        [*tables, NEW_TABLE],
        format_func=lambda n: "New table…" if n == NEW_TABLE else n,
        key=select_key,
    )
    if name == NEW_TABLE:
        name = st.text_input(
            "Name", key="mappings_lookup_new_name", placeholder="lower-case letters, digits and _"
        ).strip()
        table = admin.LookupTable(name, {}, "", admin.DEFAULT_VERSION)
    else:
        table = tables[name]
        saved = (
            "starter table (never saved for this integration)"
            if table.version == admin.DEFAULT_VERSION
            else f"version {table.version}, saved by {md_escape(table.created_by or EMPTY)} "
            f"on {format_time(table.created_at, suffix=True)}"
        )
        used = [
            f"{md_escape(f.name)} → {md_code(target)}"
            for f in flows
            for target in admin.tables_used(f.spec).get(name, [])
        ]
        readers = f"read by {', '.join(used)}" if used else "no active mapping of this integration reads it"
        st.caption(f"Active: {saved} · {readers}.")
    key = f"mappings_lookup_{integration_id}_{table.name}_{table.version}_{_generation()}"
    description = st.text_input("Description", value=table.description, key=f"{key}_description")
    edited = st.data_editor(
        pd.DataFrame(admin.lookup_rows(table.rows), columns=list(LOOKUP_COLUMNS), dtype=object),
        key=key,
        num_rows="dynamic",
        hide_index=True,
        column_config=LOOKUP_COLUMNS,
        width="stretch",
    )
    rows, problems = admin.rows_to_lookup(_records(edited))
    if not table.name:
        problems = ["give the new table a name", *problems]
    problems_box(problems)
    changed = rows != table.rows or description != table.description
    if st.button(
        f"Save table as version {_next_table_version(engine, integration_id, table.name)}",
        key="mappings_lookup_save",
        type="primary",
        disabled=bool(problems) or not changed,
    ):
        try:
            saved_row = admin.save_lookup_table(
                engine,
                integration_id=integration_id,
                name=table.name,
                rows=rows,
                description=description,
                created_by=_user(),
            )
        except admin.InvalidMapping as exc:
            problems_box(exc.problems)
            return
        st.session_state[FLASH] = f"Saved lookup table {table.name} as version {saved_row.version}."
        st.session_state[SHOW_TABLE] = table.name
        _restart_editors()
    versions = lookup_versions(engine, integration_id=integration_id, name=table.name) if table.name else []
    if versions:
        with st.expander(f"Versions of {table.name} ({len(versions)})"):
            st.dataframe(
                pd.DataFrame(
                    [
                        {
                            "version": v.version,
                            "active": v.active,
                            "rows": len((v.spec or {}).get("rows") or {}),
                            "saved by": v.created_by,
                            "saved at (UTC)": format_time(v.created_at),
                        }
                        for v in versions
                    ]
                ),
                hide_index=True,
                width="stretch",
            )


# --- helpers -----------------------------------------------------------------------------------------
def _rules_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows for the editor: text columns as text, tick boxes as booleans, list rules summarised."""
    shown = []
    for row in rows:
        nested = row.get("fields")
        shown.append({**row, "fields": f"{len(nested)} rules ↓" if nested is not None else ""})
    frame = pd.DataFrame(shown, columns=list(COLUMNS))
    for column in COLUMNS:
        frame[column] = frame[column].astype(bool if column in FLAG_COLUMNS else object)
    return frame


def _records(frame: Any) -> list[dict[str, Any]]:
    return list(frame.to_dict("records")) if isinstance(frame, pd.DataFrame) else list(frame or [])


def _next_version(engine: Engine, integration_id: int, flow: str) -> int:
    versions = admin.history(engine, integration_id=integration_id, flow=flow)
    return (versions[0].version if versions else 0) + 1


def _next_table_version(engine: Engine, integration_id: int, name: str) -> int:
    if not name:
        return 1
    versions = lookup_versions(engine, integration_id=integration_id, name=name)
    return (versions[0].version if versions else 0) + 1


def _generation() -> int:
    return int(st.session_state.get(GENERATION, 0))


def _restart_editors() -> None:
    """Start every editor again from the (possibly new) active version, then rerun."""
    st.session_state[GENERATION] = _generation() + 1
    st.rerun()


def _user() -> str:
    return str(st.session_state.get(SESSION_USER) or "admin")


main()
