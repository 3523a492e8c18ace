"""The database engine and sessions: SQLite (WAL, busy timeout) by default, PostgreSQL via psycopg 3."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, create_engine

from storage.settings import get_settings

SQLITE_BUSY_TIMEOUT = 30_000  # milliseconds a writer waits for the lock before "database is locked"


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(url: str) -> Engine:
    """Build an engine for `url` with the settings each backend needs."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # A generous pool: SQLite connections are cheap, and every worker thread (anyio runs up to 40)
        # may need one at once; a small pool makes threads wait on the pool while holding nothing.
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, pool_size=20, max_overflow=60
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        # pysqlite's own transaction handling defers BEGIN and breaks "BEGIN IMMEDIATE"; we emit BEGIN
        # ourselves so a claim transaction takes the write lock up front (SQLAlchemy's documented recipe).
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT}")
    # Durability: in WAL mode, synchronous=NORMAL writes each commit to the WAL file before COMMIT
    # returns and fsyncs only at checkpoints. A committed transaction therefore survives the runner
    # process crashing or being killed (the OS holds the pages), which is what "the event and its jobs
    # commit before the answer" relies on. It does NOT survive power loss or an OS crash: the last
    # transactions before the outage may roll back. A deployment that needs that guarantee sets
    # synchronous=FULL here (a fsync per commit) or runs PostgreSQL.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    mode = connection.info.pop("sqlite_begin", "BEGIN")
    # Straight to the driver: a BEGIN needs none of SQLAlchemy's statement execution (events, result
    # set-up), and every transaction pays for it.
    connection.connection.driver_connection.execute(mode)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    """The process-wide engine for the configured database."""
    return make_engine(get_settings().effective_database_url)


@contextmanager
def transaction(engine: Engine | None = None, *, write: bool = False) -> Iterator[Connection]:
    """A Core connection inside a transaction, committed on success and rolled back on error.

    The cheap path for work that is plain statements (bulk inserts, guarded UPDATEs): no Session, no
    identity map, no unit of work. `write=True` means BEGIN IMMEDIATE on SQLite, as in `session_scope`.
    """
    engine = engine or get_engine()
    with engine.connect() as connection:
        if write and is_sqlite(engine):
            connection.info["sqlite_begin"] = "BEGIN IMMEDIATE"
        with connection.begin():
            yield connection


@contextmanager
def session_scope(engine: Engine | None = None, *, write: bool = False) -> Iterator[Session]:
    """A session committed on success and rolled back on error.

    `write=True` takes SQLite's write lock at BEGIN (BEGIN IMMEDIATE), so a read-then-write sequence such
    as claiming a job cannot interleave with another process; PostgreSQL uses row locks instead.
    """
    engine = engine or get_engine()
    with engine.connect() as connection:
        if write and is_sqlite(engine):
            # Read by the "begin" listener for the transaction the session is about to start.
            connection.info["sqlite_begin"] = "BEGIN IMMEDIATE"
        with Session(bind=connection, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise
