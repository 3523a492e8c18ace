"""No secret in plaintext anywhere a full run leaves traces, and a key rotation that leaves none behind.

One full run per database (module-scoped, the `module_engine` fixture: SQLite and PostgreSQL) through
the whole product on loopback (tests/e2e/stack.py): customers synced NetSuite → Zuora and NetSuite →
Zoho CRM, a Zuora subscription callout, Zoho notifications of our own writes and of a person's edit,
every access token expired at the emulators and refreshed on the next call, refused webhooks carrying
real secrets of the wrong integration, and a webhook secret rotation. Every logger is at DEBUG for
the run (SQL statements with their parameters included) and every record is kept.

Then every secret we know of (connection credentials: client secrets, the Zoho refresh token, each
line of the NetSuite private key; every access token the emulators issued; the webhook secrets, the
previous ones included; the Zoho channel token) is looked for in: the database's raw bytes (the
SQLite file with its write-ahead log) or every PostgreSQL row cast to text, the log records, every
audit record and attempt, and every page of the app rendered by Streamlit's AppTest (signed in, the
pages found in app.py's navigation).

Last, the key rotation of storage.keys: a new key put first, everything rotated and scrubbed, the old
key removed; everything still decrypts, and no Fernet token left in the database opens with the old
key.
"""

from __future__ import annotations

import ast
import asyncio
import json
import logging
import re
import secrets as pysecrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
import sqlalchemy as sa
import streamlit as st
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from runner import channels
from runner.app import create_app
from runner.flows.zoho_change import MODULES
from runner.services import Services
from storage import alerts as alert_store
from storage import channels as channel_store
from storage import crud, keys, webhook_secrets
from storage.crypto import Vault, get_vault
from storage.db import get_engine
from storage.models import AuditAttempt, AuditRecord, Channel, Integration, Job, JobStatus, Token
from storage.settings import Settings, get_settings
from tests.conftest import quick_settings
from tests.e2e.stack import Stack, running_stack
from tests.support.live import wait_for
from tests.ui.conftest import APP_PATH, signed_in

PAGE_TIMEOUT = 60.0  # seconds for one page's run; the first imports pandas and reads every table
SETTLE = 60.0  # seconds for the run's webhooks, callouts, notifications and jobs to finish
FERNET_TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_\-]+=*")  # a Fernet token: version byte 0x80, base64url


@dataclass
class FullRun:
    """What the run left, and the secrets to look for (label → value)."""

    engine: Engine
    key: bytes  # the only Fernet key of the run
    secrets: dict[str, str]
    logs: list[str]
    audited: int  # audit records written


# The run ----------------------------------------------------------------------------------------------


class _Keep(logging.Handler):
    """Every record, formatted with its traceback, as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture(scope="module")
def every_log_record() -> Iterator[list[str]]:
    """Every logger at DEBUG, each record kept (also those of loggers that do not propagate, uvicorn's)."""
    keep = _Keep()
    loggers = [logging.getLogger()] + [
        logger for logger in logging.root.manager.loggerDict.values() if isinstance(logger, logging.Logger)
    ]
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if logger is logging.getLogger() or not logger.propagate:
            logger.addHandler(keep)
    try:
        yield keep.lines
    finally:
        for logger, level in levels.items():
            logger.setLevel(level)
            logger.removeHandler(keep)


@pytest.fixture(scope="module")
def full_run(module_engine: Engine, module_settings: Settings, every_log_record: list[str]) -> FullRun:
    engine, key = module_engine, Fernet.generate_key()
    vault = Vault([key])
    with running_stack(engine, vault, module_settings, zoho_webhook=True) as stack:
        stack.zuora.register_callout(stack.zuora_webhook_url, secret=stack.zuora_secret)
        open_zoho_channel(stack, engine, vault, module_settings)
        customers = [
            stack.create_customer({"companyName": f"Secretive {n} Ltd", "email": f"ap{n}@secretive.test"})
            for n in range(2)
        ]
        subscribe(stack)
        settle(stack, engine)
        edit_in_zoho(stack, customers[0])
        settle(stack, engine)
        for emulator in (stack.netsuite, stack.zuora, stack.zoho):
            emulator.expire_tokens()  # the next call of each connection answers 401: refresh, resend
        customers.append(stack.create_customer({"companyName": "After Refresh Inc"}))
        settle(stack, engine)
        knock_with_the_wrong_secrets(stack)
        webhook_secrets.rotate(engine, vault, integration_id=stack.integration_id, name="netsuite_secret")
        # The alert settings' two secrets, as a person saves them on the Alerts page (no host or URL: the
        # run sends no notice, the secrets are only kept).
        alert_store.save_settings(
            engine,
            vault,
            by="ops@secretive.test",
            changes={"smtp_user": "alerts@secretive.test"},
            smtp_password=pysecrets.token_urlsafe(18),
            webhook_secret=pysecrets.token_urlsafe(24),
        )
        secrets = known_secrets(stack, engine, vault)
    with Session(engine) as session:
        refreshed = session.exec(select(Token).where(col(Token.refreshed_at).is_not(None))).all()
        audited = len(session.exec(select(AuditRecord.id)).all())
    assert len(refreshed) >= 3, "every connection got a token"
    assert audited >= 6, "customers to Zuora and Zoho, the subscription, the notices"
    return FullRun(engine, key, secrets, every_log_record, audited)


def open_zoho_channel(stack: Stack, engine: Engine, vault: Vault, settings: Settings) -> None:
    """A channel of the NetSuite ↔ Zoho integration on every module, enabled in Zoho by the product."""
    channel_store.create_channel(
        engine,
        vault,
        integration_id=stack.zoho_integration_id,
        events=[f"{module}.all" for module in MODULES],
        notify_url=f"{stack.runner_url}/webhooks/zoho/{stack.zoho_integration_key}",
    )

    async def provision() -> dict[str, str]:
        services = Services(engine=engine, vault=vault, settings=settings)
        try:
            return await channels.keep_alive(services)
        finally:
            await services.aclose()

    assert list(asyncio.run(provision()).values()) == ["re-provisioned"]


def subscribe(stack: Stack) -> None:
    """A Zuora subscription on a new account: the callout reaches the runner, signed."""
    body = {"name": "Secretive Sub Ltd", "currency": "USD", "billCycleDay": 1,
            "billToContact": {"firstName": "Amy", "lastName": "Lawrence", "country": "United States"}}  # fmt: skip
    response = httpx2.post(f"{stack.credentials.zuora_url}/_emulator/seed/accounts", json=body)
    assert response.status_code == 201, response.text
    (account,) = [a for a in stack.zuora.accounts() if a["id"] == response.json()["id"]]
    stack.zuora.create_subscription(str(account["accountNumber"]), contract_effective_date="2024-07-01")


def edit_in_zoho(stack: Stack, netsuite_id: str) -> None:
    """A person changes the synced account's phone in Zoho: a notification the runner fetches."""
    account = wait_for(
        lambda: next(
            (a for a in stack.zoho.records("Accounts") if a.get("NetSuite_Id") == netsuite_id), None
        ),
        timeout=SETTLE,
        what="the customer in Zoho",
    )
    response = httpx2.patch(
        f"{stack.credentials.zoho_url}/_emulator/records/Accounts/{account['id']}", json={"Phone": "555-0777"}
    )
    assert response.status_code == 200, response.text


def knock_with_the_wrong_secrets(stack: Stack) -> None:
    """Real secrets sent where they do not belong, so their refusals are logged. The sender's own
    client (httpx2 logs every request's URL, query string included) is silenced: its log is not ours."""
    zoho_url = stack.webhook_url.rsplit("/", 1)[0] + f"/{stack.zoho_integration_key}"
    body = json.dumps({"recordType": "customer", "id": "1"}).encode()
    sender_log = logging.getLogger("httpx2")
    sender_log.disabled = True
    try:
        for url, headers in (
            (zoho_url, {"X-Webhook-Secret": stack.webhook_secret}),
            (f"{zoho_url}?secret={stack.webhook_secret}", {}),
            (
                stack.zuora_webhook_url,
                {"X-Zuora-Signature": stack.zuora_secret, "Zuora-Notification-Id": "n1"},
            ),
        ):
            assert httpx2.post(url, content=body, headers=headers).status_code == 401
    finally:
        sender_log.disabled = False


def settle(stack: Stack, engine: Engine) -> None:
    """Wait until nothing is on its way: webhooks, callouts, notifications, queued or running jobs."""

    def quiet() -> bool:
        if stack.netsuite.pending_deliveries or stack.zoho.pending_deliveries or stack.zuora.pending_callouts:
            return False
        with Session(engine) as session:
            busy = session.exec(
                select(Job.id).where(col(Job.status).in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            ).first()
        return busy is None

    wait_for(quiet, timeout=SETTLE, interval=0.1, what="the run to settle")


def known_secrets(stack: Stack, engine: Engine, vault: Vault) -> dict[str, str]:
    """Every secret of the run by a label that names it without showing it."""
    c = stack.credentials
    found = {
        "zuora client secret": c.zuora_client_secret,
        "zoho client secret": c.zoho_client_secret,
        "zoho refresh token": c.zoho_refresh_token,
    }
    key_lines = [line for line in c.netsuite_private_key.strip().splitlines() if not line.startswith("-----")]
    found |= {f"netsuite private key line {n}": line for n, line in enumerate(key_lines) if len(line) >= 16}
    for emulator in (stack.netsuite, stack.zuora, stack.zoho):
        # No public hook lists issued tokens; the store is the emulators' own (connectors/emulator_kit).
        issued = list(emulator.tokens._tokens)
        found |= {f"{type(emulator).__name__} access token {n}": token for n, token in enumerate(issued)}
    with Session(engine) as session:
        for integration in session.exec(select(Integration)):
            values = crud.integration_secrets(vault, integration)
            found |= {
                f"{integration.key} {name}": value
                for name, value in values.items()
                if not name.endswith((".rotated_at", ".grace_seconds"))
            }
        for channel in session.exec(select(Channel)):
            found[f"channel {channel.channel_id} token"] = channel_store.channel_token(vault, channel)
        alerting = alert_store.load_settings(engine)
        found["alert smtp password"] = alert_store.smtp_password(vault, alerting)
        found["alert webhook signing secret"] = alert_store.webhook_secret(vault, alerting)
        for token in session.exec(select(Token)):
            found[f"stored access token of connection {token.connection_id}"] = str(
                vault.decrypt(token.access_token_encrypted)
            )
    assert any(label.endswith(".previous") for label in found), "the rotation kept the previous secret"
    assert sum("access token" in label for label in found) >= 6, "tokens were issued and refreshed"
    return {label: value for label, value in found.items() if value}


def leaked(run: FullRun, text: str | bytes) -> list[str]:
    """The labels of the secrets found in `text`."""
    haystack = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return sorted(label for label, secret in run.secrets.items() if secret.encode() in haystack)


# Where secrets must not be ----------------------------------------------------------------------------


def database_bytes(engine: Engine) -> bytes:
    """SQLite: the database file and its write-ahead log as they are on disk. PostgreSQL: every row of
    every table, cast to text."""
    if engine.dialect.name == "sqlite":
        path = Path(str(engine.url.database))
        files = [p for p in path.parent.glob(path.name + "*") if p.is_file()]
        assert path in files
        return b"".join(p.read_bytes() for p in files)
    chunks = []
    with engine.connect() as connection:
        tables = connection.execute(
            sa.text("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        ).scalars()
        for table in list(tables):
            rows = connection.execute(sa.text(f'SELECT t::text FROM "{table}" AS t')).scalars()
            chunks.extend(row.encode() for row in rows)
    return b"\n".join(chunks)


def test_the_database_holds_no_plaintext_secret(full_run: FullRun) -> None:
    stored = database_bytes(full_run.engine)

    assert len(stored) > 10_000  # the run really wrote something
    assert leaked(full_run, stored) == []


def test_the_logs_hold_no_secret(full_run: FullRun) -> None:
    logs = "\n".join(full_run.logs)

    assert "webhook for" in logs and "refused" in logs  # the run's refusals were logged
    assert leaked(full_run, logs) == []


def test_audit_records_and_attempts_hold_no_secret(full_run: FullRun) -> None:
    with Session(full_run.engine) as session:
        records = [r.model_dump(mode="json") for r in session.exec(select(AuditRecord))]
        attempts = [a.model_dump(mode="json") for a in session.exec(select(AuditAttempt))]

    assert len(records) == full_run.audited
    assert {a["status"] for a in attempts} >= {200, 401}  # the calls, the expired tokens' 401s among them
    assert leaked(full_run, json.dumps([records, attempts])) == []


def app_pages() -> list[str]:
    """The page scripts app.py's navigation lists (`st.Page("<path>", ...)`), read from its source."""
    tree = ast.parse(APP_PATH.read_text())
    pages = [
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", None) == "Page"
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    ]
    assert pages, "app.py's navigation names no page"
    return pages


def rendered(at: AppTest) -> str:
    """Everything the page put on screen, main area and sidebar: each element's full protobuf text (widget
    values and defaults, table cells, captions and help texts included)."""

    def walk(node: Any) -> Iterator[str]:
        proto = getattr(node, "proto", None)
        if proto is not None:
            yield str(proto)
        for child in getattr(node, "children", {}).values():
            yield from walk(child)

    return "\n".join([*walk(at.main), *walk(at.sidebar)])


@pytest.fixture
def app_on_the_run(full_run: FullRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The app's environment pointed at the run's database and key."""
    monkeypatch.setenv("DATABASE_URL", full_run.engine.url.render_as_string(hide_password=False))
    monkeypatch.setenv("ML_CONNECTOR_KEYS", full_run.key.decode())
    monkeypatch.setenv("ML_CONNECTOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("ML_CONNECTOR_SANDBOX", "1")
    _forget_cached()
    try:
        yield
    finally:
        _forget_cached()


def _forget_cached() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()
    get_vault.cache_clear()
    st.cache_resource.clear()


@pytest.mark.usefixtures("app_on_the_run")
def test_the_apps_pages_show_no_secret(full_run: FullRun) -> None:
    at = signed_in(AppTest.from_file(APP_PATH, default_timeout=PAGE_TIMEOUT)).run()
    shown: dict[str, str] = {}
    for page in app_pages():
        at.switch_page(page).run()
        assert not at.exception, (page, [e.value for e in at.exception])
        shown[page] = rendered(at)

    assert all(len(text) > 200 for text in shown.values()), {p: len(t) for p, t in shown.items()}
    everything = "".join(shown.values())
    assert "NetSuite (emulator)" in everything and "customer_account" in everything  # they showed the run
    assert {page: leaked(full_run, text) for page, text in shown.items() if leaked(full_run, text)} == {}


# Key rotation ------------------------------------------------------------------------------------------


def encrypted_values(engine: Engine) -> dict[str, str]:
    """Every non-empty value of every `*_encrypted` column, by `table.column#id`."""
    found = {}
    with engine.connect() as connection:
        for table, column in keys.encrypted_columns():
            (key,) = table.primary_key.columns
            for row_id, value in connection.execute(sa.select(key, column)):
                if value:
                    found[f"{table.name}.{column.name}#{row_id}"] = value
    return found


def test_key_rotation_leaves_nothing_the_old_key_opens(full_run: FullRun, tmp_path: Path) -> None:
    """Runs last in this module: it moves the run's database to a new key."""
    engine, old = full_run.engine, full_run.key
    new = Fernet.generate_key()
    before = {where: Vault([old]).decrypt(value) for where, value in encrypted_values(engine).items()}
    assert {where.split("#")[0] for where in before} == {
        f"{table.name}.{column.name}" for table, column in keys.encrypted_columns()
    }, "the run left a value in every encrypted column"

    reports = keys.rotate(engine, Vault([new, old]), batch_size=2)  # several batches per column
    scrubbed = keys.scrub(engine)
    again = keys.rotate(engine, Vault([new, old]))

    assert sum(r.rotated for r in reports) == len(before)
    assert all(r.done for r in reports), reports
    assert sum(r.rotated for r in again) == 0 and all(r.done for r in again)  # idempotent
    assert not scrubbed.startswith("not done"), scrubbed
    assert all(r.done for r in keys.status(engine, Vault([new])))  # the old key can go
    after = encrypted_values(engine)
    assert {where: Vault([new]).decrypt(value) for where, value in after.items()} == before
    stored = database_bytes(engine)
    tokens = set(FERNET_TOKEN.findall(stored))
    assert len(tokens) >= len(before)
    opened_by_old = [token[:12] for token in tokens if _opens(old, token)]
    assert opened_by_old == []
    assert leaked(full_run, stored) == []
    assert runner_with_only(new, full_run, tmp_path).status_code == 202  # the runner reads its secrets


def runner_with_only(key: bytes, run: FullRun, data_dir: Path) -> Any:
    """A NetSuite webhook to a runner that has `key` alone, signed with the integration's current secret."""
    vault = Vault([key])
    integration = crud.get_integration_by_key(run.engine, key="demo")
    assert integration is not None
    secret = crud.integration_secrets(vault, integration)["netsuite_secret"]
    app = create_app(engine=run.engine, settings=quick_settings(data_dir), vault=vault, run_workers=False)
    with TestClient(app) as client:  # the lifespan too: migrations checked, scheduler started and stopped
        return client.post(
            "/webhooks/netsuite/demo",
            json={"recordType": "customer", "id": "1", "eventType": "edit"},
            headers={"X-Webhook-Secret": secret},
        )


def _opens(key: bytes, token: bytes) -> bool:
    try:
        Fernet(key).decrypt(token)
    except InvalidToken:
        return False
    return True
