"""Error triage: failed records grouped by what went wrong, and what people do about each group.

Each group is one integration's flow failing one way (error class and normalised message, see
storage.triage). A group can be acknowledged, assigned to a named person with a note, resolved, or
replayed as a group; one failed record's payload can be corrected here and replayed. Every action is a
call into runner.triage; replays only enqueue jobs, which the runner runs. Groups whose records have
all synced since resolve themselves on this page's load (and on the runner's schedule).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from functools import partial

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from runner.replay import ReplayMode, replay_progress
from runner.triage import (
    EditRefused,
    GroupFilter,
    GroupView,
    TriageRefused,
    acknowledge,
    assign,
    edit_and_replay,
    failed_record,
    flow_title,
    list_groups,
    parse_payload,
    replay_group,
    replay_tally,
    required_fields,
    resolve,
)
from storage.crud import list_integrations
from storage.models import Outcome
from storage.triage import GroupStatus, Resolution, edits_of
from views._auth import SESSION_USER
from views._ui import (
    ERROR_CLASS_HINTS,
    database,
    format_time,
    md_code,
    md_escape,
    outcome_badge,
    plural,
    shorten,
)

GROUP_KEY = "triage_group"  # session state: the selected group's id (also the picker's key)
RECORD_KEY = "triage_record"  # session state: the selected failed record's id
CONFIRM_KEY = "triage_confirm"  # session state: the group whose replay waits for confirmation
REPLAYS_KEY = "triage_replays"  # session state: [(label, [job ids])] of replays enqueued from this page
ALL = "All"
REPLAY_POLL = 2.0  # seconds between looks for the outcome of replays enqueued here
RECENT_REPLAYS = 5  # replays of this session listed at the top
Replays = tuple[tuple[str, tuple[int, ...], bool], ...]  # (label, job ids, a group replay?) newest first

STATUS_LABELS = {
    GroupStatus.OPEN: "● open",
    GroupStatus.ACKNOWLEDGED: "◐ acknowledged",
    GroupStatus.ASSIGNED: "→ assigned",
    GroupStatus.RESOLVED: "✓ resolved",
}
STATUS_BADGES = {
    GroupStatus.OPEN: ":red-badge[open]",
    GroupStatus.ACKNOWLEDGED: ":orange-badge[acknowledged]",
    GroupStatus.ASSIGNED: ":blue-badge[assigned]",
    GroupStatus.RESOLVED: ":green-badge[resolved]",
}
REPLAY_MODES = {
    ReplayMode.PAYLOAD: "Re-send the payload each record sent",
    ReplayMode.REMAP: "Map each stored source again with the current mapping",
}
GROUP_COLUMNS = {
    "id": st.column_config.NumberColumn("#", format="%d", width=40),
    "status": st.column_config.TextColumn("Status", width=125),
    "error_class": st.column_config.TextColumn("Class", width="small"),
    "flow": st.column_config.TextColumn("Flow"),
    "integration": st.column_config.TextColumn("Integration"),
    "count": st.column_config.NumberColumn("Records", format="%d", width="small"),
    "newest": st.column_config.TextColumn("Newest (UTC)"),
    "assignee": st.column_config.TextColumn("Assignee"),
    "pattern": st.column_config.TextColumn("Pattern", width="large"),
}
RECORD_COLUMNS = {
    "id": st.column_config.NumberColumn("Record", format="%d", width="small"),
    "source_id": st.column_config.TextColumn("Source id"),
    "time": st.column_config.TextColumn("Failed at (UTC)"),
    "error": st.column_config.TextColumn("Error", width="large"),
}


def main() -> None:
    engine = database()
    st.title("Error triage")
    st.caption(
        "Failed records grouped by what went wrong. Acknowledge a group, assign it to someone, resolve it "
        "or replay it; correct one record's payload and replay it. Groups whose records have synced since "
        "resolve themselves."
    )
    recent_replays(engine)
    integrations = list_integrations(engine)
    names = {i.id: i.name for i in integrations}
    filters = filter_bar(names, sorted({flow for i in integrations for flow in i.flows}))
    triage = list_groups(engine, filters)
    if not triage.complete:
        st.caption(f"Grouped from the newest {triage.scanned:,} failures; older ones are left out.")
    if not triage.groups:
        resolved = "" if filters.include_resolved else " Turn on *Show resolved* to see resolved groups."
        st.success(
            f"Nothing to triage: no failed record needs attention.{resolved}", icon=":material/task_alt:"
        )
        return
    summary(triage.groups)
    groups = {g.id: g for g in triage.groups}
    group_table(triage.groups, names)
    if st.session_state.get(GROUP_KEY) not in groups:
        st.session_state[GROUP_KEY] = None  # the group resolved or was filtered out: pick none
    group_id = st.selectbox(
        "Group",
        list(groups),
        index=None,
        format_func=lambda gid: _group_label(groups[gid]),
        key=GROUP_KEY,
        placeholder="Click a row above, or pick a group here",
    )
    if group_id is not None:
        group_panel(engine, groups[group_id], names)


def filter_bar(names: Mapping[int | None, str], flows: Sequence[str]) -> GroupFilter:
    integration, flow, error_class, resolved = st.columns([2, 2, 2, 1], vertical_alignment="bottom")
    integration_id = integration.selectbox(
        "Integration",
        [None, *names],
        format_func=lambda i: ALL if i is None else names[i],
        key="triage_integration",
    )
    flow_name = flow.selectbox("Flow", [ALL, *flows], format_func=_flow_option, key="triage_flow")
    chosen_class = error_class.selectbox("Error class", [ALL, *ERROR_CLASS_HINTS], key="triage_class")
    include_resolved = resolved.toggle("Show resolved", key="triage_resolved")
    return GroupFilter(
        integration_id=integration_id,
        flow=None if flow_name == ALL else flow_name,
        error_class=None if chosen_class == ALL else chosen_class,
        include_resolved=include_resolved,
    )


def summary(groups: Sequence[GroupView]) -> None:
    unresolved = [g for g in groups if g.status != GroupStatus.RESOLVED]
    columns = st.columns(4)
    columns[0].metric("Groups needing attention", len(unresolved), border=True)
    columns[1].metric("Failing records", sum(g.count for g in unresolved), border=True)
    columns[2].metric("Not looked at yet", sum(g.status == GroupStatus.OPEN for g in unresolved), border=True)
    columns[3].metric("Assigned", sum(g.status == GroupStatus.ASSIGNED for g in unresolved), border=True)


def group_table(groups: Sequence[GroupView], names: Mapping[int | None, str]) -> None:
    """The groups, most recently failing first; clicking a row opens that group below."""
    rows = [
        {
            "id": g.id,
            "error_class": g.error_class or "—",
            "flow": g.flow,
            "integration": names.get(g.integration_id, f"#{g.integration_id}"),
            "pattern": g.pattern,
            "count": g.count,
            "newest": format_time(g.newest),
            "status": _status_label(g),
            "assignee": g.assignee or "",
        }
        for g in groups
    ]
    columns = [c for c in GROUP_COLUMNS if len(names) > 1 or c != "integration"]
    st.dataframe(
        pd.DataFrame(rows, columns=list(GROUP_COLUMNS)),
        hide_index=True,
        column_order=columns,
        column_config=GROUP_COLUMNS,
        key="triage_groups",
        on_select=partial(_select_group, [g.id for g in groups]),
        selection_mode="single-row",
        width="stretch",
    )


def _select_group(ids: Sequence[int]) -> None:
    rows = st.session_state["triage_groups"].selection.rows
    st.session_state[GROUP_KEY] = ids[rows[0]] if rows else None
    st.session_state[RECORD_KEY] = None


def group_panel(engine: Engine, group: GroupView, names: Mapping[int | None, str]) -> None:
    """One group: what it is, what was decided, the actions, and its failing records."""
    with st.container(border=True):
        badge = STATUS_BADGES.get(GroupStatus(group.status), group.status)
        st.markdown(f"#### Group #{group.id} · {md_escape(flow_title(group.flow))} &nbsp; {badge}")
        integration = md_escape(names.get(group.integration_id, f"#{group.integration_id}"))
        hint = ERROR_CLASS_HINTS.get(group.error_class, "")
        st.markdown(f"**{md_escape(group.error_class or 'error')}** on **{integration}** — {hint}")
        st.code(group.pattern or "(no message)", language=None, wrap_lines=True)
        facts = {
            "Failing records": f"{group.count:,}",
            "Failures": f"{group.failures:,}",
            "Oldest (UTC)": format_time(group.oldest),
            "Newest (UTC)": format_time(group.newest),
            "Assignee": group.assignee or "—",
            "Last change": f"{group.updated_by} · {format_time(group.updated_at)}",
        }
        for column, (label, value) in zip(st.columns(len(facts)), facts.items(), strict=True):
            column.caption(label)
            column.markdown(md_escape(value))
        if group.note:
            st.info(f"**Note:** {md_escape(group.note)}", icon=":material/sticky_note_2:")
        if group.in_flight or group.synced:
            st.caption(
                f"Also in this group: {plural(group.in_flight, 'record')} being retried, "
                f"{plural(group.synced, 'record')} synced since."
            )
        group_actions(engine, group)
        group_records(engine, group)


def group_actions(engine: Engine, group: GroupView) -> None:
    ack, assign_to, close, replay = st.columns(4)
    ack.button(
        "Acknowledge",
        key="triage_ack",
        icon=":material/visibility:",
        disabled=group.status != GroupStatus.OPEN,
        on_click=_act,
        args=(partial(acknowledge, engine, group.id, by=_user()), "Acknowledged."),
        width="stretch",
    )
    with (
        assign_to.popover("Assign…", icon=":material/person_add:", width="stretch"),
        st.form("triage_assign_form", border=False),
    ):
        name = st.text_input("Assign to", value=group.assignee or "", key=f"triage_assignee_{group.id}")
        note = st.text_area("Note", value=group.note or "", key=f"triage_note_{group.id}", height=90)
        if st.form_submit_button("Assign", type="primary", key="triage_assign"):
            _act(
                partial(assign, engine, group.id, assignee=name, note=note, by=_user()),
                f"Assigned to {name}.",
            )
            st.rerun()
    with (
        close.popover("Resolve…", icon=":material/task_alt:", width="stretch"),
        st.form("triage_resolve_form", border=False),
    ):
        why = st.text_input("Why is it resolved?", key=f"triage_resolve_note_{group.id}")
        if st.form_submit_button("Resolve", type="primary", key="triage_resolve"):
            _act(partial(resolve, engine, group.id, by=_user(), note=why), "Resolved.")
            st.rerun()
    replay.button(
        "Replay group…",
        key="triage_replay",
        icon=":material/replay:",
        type="primary",
        disabled=not group.records,
        on_click=_ask_to_confirm,
        args=(group.id,),
        width="stretch",
    )
    if notice := st.session_state.pop("triage_notice", None):
        (st.error if notice[0] == "error" else st.success)(notice[1])
    if st.session_state.get(CONFIRM_KEY) == group.id:
        confirm_replay(engine, group)


def _act(action: partial[object], done: str) -> None:
    """Run a decision; its outcome shows once under the buttons."""
    try:
        action()
    except (TriageRefused, LookupError) as refused:  # LookupError: the group is gone
        st.session_state["triage_notice"] = ("error", f"Not done: {refused}.")
    else:
        st.session_state["triage_notice"] = ("success", done)


def _ask_to_confirm(group_id: int | None) -> None:
    st.session_state[CONFIRM_KEY] = group_id


def confirm_replay(engine: Engine, group: GroupView) -> None:
    """How many records a group replay sends, and the choice of what to send, before anything is queued."""
    with st.container(border=True):
        st.info(
            f"Replay **{plural(group.count, 'failing record')}** of this group? Each source record is "
            "re-sent once, from its newest failure, through the same duplicate guards as any sync.",
            icon=":material/replay:",
        )
        mode = st.radio(
            "What to send", list(REPLAY_MODES), format_func=REPLAY_MODES.__getitem__, key="triage_replay_mode"
        )
        go, cancel, _ = st.columns([2, 1, 4])
        confirmed = go.button(
            f"Replay {plural(group.count, 'record')}", key="triage_replay_confirm", type="primary"
        )
        cancel.button("Cancel", key="triage_replay_cancel", on_click=_ask_to_confirm, args=(None,))
    if not confirmed:
        return
    st.session_state.pop(CONFIRM_KEY, None)
    try:
        result = replay_group(engine, group.id, by=_user(), mode=ReplayMode(mode))
    except TriageRefused as refused:
        st.error(f"Nothing was replayed: {refused}.", icon=":material/block:")
        return
    label = f"Group #{group.id} replayed ({plural(len(result.job_ids), 'record')})"
    if result.refused:
        label += f"; {result.refused} skipped: nothing stored to send that way"
    _remember(label, result.job_ids, group=True)
    st.rerun()


def group_records(engine: Engine, group: GroupView) -> None:
    """The group's failing records; picking one opens its payload for editing."""
    st.markdown(f"##### Failing records ({group.count:,})")
    if not group.records:
        st.caption("No record of this group is failing now.")
        return
    rows = [
        {
            "id": r.record_id,
            "source_id": r.source_id,
            "time": format_time(r.started_at),
            "error": shorten(r.message),
        }
        for r in group.records
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=RECORD_COLUMNS, width="stretch")
    records = {r.record_id: r for r in group.records}
    if st.session_state.get(RECORD_KEY) not in records:
        st.session_state[RECORD_KEY] = None  # a replay moved the record on: pick none
    record_id = st.selectbox(
        "Failed record to edit",
        list(records),
        index=None,
        format_func=lambda rid: (
            f"#{rid} · source {records[rid].source_id} · {format_time(records[rid].started_at)}"
        ),
        key=RECORD_KEY,
        placeholder="Pick a record to correct its payload and replay it",
    )
    if record_id is not None:
        edit_panel(engine, record_id)


