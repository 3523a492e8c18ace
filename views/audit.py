"""Audit log: every record a flow touched — what was read, what was sent, what came back — and replay.

Filtering, counting and pagination happen in the database through `storage.audit`, on indexes that hold
up over millions of records; counts stop at `COUNT_LIMIT` and say "10,000+" past it. A record is picked
by clicking its row in the list or by typing its id in "Record id" (which also makes the selection
shareable as `?record=<id>`). Replays only enqueue jobs through `runner.replay`; the runner does the work.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from functools import partial

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError
from connectors.registry import SYSTEMS
from runner.reconcile.service import Choice, ReconcileRefused, TargetMatch, find_existing_target
from runner.replay import (
    REPLAY_BATCH_LIMIT,
    BulkReplay,
    ReplayMode,
    ReplayPlan,
    ReplayRefused,
    job_payload,
    plan,
    replay_filtered,
    replay_one,
    replay_progress,
    superseded_by,
)
from storage import links
from storage.audit import AuditFilter, get_record, has_records, list_records, replays_of, write_record
from storage.crud import list_integrations
from storage.crypto import get_vault
from storage.models import AuditAttempt, AuditRecord, Outcome
from storage.settings import get_settings
from storage.types import utcnow
from views._auth import SESSION_USER
from views._ui import (
    AUDIT_PAGE_SIZE,
    COUNT_LIMIT,
    ERROR_CLASS_HINTS,
    TIME_RANGES,
    AuditCounts,
    Count,
    attempt_rows,
    audit_counts,
    database,
    excerpt_for_display,
    format_duration,
    format_time,
    md_code,
    md_escape,
    outcome_badge,
    outcome_cell_css,
    outcome_style,
    plural,
    record_rows,
    since_for,
    state_signature,
)

PAGE_SIZE = AUDIT_PAGE_SIZE  # records per page of the list
RECORD_KEY = "record"  # also the query parameter that links to one record
DEFAULT_RANGE = "Last week"
CUSTOM_RANGE = "Custom dates"
ALL = "all"
REPLAYS_KEY = "audit_replays"  # session state: {audit record id: job id} of replays enqueued here
# Session state: {audit record id: (TargetMatch, mode, refetch)} of replays waiting for update/link/skip.
CHOICES_KEY = "audit_replay_choices"
NOTES_KEY = "audit_replay_notes"  # session state: {audit record id: (kind, text)} said after a replay click
BULK_PLAN_KEY = "audit_bulk_plan"  # session state: (filter signature, ReplayPlan) once counted
BULK_DONE_KEY = "audit_bulk_done"  # session state: (filter signature, BulkReplay) of the last bulk replay
REPLAY_POLL = 2.0  # seconds between looks for the audit record of a replay enqueued from this page
REPLAYS_SHOWN = 5  # replays of a record listed in its detail

EMPTY_DATABASE = (
    "No audit records yet — records appear here once the runner syncs something. "
    "Add connections and an integration, then start the runner with `python -m runner`."
)
NO_MATCH = "No records match these filters — widen the time range or clear a filter."
NOTHING_SELECTED = "Click a row in the list, or type a record id, to see what was read, sent and answered."

REPLAY_MODES = {
    ReplayMode.PAYLOAD: "Re-send the payload that was sent",
    ReplayMode.REMAP: "Map the stored source again with the current mapping",
}
REFETCH_HELP = (
    "Read the record from the source system again and map it with the current mapping. Without this "
    "the source is never read again: the replay uses what this audit record kept."
)

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
    """Render the page: filters, counts, the list, bulk replay, then the selected record."""
    engine = database()
    st.title("Audit log")
    st.caption("Every record the runner synced: what it read, what it sent, and what came back.")
    if not has_records(engine):
        st.info(EMPTY_DATABASE, icon=":material/inbox:")
        return
    integrations = {i.id: i for i in list_integrations(engine)}
    names = {integration_id: i.name for integration_id, i in integrations.items()}
    flows = sorted({flow for i in integrations.values() for flow in i.flows})
    filters, signature = filter_bar(names, flows)
    counts = audit_counts(engine, filters)
    metric_row(counts)
    # With a single integration (or one picked) the column would repeat one name on every row.
    show_integration = len(names) > 1 and filters.integration_id is None
    record_list(engine, filters, counts.total, names, signature, show_integration=show_integration)
    bulk_replay(engine, filters, signature, counts.by_outcome[Outcome.FAILED])
    st.divider()
    record_detail(engine, names)


# --- filters and counts --------------------------------------------------------------------------------


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
        ranges = [*TIME_RANGES, CUSTOM_RANGE]
        with first[1]:
            time_range = st.selectbox(
                "Time range", ranges, index=ranges.index(DEFAULT_RANGE), key="audit_range"
            )
            since, until = (
                custom_dates() if time_range == CUSTOM_RANGE else (since_for(time_range, utcnow()), None)
            )
        error_class = first[2].selectbox(
            "Error class",
            [None, *ERROR_CLASS_HINTS],
            format_func=lambda v: "Any error class" if v is None else v,
            key="audit_error_class",
            help="config: fix a connection · transient: retried automatically · "
            "remote: the record was rejected · bug: report it",
        )
        second = st.columns(5)
        flow = second[0].selectbox(
            "Flow", [None, *flows], format_func=lambda v: "All flows" if v is None else v, key="audit_flow"
        )
        system = second[1].selectbox(
            "System",
            [None, *SYSTEMS],
            format_func=lambda v: "All systems" if v is None else SYSTEMS[v].spec.title,
            key="audit_system",
            help="Records read from or written to this system.",
        )
        integration_id = second[2].selectbox(
            "Integration",
            [None, *names],
            format_func=lambda v: "All integrations" if v is None else names[v],
            key="audit_integration",
        )
        source_id = second[3].text_input(
            "Source id", key="audit_source_id", placeholder="Exact id, e.g. a NetSuite internal id"
        )
        target_id = second[4].text_input(
            "Target id", key="audit_target_id", placeholder="Exact id, e.g. a Zuora account number"
        )
    window = (since, until) if time_range == CUSTOM_RANGE else None
    values = (
        time_range,
        window,
        outcome,
        flow,
        system,
        integration_id,
        source_id.strip(),
        target_id.strip(),
        error_class,
    )
    filters = AuditFilter(
        outcome=None if outcome in (ALL, None) else outcome,
        flow=flow,
        integration_id=integration_id,
        source_id=source_id.strip() or None,
        target_id=target_id.strip() or None,
        error_class=error_class,
        since=since,
        until=until,
        system=system,
    )
    return filters, state_signature(*values)


def custom_dates() -> tuple[datetime | None, datetime | None]:
    """A from–to pair of UTC days (both included); while only the first is picked, that one day."""
    today = utcnow().date()
    picked = st.date_input(
        "Days (UTC)",
        value=(today - timedelta(days=6), today),
        max_value=today,
        key="audit_dates",
        label_visibility="collapsed",
    )
    days = [d for d in (picked if isinstance(picked, tuple | list) else [picked]) if isinstance(d, date)]
    if not days:
        return None, None
    return _midnight(days[0]), _midnight(days[-1] + timedelta(days=1))


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _outcome_option(value: str) -> str:
    return "All" if value == ALL else f"{outcome_style(value).icon} {value.capitalize()}"


def metric_row(counts: AuditCounts) -> None:
    """Counts for the current filter, split by outcome (each stops at COUNT_LIMIT: "10,000+")."""
    columns = st.columns(4)
    columns[0].metric("In filter", str(counts.total), border=True)
    columns[1].metric("Succeeded", str(counts.by_outcome[Outcome.SUCCEEDED]), border=True)
    columns[2].metric("Retrying", str(counts.by_outcome[Outcome.RETRYING]), border=True)
    columns[3].metric("Failed", str(counts.by_outcome[Outcome.FAILED]), border=True)


# --- the list ------------------------------------------------------------------------------------------


def record_list(
    engine: Engine,
    filters: AuditFilter,
    total: Count,
    names: Mapping[int, str],
    signature: str,
    *,
    show_integration: bool = True,
) -> None:
    """One page of matching records, newest first, with a page picker under it."""
    if total.value == 0:
        st.info(NO_MATCH, icon=":material/filter_alt_off:")
        return
    pages = math.ceil(total.value / PAGE_SIZE)
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
    shown = f"Showing {first + 1:,}–{first + len(records):,} of {total}, newest first."
    if total.capped:
        shown += (
            f" The list stops at the newest {COUNT_LIMIT:,}: narrow the time range or filters to go further."
        )
    footer[1].caption(shown)
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


def _open_record(record_id: int) -> None:
    """Button callback: show `record_id` in the detail."""
    st.session_state[RECORD_KEY] = record_id


# --- bulk replay ---------------------------------------------------------------------------------------


def bulk_replay(engine: Engine, filters: AuditFilter, signature: str, failed: Count) -> None:
    """Replay every failure in the filter: count first, confirm, then enqueue with a progress bar."""
    with st.container(border=True):
        st.markdown("##### Replay the failures in this filter")
        done = st.session_state.get(BULK_DONE_KEY)
        if done is not None and done[0] == signature:
            bulk_summary(done[1])
        if filters.outcome not in (None, Outcome.FAILED):
            st.caption("Bulk replay re-runs failed records: set Outcome to All or Failed to use it.")
            return
        if failed.value == 0:
            st.caption("No failed records in this filter: nothing to replay.")
            return
        stored = st.session_state.get(BULK_PLAN_KEY)
        counted: ReplayPlan | None = stored[1] if stored is not None and stored[0] == signature else None
        failures = replace(filters, outcome=Outcome.FAILED)
        if counted is None:
            st.caption(
                f"{plural(failed, 'failed record')} in this filter. Replaying re-runs each source record "
                "once, from its "
                "newest failure, and leaves alone any that a later sync already fixed."
            )
            st.button(
                "Count the failures to replay…",
                key="audit_bulk_count",
                icon=":material/calculate:",
                on_click=_count_failures,
                args=(engine, failures, signature),
            )
            return
        bulk_confirm(engine, failures, counted, signature)


def _count_failures(engine: Engine, failures: AuditFilter, signature: str) -> None:
    st.session_state[BULK_PLAN_KEY] = (signature, plan(engine, failures))
    st.session_state.pop(BULK_DONE_KEY, None)


def _forget_plan() -> None:
    st.session_state.pop(BULK_PLAN_KEY, None)


def bulk_confirm(engine: Engine, failures: AuditFilter, counted: ReplayPlan, signature: str) -> None:
    """The count, the choice of what to send, and the confirmation; then the replay itself."""
    if counted.over_limit:
        st.error(
            f"More than {REPLAY_BATCH_LIMIT:,} failed records match: a bulk replay takes at most "
            f"{REPLAY_BATCH_LIMIT:,}. Narrow the filter — a shorter time range, one flow, integration or "
            "error class — and replay in parts.",
            icon=":material/block:",
        )
        st.button("Cancel", key="audit_bulk_cancel", on_click=_forget_plan)
        return
    by_flow = " · ".join(f"{md_escape(flow)} {n:,}" for flow, n in counted.flows.items())
    st.info(
        f"**{plural(counted.count, 'failed record')}** in this filter ({by_flow}), from "
        f"**{plural(counted.sources, 'source record')}**: each source record is replayed once.",
        icon=":material/replay:",
    )
    mode = st.radio(
        "What to send", list(REPLAY_MODES), format_func=REPLAY_MODES.__getitem__, key="audit_bulk_mode"
    )
    refetch = st.checkbox("Re-read each source record first", key="audit_bulk_refetch", help=REFETCH_HELP)
    buttons = st.columns([2, 1, 5])
    confirmed = buttons[0].button(
        f"Replay {plural(counted.sources, 'source record')}", key="audit_bulk_confirm", type="primary"
    )
    buttons[1].button("Cancel", key="audit_bulk_cancel", on_click=_forget_plan)
    if not confirmed:
        return
    bar = st.progress(0.0, text="Enqueuing replays…")

    def report(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"Enqueued {done:,} of {total:,} replays")

    try:
        result = replay_filtered(engine, failures, mode=ReplayMode(mode), refetch=refetch, on_progress=report)
    except ReplayRefused as refused:
        st.error(f"Nothing was replayed: {refused}.", icon=":material/block:")
        return
    st.session_state[BULK_DONE_KEY] = (signature, result)
    _forget_plan()
    bulk_summary(result)


def bulk_summary(result: BulkReplay) -> None:
    """What the last bulk replay enqueued, and what it left out and why."""
    lines = [
        f"Enqueued **{plural(len(result.job_ids), 'replay job')}**; the runner picks them up within seconds."
    ]
    if result.duplicates:
        lines.append(f"Folded in {plural(result.duplicates, 'older failure')} of the same source records.")
    if result.superseded:
        lines.append(
            f"Left alone {plural(result.superseded, 'source record')} that a later sync already succeeded "
            "with or is retrying."
        )
    if result.refused:
        lines.append(
            f"Skipped {plural(result.refused, 'record')} without what this choice needs (a stored payload "
            "or source snapshot): replay those with the other choice, or re-read the source."
        )
    st.success("\n\n".join(lines), icon=":material/check_circle:")


# --- one record ----------------------------------------------------------------------------------------


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
        replay_panel(engine, record)
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
    if record.replay_of is not None:
        st.button(
            f"Open the original, record #{record.replay_of}",
            key=f"audit_open_original_{record.id}",
            on_click=_open_record,
            args=(record.replay_of,),
            type="tertiary",
        )
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


def replay_panel(engine: Engine, record: AuditRecord) -> None:
    """One-click replay: what to send, whether to re-read the source, and the replay's progress."""
    assert record.id is not None
    st.markdown("##### Replay")
    choice, action = st.columns([3, 1], vertical_alignment="bottom")
    with choice:
        mode = st.radio(
            "What to send",
            list(REPLAY_MODES),
            # Without a stored payload (the record failed before mapping) only re-mapping can work.
            index=0 if record.payload else 1,
            format_func=REPLAY_MODES.__getitem__,
            key=f"audit_replay_mode_{record.id}",
            horizontal=True,
        )
        source = SYSTEMS[record.source_system].spec.title if record.source_system in SYSTEMS else "the source"
        refetch = st.checkbox(
            f"Re-read the source record from {source} first",
            key=f"audit_replay_refetch_{record.id}",
            help=REFETCH_HELP,
        )
    pressed = action.button(
        "Replay", key=f"audit_replay_{record.id}", icon=":material/replay:", type="primary", width="stretch"
    )
    newer = superseded_by(engine, record)
    if newer is not None:
        st.caption(
            f":material/warning: Record #{newer.id} of the same source record is newer ({newer.outcome}): "
            "replaying this one sends older data."
        )
    if pressed:
        _replay_pressed(engine, record, ReplayMode(mode), refetch)
    pending = st.session_state.get(CHOICES_KEY, {}).get(record.id)
    if pending is not None:
        existing_target_choice(engine, record, pending[0])
    note = st.session_state.get(NOTES_KEY, {}).get(record.id)
    if note is not None:
        {"error": st.error, "info": st.info, "caption": st.caption}[note[0]](note[1])
    job_id = st.session_state.get(REPLAYS_KEY, {}).get(record.id)
    if job_id is not None:
        replay_status(engine, job_id)
    earlier_replays(engine, record, skip_job=job_id)


def _replay_pressed(engine: Engine, record: AuditRecord, mode: ReplayMode, refetch: bool) -> None:
    """Replay `record`, unless it would create a record that the target already has: then ask first."""
    assert record.id is not None
    st.session_state.setdefault(NOTES_KEY, {}).pop(record.id, None)
    st.session_state.setdefault(CHOICES_KEY, {}).pop(record.id, None)
    try:
        job_payload(record, mode, refetch)  # refused now, rather than after asking update/link/skip
    except ReplayRefused as refused:
        st.error(f"Cannot replay this record: {refused}.", icon=":material/block:")
        return
    existing, unchecked = existing_before_create(engine, record)
    if existing is not None:
        st.session_state[CHOICES_KEY][record.id] = (existing, mode, refetch)
        return
    try:
        job_id = replay_one(engine, record.id, mode=mode, refetch=refetch)
    except ReplayRefused as refused:
        st.error(f"Cannot replay this record: {refused}.", icon=":material/block:")
        return
    st.session_state.setdefault(REPLAYS_KEY, {})[record.id] = job_id
    if unchecked is not None:
        target = _system_title(record.target_system)
        st.session_state[NOTES_KEY][record.id] = (
            "caption",
            f":material/warning: Could not look in {target} for a record already carrying source id "
            f"{md_code(record.source_id)} ({md_escape(unchecked)}); the replay still goes through the "
            "flow's own duplicate checks.",
        )


