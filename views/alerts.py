"""Alerts: which integrations run or are paused, the incidents the runner found, where their notices go,
and when the detectors fire.

The runner opens an incident when a detector sees a problem (jobs dying, a token refresh failing, a Zoho
channel lapsing, a webhook source going quiet, a high error rate, an integration paused) and resolves it
when the problem clears; each opening and resolution sends one notice by email and to the outgoing
webhook (runner.alerts). After an outage the runner pauses an integration by itself, pings the failing
system and resumes it when the ping succeeds (runner.outage); a person can pause and resume by hand here.
This page only calls those services: `runner.alerts`, `runner.outage` and `storage.alerts`' settings. It
never shows a secret: the SMTP password and the webhook signing secret are only ever "set" or "not set".
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime, time
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy.engine import Engine

from runner import outage
from runner.alerts import (
    MAX_ATTEMPTS,
    SIGNATURE_TOLERANCE,
    TITLES,
    IncidentView,
    NoticeView,
    incident_overview,
    send_test,
)
from runner.health import describe_duration, system_title
from storage.alerts import (
    AUTO,
    INCIDENTS_LIMIT,
    AlertSettingsPublic,
    IncidentFilter,
    IncidentStatus,
    public_settings,
    save_settings,
)
from storage.crud import list_integrations
from storage.crypto import get_vault
from storage.types import utcnow
from views._auth import SESSION_USER
from views._ui import EMPTY, database, format_time, md_code, md_escape, plural, state_signature

ALL = "All"
LIST_LIMIT = 100  # incidents of each status listed at most
SAVES_KEY = "alerts_saves"  # session state: settings saved in this session, part of the form widgets' keys
FLASH_KEY = "alerts_flash"  # session state: {section: (kind, text)} shown once after a rerun
QUIET_SYSTEMS = ("netsuite", "zuora", "zoho")

STATUS_BADGES = {
    IncidentStatus.OPEN: ":red-badge[:material/error: open]",
    IncidentStatus.RESOLVED: ":green-badge[:material/check_circle: resolved]",
}
NOTICE_BADGES = {
    "sent": ":green-badge[:material/check: sent]",
    "failed": ":red-badge[:material/error: failed]",
    "pending": ":gray-badge[:material/schedule: pending]",
}
CHANNEL_TITLES = {"email": "Email", "webhook": "Webhook"}
RUNNING = ":green-badge[:material/play_circle: running]"
PAUSED_AUTO = ":orange-badge[:material/pause_circle: paused by the runner]"
PAUSED_BY_PERSON = ":blue-badge[:material/pause_circle: paused by hand]"
SECRET_SET = "(set — leave empty to keep)"

THRESHOLD_HELP = {
    "check_seconds": "How often the runner looks for incidents and sends their notices.",
    "dead_window_minutes": (
        "A “jobs are dying” incident resolves once this long passes without another dead job of that flow."
    ),
    "error_rate_threshold": (
        "The share of an integration's records that did not succeed, above which an incident opens "
        "(0.5 = half of them)."
    ),
    "error_rate_window_minutes": "The window the error rate is measured over.",
    "error_rate_min_records": "With fewer records than this in the window, no error rate incident opens.",
    "outage_failures": (
        "Calls in a row to one system that fail because it is down or refuses our credentials before the "
        "runner pauses the integration. 0 never pauses."
    ),
    "outage_window_minutes": "Only failures this recent count towards an outage.",
    "reping_seconds": "How often the runner pings the failing system of an integration it paused.",
}
QUIET_COLUMNS = {
    "integration": st.column_config.SelectboxColumn("Integration", required=True, width="large"),
    "system": st.column_config.SelectboxColumn(
        "Webhooks from", options=list(QUIET_SYSTEMS), required=True, format_func=system_title
    ),
    "minutes": st.column_config.NumberColumn(
        "Quiet after (minutes)", min_value=0.0, step=1.0, format="%g", required=True
    ),
}
SIGNATURE_EXAMPLE = f'''import hashlib, hmac, time

def came_from_ml_connector(secret: str, body: bytes, timestamp: str, signature: str) -> bool:
    """body: the raw request body; timestamp: X-ML-Timestamp; signature: X-ML-Signature."""
    if abs(time.time() - float(timestamp)) > {SIGNATURE_TOLERANCE:g}:  # refuse old (replayed) notices
        return False
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return hmac.compare_digest("sha256=" + mac.hexdigest(), signature)'''


def main() -> None:
    engine = database()
    st.title("Alerts")
    st.caption(
        "Which integrations run and which are paused, the incidents the runner found and where their "
        "notices went, and where alerts go. One notice when an incident opens, one when it resolves."
    )
    names = {i.id: i.name for i in list_integrations(engine)}
    integrations_section(engine, names)
    incidents_section(engine, names)
    settings = public_settings(engine)
    delivery_section(engine, settings)
    thresholds_section(engine, settings, names)


# --- integrations: running or paused ---------------------------------------------------------------------


def integrations_section(engine: Engine, names: Mapping[int, str]) -> None:
    st.subheader("Integrations")
    statuses = outage.overview(engine)
    if not statuses:
        st.info(
            "No integration yet: add one on **New integration**; it shows here, running or paused.",
            icon=":material/add_link:",
        )
        return
    st.caption(
        "A paused integration's jobs wait in the queue: webhooks are still accepted and nothing is lost. "
        "The runner pauses an integration by itself when a system it talks to keeps failing, and resumes it "
        "when a ping of that system succeeds; a pause by hand lasts until someone resumes it."
    )
    for status in statuses:
        integration_card(engine, status, names.get(status.integration_id, f"#{status.integration_id}"))


def integration_card(engine: Engine, status: outage.PauseStatus, name: str) -> None:
    key = status.integration_id
    with st.container(border=True):
        head, action = st.columns([5, 1.2], vertical_alignment="center")
        head.markdown(f"#### {md_escape(name)} &nbsp; {_state_badge(status)}")
        head.caption(_state_line(status))
        if status.paused:
            action.button(
                "Resume",
                key=f"alerts_resume_{key}",
                icon=":material/play_arrow:",
                type="primary",
                width="stretch",
                help="Let the runner claim this integration's queued jobs again",
                on_click=_resume,
                args=(engine, key),
            )
        else:
            with (
                action.popover("Pause…", icon=":material/pause:", width="stretch"),
                st.form(f"alerts_pause_form_{key}", border=False),
            ):
                reason = st.text_input(
                    "Why pause it?", key=f"alerts_pause_reason_{key}", placeholder="e.g. Zuora maintenance"
                )
                st.caption("Jobs keep queueing while it is paused; it runs again when someone resumes it.")
                if st.form_submit_button("Pause", type="primary", key=f"alerts_pause_{key}"):
                    _pause(engine, key, reason)
                    st.rerun()
        _flash(f"integration_{key}")
        if status.paused:
            paused_facts(status)


def paused_facts(status: outage.PauseStatus) -> None:
    if status.by == AUTO:
        st.warning(
            f"**Paused by the runner because of an outage.** {md_escape(status.reason or '')}  \n"
            "Nothing is lost while paused: jobs wait in the queue, and it resumes by itself when the ping "
            "succeeds.",
            icon=":material/cloud_off:",
        )
        now = utcnow()
        facts = {
            "Failing system": ", ".join(system_title(s) for s in status.systems) or EMPTY,
            "Paused since (UTC)": format_time(status.since),
            "Next re-ping": _relative(status.next_ping_at, now),
            "Jobs waiting": f"{status.queued_jobs:,}",
        }
    else:
        st.info(
            f"**Paused by {md_escape(status.by or 'someone')}**: {md_escape(status.reason or 'no reason given')}"
            "  \nJobs wait in the queue; it stays paused until someone resumes it.",
            icon=":material/pause_circle:",
        )
        facts = {
            "Paused since (UTC)": format_time(status.since),
            "Jobs waiting": f"{status.queued_jobs:,}",
        }
    for column, (label, value) in zip(st.columns(len(facts)), facts.items(), strict=True):
        column.caption(label)
        column.markdown(md_escape(value))
    if status.by == AUTO and status.last_ping_error:
        st.caption(f"Last ping ({format_time(status.last_ping_at, suffix=True)}) failed:")
        st.code(status.last_ping_error, language=None, wrap_lines=True)


def _state_badge(status: outage.PauseStatus) -> str:
    if not status.paused:
        return RUNNING
    return PAUSED_AUTO if status.by == AUTO else PAUSED_BY_PERSON


def _state_line(status: outage.PauseStatus) -> str:
    waiting = plural(status.queued_jobs, "job") + " in the queue"
    if not status.paused:
        return f"Running · {waiting}."
    return f"Paused since {format_time(status.since, suffix=True)} · {waiting}, waiting."


def _relative(at: datetime | None, now: datetime) -> str:
    if at is None:
        return EMPTY
    seconds = (at - now).total_seconds()
    when = f"in {describe_duration(seconds)}" if seconds > 0 else "due now"
    return f"{format_time(at)} ({when})"


def _pause(engine: Engine, integration_id: int, reason: str) -> None:
    try:
        outage.pause(engine, integration_id=integration_id, by=_user(), reason=reason.strip())
    except LookupError as gone:
        _set_flash(f"integration_{integration_id}", "error", f"Not paused: {gone}.")
    else:
        _set_flash(f"integration_{integration_id}", "success", "Paused: its jobs wait until you resume it.")


def _resume(engine: Engine, integration_id: int) -> None:
    try:
        resumed = outage.resume(engine, integration_id=integration_id, by=_user())
    except LookupError as gone:
        _set_flash(f"integration_{integration_id}", "error", f"Not resumed: {gone}.")
        return
    text = "Resumed: the runner picks its queued jobs up now." if resumed else "It was not paused."
    _set_flash(f"integration_{integration_id}", "success", text)


# --- incidents -------------------------------------------------------------------------------------------


def incidents_section(engine: Engine, names: Mapping[int, str]) -> None:
    st.subheader("Incidents")
    now = utcnow()
    open_now = incident_overview(
        engine, filters=IncidentFilter(status=IncidentStatus.OPEN), limit=INCIDENTS_LIMIT
    )
    today = datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)
    resolved = incident_overview(
        engine, filters=IncidentFilter(status=IncidentStatus.RESOLVED), limit=INCIDENTS_LIMIT
    )  # newest opened first: one opened before today may have resolved today
    resolved_today = [i for i in resolved if i.resolved_at is not None and i.resolved_at >= today]
    undelivered = sum(n.status == "failed" for i in open_now for n in i.notices)
    columns = st.columns(3)
    columns[0].metric("Open now", _count(len(open_now)), border=True)
    columns[1].metric("Resolved today (UTC)", _count(len(resolved_today)), border=True)
    columns[2].metric(
        "Notices that failed",
        undelivered,
        border=True,
        help="Notices of open incidents that could not be sent (see each incident's notices)",
    )
    filters = incident_filter(names)
    shown = 0
    for status in (IncidentStatus.OPEN, IncidentStatus.RESOLVED):
        if filters.status not in (None, status):
            continue
        incidents = incident_overview(
            engine,
            filters=IncidentFilter(status=status, kind=filters.kind, integration_id=filters.integration_id),
            limit=LIST_LIMIT,
        )
        if not incidents:
            continue
        shown += len(incidents)
        title = "Open" if status == IncidentStatus.OPEN else "Resolved"
        more = f" (the newest {LIST_LIMIT})" if len(incidents) >= LIST_LIMIT else ""
        st.markdown(f"##### {title}{more}")
        for incident in incidents:
            incident_card(incident)
    if not shown:
        filtered = filters != IncidentFilter()
        st.success(
            "No incident matches these filters." if filtered else "No incident so far: everything runs.",
            icon=":material/task_alt:",
        )


def incident_filter(names: Mapping[int, str]) -> IncidentFilter:
    status, kind, integration = st.columns(3)
    chosen_status = status.selectbox(
        "Status", [ALL, IncidentStatus.OPEN.value, IncidentStatus.RESOLVED.value], key="alerts_status"
    )
    chosen_kind = kind.selectbox(
        "Kind",
        [ALL, *(k.value for k in TITLES)],
        format_func=lambda k: k if k == ALL else TITLES.get(k, k),  # type: ignore[call-overload]
        key="alerts_kind",
    )
    integration_id = integration.selectbox(
        "Integration",
        [None, *names],
        format_func=lambda i: ALL if i is None else names[i],
        key="alerts_integration",
    )
    return IncidentFilter(
        status=None if chosen_status == ALL else chosen_status,
        kind=None if chosen_kind == ALL else chosen_kind,
        integration_id=integration_id,
    )


def incident_card(incident: IncidentView) -> None:
    with st.container(border=True):
        badge = STATUS_BADGES.get(IncidentStatus(incident.status), md_escape(incident.status))
        where = f" · {md_escape(incident.integration)}" if incident.integration else ""
        st.markdown(f"**{md_escape(incident.title)}**{where} &nbsp; {badge}")
        st.markdown(md_escape(incident.summary or "(no summary)"))
        parts = [
            f"opened {format_time(incident.opened_at, suffix=True)}",
            f"last seen {format_time(incident.last_seen_at, suffix=True)}",
            f"seen {plural(incident.count, 'time')}",
        ]
        if incident.resolved_at is not None:
            parts.append(f"resolved {format_time(incident.resolved_at, suffix=True)}")
        st.caption(" · ".join(parts))
        resolution = incident.details.get("resolution")
        if incident.status == IncidentStatus.RESOLVED and resolution:
            st.caption(f"How it cleared: {md_escape(str(resolution))}")
        with st.expander(_notices_label(incident.notices)):
            notices_list(incident.notices)
            details = {k: v for k, v in incident.details.items() if k != "resolution"}
            if details:
                st.caption(f"Details · subject {md_code(incident.subject)}")
                st.json(details, expanded=True)


def _notices_label(notices: Sequence[NoticeView]) -> str:
    if not notices:
        return "Notices: none (no channel was set up)"
    tally = {s: sum(n.status == s for n in notices) for s in ("sent", "failed", "pending")}
    parts = [f"{count} {status}" for status, count in tally.items() if count]
    icon = ":material/error:" if tally["failed"] else ":material/notifications:"
    return f"{icon} Notices: {', '.join(parts)}"


def notices_list(notices: Sequence[NoticeView]) -> None:
    if not notices:
        st.caption(
            "No notice was queued: no channel was set up when this happened. Set one up under "
            "**Where alerts go**."
        )
        return
    for notice in notices:
        channel = CHANNEL_TITLES.get(notice.channel, notice.channel)
        badge = NOTICE_BADGES.get(notice.status, md_escape(notice.status))
        tries = f" · {plural(notice.attempts, 'attempt')}" if notice.attempts else ""
        at = f" · {format_time(notice.at, suffix=True)}" if notice.at else ""
        line = f"**{md_escape(notice.event.capitalize())}** notice by {md_escape(channel)} {badge}{tries}{at}"
        if notice.status == "failed" and notice.attempts < MAX_ATTEMPTS:
            line += " · tried again on the next checks"
        st.markdown(line)
        if notice.error:
            st.code(notice.error, language=None, wrap_lines=True)


def _count(value: int) -> str:
    return f"{value:,}+" if value >= INCIDENTS_LIMIT else f"{value:,}"


# --- where alerts go -------------------------------------------------------------------------------------


def delivery_section(engine: Engine, settings: AlertSettingsPublic) -> None:
    st.subheader("Where alerts go")
    st.caption(
        "Notices go by email when SMTP has a host, a sender and a recipient, and to the webhook when it has "
        "a URL. Secrets are stored encrypted and never shown again: leave a secret's field empty to keep it."
    )
    generation = _generation(settings)
    with st.form("alerts_delivery_form"):
        st.markdown("##### :material/mail: Email (SMTP)")
        host, port, starttls = st.columns([3, 1, 1], vertical_alignment="bottom")
        smtp_host = host.text_input(
            "SMTP host",
            value=settings.smtp_host,
            key=f"alerts_smtp_host_{generation}",
            placeholder="smtp.example.com",
        )
        smtp_port = port.number_input(
            "Port",
            value=settings.smtp_port,
            min_value=1,
            max_value=65535,
            step=1,
            key=f"alerts_smtp_port_{generation}",
        )
        smtp_starttls = starttls.checkbox(
            "STARTTLS",
            value=settings.smtp_starttls,
            key=f"alerts_smtp_starttls_{generation}",
            help="Upgrade the connection to TLS (port 587). Off: plain SMTP, for a relay on your network.",
        )
        user, password = st.columns(2)
        smtp_user = user.text_input(
            "SMTP user",
            value=settings.smtp_user,
            key=f"alerts_smtp_user_{generation}",
            help="Empty: no login.",
        )
        smtp_password = password.text_input(
            "SMTP password",
            type="password",
            key=f"alerts_smtp_password_{generation}",
            placeholder=SECRET_SET if settings.smtp_password_set else "not set",
            autocomplete="new-password",
        )
        clear_password = (
            password.checkbox("Clear the stored password", key=f"alerts_smtp_password_clear_{generation}")
            if settings.smtp_password_set
            else False
        )
        sender, recipients = st.columns(2)
        smtp_from = sender.text_input(
            "From",
            value=settings.smtp_from,
            key=f"alerts_smtp_from_{generation}",
            placeholder="alerts@example.com",
        )
        smtp_to = recipients.text_input(
            "To",
            value=", ".join(settings.smtp_to),
            key=f"alerts_smtp_to_{generation}",
            placeholder="ops@example.com, finance@example.com",
            help="Email addresses, separated by commas.",
        )
        st.markdown("##### :material/webhook: Outgoing webhook")
        url, secret = st.columns(2)
        webhook_url = url.text_input(
            "Webhook URL",
            value=settings.webhook_url,
            key=f"alerts_webhook_url_{generation}",
            placeholder="https://hooks.slack.com/services/…",
            help="Each notice is POSTed here as JSON (Slack-style: a `text` field, the event and the incident).",
        )
        webhook_secret = secret.text_input(
            "Signing secret",
            type="password",
            key=f"alerts_webhook_secret_{generation}",
            placeholder=SECRET_SET if settings.webhook_secret_set else "not set",
            autocomplete="new-password",
            help="Required with a URL: every notice is signed with it, so the receiver can check it came from us.",
        )
        clear_secret = (
            secret.checkbox(
                "Clear the stored signing secret", key=f"alerts_webhook_secret_clear_{generation}"
            )
            if settings.webhook_secret_set
            else False
        )
        saved = st.form_submit_button("Save where alerts go", type="primary", key="alerts_delivery_save")
    if saved:
        changes = {
            "smtp_host": smtp_host.strip(),
            "smtp_port": int(smtp_port),
            "smtp_user": smtp_user.strip(),
            "smtp_from": smtp_from.strip(),
            "smtp_to": _addresses(smtp_to),
            "smtp_starttls": bool(smtp_starttls),
            "webhook_url": webhook_url.strip(),
        }
        _save(
            engine,
            "delivery",
            changes,
            smtp_password="" if clear_password else (smtp_password or None),
            webhook_secret="" if clear_secret else (webhook_secret or None),
        )
    _flash("delivery")
    st.caption(_last_change(settings))
    test_alert(engine, settings)
    with st.expander("How a receiver checks that a webhook notice came from us"):
        st.markdown(
            "Each notice carries two headers: `X-ML-Timestamp`, the Unix time it was sent, and "
            "`X-ML-Signature`: `sha256=` followed by the hex HMAC-SHA256, keyed with the signing secret, of "
            "the timestamp, a dot and the raw request body. Recompute it over the exact bytes received, "
            f"compare in constant time, and refuse timestamps more than {SIGNATURE_TOLERANCE:g} seconds off."
        )
        st.code(SIGNATURE_EXAMPLE, language="python")


def test_alert(engine: Engine, settings: AlertSettingsPublic) -> None:
    channels = _channels(settings)
    clicked = st.button(
        "Send a test alert",
        key="alerts_send_test",
        icon=":material/send:",
        disabled=not channels,
        help=(
            f"Send a test notice by {' and '.join(channels)} now"
            if channels
            else "Set up email or the webhook above first"
        ),
    )
    if not clicked:
        return
    with st.spinner("Sending a test notice…"):
        results = send_test(engine, get_vault())
    for result in results:
        channel = CHANNEL_TITLES.get(result.channel, result.channel)
        tries = plural(result.attempts, "attempt")
        if result.ok:
            st.success(f"{channel}: the test notice was sent ({tries}).", icon=":material/check_circle:")
        else:
            st.error(
                f"{channel}: the test notice was not sent ({tries}): {md_escape(result.error or 'no reason given')}",
                icon=":material/error:",
            )


def _channels(settings: AlertSettingsPublic) -> list[str]:
    channels = []
    if settings.smtp_host and settings.smtp_from and settings.smtp_to:
        channels.append("email")
    if settings.webhook_url:
        channels.append("webhook")
    return channels


def _addresses(text: str) -> list[str]:
    return [part for part in re.split(r"[,;\s]+", text) if part]


# --- thresholds ------------------------------------------------------------------------------------------


def thresholds_section(engine: Engine, settings: AlertSettingsPublic, names: Mapping[int, str]) -> None:
    st.subheader("Thresholds")
    st.caption(
        "When the runner's detectors open an incident, and when it pauses an integration after an outage."
    )
    generation = _generation(settings)
    values: dict[str, Any] = {}
    with st.form("alerts_thresholds_form"):
        st.markdown("##### Detectors")
        first = st.columns(3)
        values["check_seconds"] = _number(
            first[0], "Check every (seconds)", settings, "check_seconds", generation
        )
        values["dead_window_minutes"] = _number(
            first[1], "Dying jobs resolve after (minutes)", settings, "dead_window_minutes", generation
        )
        values["error_rate_threshold"] = first[2].number_input(
            "Error rate threshold (share)",
            value=float(settings.error_rate_threshold),
            min_value=0.0,
            max_value=1.0,
            step=0.05,
            format="%.2f",
            key=f"alerts_error_rate_threshold_{generation}",
            help=THRESHOLD_HELP["error_rate_threshold"],
        )
        second = st.columns(3)
        values["error_rate_window_minutes"] = _number(
            second[0], "Error rate window (minutes)", settings, "error_rate_window_minutes", generation
        )
        values["error_rate_min_records"] = _number(
            second[1], "Error rate needs at least (records)", settings, "error_rate_min_records", generation
        )
        st.markdown("##### Pause on outage")
        third = st.columns(3)
        values["outage_failures"] = _number(
            third[0], "Pause after failures in a row", settings, "outage_failures", generation
        )
        values["outage_window_minutes"] = _number(
            third[1], "Within (minutes)", settings, "outage_window_minutes", generation
        )
        values["reping_seconds"] = _number(
            third[2], "Ping the failing system every (seconds)", settings, "reping_seconds", generation
        )
        st.markdown("##### Quiet webhook sources")
        st.caption(
            "Open an incident when no webhook from a system reaches an integration for this long. Add a row "
            "per source to watch; delete a row to stop watching it."
        )
        labels = _integration_labels(names, settings.quiet_minutes)
        edited = st.data_editor(
            _quiet_rows(settings.quiet_minutes, labels),
            key=f"alerts_quiet_{generation}",
            num_rows="dynamic",
            hide_index=True,
            width="stretch",
            column_config={
                **QUIET_COLUMNS,
                "integration": st.column_config.SelectboxColumn(
                    "Integration", options=list(labels.values()), required=True, width="large"
                ),
            },
        )
        saved = st.form_submit_button("Save thresholds", type="primary", key="alerts_thresholds_save")
    if saved:
        values["quiet_minutes"] = _quiet_minutes(edited, labels)
        _save(engine, "thresholds", values)
    _flash("thresholds")


def _number(column: Any, label: str, settings: AlertSettingsPublic, field: str, generation: str) -> Any:
    value = getattr(settings, field)
    whole = isinstance(value, int)
    return column.number_input(
        label,
        value=value if whole else float(value),
        min_value=0 if whole else 0.0,
        step=1 if whole else 1.0,
        format=None if whole else "%g",
        key=f"alerts_{field}_{generation}",
        help=THRESHOLD_HELP[field],
    )


def _integration_labels(names: Mapping[int, str], quiet: Mapping[str, float]) -> dict[int, str]:
    """Each integration's label in the quiet-sources table, with any watched one that no longer exists."""
    labels = {i: f"#{i} {name}" for i, name in names.items()}
    for key in quiet:
        integration_id = int(key.split("/", 1)[0])
        labels.setdefault(integration_id, f"#{integration_id} (removed)")
    return labels