def edit_panel(engine: Engine, record_id: int) -> None:
    """The stored payload as JSON to correct; validated, then replayed."""
    record = failed_record(engine, record_id)
    if record is None:
        st.warning(f"There is no audit record #{record_id}.")
        return
    title, link = st.columns([3, 1], vertical_alignment="bottom")
    title.markdown(f"##### Edit and replay record #{record_id} · source {md_code(record.source_id)}")
    link.page_link(
        "views/audit.py",
        label="Open in the audit log",
        icon=":material/receipt_long:",
        query_params={"record": record_id},
    )
    st.error(md_escape(record.error_message or "(no message)"), icon=":material/error:")
    required = ", ".join(md_code(f) for f in required_fields(record.flow)) or "none"
    st.caption(f"Required by {md_escape(flow_title(record.flow))}: {required}")
    if not record.payload:
        st.warning(
            "This record failed before its payload was built: there is nothing to edit. Fix the mapping and "
            "replay the group with the current mapping.",
            icon=":material/block:",
        )
        return
    with st.form(f"triage_edit_form_{record_id}", border=False):
        text = st.text_area(
            "Payload (JSON)",
            value=json.dumps(record.payload, indent=2, ensure_ascii=False),
            height=320,
            key=f"triage_payload_{record_id}",
        )
        submitted = st.form_submit_button(
            "Validate and replay", type="primary", icon=":material/replay:", key="triage_edit_replay"
        )
    if submitted:
        try:
            result = edit_and_replay(engine, record_id, parse_payload(text), by=_user())
        except EditRefused as refused:
            st.error(f"Not replayed: {refused}.", icon=":material/block:")
        else:
            changed = ", ".join(change["field"] for change in result.diff)
            _remember(f"Record #{record_id} edited ({changed})", [result.job_id], group=False)
            st.rerun()
    edit_history(engine, record_id)


