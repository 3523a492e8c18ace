"""Both processes migrate at start; two starting at the same moment must not trip over each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

import storage.models  # noqa: F401 - registers the tables
from storage.db import make_engine
from storage.migrate import is_current, upgrade
from tests.support.live import wait_for

REPO = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys, time, pathlib
from storage.db import make_engine
from storage.migrate import upgrade
engine = make_engine(sys.argv[1])
pathlib.Path(sys.argv[3]).touch()  # imported and ready
go = pathlib.Path(sys.argv[2])
deadline = time.monotonic() + 30
while not go.exists() and time.monotonic() < deadline:
    time.sleep(0.002)
upgrade(engine)
"""


def test_upgrade_brings_a_fresh_database_to_head(engine: Engine) -> None:
    assert is_current(engine)
    tables = set(sa.inspect(engine).get_table_names())
    expected = {"workspace", "connection", "token", "integration", "mapping", "inboundevent", "job"}
    assert expected | {"auditrecord", "auditattempt", "link", "alembic_version"} <= tables


def test_upgrade_twice_is_a_no_op(engine: Engine) -> None:
    upgrade(engine)

    assert is_current(engine)


def test_two_processes_migrating_at_once_both_succeed(database_url: str, tmp_path: Path) -> None:
    go = tmp_path / "go"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, database_url, str(go), str(tmp_path / f"ready-{i}")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    wait_for(
        lambda: all((tmp_path / f"ready-{i}").exists() for i in range(2)), timeout=60, what="both processes"
    )
    go.touch()
    results = [p.communicate(timeout=120) for p in processes]

    assert [p.returncode for p in processes] == [0, 0], results
    engine = make_engine(database_url)
    try:
        assert is_current(engine)
    finally:
        engine.dispose()


def test_migrations_create_exactly_what_the_models_declare(engine: Engine) -> None:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = compare_metadata(context, SQLModel.metadata)

    assert differences == [], "a model changed without a migration: run alembic revision --autogenerate"
