"""Health: is the runner alive, is work flowing, and is anything about to lapse?

Everything shown comes from `runner.health` (read models over the shared database); this page lays it
out. The runner and queue figures refresh on their own while "Live" is on.
"""

from __future__ import annotations

import math
from datetime import timedelta

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from runner.health import (
    STALE_AFTER_BEATS,
    ChannelStatus,
    Renewal,
    RunnerStatus,
    describe_duration,
    describe_until,
    payments_page,
    queue_summary,
    renewal_history,
    runner_heartbeats,
    system_title,
    throughput,
    token_overview,
)
from runner.health import channel_overview as list_channels
from storage.crud import list_integrations
from storage.models import Outcome
from storage.settings import get_settings
from views._ui import OUTCOME_STYLES, database, format_time, md_code, shorten

LIVE_REFRESH = 10.0  # seconds between refreshes of the runner and queue figures while "Live" is on
PAYMENTS_PAGE_SIZE = 25
GONE_AFTER = timedelta(hours=1)  # stale runners last seen longer ago than this are not listed
RENEWALS_SHOWN = 50

# Chart windows: how far back, and the bucket size each bar or point stands for.
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "Last hour": (timedelta(hours=1), timedelta(minutes=1)),
    "Last day": (timedelta(days=1), timedelta(hours=1)),
    "Last week": (timedelta(weeks=1), timedelta(hours=1)),
}
DEFAULT_WINDOW = "Last day"

GREEN = OUTCOME_STYLES[Outcome.SUCCEEDED].text_color
ORANGE = OUTCOME_STYLES[Outcome.RETRYING].text_color
RED = OUTCOME_STYLES[Outcome.FAILED].text_color
GRAY = "#8b8d98"
# Table cells coloured by state (channels' health, tokens' state, renewal actions).
STATE_COLOURS: dict[str, str] = {
    "ok": GREEN,
    "valid": GREEN,
    "renewed": GREEN,
    "re-provisioned": ORANGE,
    "expiring": ORANGE,
    "expired": ORANGE,
    "failing": RED,
    "cooling down": RED,
    "problem": RED,
    "failed": RED,
    "disabled": GRAY,
    "none": GRAY,
}

NO_RUNNER = (
    "No runner has reported yet, so nothing is being synced. Start one with `python -m runner` "
    "(or `./start.sh`) on a machine that reaches this database; it shows up here within seconds."
)


def main() -> None:
    engine = database()
    settings = get_settings()
    st.title("Health")
    st.caption("Whether the runner is alive, how work flows through it, and what is about to lapse.")
    live = st.toggle(
        "Live", value=True, key="health_live", help=f"Refresh runner and queue every {LIVE_REFRESH:.0f} s"
    )
    st.fragment(live_figures, run_every=LIVE_REFRESH if live else None)(engine, settings.heartbeat_interval)
    activity(engine)
    token_table(engine)
    channels(engine)
    payments(engine)


def live_figures(engine: Engine, heartbeat_interval: float) -> None:
    """The runners' heartbeats and the queue: the figures worth watching change."""
    beats = runner_heartbeats(engine, heartbeat_interval=heartbeat_interval)
    runners(beats, heartbeat_interval)
    queue_metrics(engine, beats)


def runners(beats: list[RunnerStatus], heartbeat_interval: float) -> None:
    st.subheader("Runner")
    if not beats:
        st.warning(NO_RUNNER, icon=":material/power_off:")
        return
    freshest = beats[0]
    if freshest.stale:
        st.error(
            f"No runner has reported for {describe_duration(freshest.age)} (more than {STALE_AFTER_BEATS} "
            f"heartbeats of {heartbeat_interval:.0f} s): it stopped or cannot reach the database. "
            "Restart it with `python -m runner`.",
            icon=":material/heart_broken:",
        )
    # Every runner restart leaves its old process's row behind: list only the recently gone ones.
    shown = [b for b in beats if not b.stale or b.age < GONE_AFTER.total_seconds()] or beats[:1]
    for beat in shown:
        badge = (
            ":red-badge[:material/heart_broken: stale]"
            if beat.stale
            else ":green-badge[:material/favorite: alive]"
        )
        completed = "" if beat.completed is None else f" · {beat.completed:,} jobs done since start"
        st.markdown(
            f"{badge} {md_code(beat.runner)} · last seen {describe_duration(beat.age)} ago · "
            f"up since {format_time(beat.started_at, suffix=True)}{completed}"
        )
    gone = len(beats) - len(shown)
    if gone:
        runner_word = "runner that" if gone == 1 else "runners that"
        st.caption(
            f"{gone} {runner_word} stopped more than an hour ago {'is' if gone == 1 else 'are'} not listed."
        )