def existing_before_create(engine: Engine, record: AuditRecord) -> tuple[TargetMatch | None, str | None]:
    """The target record already carrying this record's source id, when a replay would create one (no
    target on the record nor in the link table); with why the target could not be searched, if so.
    Only records read from NetSuite are looked up: the other flows upsert by a key of their own."""
    if record.target_id or record.source_system != "netsuite":
        return None, None
    link = links.find(
        engine, integration_id=record.integration_id, flow=record.flow, source_id=record.source_id
    )
    if link is not None and link.target_id:
        return None, None
    try:
        found = find_existing_target(
            engine,
            get_vault(),
            get_settings(),
            integration_id=record.integration_id,
            flow=record.flow,
            source_id=record.source_id,
        )
    except (ConnectorError, ReconcileRefused, LookupError) as exc:
        return None, str(exc)
    return found, None


def existing_target_choice(engine: Engine, record: AuditRecord, found: TargetMatch) -> None:
    """The target already has this record: update it, link it, or skip — the person's choice, audited."""
    assert record.id is not None
    target = _system_title(record.target_system)
    name = (
        f"**{md_escape(found.label)}** ({md_code(found.target_id)})"
        if found.label
        else md_code(found.target_id)
    )
    st.warning(
        f"{md_escape(target)} already has {name} carrying source id {md_code(record.source_id)} (found by "
        f"{md_code(found.via)}): this replay would create a second one. Choose what to do — the choice "
        "goes into the audit trail.",
        icon=":material/content_copy:",
    )
    for column, (choice, label, icon) in zip(
        st.columns(3),
        [
            (Choice.UPDATE, "Update it", ":material/sync:"),
            (Choice.LINK, "Link only", ":material/link:"),
            (Choice.SKIP, "Skip", ":material/block:"),
        ],
        strict=True,
    ):
        column.button(
            label,
            key=f"audit_replay_choice_{choice}_{record.id}",
            icon=icon,
            width="stretch",
            on_click=_choose,
            args=(engine, record.id, choice),
        )
    st.caption(
        f"Update: link it and replay onto it · Link only: link it, send nothing · Skip: do nothing "
        f"({md_escape(target)} keeps its record, this one stays failed)."
    )


