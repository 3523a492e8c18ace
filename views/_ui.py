"""Helpers the pages share: the database handle, and how records, times and outcomes are shown.

Pages stay thin: they lay out widgets and call these helpers and `storage`; nothing here builds SQL.
The leading underscore keeps Streamlit from ever treating this module as a page.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import streamlit as st
from sqlalchemy.engine import Engine

from storage.audit import AuditFilter, count_records
from storage.db import get_engine
from storage.migrate import upgrade
from storage.models import AuditAttempt, AuditRecord, Outcome

EMPTY = "—"
SHORT_ERROR = 90  # characters of an error message shown in a list cell
AUDIT_PAGE_SIZE = 50  # records per page of the audit list
# Records the audit page counts one by one. Beyond this it says "10,000+": an exact count walks every
# matching index entry on every rerun, which over a million records is the slowest part of the page.
COUNT_LIMIT = 10_000
# Characters Markdown (and Streamlit's :colour[...] and :shortcode: extensions) gives a meaning to.
MARKDOWN_SPECIAL = frozenset("\\`*_{}[]()<>#+-.!|~$:")


@dataclass(frozen=True)
class OutcomeStyle:
    """How one outcome is marked: a plain symbol where only text renders (table cells, which a canvas
    draws with system fonts, so no emoji), a Material icon and a colour everywhere else."""

    symbol: str
    icon: str
    color: str  # a Streamlit markdown colour name
    text_color: str  # CSS colour for table cells; readable on light and dark themes


OUTCOME_STYLES: dict[str, OutcomeStyle] = {
    Outcome.SUCCEEDED: OutcomeStyle("✓", ":material/check_circle:", "green", "#21a366"),
    Outcome.RETRYING: OutcomeStyle("↻", ":material/autorenew:", "orange", "#e8870e"),
    Outcome.FAILED: OutcomeStyle("✗", ":material/error:", "red", "#e5484d"),
}
UNKNOWN_OUTCOME = OutcomeStyle("•", ":material/help:", "gray", "inherit")

# What each error class asks of the person reading the audit log (see connectors/errors.py).
ERROR_CLASS_HINTS: dict[str, str] = {
    "config": "A connection's credentials or settings are wrong: fix the connection, then replay.",
    "transient": "The remote system was busy or unreachable; the runner retries on its own.",
    "remote": "The remote system rejected this record: fix the data or the mapping, then replay.",
    "bug": "Something unexpected went wrong in ml-connector: report it with this record's id.",
}

# Time-range choices offered by filters, newest-first windows ending now; None means no lower bound.
TIME_RANGES: dict[str, timedelta | None] = {
    "Last hour": timedelta(hours=1),
    "Last day": timedelta(days=1),
    "Last week": timedelta(weeks=1),
    "All time": None,
}


@st.cache_resource(show_spinner="Preparing the database…")
def database() -> Engine:
    """The process-wide engine, with the schema brought to head the first time any page asks."""
    upgrade()
    return get_engine()


def database_kind(engine: Engine) -> str:
    """A person-readable name for the database behind `engine`."""
    return {"sqlite": "SQLite", "postgresql": "PostgreSQL"}.get(engine.dialect.name, engine.dialect.name)


def outcome_style(outcome: str) -> OutcomeStyle:
    return OUTCOME_STYLES.get(outcome, UNKNOWN_OUTCOME)


def outcome_label(outcome: str) -> str:
    """The outcome as plain text with its symbol, e.g. "✗ failed" (for table cells)."""
    return f"{outcome_style(outcome).symbol} {outcome}"


def outcome_badge(outcome: str) -> str:
    """The outcome as a coloured Markdown badge with its icon."""
    style = outcome_style(outcome)
    return f":{style.color}-badge[{style.icon} {outcome}]"


def outcome_cell_css(label: str) -> str:
    """CSS for a table cell holding an `outcome_label`, colouring it by outcome."""
    outcome = label.split(" ", 1)[-1]
    return f"color: {outcome_style(outcome).text_color}" if outcome in OUTCOME_STYLES else ""


def format_time(value: datetime | None, *, suffix: bool = False) -> str:
    """A UTC timestamp to the second ("2025-06-01 14:03:22"), or an em dash when missing."""
    if value is None:
        return EMPTY
    text = value.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text} UTC" if suffix else text


def format_duration(started: datetime | None, finished: datetime | None) -> str:
    """How long a record took, in the unit that reads best."""
    if started is None or finished is None:
        return EMPTY
    seconds = (finished - started).total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def shorten(text: str | None, limit: int = SHORT_ERROR) -> str:
    """The first line of `text`, cut to `limit` characters with an ellipsis."""
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 1].rstrip() + "…"


def md_escape(text: str) -> str:
    """`text` with every Markdown-significant character escaped, for values that came from elsewhere
    (remote error messages, names) and must show exactly as written."""
    return "".join(f"\\{char}" if char in MARKDOWN_SPECIAL else char for char in text)


def md_code(text: str) -> str:
    """`text` as an inline code span, fenced with enough backticks to hold any it contains."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    return f"{fence} {text} {fence}" if longest else f"{fence}{text}{fence}"


def since_for(time_range: str, now: datetime) -> datetime | None:
    """The lower time bound for one of `TIME_RANGES`, relative to `now`."""
    window = TIME_RANGES.get(time_range)
    return None if window is None else now - window


def state_signature(*parts: Any) -> str:
    """A short stable digest of widget values, used to give a widget a fresh key when they change."""
    return hashlib.sha1(repr(parts).encode(), usedforsecurity=False).hexdigest()[:10]


def outcome_counts(engine: Engine, filters: AuditFilter) -> dict[str, int]:
    """How many records in `filters` ended in each outcome (zero for outcomes the filter excludes)."""
    counts: dict[str, int] = {}
    for outcome in Outcome:
        if filters.outcome not in (None, outcome):
            counts[outcome] = 0
        else:
            counts[outcome] = count_records(engine, filters=replace(filters, outcome=outcome.value))
    return counts


@dataclass(frozen=True)
class Count:
    """How many records matched, counted up to a limit: `capped` means "at least `value`"."""

    value: int
    capped: bool = False

    def __str__(self) -> str:
        return f"{self.value:,}+" if self.capped else f"{self.value:,}"


def plural(count: int | Count, noun: str) -> str:
    """`count` with `noun` agreeing: "1 failed record", "2 failed records", "10,000+ failed records"."""
    counted = count if isinstance(count, Count) else Count(count)
    return f"{counted} {noun if counted == Count(1) else noun + 's'}"


@dataclass(frozen=True)
class AuditCounts:
    """The audit page's counts for one filter: all matches, and matches by outcome."""

    total: Count
    by_outcome: dict[str, Count]


def capped_count(engine: Engine, filters: AuditFilter, *, limit: int = COUNT_LIMIT) -> Count:
    """The records in `filters`, counted no further than `limit`."""
    counted = count_records(engine, filters=filters, limit=limit + 1)
    return Count(min(counted, limit), capped=counted > limit)


def audit_counts(engine: Engine, filters: AuditFilter, *, limit: int = COUNT_LIMIT) -> AuditCounts:
    """Everything the audit page counts for `filters`, each count stopping at `limit`.

    Outcomes the filter excludes count zero without a query; with an outcome picked, the total is that
    outcome's count.
    """
    by_outcome = {
        outcome.value: (
            capped_count(engine, replace(filters, outcome=outcome.value), limit=limit)
            if filters.outcome in (None, outcome)
            else Count(0)
        )
        for outcome in Outcome
    }
    total = (
        by_outcome[filters.outcome]
        if filters.outcome in by_outcome
        else capped_count(engine, filters, limit=limit)
    )
    return AuditCounts(total=total, by_outcome=by_outcome)


def record_rows(records: Iterable[AuditRecord], integration_names: Mapping[int, str]) -> list[dict[str, Any]]:
    """One table row per audit record, in the order given."""
    return [
        {
            "id": record.id,
            "time": format_time(record.started_at),
            "flow": record.flow,
            "integration": integration_names.get(record.integration_id, f"#{record.integration_id}"),
            "source_id": record.source_id,
            "target_id": record.target_id or "",
            "action": record.action or "",
            "outcome": outcome_label(record.outcome),
            "error_class": record.error_class or "",
            "error": shorten(record.error_message),
        }
        for record in records
    ]


def attempt_rows(attempts: Iterable[AuditAttempt]) -> list[dict[str, Any]]:
    """One table row per HTTP attempt, in the order they were made."""
    return [
        {
            "seq": attempt.seq,
            "time": format_time(attempt.at),
            "system": attempt.system,
            "method": attempt.method,
            "url": attempt.url,
            "status": attempt.status,
            "duration_ms": round(attempt.duration_ms, 1),
            "error": attempt.error or "",
        }
        for attempt in attempts
    ]


def excerpt_for_display(excerpt: str) -> tuple[str, str | None]:
    """A response excerpt ready for `st.code`: pretty JSON when it parses, else the text as it came."""
    try:
        return json.dumps(json.loads(excerpt), indent=2, ensure_ascii=False), "json"
    except ValueError:
        # Excerpts are cut at a fixed length, so a JSON body is often no longer valid JSON.
        return excerpt, None


