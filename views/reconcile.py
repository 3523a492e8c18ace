"""Reconciliation: do NetSuite and Zuora or Zoho CRM still agree, and what to do where they do not.

A run compares the systems in bulk (the runner does it: `runner.reconcile`); this page asks for one and
follows its progress, lays the totals side by side, lists every drift with its field-level differences,
exports that list as CSV, and fixes one drift at a time: re-sync it (a queued sync job, through the same
audited and idempotent path as any sync), link it to a record that already exists, or accept it with a
reason. Everything it does goes through `runner.reconcile.service`, which audits each decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import partial
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError
from connectors.registry import SYSTEMS
from runner.flows import registry
from runner.reconcile.service import (
    Choice,
    FixResult,
    ReconcileRefused,
    RunProgress,
    TargetMatch,
    accept,
    drift_csv,
    latest_run,
    link,
    list_drifts,
    request_run,
    resync,
    run_progress,
    run_totals,
)
from storage.crud import list_integrations
from storage.crypto import get_vault
from storage.models import IntegrationPublic, Outcome
from storage.reconcile import Drift, DriftFilter, DriftKind, DriftStatus, RunStatus, count_drifts, get_drift
from storage.settings import get_settings
from views._auth import SESSION_USER
from views._ui import (
    EMPTY,
    OUTCOME_STYLES,
    database,
    format_duration,
    format_time,
    md_code,
    md_escape,
    plural,
    state_signature,
)

POLL = 1.5  # seconds between looks at a reconciliation in progress
DRIFT_PAGE_SIZE = 100  # drifts per page of the list (each may take several rows: one per field)
DRIFT_KEY = "drift"  # the selected drift: the "Drift id" input, also the query parameter ?drift=<id>
FLASH_KEY = "reconcile_flash"  # session state: (drift id, kind, text) of the last fix done here
DECISIONS_KEY = "reconcile_decisions"  # session state: {drift id: TargetMatch} awaiting update/link/skip
RUN_FLASH_KEY = "reconcile_run_flash"  # session state: a refusal from "Run reconciliation now"
ACTIVE_RUN = (RunStatus.REQUESTED, RunStatus.RUNNING)
ALL = "all"  # the filter option that lists every flow, kind or status

GREEN = OUTCOME_STYLES[Outcome.SUCCEEDED].text_color
ORANGE = OUTCOME_STYLES[Outcome.RETRYING].text_color
RED = OUTCOME_STYLES[Outcome.FAILED].text_color
GRAY = "#8b8d98"
NETSUITE_COLOUR = "#1f77b4"
TARGET_COLOUR = "#ff9f1c"

RUN_BADGES: dict[str, str] = {
    RunStatus.REQUESTED: ":gray-badge[:material/schedule: requested]",
    RunStatus.RUNNING: ":blue-badge[:material/autorenew: running]",
    RunStatus.SUCCEEDED: ":green-badge[:material/check_circle: succeeded]",
    RunStatus.FAILED: ":red-badge[:material/error: failed]",
}
STATUS_BADGES: dict[str, str] = {
    DriftStatus.OPEN: ":red-badge[:material/error: open]",
    DriftStatus.FIXING: ":orange-badge[:material/autorenew: fixing]",
    DriftStatus.ACCEPTED: ":gray-badge[:material/done: accepted]",
    DriftStatus.RESOLVED: ":green-badge[:material/check_circle: resolved]",
    DriftStatus.SUPERSEDED: ":gray-badge[:material/history: superseded]",
}
STATUS_COLOURS: dict[str, str] = {
    DriftStatus.OPEN: RED,
    DriftStatus.FIXING: ORANGE,
    DriftStatus.RESOLVED: GREEN,
    DriftStatus.ACCEPTED: GRAY,
    DriftStatus.SUPERSEDED: GRAY,
}
# What each kind of drift means, with the target system's name filled in.
KIND_LABELS: dict[str, str] = {
    DriftKind.MISSING_IN_TARGET: "missing in {target}",
    DriftKind.MISSING_IN_SOURCE: "only in {target}",
    DriftKind.FIELD_MISMATCH: "fields differ",
    DriftKind.AMOUNT_MISMATCH: "amount differs",
    DriftKind.STATUS_MISMATCH: "status differs",
}

NO_INTEGRATION = (
    "No integration yet — a reconciliation compares an integration's systems. "
    "Add connections and an integration on **New integration** first."
)
NO_RUN = (
    "No reconciliation has finished for this integration yet. Press **Run reconciliation now**: a runner "
    "compares every record and the totals and drifts appear here. The runner also does it once a day."
)
NO_DRIFT = "No drift: every record compared agrees on both sides."
NO_MATCH = "No drift matches these filters — clear a filter to see the others."
NOTHING_SELECTED = "Click a row in the list, or type a drift id, to see it and fix or accept it."

DRIFT_COLUMNS = {
    "drift": st.column_config.NumberColumn("#", format="%d", width=40),
    "record": st.column_config.TextColumn("Record"),
    "field": st.column_config.TextColumn("Field"),
    "netsuite": st.column_config.TextColumn("NetSuite value"),
    "target": st.column_config.TextColumn("Target value"),
    "kind": st.column_config.TextColumn("Kind"),
    "status": st.column_config.TextColumn("Status", width="small"),
    "source_id": st.column_config.TextColumn("NetSuite id", width="small"),
    "target_id": st.column_config.TextColumn("Target id", width="small"),
    "type": st.column_config.TextColumn("Type", width="small"),
}


def main() -> None:
    """Render the page: the integration, the run, the totals, the drift list, then the picked drift."""
    engine = database()
    st.title("Reconciliation")
    st.caption(
        "Whether NetSuite and Zuora or Zoho CRM agree: counts and invoice amounts side by side, every record "
        "that differs, and one click to re-sync, link or accept each difference."
    )
    integrations = list_integrations(engine)
    if not integrations:
        st.info(NO_INTEGRATION, icon=":material/fact_check:")
        return
    integration = pick_integration(integrations)
    run_panel(engine, integration)
    finished = latest_run(engine, integration_id=integration.id, finished=True)
    if finished is None:
        st.info(NO_RUN, icon=":material/fact_check:")
        return
    totals_section(engine, finished)
    drift_section(engine, integration, finished)
    st.divider()
    drift_detail(engine, integration, finished.run_id)


def pick_integration(integrations: Sequence[IntegrationPublic]) -> IntegrationPublic:
    if len(integrations) == 1:
        return integrations[0]
    by_id = {i.id: i for i in integrations}
    chosen = st.selectbox(
        "Integration", list(by_id), format_func=lambda i: by_id[i].name, key="reconcile_integration"
    )
    return by_id[chosen]


# --- the run -------------------------------------------------------------------------------------------


def run_panel(engine: Engine, integration: IntegrationPublic) -> None:
    """The last run in one line, the button that asks for a new one, and its progress while it runs."""
    latest = latest_run(engine, integration_id=integration.id)
    busy = latest is not None and latest.status in ACTIVE_RUN
    with st.container(border=True):
        text, action = st.columns([4, 1.3], vertical_alignment="center")
        text.markdown(describe_run(latest))
        action.button(
            "Run reconciliation now",
            key="reconcile_run_now",
            icon=":material/fact_check:",
            type="primary",
            width="stretch",
            disabled=busy,
            help="Already running: wait for it to finish" if busy else "Compare every record now",
            on_click=_request_run,
            args=(engine, integration.id),
        )
        refused = st.session_state.pop(RUN_FLASH_KEY, None)
        if refused:
            st.error(refused, icon=":material/block:")
        if latest is not None and busy:
            st.fragment(run_progress_panel, run_every=POLL)(engine, latest.run_id)
        elif latest is not None and latest.status == RunStatus.FAILED:
            st.error(
                f"Run #{latest.run_id} failed: {md_escape(latest.error or 'no reason was given')}. Fix what "
                "it names (a connection's credentials, or the integration's flows) and run it again; the "
                "totals and drifts below are from the last run that finished.",
                icon=":material/error:",
            )


def describe_run(run: RunProgress | None) -> str:
    """The last run in a line: which, who or what asked for it, when, its status and how long it took."""
    if run is None:
        return "**No reconciliation yet** for this integration."
    who = "the daily schedule" if run.trigger == "scheduled" else md_escape(run.requested_by)
    parts = [
        f"**Last run #{run.run_id}** {RUN_BADGES.get(run.status, md_escape(run.status))}",
        f"{md_escape(run.trigger)}, by {who}",
        f"requested {format_time(run.requested_at, suffix=True)}",
    ]
    if run.finished_at is not None:
        parts.append(f"finished {format_time(run.finished_at, suffix=True)}")
        parts.append(f"took {format_duration(run.started_at, run.finished_at)}")
    return " · ".join(parts)


def _request_run(engine: Engine, integration_id: int) -> None:
    """Button callback: ask for a run (the progress bar then follows it)."""
    try:
        request_run(engine, integration_id=integration_id, requested_by=_user())
    except ReconcileRefused as refused:
        st.session_state[RUN_FLASH_KEY] = f"No run was requested: {md_escape(str(refused))}."


def run_progress_panel(engine: Engine, run_id: int) -> None:
    """A run in progress, looked at again every POLL seconds; the whole page reloads once it ends."""
    progress = run_progress(engine, run_id=run_id)
    if progress is None or progress.status not in ACTIVE_RUN:
        st.rerun()  # the whole page: the new totals and drifts are there to show
        return
    if progress.status == RunStatus.REQUESTED:
        st.progress(0.0, text=f"Run #{run_id} is waiting for a runner to pick it up…")
        st.caption(
            "A runner starts it within seconds. If it keeps waiting, check on the Health page that a runner "
            "is alive (start one with `python -m runner`)."
        )
        return
    phase = progress.phase or "starting"
    phase = phase[:1].upper() + phase[1:]
    counted = f" · {progress.done:,} of {progress.total:,} NetSuite records" if progress.total else ""
    st.progress(progress.fraction, text=f"Run #{run_id}: {phase}{counted}")


# --- totals --------------------------------------------------------------------------------------------


def totals_section(engine: Engine, run: RunProgress) -> None:
    """Each flow's counts on both sides, then the invoice amounts per period and per customer."""
    totals = run_totals(engine, run_id=run.run_id)
    st.subheader("Totals side by side")
    st.caption(f"From run #{run.run_id}, finished {format_time(run.finished_at, suffix=True)}.")
    flows = list(totals.get("flows") or [])
    if not flows:
        st.caption("This run compared no flow.")
    per_row = min(max(len(flows), 1), 3)
    for start in range(0, len(flows), per_row):
        for column, row in zip(st.columns(per_row), flows[start : start + per_row], strict=False):
            with column.container(border=True):
                flow_card(row)
    invoices = totals.get("invoices")
    if invoices:
        invoice_totals(invoices)