def _choose(engine: Engine, record_id: int, choice: Choice) -> None:
    """Button callback: carry out the choice about an existing target and say what happened."""
    pending = st.session_state.get(CHOICES_KEY, {}).pop(record_id, None)
    record = get_record(engine, record_id)
    if pending is None or record is None:
        return
    found, mode, refetch = pending
    notes = st.session_state.setdefault(NOTES_KEY, {})
    target = _system_title(record[0].target_system)
    try:
        job_id = decide_existing(engine, record[0], found, choice, by=_user(), mode=mode, refetch=refetch)
    except ReplayRefused as refused:
        notes[record_id] = ("error", f"Cannot replay this record: {md_escape(str(refused))}.")
        return
    if job_id is not None:
        st.session_state.setdefault(REPLAYS_KEY, {})[record_id] = job_id
        return
    if choice is Choice.SKIP:
        notes[record_id] = (
            "info",
            f"Skipped: nothing was sent, and {target} keeps "
            f"{md_code(found.target_id)}. The choice is in the audit trail.",
        )
    else:
        invoice = (
            " (a Zuora invoice is never rewritten, so nothing was sent)"
            if record[0].flow == "invoice"
            else ""
        )
        notes[record_id] = (
            "info",
            f"Linked source id {md_code(record[0].source_id)} to {target} {md_code(found.target_id)}{invoice}: "
            "the next sync of this record updates it. The choice is in the audit trail.",
        )