# --- approving access in another window (runner.consent) ----------------------------------------------

DEFAULT_APP_URL = "http://localhost:8501"  # Streamlit's own default, when the browser's URL is unknown
CONSENT_RETURN = ("state", "code", "error", "error_description")  # what NetSuite's redirect carries
CONSENT_WINDOW = "ml_connector_consent"  # the component's name, once per app

# The approval opens in a pop-up window, so this page keeps its session (and the person stays signed in:
# a password sign-in lasts as long as the browser tab's session). NetSuite sends the pop-up back to the
# redirect URI, on this app's origin, where this page can read its address again: the code and state
# are handed to Python and the pop-up is closed. Everything shown is set as text, never as HTML.
_CONSENT_HTML = (
    '<div class="consent"><button type="button"></button><span class="note" aria-live="polite"></span></div>'
)
_CONSENT_CSS = """
.consent { display: flex; align-items: center; gap: 0.75rem; font-family: var(--st-font); }
button { font: inherit; padding: 0.4rem 0.9rem; border-radius: 0.5rem; cursor: pointer;
  color: white; background: var(--st-primary-color); border: 1px solid var(--st-primary-color); }
.note { color: var(--st-text-color); opacity: 0.75; font-size: 0.9rem; }
"""
_CONSENT_JS = """
const flows = (window.__mlConnectorConsent ??= new Map());  // state -> the window being watched

export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  const button = parentElement.querySelector("button");
  const note = parentElement.querySelector(".note");
  button.textContent = data.label;
  const live = flows.get(data.state);
  note.textContent = live ? data.waiting : "";
  if (live) {  // the page was drawn again while the window is open: report to this drawing
    live.report = setTriggerValue;
    live.note = note;
  }
  button.onclick = () => {
    for (const flow of [...flows.values()]) flow.stop();
    const popup = window.open(data.url, "ml-connector-consent", "popup,width=760,height=820");
    if (!popup) {
      note.textContent = data.blocked;
      return;
    }
    const flow = { report: setTriggerValue, note: note, timer: 0 };
    flow.stop = () => { clearInterval(flow.timer); flows.delete(data.state); };
    flows.set(data.state, flow);
    note.textContent = data.waiting;
    flow.timer = setInterval(() => {
      let back = null;
      try {
        const url = new URL(popup.location.href);
        if (url.origin === window.location.origin && url.searchParams.get("state") === data.state) {
          back = url.searchParams;
        }
      } catch (e) {
        // The window shows NetSuite's site, whose address this page may not read: keep waiting.
      }
      if (back !== null) {
        flow.stop();
        popup.close();
        flow.note.textContent = data.finishing;
        flow.report("returned", {
          state: data.state,
          code: back.get("code") || "",
          error: back.get("error") || "",
          error_description: back.get("error_description") || "",
        });
      } else if (popup.closed) {
        flow.stop();
        flow.note.textContent = "";
        flow.report("returned", { state: data.state, closed: true });
      }
    }, 250);
  };
}
"""


def app_url(page: str) -> str:
    """This app's address as the browser shows it, without the page path `page` (a redirect URI is built
    on it, so it must be what the browser will be sent back to)."""
    url = (st.context.url or DEFAULT_APP_URL).rstrip("/")
    return url.removesuffix(f"/{page}")


def consent_return() -> dict[str, str] | None:
    """The authorization response the browser came back with (`?code=…&state=…`, or `?error=…`), taken
    off the address so a reload does not send it again; None when there is none."""
    params = st.query_params
    if "state" not in params or not ("code" in params or "error" in params):
        return None
    returned = {name: str(params.get(name) or "") for name in CONSENT_RETURN}
    params.clear()
    return returned


def consent_window(*, url: str, state: str, label: str, key: str) -> dict[str, Any] | None:
    """A button that opens `url` (NetSuite's consent page) in a pop-up and watches for the way back.

    Returns, on the run right after, `{"state", "code", "error", "error_description"}` as NetSuite sent
    them, or `{"state", "closed": True}` when the window was closed before; else None.
    """
    window = st.components.v2.component(CONSENT_WINDOW, html=_CONSENT_HTML, css=_CONSENT_CSS, js=_CONSENT_JS)
    data = {
        "url": url,
        "state": state,
        "label": label,
        "waiting": "Waiting for NetSuite: sign in and approve access in the window that opened.",
        "finishing": "NetSuite answered; saving…",
        "blocked": "Your browser blocked the NetSuite window: allow pop-ups for this site, then press again.",
    }
    result = window(key=key, data=data, on_returned_change=lambda: None)
    returned = result.get("returned") if result is not None else None
    return dict(returned) if isinstance(returned, Mapping) else None
