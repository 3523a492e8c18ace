"""Fixtures for the UI tests: the app pointed at a fresh SQLite file, empty or seeded with audit records.

The app reads its database from the environment through cached getters, so each fixture sets
DATABASE_URL and ML_CONNECTOR_DATA_DIR, clears every cache between test and app, and puts the
environment back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import streamlit as st
from sqlalchemy.engine import Engine
from streamlit.testing.v1 import AppTest

from storage.audit import write_record
from storage.crud import create_connection, create_integration, create_workspace
from storage.crypto import get_vault
from storage.db import get_engine
from storage.migrate import upgrade
from storage.models import AuditRecord, Outcome
from storage.settings import get_settings
from storage.types import utcnow
from views._auth import SESSION_USER

REPO_ROOT = Path(__file__).resolve().parents[2]
APP_PATH = REPO_ROOT / "app.py"


@dataclass(frozen=True)
class Attempt:
    """An HTTP attempt as storage.audit.AttemptLike describes it."""

    system: str
    method: str
    url: str
    status: int | None
    duration_ms: float
    response_excerpt: str | None
    error: str | None
    at: datetime


@dataclass(frozen=True)
class SeededAudit:
    """What `seeded_audit` put in the database, for tests to look for."""

    engine: Engine
    database_url: str
    workspace_id: int
    connection_ids: tuple[int, int]  # NetSuite, Zuora
    integration_id: int
    integration_name: str
    succeeded_id: int
    failed_id: int
    retrying_id: int

    @property
    def newest_first(self) -> list[int]:
        return [self.failed_id, self.succeeded_id, self.retrying_id]


# Values the tests look for on the page.
SUCCEEDED_SOURCE_ID = "1001"
SUCCEEDED_TARGET_ID = "A00000042"
FAILED_SOURCE_ID = "2042"
FAILED_ERROR = (
    "Zuora rejected the account: billToContact.country 'Atlantis' is not a valid country; "
    "use an ISO 3166 country name or code"
)
RETRYING_SOURCE_ID = "3003"


def _clear_caches() -> None:
    """Forget the settings, engine, vault and the app's cached database handle."""
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()
    get_vault.cache_clear()
    st.cache_resource.clear()


