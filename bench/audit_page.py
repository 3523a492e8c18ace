"""How quick is the audit page with 1,000,000 audit records? `python -m bench.audit_page`.

Seeds a throwaway database (a SQLite file, and PostgreSQL when it answers on 127.0.0.1:5432) with
realistic audit records — six flows over two integrations, 90 days, ~90 % succeeded, one HTTP attempt
each — generated inside the database by one INSERT … SELECT over a number series, with the audit indexes
built after the load, as a bulk load would. Then measures:

* the page's key queries alone (the same storage calls with the same arguments as views/audit.py), and
* the page's time to first render: `AppTest.from_file("views/audit.py").run()`, i.e. the whole script
  run server-side with every query and the element tree it sends (no browser paint), cold (the first
  run in this process, which also imports pandas and Streamlit's widgets) and warm (a fresh session
  each time, as a second visitor), plus the interactions a reader makes next.

Prints a table and writes bench/results/audit_page.json. Every number is milliseconds: the first call
and the median of `--repeat` calls.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # `python bench/audit_page.py` as well as `python -m bench.audit_page`
    sys.path.insert(0, str(REPO))

from runner.replay import plan  # noqa: E402
from storage.audit import (  # noqa: E402
    AuditFilter,
    count_records,
    get_record,
    has_records,
    list_records,
    replays_of,
)
from storage.crud import create_connection, create_integration, create_workspace  # noqa: E402
from storage.crypto import Vault  # noqa: E402
from storage.db import make_engine  # noqa: E402
from storage.migrate import upgrade  # noqa: E402
from storage.models import AuditRecord, Outcome  # noqa: E402
from storage.types import utcnow  # noqa: E402
from views._ui import AUDIT_PAGE_SIZE, COUNT_LIMIT, audit_counts  # noqa: E402

RESULTS = REPO / "bench" / "results" / "audit_page.json"
POSTGRES_ADMIN_URL = os.environ.get(
    "ML_CONNECTOR_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
SPAN = timedelta(days=90)  # the seeded records are spread evenly over this much history
CHUNK = 250_000  # rows per INSERT … SELECT, so the load reports progress and bounds one statement
SOURCES = 200_003  # distinct source ids (a prime, so i * 7919 % SOURCES visits them all)
APP_TIMEOUT = 120.0  # seconds one AppTest run may take

# (flow, source system, target system, integration "a" or "b") by i % 20: a realistic mix.
FLOWS = [
    *[("customer_account", "netsuite", "zuora", "a")] * 8,
    *[("invoice", "netsuite", "zuora", "a")] * 3,
    ("subscription_event", "zuora", "netsuite", "a"),
    *[("customer_zoho", "netsuite", "zoho", "b")] * 5,
    ("contact_zoho", "netsuite", "zoho", "b"),
    ("vendor_zoho", "netsuite", "zoho", "b"),
    ("zoho_change", "zoho", "netsuite", "b"),
]
ERROR_CLASSES = ["remote", "remote", "config", "transient", "bug"]  # of failed records, by i % 5


@dataclass
class Timing:
    first_ms: float
    median_ms: float
    runs: int


@dataclass
class Result:
    database: str
    rows: int
    seed_seconds: float
    index_seconds: float
    queries: dict[str, Timing] = field(default_factory=dict)
    render: dict[str, Timing] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------- seeding


def _case(position: str, values: list[str]) -> str:
    """A SQL CASE picking values[position] (position is an SQL expression)."""
    whens = " ".join(f"WHEN {n} THEN '{v}'" for n, v in enumerate(values))
    return f"CASE {position} {whens} END"


def insert_records_sql(dialect: str) -> str:
    """INSERT … SELECT of audit records :start..:stop (inclusive), their ids equal to the series."""
    if dialect == "sqlite":
        series = "WITH RECURSIVE n(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM n WHERE i < :stop)"
        source = "n"

        def ts(offset: str) -> str:
            return f"strftime('%Y-%m-%d %H:%M:%S', :t0 + i * :step + {offset}, 'unixepoch') || '.000000'"

        def js(text: str) -> str:
            return f"({text})"
    else:
        series = ""
        source = "generate_series(CAST(:start AS bigint), CAST(:stop AS bigint)) AS g(i)"

        def ts(offset: str) -> str:
            return f"to_timestamp(:t0 + i * :step + {offset})"

        def js(text: str) -> str:
            return f"CAST(({text}) AS jsonb)"

    flow = _case("i % 20", [f[0] for f in FLOWS])
    source_system = _case("i % 20", [f[1] for f in FLOWS])
    target_system = _case("i % 20", [f[2] for f in FLOWS])
    integration = "CASE WHEN " + " OR ".join(f"i % 20 = {n}" for n, f in enumerate(FLOWS) if f[3] == "b")
    integration += " THEN :integration_b ELSE :integration_a END"
    # outcome by (i * 37) % 100: 0-89 succeeded, 90-96 failed, 97-99 retrying
    bucket = "((i * 37) % 100)"
    outcome = f"CASE WHEN {bucket} < 90 THEN 'succeeded' WHEN {bucket} < 97 THEN 'failed' ELSE 'retrying' END"
    error_class = (
        f"CASE WHEN {bucket} < 90 THEN NULL WHEN {bucket} < 97 THEN {_case('i % 5', ERROR_CLASSES)} "
        "ELSE 'transient' END"
    )
    error_message = (
        f"CASE WHEN {bucket} < 90 THEN NULL WHEN {bucket} < 97 THEN "
        "'rejected: billToContact.country is not a valid country (record ' || i || ')' "
        "ELSE 'service unavailable (503); retrying' END"
    )
    source_id = f"CAST(((i * 7919) % {SOURCES}) + 1000 AS text)"
    target_id = f"CASE WHEN {bucket} < 90 THEN 'A' || CAST(100000000 + (i * 7919) % {SOURCES} AS text) END"
    snapshot = js(
        '\'{"id": "\' || ((i * 7919) % ' + str(SOURCES) + ') || \'", "companyName": "Customer \' || i || '
        '\'", "email": "ap\' || i || \'@example.test", "currency": {"id": "1", "refName": "USD"}, '
        '"subsidiary": {"id": "1", "refName": "Parent Company"}, "terms": "Net 30", '
        '"lastModifiedDate": "2026-11-01T10:00:00Z"}\''
    )
    payload = js(
        '\'{"name": "Customer \' || i || \'", "currency": "USD", "crmId": "\' || '
        "((i * 7919) % " + str(SOURCES) + ') || \'", "billToContact": {"firstName": "Accounts", '
        '"lastName": "Payable", "workEmail": "ap\' || i || \'@example.test", "country": "US"}, '
        '"paymentTerm": "Net 30", "batch": "Batch1"}\''
    )
    response = (
        f"CASE WHEN {bucket} < 90 THEN "
        + js('\'{"success": true, "accountId": "8a8082c4\' || i || \'", "accountNumber": "A\' || i || \'"}\'')
        + f" WHEN {bucket} < 97 THEN "
        + js('\'{"success": false, "reasons": [{"code": 53100020, "message": "invalid country"}]}\'')
        + " END"
    )
    action = f"CASE WHEN {bucket} < 90 THEN CASE WHEN i % 3 = 0 THEN 'create' ELSE 'update' END END"
    return f"""
        INSERT INTO auditrecord (
            id, job_id, integration_id, flow, source_system, source_id, target_system, target_id, action,
            mapping_version, source_snapshot, payload, response, outcome, error_class, error_message,
            replay_of, started_at, finished_at
        )
        {series}
        SELECT
            i, NULL, {integration}, {flow}, {source_system}, {source_id}, {target_system}, {target_id},
            {action}, 1 + i % 3, {snapshot}, {payload}, {response}, {outcome}, {error_class},
            {error_message}, NULL, {ts("0")}, {ts("0.4")}
        FROM {source}
    """


def insert_attempts_sql(dialect: str) -> str:
    """One HTTP attempt per audit record :start..:stop, its excerpt cut from the stored response."""
    response = "response" if dialect == "sqlite" else "CAST(response AS text)"
    return f"""
        INSERT INTO auditattempt (
            audit_record_id, seq, system, method, url, status, duration_ms, response_excerpt, error, at
        )
        SELECT
            id, 1, target_system, 'POST', 'https://rest.zuora.com/v1/accounts',
            CASE outcome WHEN 'succeeded' THEN 200 WHEN 'failed' THEN 400 ELSE 503 END,
            120.0 + id % 400, substr({response}, 1, 2000),
            CASE outcome WHEN 'retrying' THEN 'service unavailable' END, started_at
        FROM auditrecord WHERE id BETWEEN :start AND :stop
    """


def audit_indexes() -> list[sa.Index]:
    return sorted(AuditRecord.__table__.indexes, key=lambda index: index.name or "")


def seed(engine: Engine, rows: int) -> tuple[float, float, dict[str, int]]:
    """Load `rows` audit records; returns (load seconds, index seconds, integration ids)."""
    vault = Vault([Fernet.generate_key()])  # the bench's secrets are dummies
    workspace = create_workspace(engine, name=f"Bench {uuid.uuid4().hex[:6]}")
    assert workspace.id is not None
    connections = {
        system: create_connection(
            engine,
            vault,
            workspace_id=workspace.id,
            system=system,
            name=f"{system} bench",
            base_url=url,
            secrets={"client_secret": "bench"},
        )
        for system, url in {
            "netsuite": "https://1234567.suitetalk.api.netsuite.com",
            "zuora": "https://rest.zuora.com",
            "zoho": "https://www.zohoapis.com",
        }.items()
    }
    integrations = {
        "a": create_integration(
            engine,
            vault,
            workspace_id=workspace.id,
            name="NetSuite → Zuora",
            source_connection_id=connections["netsuite"].id,
            target_connection_id=connections["zuora"].id,
            flows=["customer_account", "invoice", "subscription_event"],
        ).id,
        "b": create_integration(
            engine,
            vault,
            workspace_id=workspace.id,
            name="NetSuite → Zoho CRM",
            source_connection_id=connections["netsuite"].id,
            target_connection_id=connections["zoho"].id,
            flows=["customer_zoho", "contact_zoho", "vendor_zoho", "zoho_change"],
        ).id,
    }
    dialect = engine.dialect.name
    step = SPAN.total_seconds() / rows
    t0 = utcnow().timestamp() - SPAN.total_seconds()
    records, attempts = sa.text(insert_records_sql(dialect)), sa.text(insert_attempts_sql(dialect))
    started = time.perf_counter()
    with engine.begin() as connection:
        for index in audit_indexes():
            index.drop(connection)
    for start in range(1, rows + 1, CHUNK):
        stop = min(rows, start + CHUNK - 1)
        params = {
            "start": start,
            "stop": stop,
            "t0": t0,
            "step": step,
            "integration_a": integrations["a"],
            "integration_b": integrations["b"],
        }
        with engine.begin() as connection:
            connection.execute(records, params)
            connection.execute(attempts, {"start": start, "stop": stop})
        print(f"  {dialect}: {stop:,} records", file=sys.stderr, flush=True)
    if dialect == "postgresql":
        with engine.begin() as connection:
            connection.execute(sa.text("SELECT setval('auditrecord_id_seq', :n)"), {"n": rows})
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    with engine.begin() as connection:
        for index in audit_indexes():
            index.create(connection)
    if dialect == "postgresql":
        # What autovacuum does within a minute of a bulk load: statistics for the planner and the
        # visibility map that lets counts be answered from the index alone.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(sa.text("VACUUM ANALYZE auditrecord"))
            connection.execute(sa.text("VACUUM ANALYZE auditattempt"))
    return loaded, time.perf_counter() - started, integrations


# ------------------------------------------------------------------------------------------ measuring


def timed(call: Callable[[], Any], repeat: int) -> Timing:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(first_ms=round(samples[0], 1), median_ms=round(statistics.median(samples), 1), runs=repeat)


def key_queries(engine: Engine, integrations: dict[str, int], rows: int) -> dict[str, Callable[[], Any]]:
    """The page's queries, by what a reader does, with the arguments the page passes."""
    now = utcnow()
    week = AuditFilter(since=now - timedelta(weeks=1))
    every = AuditFilter()
    failed_week = AuditFilter(outcome=Outcome.FAILED, since=now - timedelta(weeks=1))
    one_day = AuditFilter(since=now - timedelta(days=31), until=now - timedelta(days=30))
    deepest = COUNT_LIMIT - AUDIT_PAGE_SIZE
    some_record = max(1, rows // 2)
    source_id = str((some_record * 7919) % SOURCES + 1000)

    def page(filters: AuditFilter, offset: int = 0) -> Callable[[], Any]:
        return lambda: list_records(engine, filters=filters, limit=AUDIT_PAGE_SIZE, offset=offset)

    return {
        "any records at all": lambda: has_records(engine),
        "counts, last week (default view)": lambda: audit_counts(engine, week),
        "counts, all time": lambda: audit_counts(engine, every),
        "exact count, all time (not used)": lambda: count_records(engine),
        "page 1, last week (default view)": page(week),
        f"page {deepest // AUDIT_PAGE_SIZE + 1} (deepest), all time": page(every, deepest),
        "page 1, failed, last week": page(failed_week),
        "page 1, flow = invoice": page(AuditFilter(flow="invoice")),
        "page 1, integration = NetSuite → Zoho": page(AuditFilter(integration_id=integrations["b"])),
        "page 1, error class = bug": page(AuditFilter(error_class="bug")),
        "page 1, system = zoho": page(AuditFilter(system="zoho")),
        "page 1, one day a month ago": page(one_day),
        "page 1, source id": page(AuditFilter(source_id=source_id)),
        "counts, source id": lambda: audit_counts(engine, AuditFilter(source_id=source_id)),
        "page 1, target id": page(AuditFilter(target_id="A100000042")),
        "counts, failed + flow + error class, all time": lambda: audit_counts(
            engine, AuditFilter(outcome=Outcome.FAILED, flow="customer_zoho", error_class="config")
        ),
        "record detail (record, attempts, replays)": lambda: (
            get_record(engine, some_record),
            replays_of(engine, some_record),
        ),
        "bulk replay count, failed last week": lambda: plan(engine, failed_week),
        "bulk replay count, failed all time (over limit)": lambda: plan(engine, AuditFilter()),
    }


@contextmanager
def app_environment(url: str, data_dir: Path) -> Iterator[None]:
    """Point the app's cached settings and engine at `url` for AppTest, and back afterwards."""
    import streamlit as st

    from storage.crypto import get_vault
    from storage.db import get_engine
    from storage.settings import get_settings

    saved = {name: os.environ.get(name) for name in ("DATABASE_URL", "ML_CONNECTOR_DATA_DIR")}

    def clear() -> None:
        if get_engine.cache_info().currsize:
            get_engine().dispose()
        get_engine.cache_clear()
        get_settings.cache_clear()
        get_vault.cache_clear()
        st.cache_resource.clear()

    os.environ["DATABASE_URL"] = url
    os.environ["ML_CONNECTOR_DATA_DIR"] = str(data_dir)
    clear()
    try:
        yield
    finally:
        clear()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def timed_step(prepare: Callable[[], Any], step: Callable[[], Any], repeat: int) -> Timing:
    """Time `step` `repeat` times, running `prepare` (untimed) before each."""
    samples = []
    for _ in range(repeat):
        prepare()
        started = time.perf_counter()
        step()
        samples.append((time.perf_counter() - started) * 1000)
    return Timing(first_ms=round(samples[0], 1), median_ms=round(statistics.median(samples), 1), runs=repeat)


def render_timings(url: str, data_dir: Path, repeat: int) -> dict[str, Timing]:
    """The audit page's time to first render through AppTest, then the next interactions."""
    from streamlit.testing.v1 import AppTest

    from views._auth import SESSION_USER

    page = str(REPO / "views" / "audit.py")

    def checked(at: Any) -> Any:
        if at.exception:
            raise RuntimeError(f"the audit page failed: {[e.value for e in at.exception]}")
        return at

    def fresh() -> Any:
        return checked(AppTest.from_file(page, default_timeout=APP_TIMEOUT).run())

    results: dict[str, Timing] = {}
    with app_environment(url, data_dir):
        results["first render, cold process"] = timed(fresh, 1)
        results["first render, new session"] = timed(fresh, repeat)
        apps: list[Any] = []

        def signed_in_app() -> None:  # app.py as a signed-in visitor sees it first (the default page)
            at = AppTest.from_file(str(REPO / "app.py"), default_timeout=APP_TIMEOUT)
            at.session_state[SESSION_USER] = "admin"
            apps[:] = [checked(at.run())]

        try:
            results["through app.py: switch to the audit page"] = timed_step(
                signed_in_app, lambda: checked(apps[0].switch_page("views/audit.py").run()), repeat
            )
        except Exception as exc:  # another page's failure must not hide this page's numbers
            print(f"through app.py: not measured ({exc})", file=sys.stderr)
        at = fresh()

        def set_to(kind: str, key: str, value: Any) -> Callable[[], Any]:
            return lambda: checked(getattr(at, kind)(key=key).set_value(value).run())

        def pick_page(number: int) -> Callable[[], Any]:
            return lambda: checked(at.pagination[0].select(number).run())

        steps: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
            "rerun, same view": (lambda: None, lambda: checked(at.run())),
            "outcome → failed": (
                set_to("segmented_control", "audit_outcome", "all"),
                set_to("segmented_control", "audit_outcome", "failed"),
            ),
            "outcome → all": (
                set_to("segmented_control", "audit_outcome", "failed"),
                set_to("segmented_control", "audit_outcome", "all"),
            ),
            "time range → all time": (
                set_to("selectbox", "audit_range", "Last week"),
                set_to("selectbox", "audit_range", "All time"),
            ),
            "page 1 → 2": (pick_page(1), pick_page(2)),
            "open a record": (set_to("number_input", "record", None), set_to("number_input", "record", 42)),
        }
        for name, (prepare, step) in steps.items():
            results[name] = timed_step(prepare, step, repeat)
    return results


def measure(database: str, url: str, rows: int, repeat: int, data_dir: Path) -> Result:
    engine = make_engine(url)
    try:
        upgrade(engine)
        print(f"{database}: seeding {rows:,} audit records …", file=sys.stderr, flush=True)
        loaded, indexed, integrations = seed(engine, rows)
        print(f"{database}: loaded in {loaded:.1f} s, indexed in {indexed:.1f} s", file=sys.stderr)
        result = Result(database, rows, round(loaded, 1), round(indexed, 1))
        for name, query in key_queries(engine, integrations, rows).items():
            result.queries[name] = timed(query, repeat)
    finally:
        engine.dispose()
    result.render = render_timings(url, data_dir, repeat)
    return result


@contextmanager
def sqlite_database(directory: Path) -> Iterator[str]:
    path = directory / "audit-bench.db"
    yield f"sqlite:///{path}"
    for suffix in ("", "-wal", "-shm", ".migrate-lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database, or None when the server does not answer."""
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure to connect means "not reachable here"
        print(f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}; skipped", file=sys.stderr)
        admin.dispose()
        yield None
        return
    name = f"mlc_bench_{uuid.uuid4().hex[:10]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def print_table(results: list[Result]) -> None:
    names = list(dict.fromkeys(n for r in results for n in [*r.queries, *r.render]))
    width = max(len(n) for n in names) + 2
    header = "".join(f"{r.database + ' first':>18}{r.database + ' median':>18}" for r in results)
    print(f"\n{'':{width}}{header}")
    for r in results:
        print(
            f"seeded {r.rows:,} records into {r.database}: {r.seed_seconds} s load + {r.index_seconds} s indexes"
        )
    for section, pick in (("key queries (ms)", "queries"), ("AppTest render (ms)", "render")):
        print(f"\n{section}")
        for name in dict.fromkeys(n for r in results for n in getattr(r, pick)):
            cells = ""
            for r in results:
                timing = getattr(r, pick).get(name)
                cells += f"{timing.first_ms:>18.1f}{timing.median_ms:>18.1f}" if timing else " " * 36
            print(f"{name:{width}}{cells}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="audit records to seed")
    parser.add_argument("--repeat", type=int, default=5, help="runs per measurement (median reported)")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON results")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory(prefix="audit-bench-") as tmp:
        directory = Path(tmp)
        with sqlite_database(directory) as url:
            results.append(measure("SQLite", url, args.rows, args.repeat, directory))
        if not args.no_postgres:
            with postgres_database() as url:
                if url is not None:
                    results.append(measure("PostgreSQL", url, args.rows, args.repeat, directory))
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "what": "audit page with N audit records: key queries and AppTest render, milliseconds",
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
        },
        "count_limit": COUNT_LIMIT,
        "page_size": AUDIT_PAGE_SIZE,
        "results": [asdict(r) for r in results],
    }
    args.output.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