def _quiet_rows(quiet: Mapping[str, float], labels: Mapping[int, str]) -> pd.DataFrame:
    rows = []
    for key, minutes in sorted(quiet.items()):
        integration_id, system = key.split("/", 1)
        rows.append({"integration": labels[int(integration_id)], "system": system, "minutes": float(minutes)})
    return pd.DataFrame(rows, columns=["integration", "system", "minutes"]).astype(
        {"integration": "object", "system": "object", "minutes": "float64"}
    )


def _quiet_minutes(edited: pd.DataFrame, labels: Mapping[int, str]) -> dict[str, float]:
    by_label = {label: integration_id for integration_id, label in labels.items()}
    quiet: dict[str, float] = {}
    for row in edited.to_dict("records"):
        integration_id = by_label.get(row.get("integration"))
        system, minutes = row.get("system"), row.get("minutes")
        if integration_id is None or not system or minutes is None or pd.isna(minutes):
            continue  # an unfinished row: not saved
        quiet[f"{integration_id}/{system}"] = float(minutes)
    return quiet


# --- saving and messages ---------------------------------------------------------------------------------


def _save(
    engine: Engine,
    section: str,
    changes: dict[str, Any],
    *,
    smtp_password: str | None = None,
    webhook_secret: str | None = None,
) -> None:
    """Save, then rerun so every field shows what is stored; a refusal shows as it came, nothing saved."""
    try:
        save_settings(
            engine,
            get_vault(),
            by=_user(),
            changes=changes,
            smtp_password=smtp_password,
            webhook_secret=webhook_secret,
        )
    except ValueError as refused:
        _set_flash(section, "error", f"Nothing was saved: {md_escape(str(refused))}")
        return
    st.session_state[SAVES_KEY] = st.session_state.get(SAVES_KEY, 0) + 1
    _set_flash(section, "success", "Saved.")
    st.rerun()


def _generation(settings: AlertSettingsPublic) -> str:
    """Part of the settings widgets' keys: it changes after each save here and when the stored settings
    change, so the fields then start again from what is stored, and a secret typed in is gone. The
    timestamp is left out: the unsaved defaults carry a new one on every run."""
    stored = settings.model_dump(exclude={"updated_at"})
    return state_signature(st.session_state.get(SAVES_KEY, 0), sorted(stored.items()))


def _last_change(settings: AlertSettingsPublic) -> str:
    return (
        f"Last changed by {md_escape(settings.updated_by)} · {format_time(settings.updated_at, suffix=True)}"
    )


def _set_flash(section: str, kind: str, text: str) -> None:
    st.session_state.setdefault(FLASH_KEY, {})[section] = (kind, text)


def _flash(section: str) -> None:
    flash = (st.session_state.get(FLASH_KEY) or {}).pop(section, None)
    if flash is None:
        return
    kind, text = flash
    if kind == "error":
        st.error(text, icon=":material/block:")
    else:
        st.success(text, icon=":material/check_circle:")


def _user() -> str:
    return str(st.session_state.get(SESSION_USER) or "app")


main()