def queue_metrics(engine: Engine, beats: list[RunnerStatus]) -> None:
    st.subheader("Queue")
    summary = queue_summary(engine)
    oldest = summary.oldest_queued_age
    columns = st.columns(5)
    columns[0].metric(
        "Heartbeat age",
        describe_duration(beats[0].age) if beats else "no runner",
        border=True,
        help="Since the freshest runner last reported",
    )
    columns[1].metric("Queue depth", f"{summary.queued:,}", border=True, help="Jobs waiting to run")
    columns[2].metric("Running", f"{summary.running:,}", border=True)
    columns[3].metric(
        "Oldest job waiting",
        "—" if oldest is None else describe_duration(oldest),
        border=True,
        help="How long the oldest runnable job has been due",
    )
    columns[4].metric(
        "Dead-lettered",
        f"{summary.dead:,}",
        border=True,
        help="Jobs that gave up; replay their records from the Audit log",
    )


def activity(engine: Engine) -> None:
    """Records synced per bucket, by outcome, and the share that did not succeed."""
    st.subheader("Throughput and error rate")
    choice = st.segmented_control(
        "Window", list(WINDOWS), default=DEFAULT_WINDOW, required=True, key="health_window"
    )
    window, bucket = WINDOWS[choice or DEFAULT_WINDOW]
    buckets = throughput(engine, window=window, bucket=bucket)
    total = sum(b.total for b in buckets)
    if total == 0:
        st.info(
            f"No records synced in the {str(choice).lower()}. Records appear once the runner syncs something.",
            icon=":material/query_stats:",
        )
        return
    failing = sum(b.retrying + b.failed for b in buckets)
    unit = "minute" if bucket < timedelta(hours=1) else "hour"
    frame = pd.DataFrame(
        {
            "time": [b.start for b in buckets],
            "succeeded": [b.succeeded for b in buckets],
            "retrying": [b.retrying for b in buckets],
            "failed": [b.failed for b in buckets],
            "error rate (%)": [
                None if b.error_rate is None else round(100 * b.error_rate, 1) for b in buckets
            ],
        }
    )
    left, right = st.columns(2)
    with left:
        st.caption(f"Records per {unit}: {total:,} in the window")
        st.bar_chart(
            frame, x="time", y=["succeeded", "retrying", "failed"], color=[GREEN, ORANGE, RED], height=260
        )
    with right:
        st.caption(
            f"Error rate per {unit} (retrying or failed): {100 * failing / total:.1f}% over the window"
        )
        st.line_chart(frame, x="time", y="error rate (%)", color=RED, height=260)


def token_table(engine: Engine) -> None:
    st.subheader("Tokens")
    tokens = token_overview(engine)
    if not tokens:
        st.caption("No connections yet: add one on the New integration page.")
        return
    rows = [
        {
            "connection": t.connection,
            "system": system_title(t.system),
            "state": t.state,
            "expires": describe_until(t.time_to_expiry) if t.state != "none" else "—",
            "refreshed": format_time(t.refreshed_at),
            "reason": t.reason,
            "failures": t.failures,
            "cooldown_until": format_time(t.cooldown_until),
        }
        for t in tokens
    ]
    st.dataframe(
        _coloured(pd.DataFrame(rows), "state"),
        hide_index=True,
        width="stretch",
        column_config={
            "connection": "Connection",
            "system": "System",
            "state": "State",
            "expires": "Expires",
            "refreshed": "Refreshed (UTC)",
            "reason": st.column_config.TextColumn("Why it was refreshed", width="medium"),
            "failures": st.column_config.NumberColumn("Failed refreshes", format="%d"),
            "cooldown_until": "Cool-down until (UTC)",
        },
    )
    st.caption(
        "Tokens are minted on first use and refreshed ahead of expiry; a failed refresh waits out a "
        "cool-down before the next try. The tokens themselves are never shown."
    )


