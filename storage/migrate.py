"""Bring the schema up to date with Alembic, safely when the UI and the runner start at the same moment.

Both processes call `upgrade()` at start. On PostgreSQL a session advisory lock serialises them; on SQLite
an exclusive lock on a file beside the database does. The loser of the race finds the schema at head and
does nothing.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from storage.db import get_engine

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Any constant works; it only has to be the same in every process of this product.
ADVISORY_LOCK_ID = 7_340_112_001


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine | None = None) -> None:
    """Apply every migration not yet applied."""
    engine = engine or get_engine()
    with _exclusive(engine) as connection:
        command.upgrade(alembic_config(connection), "head")
        connection.commit()


def is_current(engine: Engine | None = None) -> bool:
    """Whether the database is at the newest migration (used by health checks)."""
    engine = engine or get_engine()
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision() == head


@contextmanager
def _exclusive(engine: Engine) -> Iterator[Connection]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": ADVISORY_LOCK_ID})
            connection.commit()
            try:
                yield connection
            finally:
                connection.rollback()
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": ADVISORY_LOCK_ID})
                connection.commit()
        return
    database = engine.url.database
    lock_path = Path(f"{database}.migrate-lock") if database and database != ":memory:" else None
    if lock_path is None:
        with engine.connect() as connection:
            yield connection
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            with engine.connect() as connection:
                yield connection
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