def flow_card(row: Mapping[str, Any]) -> None:
    """One flow: NetSuite's count beside the target's, and what the comparison made of them."""
    target = system_title(str(row.get("target_system", "")))
    netsuite_count, target_count = int(row.get("netsuite") or 0), int(row.get("target") or 0)
    st.markdown(f"**{md_escape(str(row.get('title') or row.get('flow') or ''))}**")
    left, right = st.columns(2)
    left.metric("NetSuite", f"{netsuite_count:,}")
    gap = target_count - netsuite_count
    right.metric(
        target,
        f"{target_count:,}",
        delta=None if gap == 0 else f"{gap:+,} vs NetSuite",
        delta_color="off",
    )
    st.caption(" · ".join(flow_findings(row, target)))


def flow_findings(row: Mapping[str, Any], target: str) -> list[str]:
    """What a flow's comparison found, as short phrases ("3 missing in Zuora")."""
    counts = [
        ("matched", "matched"),
        ("missing_in_target", f"missing in {target}"),
        ("missing_in_source", f"only in {target}"),
        ("field_mismatch", "with fields that differ"),
        ("amount_mismatch", "with amounts that differ"),
        ("status_mismatch", "with statuses that differ"),
        ("target_without_netsuite_id", f"in {target} without a NetSuite id"),
        ("not_compared", "not compared (the mapping failed)"),
    ]
    found = [f"{int(row[key]):,} {label}" for key, label in counts if row.get(key)]
    agrees = not any(row.get(key) for key, _ in counts[1:6])
    found.insert(0, ":green[:material/check: agree]" if agrees else ":red[:material/close: disagree]")
    return found


def invoice_totals(invoices: Mapping[str, Any]) -> None:
    """Invoice amounts per period as a chart and a table, then per customer on demand."""
    periods = list(invoices.get("by_period") or [])
    st.markdown("##### Invoice amounts by period")
    if not periods:
        st.caption("No invoices on either side.")
        return
    frame = money_frame(periods, "period")
    chart = frame.rename(columns={"netsuite_amount": "NetSuite", "target_amount": "Zuora"})
    chart["period"] = chart["period"].replace("", "(no date)")
    differ = int((~frame["agrees"]).sum())
    st.caption(
        "Each period's invoice total on both sides: bars of different heights are periods that disagree"
        + (f" ({plural(differ, 'period')})." if differ else " (none do).")
    )
    st.bar_chart(
        chart,
        x="period",
        y=["NetSuite", "Zuora"],
        color=[NETSUITE_COLOUR, TARGET_COLOUR],
        stack=False,
        x_label="Period (invoice date)",
        y_label="Amount",
        height=280,
    )
    money_table(frame, "period", "Period")
    customers = list(invoices.get("by_customer") or [])
    if customers:
        by_customer = money_frame(customers, "customer_id")
        differ = int((~by_customer["agrees"]).sum())
        label = f"By customer ({plural(differ, 'customer')} disagree)" if differ else "By customer"
        with st.expander(label):
            # The customers that disagree first: they are the ones to look at.
            money_table(by_customer.sort_values("agrees", kind="stable"), "customer_id", "NetSuite customer")


def money_frame(rows: Sequence[Mapping[str, Any]], key: str) -> pd.DataFrame:
    """Rows of counts and decimal-string amounts as numbers, with the difference target − NetSuite."""
    frame = pd.DataFrame(
        {
            key: [str(r.get(key, "")) for r in rows],
            "netsuite_count": [int(r.get("netsuite_count") or 0) for r in rows],
            "netsuite_amount": [_amount(r.get("netsuite_amount")) for r in rows],
            "target_count": [int(r.get("target_count") or 0) for r in rows],
            "target_amount": [_amount(r.get("target_amount")) for r in rows],
            "agrees": [bool(r.get("agrees")) for r in rows],
        }
    )
    frame["difference"] = frame["target_amount"] - frame["netsuite_amount"]
    return frame


def money_table(frame: pd.DataFrame, key: str, title: str) -> None:
    shown = frame.assign(verdict=frame["agrees"].map({True: "✓ agree", False: "✗ differ"}))
    st.dataframe(
        shown.style.map(lambda v: f"color: {GREEN if v.startswith('✓') else RED}", subset=["verdict"]).format(
            "{:,.2f}", subset=["netsuite_amount", "target_amount", "difference"]
        ),
        hide_index=True,
        width="stretch",
        column_order=[
            key,
            "netsuite_count",
            "netsuite_amount",
            "target_count",
            "target_amount",
            "difference",
            "verdict",
        ],
        column_config={
            key: st.column_config.TextColumn(title),
            "netsuite_count": st.column_config.NumberColumn("NetSuite invoices", format="%d"),
            "netsuite_amount": st.column_config.NumberColumn("NetSuite amount"),
            "target_count": st.column_config.NumberColumn("Zuora invoices", format="%d"),
            "target_amount": st.column_config.NumberColumn("Zuora amount"),
            "difference": st.column_config.NumberColumn("Zuora − NetSuite"),
            "verdict": st.column_config.TextColumn("Agree?", width="small"),
        },
    )


def _amount(value: Any) -> float:
    try:
        return float(Decimal(str(value or 0)))
    except InvalidOperation:
        return 0.0


# --- the drift list ------------------------------------------------------------------------------------