def edit_history(engine: Engine, record_id: int) -> None:
    edits = edits_of(engine, record_id)
    if not edits:
        return
    with st.expander(f"Earlier edits of this record ({len(edits)})"):
        for edit in edits:
            changes = "; ".join(
                f"{change['field']}: {json.dumps(change.get('before'))} → {json.dumps(change.get('after'))}"
                for change in edit.diff or []
            )
            st.markdown(
                f"**{md_escape(edit.edited_by)}** · {format_time(edit.edited_at)} UTC · job #{edit.job_id}  \n"
                f"{md_escape(changes)}"
            )


# --- replays enqueued from this page ---------------------------------------------------------------------


def _remember(label: str, job_ids: list[int], *, group: bool) -> None:
    replays = st.session_state.setdefault(REPLAYS_KEY, [])
    replays.insert(0, (label, job_ids, group))
    del replays[RECENT_REPLAYS:]


def recent_replays(engine: Engine) -> None:
    """The replays enqueued here this session and how they came out; while any is still waiting for the
    runner they are looked at again every REPLAY_POLL seconds."""
    replays = tuple(
        (label, tuple(jobs), group) for label, jobs, group in st.session_state.get(REPLAYS_KEY) or []
    )
    if not replays:
        return
    if _show_replays(engine, replays):
        _poll_replays(engine, replays)