def channels(engine: Engine) -> None:
    st.subheader("Zoho notification channels")
    found = list_channels(engine)
    if not found:
        st.caption(
            "No Zoho notification channels yet; integrations with Zoho CRM get one to hear of changes."
        )
        return
    st.dataframe(
        _coloured(pd.DataFrame([_channel_row(c) for c in found]), "health"),
        hide_index=True,
        width="stretch",
        column_config={
            "channel": "Channel id",
            "integration": "Integration",
            "status": "Status",
            "health": "Health",
            "expires": "Expires (UTC)",
            "time_to_expiry": "Time to expiry",
            "renewed": "Renewed (UTC)",
            "last_error": st.column_config.TextColumn("Last error", width="medium"),
        },
    )
    st.caption("The runner renews each channel a day before it lapses and re-enables any that Zoho dropped.")
    with st.expander("Renewal history"):
        history = renewal_history(engine, limit=RENEWALS_SHOWN)
        if not history:
            st.caption("No renewals yet: the runner checks the channels every 15 minutes.")
        else:
            st.dataframe(
                _coloured(pd.DataFrame([_renewal_row(r) for r in history]), "action"),
                hide_index=True,
                width="stretch",
                column_config={
                    "at": "When (UTC)",
                    "channel": "Channel id",
                    "action": "Action",
                    "expires": "Expiry after (UTC)",
                    "detail": st.column_config.TextColumn("Detail", width="large"),
                },
            )


def _channel_row(channel: ChannelStatus) -> dict[str, object]:
    return {
        "channel": channel.channel,
        "integration": channel.integration,
        "status": channel.status,
        "health": channel.health,
        "expires": format_time(channel.expires_at),
        "time_to_expiry": describe_until(channel.time_to_expiry),
        "renewed": format_time(channel.renewed_at),
        "last_error": shorten(channel.last_error),
    }


def _renewal_row(renewal: Renewal) -> dict[str, object]:
    return {
        "at": format_time(renewal.at),
        "channel": renewal.channel,
        "action": renewal.action,
        "expires": format_time(renewal.expires_at),
        "detail": shorten(renewal.detail, 200),
    }


def payments(engine: Engine) -> None:
    """The read-only mirror of Zuora payments, a page at a time."""
    st.subheader("Payments mirror")
    names = {i.id: i.name for i in list_integrations(engine)}
    total = payments_page(engine, limit=1).total
    if total == 0:
        st.caption(
            "No payments mirrored yet. The runner reads Zuora payments every 15 minutes for integrations "
            "with a Zuora connection; NetSuite keeps receivables, so nothing is written back."
        )
        return
    pages = math.ceil(total / PAYMENTS_PAGE_SIZE)
    table_slot = st.container()
    footer = st.columns([3, 2], vertical_alignment="center")
    with footer[0]:
        page = st.pagination(pages, key="health_payments_page") if pages > 1 else 1
    found = payments_page(engine, limit=PAYMENTS_PAGE_SIZE, offset=(page - 1) * PAYMENTS_PAGE_SIZE)
    first = (page - 1) * PAYMENTS_PAGE_SIZE
    footer[1].caption(f"Showing {first + 1:,}–{first + len(found.rows):,} of {found.total:,}, latest first.")
    rows = [
        {
            "number": p.number or p.zuora_id,
            "integration": names.get(p.integration_id, f"#{p.integration_id}"),
            "account": p.account_id,
            "amount": p.amount,
            "currency": p.currency,
            "status": p.status,
            "effective": p.effective_date,
            "synced": format_time(p.synced_at),
        }
        for p in found.rows
    ]
    with table_slot:
        st.dataframe(
            pd.DataFrame(rows),
            hide_index=True,
            width="stretch",
            column_config={
                "number": "Payment",
                "integration": "Integration",
                "account": "Zuora account",
                "amount": st.column_config.NumberColumn("Amount", format="%.2f"),
                "currency": "Currency",
                "status": "Status",
                "effective": "Effective date",
                "synced": "Mirrored (UTC)",
            },
        )


def _coloured(frame: pd.DataFrame, column: str) -> object:
    """`frame` with `column` coloured by state (see STATE_COLOURS)."""
    return frame.style.map(
        lambda value: f"color: {STATE_COLOURS[value]}" if value in STATE_COLOURS else "", subset=[column]
    )


main()