def drift_section(engine: Engine, integration: IntegrationPublic, run: RunProgress) -> None:
    """Counts by status, the filters, one page of drifts with their field differences, and the export."""
    st.subheader("Drifts")
    counts = count_drifts(engine, filters=DriftFilter(run_id=run.run_id))
    if not counts:
        st.success(NO_DRIFT, icon=":material/check_circle:")
        return
    columns = st.columns(4)
    columns[0].metric("Found by this run", f"{sum(counts.values()):,}", border=True)
    columns[1].metric("Open", f"{counts.get(DriftStatus.OPEN, 0):,}", border=True)
    columns[2].metric(
        "Being fixed",
        f"{counts.get(DriftStatus.FIXING, 0):,}",
        border=True,
        help="A re-sync or link was queued; the next run confirms it",
    )
    columns[3].metric("Accepted", f"{counts.get(DriftStatus.ACCEPTED, 0):,}", border=True)
    flows = [str(row.get("flow")) for row in run_totals(engine, run_id=run.run_id).get("flows") or []]
    flow, kind, status = drift_filters(flows, target_title(flows))
    filters = {"run_id": run.run_id, "flow": flow, "kind": kind, "status": status}
    total = sum(count_drifts(engine, filters=DriftFilter(**filters)).values())
    if total == 0:
        st.info(NO_MATCH, icon=":material/filter_alt_off:")
        return
    signature = state_signature(run.run_id, flow, kind, status)
    pages = math.ceil(total / DRIFT_PAGE_SIZE)
    page_key = f"reconcile_page_{signature}"
    if st.session_state.get(page_key, 1) > pages:
        st.session_state[page_key] = pages
    table_slot = st.container()
    footer = st.columns([2, 2, 1.2], vertical_alignment="center")
    with footer[0]:
        page = st.pagination(pages, key=page_key) if pages > 1 else 1
    first = (page - 1) * DRIFT_PAGE_SIZE
    drifts = list_drifts(engine, **filters, limit=DRIFT_PAGE_SIZE, offset=first)
    footer[1].caption(
        f"Showing drifts {first + 1:,}–{first + len(drifts):,} of {total:,}, in the order found."
    )
    footer[2].download_button(
        "Download CSV",
        data=partial(drift_csv, engine, **filters),
        file_name=f"drifts-{integration.key or integration.id}-run-{run.run_id}.csv",
        mime="text/csv",
        key="reconcile_csv",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
        help="Every drift in these filters, one line per field that differs",
    )
    with table_slot:
        drift_table(drifts, f"reconcile_table_{signature}_{page}", target_title(flows))


def drift_filters(flows: Sequence[str], target: str) -> tuple[str | None, str | None, str | None]:
    """The flow, kind and status to list (None: any)."""
    with st.container(border=True):
        columns = st.columns(3)
        flow = columns[0].selectbox(
            "Flow",
            [ALL, *flows],
            format_func=lambda v: "All flows" if v == ALL else flow_title(v),
            key="reconcile_flow",
        )
        kind = columns[1].selectbox(
            "Kind",
            [ALL, *DriftKind],
            format_func=lambda v: (
                "All kinds" if v == ALL else KIND_LABELS[v].format(target=target).capitalize()
            ),
            key="reconcile_kind",
        )
        status = columns[2].selectbox(
            "Status",
            [ALL, *DriftStatus],
            format_func=lambda v: "All statuses" if v == ALL else str(v).capitalize(),
            key="reconcile_status",
        )
    return _any(flow), _any(kind), _any(status)


def _any(value: str | None) -> str | None:
    return None if value in (ALL, None) else str(value)


def drift_table(drifts: Sequence[Drift], key: str, target: str) -> None:
    """The drifts, one row per field that differs; clicking a row picks its drift for the detail."""
    rows = drift_rows(drifts)
    ids = [row["drift"] for row in rows]
    columns = {
        **DRIFT_COLUMNS,
        "target": st.column_config.TextColumn(f"{target} value"),
        "target_id": st.column_config.TextColumn(f"{target} id", width="small"),
    }
    st.dataframe(
        pd.DataFrame(rows, columns=list(DRIFT_COLUMNS)).style.map(
            lambda v: f"color: {STATUS_COLOURS[v]}" if v in STATUS_COLOURS else "", subset=["status"]
        ),
        hide_index=True,
        column_config=columns,
        key=key,
        on_select=partial(_select_row, key, ids),
        selection_mode="single-row",
        width="stretch",
    )