@st.fragment(run_every=REPLAY_POLL)
def _poll_replays(engine: Engine, replays: Replays) -> None:
    if not _waiting(engine, replays):
        st.rerun()  # the whole page: the statuses, and the groups their replays changed


def _show_replays(engine: Engine, replays: Replays) -> bool:
    """Show each replay's status; True while any is still waiting for the runner."""
    waiting = False
    for label, job_ids, group in replays:
        if group:
            tally = replay_tally(engine, job_ids)
            waiting = waiting or tally.waiting > 0 or tally.outcomes.get(Outcome.RETRYING, 0) > 0
            ran = " · ".join(f"{outcome_badge(o)} {n}" for o, n in sorted(tally.outcomes.items()))
            st.info(
                f"{md_escape(label)}: {tally.total - tally.waiting} of {tally.total} ran {ran}".strip(),
                icon=":material/replay:",
            )
            continue
        progress = replay_progress(engine, job_ids[0])
        record = progress.record
        if record is None or record.outcome == Outcome.RETRYING:
            waiting = True
            st.info(
                f"{md_escape(label)}: replay job #{job_ids[0]} {progress.job_status or 'gone'}"
                + (" — retrying." if record is not None else " — waiting for the runner."),
                icon=":material/schedule:",
            )
        elif record.outcome == Outcome.SUCCEEDED:
            st.success(
                f"{md_escape(label)}: replay job #{job_ids[0]} ran: record #{record.id} "
                f"{outcome_badge(record.outcome)}",
                icon=":material/replay:",
            )
        else:
            st.error(
                f"{md_escape(label)}: replay job #{job_ids[0]} ran: record #{record.id} "
                f"{outcome_badge(record.outcome)} — {md_escape(shorten(record.error_message))}",
                icon=":material/replay:",
            )
    return waiting


def _waiting(engine: Engine, replays: Replays) -> bool:
    for _, job_ids, group in replays:
        if group:
            tally = replay_tally(engine, job_ids)
            if tally.waiting or tally.outcomes.get(Outcome.RETRYING):
                return True
        else:
            record = replay_progress(engine, job_ids[0]).record
            if record is None or record.outcome == Outcome.RETRYING:
                return True
    return False


# --- helpers -------------------------------------------------------------------------------------------


def _user() -> str:
    return str(st.session_state.get(SESSION_USER) or "app")


def _status_label(group: GroupView) -> str:
    label = STATUS_LABELS.get(GroupStatus(group.status), group.status)
    if group.resolution == Resolution.AUTO_SYNCED:
        return f"{label} (synced)"
    return label


def _flow_option(name: str) -> str:
    return name if name == ALL else flow_title(name)


def _group_label(group: GroupView) -> str:
    return f"#{group.id} · {group.error_class or 'error'} · {group.flow} · {plural(group.count, 'record')} · {shorten(group.pattern, 60)}"


main()