def decide_existing(
    engine: Engine,
    record: AuditRecord,
    found: TargetMatch,
    choice: Choice,
    *,
    by: str,
    mode: ReplayMode,
    refetch: bool,
) -> int | None:
    """Carry out update / link / skip for a replay whose target already exists; the replay job's id
    when one was enqueued.

    A stand-in until runner.reconcile.service offers this for replays (its `resync` does the same for a
    drift): update and link record the link (the target already carries the source id: that is how it was
    found), update then replays onto it (an invoice is linked only: Zuora invoices are never rewritten),
    and every choice is written to the audit trail as the reconciliation service writes its decisions.
    """
    assert record.id is not None
    job_id = None
    if choice in (Choice.UPDATE, Choice.LINK):
        links.record_targets(
            engine,
            integration_id=record.integration_id,
            flow=record.flow,
            source_system=record.source_system,
            target_system=record.target_system,
            targets={record.source_id: (found.target_id, None)},
        )
    if choice is Choice.UPDATE and record.flow != "invoice":
        job_id = replay_one(engine, record.id, mode=mode, refetch=refetch)
    now = utcnow()
    decision = AuditRecord(
        integration_id=record.integration_id,
        flow=record.flow,
        source_system=record.source_system,
        source_id=record.source_id,
        target_system=record.target_system,
        target_id=found.target_id,
        action=choice.value,
        response={
            "decided_by": by,
            "before_replay_of": record.id,
            "found_by": found.via,
            "found": found.label,
            "queued_job": job_id,
        },
        outcome=Outcome.SUCCEEDED,
        error_message=f"replay of record {record.id}: {choice.value} by {by}",
        started_at=now,
        finished_at=now,
    )
    write_record(engine, decision, [])
    return job_id