def drift_rows(drifts: Sequence[Drift]) -> list[dict[str, Any]]:
    """One row per field difference (one row for a drift without field differences, such as a record
    missing on one side), in the order given."""
    rows = []
    for drift in drifts:
        target = system_title(target_system(drift.flow))
        base = {
            "drift": drift.id,
            "type": record_type(drift.flow),
            "kind": kind_label(drift.kind, target),
            "record": drift.label or drift.source_id,
            "source_id": drift.source_id,
            "target_id": drift.target_id or "",
            "status": drift.status,
        }
        for difference in drift.differences or [whole_record(drift)]:
            rows.append(
                {
                    **base,
                    "field": str(difference.get("field", "")),
                    "netsuite": _value(difference.get("netsuite")),
                    "target": _value(difference.get("target")),
                }
            )
    return rows


def whole_record(drift: Drift) -> dict[str, Any]:
    """The "difference" shown for a drift that has none field by field: which side lacks the record."""
    if drift.kind == DriftKind.MISSING_IN_TARGET:
        return {"field": "(whole record)", "netsuite": "present", "target": "missing"}
    if drift.kind == DriftKind.MISSING_IN_SOURCE:
        return {"field": "(whole record)", "netsuite": "missing", "target": "present"}
    return {}


def _select_row(table_key: str, ids: Sequence[int]) -> None:
    """Dataframe callback: show the clicked row's drift (or nothing, when the row was unselected)."""
    rows = st.session_state[table_key].selection.rows
    st.session_state[DRIFT_KEY] = ids[rows[0]] if rows else None


# --- one drift -----------------------------------------------------------------------------------------


def drift_detail(engine: Engine, integration: IntegrationPublic, run_id: int) -> None:
    """The drift picker and, once one is picked, its differences and the three ways to settle it."""
    st.subheader("Fix a drift")
    picker, hint = st.columns([1, 4], vertical_alignment="bottom")
    drift_id = picker.number_input(
        "Drift id", min_value=1, value=None, step=1, key=DRIFT_KEY, placeholder="e.g. 7", bind="query-params"
    )
    hint.caption(NOTHING_SELECTED)
    if drift_id is None:
        return
    drift = get_drift(engine, drift_id=int(drift_id))
    if drift is None or drift.integration_id != integration.id:
        st.warning(f"Integration {md_escape(integration.name)} has no drift #{drift_id}.")
        return
    with st.container(border=True):
        drift_header(drift)
        if drift.run_id != run_id:
            st.caption(
                f":material/history: Found by an earlier run (#{drift.run_id}); the list above is run "
                f"#{run_id}'s, where a drift still there appears again under a new number."
            )
        flash = st.session_state.get(FLASH_KEY)
        if flash is not None and flash[0] == drift.id:
            {"success": st.success, "error": st.error, "info": st.info}[flash[1]](flash[2])
        actions(engine, drift)


def drift_header(drift: Drift) -> None:
    target = system_title(target_system(drift.flow))
    kind = kind_label(drift.kind, target)
    st.markdown(
        f"#### Drift #{drift.id} · {md_escape(drift.label or drift.source_id)} &nbsp; "
        f"{STATUS_BADGES.get(drift.status, md_escape(drift.status))}"
    )
    target_id = md_code(drift.target_id) if drift.target_id else "*(none)*"
    st.markdown(
        f"{md_escape(flow_title(drift.flow))} · **{md_escape(kind)}** · NetSuite {md_code(drift.source_id)} "
        f"→ {md_escape(target)} {target_id}"
    )
    if drift.differences:
        st.dataframe(
            pd.DataFrame(
                [
                    {
                        "field": d.get("field", ""),
                        "netsuite": _value(d.get("netsuite")),
                        "target": _value(d.get("target")),
                    }
                    for d in drift.differences
                ]
            ),
            hide_index=True,
            width="stretch",
            column_config={
                "field": "Field",
                "netsuite": "NetSuite value",
                "target": st.column_config.TextColumn(f"{target} value"),
            },
        )
    if drift.decided_by:
        decided = f"{md_escape(drift.resolution or 'decided')} by {md_escape(drift.decided_by)}"
        when = format_time(drift.decided_at, suffix=True)
        reason = f": “{md_escape(drift.reason)}”" if drift.reason else ""
        job = f" · job #{drift.job_id}" if drift.job_id else ""
        st.caption(f":material/gavel: Last decision: {decided}, {when}{reason}{job}")


