"""Audit log: every record a flow touched — what was read, what was sent, what came back.

Filtering, counting and pagination happen in the database through `storage.audit`; this page lays out
the widgets and hands their values over. A record is picked by clicking its row in the list or by
typing its id in "Record id" (which also makes the selection shareable as `?record=<id>`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from pages._ui import (
    ERROR_CLASS_HINTS,
    TIME_RANGES,
    attempt_rows,
    database,
    excerpt_for_display,
    format_duration,
    format_time,
    md_code,
    md_escape,
    outcome_badge,
    outcome_cell_css,
    outcome_counts,
    outcome_style,
    record_rows,
    since_for,
    state_signature,
)
from storage.audit import AuditFilter, count_records, get_record, list_records
from storage.crud import list_integrations
from storage.models import AuditAttempt, AuditRecord, Outcome
from storage.types import utcnow

PAGE_SIZE = 50  # records per page of the list
RECORD_KEY = "record"  # also the query parameter that links to one record
DEFAULT_RANGE = "Last week"
ALL = "all"

EMPTY_DATABASE = (
    "No audit records yet — records appear here once the runner syncs something. "
    "Add connections and an integration, then start the runner with `python -m runner`."
)
NO_MATCH = "No records match these filters — widen the time range or clear a filter."
NOTHING_SELECTED = "Click a row in the list, or type a record id, to see what was read, sent and answered."

RECORD_COLUMNS = {
    "id": st.column_config.NumberColumn("#", format="%d", width=50),
    "time": st.column_config.TextColumn("Time (UTC)"),
    "flow": st.column_config.TextColumn("Flow"),
    "integration": st.column_config.TextColumn("Integration"),
    "source_id": st.column_config.TextColumn("Source id"),
    "target_id": st.column_config.TextColumn("Target id"),
    "action": st.column_config.TextColumn("Action", width="small"),
    "outcome": st.column_config.TextColumn("Outcome"),
    "error_class": st.column_config.TextColumn("Error class", width="small"),
    "error": st.column_config.TextColumn("Error", width="medium"),
}

ATTEMPT_COLUMNS = {
    "seq": st.column_config.NumberColumn("#", format="%d", width="small"),
    "time": st.column_config.TextColumn("Time (UTC)"),
    "system": st.column_config.TextColumn("System"),
    "method": st.column_config.TextColumn("Method"),
    "url": st.column_config.TextColumn("URL"),
    "status": st.column_config.NumberColumn("Status", format="%d"),
    "duration_ms": st.column_config.NumberColumn("Duration (ms)", format="%.1f"),
    "error": st.column_config.TextColumn("Error", width="medium"),
}


def main() -> None:
    """Render the page: filters, counts, the list, then the selected record."""
    engine = database()
    st.title("Audit log")
    st.caption("Every record the runner synced: what it read, what it sent, and what came back.")
    if count_records(engine) == 0:
        st.info(EMPTY_DATABASE, icon=":material/inbox:")
        return
    integrations = {i.id: i for i in list_integrations(engine)}
    names = {integration_id: i.name for integration_id, i in integrations.items()}
    flows = sorted({flow for i in integrations.values() for flow in i.flows})
    filters, signature = filter_bar(names, flows)
    total = count_records(engine, filters=filters)
    metric_row(engine, filters, total)
    # With a single integration (or one picked) the column would repeat one name on every row.
    show_integration = len(names) > 1 and filters.integration_id is None
    record_list(engine, filters, total, names, signature, show_integration=show_integration)
    st.divider()
    record_detail(engine, names)


def filter_bar(names: Mapping[int, str], flows: Sequence[str]) -> tuple[AuditFilter, str]:
    """The filter widgets; returns the filter and a digest that changes whenever a filter does."""
    with st.container(border=True):
        first = st.columns([2.2, 1, 1])
        outcome = first[0].segmented_control(
            "Outcome",
            [ALL, *Outcome],
            default=ALL,
            required=True,
            format_func=_outcome_option,
            key="audit_outcome",
        )
        time_range = first[1].selectbox(
            "Time range", list(TIME_RANGES), index=list(TIME_RANGES).index(DEFAULT_RANGE), key="audit_range"
        )
        error_class = first[2].selectbox(
            "Error class",
            [None, *ERROR_CLASS_HINTS],
            format_func=lambda v: "Any error class" if v is None else v,
            key="audit_error_class",
            help="config: fix a connection · transient: retried automatically · "
            "remote: the record was rejected · bug: report it",
        )
        second = st.columns(4)
        flow = second[0].selectbox(
            "Flow", [None, *flows], format_func=lambda v: "All flows" if v is None else v, key="audit_flow"
        )
        integration_id = second[1].selectbox(
            "Integration",
            [None, *names],
            format_func=lambda v: "All integrations" if v is None else names[v],
            key="audit_integration",
        )
        source_id = second[2].text_input(
            "Source id", key="audit_source_id", placeholder="Exact id, e.g. a NetSuite internal id"
        )
        target_id = second[3].text_input(
            "Target id", key="audit_target_id", placeholder="Exact id, e.g. a Zuora account number"
        )
    values = (time_range, outcome, flow, integration_id, source_id.strip(), target_id.strip(), error_class)
    filters = AuditFilter(
        outcome=None if outcome in (ALL, None) else outcome,
        flow=flow,
        integration_id=integration_id,
        source_id=source_id.strip() or None,
        target_id=target_id.strip() or None,
        error_class=error_class,
        since=since_for(time_range, utcnow()),
    )
    return filters, state_signature(*values)


def _outcome_option(value: str) -> str:
    return "All" if value == ALL else f"{outcome_style(value).icon} {value.capitalize()}"


def metric_row(engine: Engine, filters: AuditFilter, total: int) -> None:
    """Counts for the current filter, split by outcome."""
    counts = outcome_counts(engine, filters)
    columns = st.columns(4)
    columns[0].metric("In filter", f"{total:,}", border=True)
    columns[1].metric("Succeeded", f"{counts[Outcome.SUCCEEDED]:,}", border=True)
    columns[2].metric("Retrying", f"{counts[Outcome.RETRYING]:,}", border=True)
    columns[3].metric("Failed", f"{counts[Outcome.FAILED]:,}", border=True)


def record_list(
    engine: Engine,
    filters: AuditFilter,
    total: int,
    names: Mapping[int, str],
    signature: str,
    *,
    show_integration: bool = True,
) -> None:
    """One page of matching records, newest first, with a page picker under it."""
    if total == 0:
        st.info(NO_MATCH, icon=":material/filter_alt_off:")
        return
    pages = math.ceil(total / PAGE_SIZE)
    # A fresh key per filter puts the picker back on page 1 whenever the filter changes.
    page_key = f"audit_page_{signature}"
    if st.session_state.get(page_key, 1) > pages:
        # Retention can shrink the list under a reader; stay on its last page rather than fail.
        st.session_state[page_key] = pages
    table_slot = st.container()
    footer = st.columns([3, 2], vertical_alignment="center")
    with footer[0]:
        page = st.pagination(pages, key=page_key) if pages > 1 else 1
    first = (page - 1) * PAGE_SIZE
    records = list_records(engine, filters=filters, limit=PAGE_SIZE, offset=first)
    footer[1].caption(f"Showing {first + 1:,}–{first + len(records):,} of {total:,}, newest first.")
    with table_slot:
        record_table(records, names, f"audit_table_{signature}_{page}", show_integration=show_integration)


def record_table(
    records: Sequence[AuditRecord], names: Mapping[int, str], key: str, *, show_integration: bool = True
) -> None:
    """The list itself; clicking a row selects that record for the detail below."""
    rows = record_rows(records, names)
    columns = [c for c in RECORD_COLUMNS if show_integration or c != "integration"]
    ids = [row["id"] for row in rows]
    table = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    st.dataframe(
        table.style.map(outcome_cell_css, subset=["outcome"]),
        hide_index=True,
        column_order=columns,
        column_config=RECORD_COLUMNS,
        key=key,
        on_select=partial(_select_row, key, ids),
        selection_mode="single-row",
        width="stretch",
    )


def _select_row(table_key: str, ids: Sequence[int]) -> None:
    """Dataframe callback: show the clicked record (or nothing, when the row was unselected)."""
    rows = st.session_state[table_key].selection.rows
    st.session_state[RECORD_KEY] = ids[rows[0]] if rows else None


def record_detail(engine: Engine, names: Mapping[int, str]) -> None:
    """The record picker and, once a record is picked, everything kept about it."""
    st.subheader("Record detail")
    picker, hint = st.columns([1, 4], vertical_alignment="bottom")
    record_id = picker.number_input(
        "Record id",
        min_value=1,
        value=None,
        step=1,
        key=RECORD_KEY,
        placeholder="e.g. 42",
        bind="query-params",
    )
    hint.caption(NOTHING_SELECTED)
    if record_id is None:
        return
    found = get_record(engine, int(record_id))
    if found is None:
        st.warning(f"There is no audit record #{record_id}.")
        return
    record, attempts = found
    with st.container(border=True):
        record_header(record, names)
        record_tabs(record, attempts)


def record_header(record: AuditRecord, names: Mapping[int, str]) -> None:
    """What happened to the record, in one glance."""
    flow = md_escape(record.flow)
    st.markdown(f"#### Record #{record.id} · {flow} &nbsp; {outcome_badge(record.outcome)}")
    target = md_code(record.target_id) if record.target_id else "*(none yet)*"
    integration = md_escape(names.get(record.integration_id, f"#{record.integration_id}"))
    st.markdown(
        f"**{md_escape(record.source_system)}** {md_code(record.source_id)} → "
        f"**{md_escape(record.target_system)}** {target} · integration **{integration}**"
    )
    facts = {
        "Action": record.action or "—",
        "Mapping version": "—" if record.mapping_version is None else f"v{record.mapping_version}",
        "Started (UTC)": format_time(record.started_at),
        "Finished (UTC)": format_time(record.finished_at),
        "Took": format_duration(record.started_at, record.finished_at),
        "Job": "—" if record.job_id is None else f"#{record.job_id}",
    }
    if record.replay_of is not None:
        facts["Replay of"] = f"#{record.replay_of}"
    for column, (label, value) in zip(st.columns(len(facts)), facts.items(), strict=True):
        column.caption(label)
        column.markdown(value)
    if record.error_message or record.error_class:
        error_box(record)


def error_box(record: AuditRecord) -> None:
    """The error with what to do about it; a warning while the runner is still retrying."""
    hint = ERROR_CLASS_HINTS.get(record.error_class or "", "")
    message = md_escape(record.error_message or "")
    text = f"**{md_escape(record.error_class or 'error')}** — {hint}\n\n{message}".strip()
    if record.outcome == Outcome.RETRYING:
        st.warning(text, icon=":material/autorenew:")
    else:
        st.error(text, icon=":material/error:")


def record_tabs(record: AuditRecord, attempts: Sequence[AuditAttempt]) -> None:
    """Snapshot, payload, response and HTTP attempts, one tab each."""
    snapshot, payload, response, attempts_tab = st.tabs(
        ["Source snapshot", "Payload sent", "Response", f"Attempts ({len(attempts)})"]
    )
    with snapshot:
        _json_or_note(record.source_snapshot, "No source snapshot was kept (the source was never read).")
    with payload:
        _json_or_note(record.payload, "Nothing was sent: the record failed before its payload was built.")
    with response:
        _json_or_note(record.response, "No response was kept for this record.")
    with attempts_tab:
        attempt_list(attempts)


def _json_or_note(value: object, note: str) -> None:
    if value is None:
        st.caption(note)
    else:
        st.json(value, expanded=True)


def attempt_list(attempts: Sequence[AuditAttempt]) -> None:
    """The HTTP exchanges in order, then each response excerpt on demand."""
    if not attempts:
        st.caption("No HTTP request was made for this record.")
        return
    st.dataframe(
        pd.DataFrame(attempt_rows(attempts), columns=list(ATTEMPT_COLUMNS)),
        hide_index=True,
        column_config=ATTEMPT_COLUMNS,
        width="stretch",
    )
    for attempt in attempts:
        if not attempt.response_excerpt:
            continue
        status = attempt.status if attempt.status is not None else "no status"
        label = f"Response excerpt · attempt {attempt.seq} · {attempt.method} → {status}"
        with st.expander(label):
            text, language = excerpt_for_display(attempt.response_excerpt)
            st.code(text, language=language, wrap_lines=True)


main()