@pytest.fixture
def ui_database_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A SQLite file in `tmp_path` that the app (and `get_engine()`) will use; not yet migrated."""
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("ML_CONNECTOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("ML_CONNECTOR_KEYS", raising=False)
    _clear_caches()
    try:
        yield url
    finally:
        _clear_caches()


@pytest.fixture
def seeded_audit(ui_database_url: str) -> SeededAudit:
    """A migrated database with one integration and three audit records: failed, succeeded, retrying."""
    engine = get_engine()
    upgrade(engine)
    vault = get_vault()
    workspace = create_workspace(engine, name="Acme Finance")
    assert workspace.id is not None
    netsuite = create_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="netsuite",
        name="NetSuite production",
        base_url="https://1234567.suitetalk.api.netsuite.com",
        environment="1234567",
        secrets={"client_secret": "dummy-netsuite-secret"},
    )
    zuora = create_connection(
        engine,
        vault,
        workspace_id=workspace.id,
        system="zuora",
        name="Zuora US",
        base_url="https://rest.zuora.com",
        environment="us-production",
        secrets={"client_secret": "dummy-zuora-secret"},
    )
    integration = create_integration(
        engine,
        vault,
        workspace_id=workspace.id,
        name="NetSuite → Zuora",
        source_connection_id=netsuite.id,
        target_connection_id=zuora.id,
        flows=["customer_account", "invoice_invoice"],
        key="acme",
    )
    now = utcnow()
    retrying = _retrying(integration.id, now - timedelta(hours=3))
    succeeded = _succeeded(integration.id, now - timedelta(minutes=30))
    failed = _failed(integration.id, now - timedelta(minutes=5))
    return SeededAudit(
        engine=engine,
        database_url=ui_database_url,
        workspace_id=workspace.id,
        connection_ids=(netsuite.id, zuora.id),
        integration_id=integration.id,
        integration_name=integration.name,
        succeeded_id=_write(engine, *succeeded),
        failed_id=_write(engine, *failed),
        retrying_id=_write(engine, *retrying),
    )


@pytest.fixture
def empty_database(ui_database_url: str) -> str:
    """A database file nobody has migrated yet: the app must prepare it itself."""
    return ui_database_url


def _write(engine: Engine, record: AuditRecord, attempts: list[Attempt]) -> int:
    written = write_record(engine, record, attempts)
    assert written.id is not None
    return written.id


def _succeeded(integration_id: int, at: datetime) -> tuple[AuditRecord, list[Attempt]]:
    url = "https://rest.zuora.com/v1/accounts"
    record = AuditRecord(
        integration_id=integration_id,
        flow="customer_account",
        source_system="netsuite",
        source_id=SUCCEEDED_SOURCE_ID,
        target_system="zuora",
        target_id=SUCCEEDED_TARGET_ID,
        action="create",
        mapping_version=3,
        source_snapshot={"id": SUCCEEDED_SOURCE_ID, "companyName": "Globex Corporation", "currency": "USD"},
        payload={"name": "Globex Corporation", "currency": "USD", "crmId": SUCCEEDED_SOURCE_ID},
        response={"success": True, "accountNumber": SUCCEEDED_TARGET_ID},
        outcome=Outcome.SUCCEEDED,
        started_at=at,
        finished_at=at + timedelta(seconds=2, milliseconds=400),
    )
    attempts = [
        Attempt("zuora", "POST", url, 429, 85.2, '{"message": "Too many requests"}', "rate limited", at),
        Attempt(
            "zuora",
            "POST",
            url,
            200,
            312.7,
            f'{{"success": true, "accountNumber": "{SUCCEEDED_TARGET_ID}"}}',
            None,
            at + timedelta(seconds=2),
        ),
    ]
    return record, attempts


def _failed(integration_id: int, at: datetime) -> tuple[AuditRecord, list[Attempt]]:
    excerpt = '{"success": false, "reasons": [{"code": 53100020, "message": "invalid country"}]}'
    record = AuditRecord(
        integration_id=integration_id,
        flow="customer_account",
        source_system="netsuite",
        source_id=FAILED_SOURCE_ID,
        target_system="zuora",
        action="create",
        mapping_version=3,
        source_snapshot={"id": FAILED_SOURCE_ID, "companyName": "Initech", "country": "Atlantis"},
        payload={"name": "Initech", "billToContact": {"country": "Atlantis"}, "crmId": FAILED_SOURCE_ID},
        response={"success": False, "reasons": [{"code": 53100020, "message": "invalid country"}]},
        outcome=Outcome.FAILED,
        error_class="remote",
        error_message=FAILED_ERROR,
        started_at=at,
        finished_at=at + timedelta(milliseconds=420),
    )
    attempts = [
        Attempt("zuora", "POST", "https://rest.zuora.com/v1/accounts", 400, 401.9, excerpt, None, at),
    ]
    return record, attempts


def _retrying(integration_id: int, at: datetime) -> tuple[AuditRecord, list[Attempt]]:
    record = AuditRecord(
        integration_id=integration_id,
        flow="invoice_invoice",
        source_system="netsuite",
        source_id=RETRYING_SOURCE_ID,
        target_system="zuora",
        action="create",
        mapping_version=1,
        source_snapshot={"id": RETRYING_SOURCE_ID, "tranId": "INV-3003", "total": 1200.0},
        payload={"accountId": SUCCEEDED_TARGET_ID, "invoiceDate": "2025-06-01"},
        outcome=Outcome.RETRYING,
        error_class="transient",
        error_message="zuora: service unavailable (POST https://rest.zuora.com/v1/invoices → 503)",
        started_at=at,
        finished_at=at + timedelta(seconds=30),
    )
    attempts = [
        Attempt("zuora", "POST", "https://rest.zuora.com/v1/invoices", 503, 30_000.0, None, "timeout", at),
    ]
    return record, attempts


def signed_in(at: AppTest, user: str = "admin") -> AppTest:
    """`at` with a signed-in session, as after the sign-in form: set before the first `run()`."""
    at.session_state[SESSION_USER] = user
    return at