def actions(engine: Engine, drift: Drift) -> None:
    """Re-sync, link and accept, side by side, each with what it does."""
    assert drift.id is not None
    target = system_title(target_system(drift.flow))
    resync_box, link_box, accept_box = st.columns(3)
    with resync_box.container(border=True):
        st.markdown("##### :material/sync: Re-sync")
        refusal = resync_refusal(drift)
        st.caption(
            refusal
            or f"Send the NetSuite record to {target} again, as an ordinary audited sync. If it is not "
            f"linked yet, {target} is first searched for a record carrying its NetSuite id."
        )
        st.button(
            "Re-sync from NetSuite",
            key=f"reconcile_resync_{drift.id}",
            icon=":material/sync:",
            type="primary",
            disabled=refusal is not None,
            on_click=_fix,
            args=(engine, drift.id, "resync"),
        )
    with link_box.container(border=True):
        st.markdown("##### :material/link: Link")
        st.caption(
            f"Link the NetSuite record to a {target} record that already exists (its NetSuite id is set "
            "on it), then sync onto it."
        )
        st.text_input(
            f"{target} record id", key=f"reconcile_link_target_{drift.id}", placeholder=link_hint(drift.flow)
        )
        st.button(
            "Link",
            key=f"reconcile_link_{drift.id}",
            icon=":material/link:",
            on_click=_fix,
            args=(engine, drift.id, "link"),
            disabled=drift.kind == DriftKind.MISSING_IN_SOURCE,
        )
    with accept_box.container(border=True):
        st.markdown("##### :material/done: Accept")
        st.caption("Leave it as it is: later runs report this same difference as accepted, not open.")
        st.text_area(
            "Reason",
            key=f"reconcile_reason_{drift.id}",
            placeholder="e.g. Zuora keeps the billing phone on purpose",
            height=68,
        )
        st.button(
            "Accept",
            key=f"reconcile_accept_{drift.id}",
            icon=":material/done:",
            on_click=_fix,
            args=(engine, drift.id, "accept"),
        )
    pending = st.session_state.get(DECISIONS_KEY, {}).get(drift.id)
    if pending is not None:
        decision_panel(engine, drift, pending, target)


def decision_panel(engine: Engine, drift: Drift, found: TargetMatch, target: str) -> None:
    """A record already carries this NetSuite id: update it, link it, or skip — the person's choice."""
    assert drift.id is not None
    name = (
        f"**{md_escape(found.label)}** ({md_code(found.target_id)})"
        if found.label
        else md_code(found.target_id)
    )
    st.warning(
        f"{target} already has {name} carrying NetSuite id {md_code(drift.source_id)} (found by "
        f"{md_code(found.via)}): a sync would create a second one. Choose what to do — the choice goes "
        "into the audit trail.",
        icon=":material/content_copy:",
    )
    for column, (choice, label, icon) in zip(
        st.columns([1, 1, 1, 3]),
        [
            (Choice.UPDATE, "Update it", ":material/sync:"),
            (Choice.LINK, "Link only", ":material/link:"),
            (Choice.SKIP, "Skip", ":material/block:"),
        ],
        strict=False,
    ):
        column.button(
            label,
            key=f"reconcile_choice_{choice}_{drift.id}",
            icon=icon,
            width="stretch",
            on_click=_fix,
            args=(engine, drift.id, "resync", choice),
        )
    st.caption(
        "Update: link it and sync NetSuite's values onto it · Link only: link it, send nothing · "
        "Skip: do nothing now."
    )


def resync_refusal(drift: Drift) -> str | None:
    """Why a re-sync cannot fix this drift, or None when it can."""
    if drift.kind == DriftKind.MISSING_IN_SOURCE:
        return "The record is not in NetSuite, so there is nothing to sync from: accept it with a reason."
    return None


