"""Fixtures every tier shares: a migrated database (SQLite and PostgreSQL), a vault, settings.

PostgreSQL tests create a database of their own on 127.0.0.1:5432 (user postgres) and drop it after.
Under CI (`CI` set) an unreachable PostgreSQL fails those tests instead of skipping them.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine

from storage.crypto import Vault
from storage.db import make_engine
from storage.migrate import upgrade
from storage.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "ML_CONNECTOR_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def postgres_admin() -> Engine:
    return sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", pool_pre_ping=True)


def require_postgres() -> Engine:
    """The admin engine, or skip (fail under CI) when the server is not reachable."""
    admin = postgres_admin()
    try:
        with admin.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # pragma: no cover - depends on the machine
        admin.dispose()
        message = f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI must run the PostgreSQL tests)")
        pytest.skip(message)
    return admin


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """Create an empty PostgreSQL database, yield its URL, drop it after."""
    admin = require_postgres()
    name = f"mlc_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def migrated_engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
    upgrade(engine)
    yield engine
    engine.dispose()


def quick_settings(data_dir: Path) -> Settings:
    """Settings for a test: sandbox mode (loopback emulators allowed), quick polling, a temp data dir."""
    return Settings.model_validate(
        {
            "ML_CONNECTOR_DATA_DIR": str(data_dir),
            "ML_CONNECTOR_SANDBOX": True,
            "ML_CONNECTOR_POLL_INTERVAL": 0.5,
            "ML_CONNECTOR_WORKERS": 4,
        }
    )


DATABASES = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    with fresh_postgres_database() as url:
        yield url


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test using this runs twice: on a SQLite file and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ml-connector.db'}"
    else:
        yield request.getfixturevalue("postgres_url")


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """A migrated engine on the parametrized database."""
    with migrated_engine(database_url) as engine:
        yield engine


@pytest.fixture
def vault() -> Vault:
    return Vault([Fernet.generate_key()])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return quick_settings(tmp_path)


# Module-scoped twins, for tables of cases that leave no state behind (webhook refusals): one database,
# vault and settings per module and database kind instead of one per case.
@pytest.fixture(scope="module", params=DATABASES)
def module_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'ml-connector.db'}"
        with migrated_engine(url) as engine:
            yield engine
    else:
        with fresh_postgres_database() as url, migrated_engine(url) as engine:
            yield engine


@pytest.fixture(scope="module")
def module_vault() -> Vault:
    return Vault([Fernet.generate_key()])


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return quick_settings(tmp_path_factory.mktemp("data"))
