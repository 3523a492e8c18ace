"""Timestamps come back timezone-aware UTC on both databases, and the SQLite default is set up for two
processes sharing one file (WAL, a busy timeout)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import StatementError
from sqlmodel import Session

from storage.db import SQLITE_BUSY_TIMEOUT, make_engine
from storage.models import Workspace


def test_utc_timestamps_round_trip_as_aware_utc_whatever_offset_they_were_given(engine: Engine) -> None:
    given = datetime(2026, 3, 29, 1, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    with Session(engine) as session:
        workspace = Workspace(name="Offsets Ltd", created_at=given)
        session.add(workspace)
        session.commit()
        workspace_id = workspace.id

    with Session(engine) as session:
        stored = session.get(Workspace, workspace_id)
        assert stored is not None
        assert stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at == given  # the same instant
        assert stored.created_at.hour == 20  # 01:30 at +05:30 is 20:00 UTC the day before


def test_utc_timestamps_refuse_a_naive_datetime_rather_than_guess_its_zone(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(Workspace(name="Naive Inc", created_at=datetime(2026, 1, 1, 12, 0)))
        with pytest.raises(StatementError, match="naive datetime"):
            session.commit()


def test_sqlite_default_uses_wal_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'ml-connector.db'}")
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(text("PRAGMA busy_timeout")).scalar() == SQLITE_BUSY_TIMEOUT
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    engine.dispose()