def _fix(engine: Engine, drift_id: int, action: str, choice: Choice | None = None) -> None:
    """Button callback: do one fix and leave what happened (and what to do next) for the page to show."""
    decisions = st.session_state.setdefault(DECISIONS_KEY, {})
    by = _user()
    try:
        if action == "accept":
            reason = st.session_state.get(f"reconcile_reason_{drift_id}", "")
            accepted = accept(engine, drift_id=drift_id, reason=reason, by=by)
            result = FixResult("accepted", accepted)
        elif action == "link":
            target_id = st.session_state.get(f"reconcile_link_target_{drift_id}", "")
            result = link(engine, get_vault(), get_settings(), drift_id=drift_id, target_id=target_id, by=by)
        else:
            result = resync(engine, get_vault(), get_settings(), drift_id=drift_id, by=by, choice=choice)
    except ReconcileRefused as refused:
        st.session_state[FLASH_KEY] = (drift_id, "error", f"Not done — {md_escape(str(refused))}.")
        return
    except ConnectorError as exc:
        st.session_state[FLASH_KEY] = (
            drift_id,
            "error",
            f"Not done: {md_escape(str(exc))}. Check the connection on the Connections page, then try again.",
        )
        return
    decisions.pop(drift_id, None)
    if result.status == "needs_decision" and result.existing is not None:
        decisions[drift_id] = result.existing
        st.session_state.pop(FLASH_KEY, None)
        return
    st.session_state[FLASH_KEY] = (
        drift_id,
        "info" if result.status == "skipped" else "success",
        fix_message(result, drift_id),
    )


def fix_message(result: FixResult, drift_id: int) -> str:
    """What a fix did and what to do next, for the person who clicked."""
    drift = result.drift
    flow = drift.flow if drift is not None else ""
    target = system_title(target_system(flow))
    record = md_code(drift.source_id) if drift is not None else f"of drift #{drift_id}"
    linked = md_code(drift.target_id) if drift is not None and drift.target_id else "the record"
    if result.status == "queued":
        onto = (
            f" onto {target} {linked}" if drift is not None and drift.resolution in ("update", "link") else ""
        )
        return (
            f"Queued a sync of NetSuite {record}{onto} (job #{result.job_id}); it will show in the Audit log "
            "once the runner has run it. Run reconciliation again to confirm the drift is gone."
        )
    if result.status == "linked":
        why = " (a Zuora invoice is never rewritten, so nothing was sent)" if flow == "invoice" else ""
        return (
            f"Linked NetSuite {record} to {target} {linked}{why}. Run reconciliation again to confirm the "
            "drift is gone."
        )
    if result.status == "skipped":
        status = drift.status if drift is not None else "open"
        return (
            f"Skipped: nothing was queued, and the choice is in the audit trail. The drift stays {status} — "
            "accept it with a reason if the difference is fine."
        )
    if result.status == "accepted":
        return (
            "Accepted: the reason is in the audit trail, and later runs report this same difference as "
            "accepted, not open."
        )
    return md_escape(result.message or result.status)


# --- small helpers -------------------------------------------------------------------------------------


def _user() -> str:
    return str(st.session_state.get(SESSION_USER) or "admin")


def target_system(flow: str) -> str:
    found = registry().get(flow)
    return found.target_system if found is not None else ""


def system_title(system: str) -> str:
    return SYSTEMS[system].spec.title if system in SYSTEMS else (system or "target")


def target_title(flows: Sequence[str] | None) -> str:
    """The target system's name when every flow writes to the same one, else "target"."""
    systems = {target_system(flow) for flow in flows or []} - {"", "netsuite"}
    return system_title(systems.pop()) if len(systems) == 1 else "target"


def flow_title(flow: str) -> str:
    found = registry().get(flow)
    return found.title if found is not None else flow


def record_type(flow: str) -> str:
    """What kind of record a flow moves, in a word ("customer", "invoice")."""
    found = registry().get(flow)
    return str(getattr(found, "source_record", "") or flow)


def kind_label(kind: str, target: str) -> str:
    return KIND_LABELS.get(kind, kind).format(target=target)


def link_hint(flow: str) -> str:
    return {
        "customer_account": "Zuora account id or number",
        "invoice": "Zuora invoice id",
    }.get(flow, "Zoho record id")


def _value(value: Any) -> str:
    return EMPTY if value is None or value == "" else str(value)


main()