def _system_title(system: str) -> str:
    return SYSTEMS[system].spec.title if system in SYSTEMS else system or "the target"


def _user() -> str:
    return str(st.session_state.get(SESSION_USER) or "admin")


def replay_status(engine: Engine, job_id: int) -> None:
    """The replay enqueued from this page: its job, then its own audit record once the runner wrote it."""
    progress = replay_progress(engine, job_id)
    if progress.record is None:
        _replay_pending(engine, job_id)
        return
    replayed = progress.record
    text, button = st.columns([4, 1], vertical_alignment="center")
    text.success(
        f"Replay job #{job_id} ran: record #{replayed.id} {outcome_badge(replayed.outcome)}",
        icon=":material/replay:",
    )
    button.button(
        f"Open record #{replayed.id}",
        key=f"audit_open_replay_{replayed.id}",
        on_click=_open_record,
        args=(replayed.id,),
        width="stretch",
    )


@st.fragment(run_every=REPLAY_POLL)
def _replay_pending(engine: Engine, job_id: int) -> None:
    """Until the replay's audit record appears, say so, looking again every REPLAY_POLL seconds."""
    progress = replay_progress(engine, job_id)
    if progress.record is not None:
        st.rerun()  # the whole page: the replay's record is there to open
    status = progress.job_status or "no longer queued"
    st.info(
        f"Replay queued as job #{job_id} ({status}). Its own audit record appears here once the runner "
        "has run it — if nothing happens, check that the runner is running (`python -m runner`).",
        icon=":material/schedule:",
    )


def earlier_replays(engine: Engine, record: AuditRecord, *, skip_job: int | None) -> None:
    """Links to the records that replayed this one (besides the replay just shown)."""
    assert record.id is not None
    replays = [r for r in replays_of(engine, record.id, limit=REPLAYS_SHOWN) if r.job_id != skip_job]
    if not replays:
        return
    columns = st.columns(REPLAYS_SHOWN + 1, vertical_alignment="center")
    columns[0].caption("Replayed as")
    for column, replayed in zip(columns[1:], replays, strict=False):
        column.button(
            f"#{replayed.id} {outcome_style(replayed.outcome).symbol} {replayed.outcome}",
            key=f"audit_replayed_as_{replayed.id}",
            on_click=_open_record,
            args=(replayed.id,),
            type="tertiary",
        )


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
