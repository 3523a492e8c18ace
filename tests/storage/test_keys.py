"""storage.keys: rotation of every encrypted column under a new Fernet key, resumable and idempotent,
and its command line. tests/reliability/test_secrets.py rotates the database of a full run."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from storage import channels, crud, keys
from storage.crypto import SecretsUnreadable, Vault, get_vault
from storage.db import get_engine, make_engine, session_scope
from storage.migrate import upgrade
from storage.models import Connection
from storage.settings import get_settings

SECRETS = [{"client_secret": f"secret-{n}"} for n in range(7)]


def seed(engine: Engine, vault: Vault) -> None:
    """Seven connections, an integration with its webhook secrets, and a channel token."""
    workspace = crud.create_workspace(engine, name="Keys")
    ids = [
        crud.create_connection(
            engine, vault, workspace_id=workspace.id, system="zuora", name=f"c{n}", base_url="http://x",
            secrets=secrets,
        ).id
        for n, secrets in enumerate(SECRETS)
    ]  # fmt: skip
    integration = crud.create_integration(
        engine, vault, workspace_id=workspace.id, name="i", source_connection_id=ids[0],
        target_connection_id=ids[1], flows=[], key="keys",
    )  # fmt: skip
    channels.create_channel(engine, vault, integration_id=integration.id, events=[], notify_url="http://x")


def connection_secrets(engine: Engine, vault: Vault) -> list[dict[str, str]]:
    with Session(engine) as session:
        rows = session.exec(select(Connection).order_by(Connection.id)).all()
        return [crud.connection_secrets(vault, row) for row in rows]


def test_encrypted_columns_are_found_from_the_models() -> None:
    found = {f"{table.name}.{column.name}" for table, column in keys.encrypted_columns()}

    assert found >= {
        "connection.secrets_encrypted",
        "token.access_token_encrypted",
        "integration.webhook_secrets_encrypted",
        "channel.token_encrypted",
    }


def test_rotate_moves_every_value_to_the_new_key_and_a_second_run_changes_nothing(engine: Engine) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    seed(engine, Vault([old]))

    first = keys.rotate(engine, Vault([new, old]), batch_size=3)
    second = keys.rotate(engine, Vault([new, old]), batch_size=3)

    assert {r.name: r.rotated for r in first if r.rotated} == {
        "channel.token_encrypted": 1,
        "connection.secrets_encrypted": 7,
        "integration.webhook_secrets_encrypted": 1,
    }
    assert all(r.done for r in first) and [r.rotated for r in second] == [0] * len(second)
    assert connection_secrets(engine, Vault([new])) == SECRETS
    with pytest.raises(SecretsUnreadable):
        connection_secrets(engine, Vault([old]))


def test_rotate_resumes_where_an_interrupted_run_stopped(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    seed(engine, Vault([old]))
    both = Vault([new, old])
    calls = 0
    real_rotate = Vault.rotate

    def dies_on_the_fifth(self: Vault, token: str) -> str:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt  # the operator's Ctrl-C in the second batch
        return real_rotate(self, token)

    monkeypatch.setattr(Vault, "rotate", dies_on_the_fifth)
    with pytest.raises(KeyboardInterrupt):
        keys.rotate(engine, both, batch_size=2)
    monkeypatch.setattr(Vault, "rotate", real_rotate)

    resumed = keys.rotate(engine, both, batch_size=2)

    by_name = {r.name: r for r in resumed}
    assert by_name["connection.secrets_encrypted"].current == 2  # the first batch had committed
    assert by_name["connection.secrets_encrypted"].rotated == 5
    assert connection_secrets(engine, Vault([new])) == SECRETS


@pytest.mark.postgres
def test_rotate_leaves_a_value_another_process_rewrote_to_that_process(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL only: on SQLite a rotation batch holds the write lock, so no other writer can interleave.
    engine = make_engine(postgres_url)
    upgrade(engine)
    old, new = Fernet.generate_key(), Fernet.generate_key()
    seed(engine, Vault([old]))
    both = Vault([new, old])
    with Session(engine) as session:
        first = session.exec(select(Connection).order_by(Connection.id)).first()
        assert first is not None
    real_rotate, real_pass = Vault.rotate, keys._pass
    passes: list[keys.ColumnReport] = []

    def meanwhile(self: Vault, token: str) -> str:
        if token == first.secrets_encrypted:  # the app saves new credentials for it, with the new key
            with session_scope(engine) as session:
                row = session.get(Connection, first.id)
                assert row is not None
                row.secrets_encrypted = both.encrypt({"client_secret": "saved-meanwhile"})
        return real_rotate(self, token)

    def counted(*args: object, **kwargs: object) -> keys.ColumnReport:
        passes.append(real_pass(*args, **kwargs))  # type: ignore[arg-type]
        return passes[-1]

    monkeypatch.setattr(Vault, "rotate", meanwhile)
    monkeypatch.setattr(keys, "_pass", counted)
    reports = keys.rotate(engine, both)

    report = next(r for r in reports if r.name == "connection.secrets_encrypted")
    on_connections = [p for p in passes if p.name == "connection.secrets_encrypted"]
    assert [(p.rotated, p.changed, p.current) for p in on_connections] == [(6, 1, 0), (0, 0, 7)]
    assert (report.rotated, report.done) == (6, True)
    assert connection_secrets(engine, Vault([new])) == [{"client_secret": "saved-meanwhile"}, *SECRETS[1:]]
    engine.dispose()


def test_status_tells_old_current_and_unreadable_values_apart(engine: Engine) -> None:
    old, new, lost = Fernet.generate_key(), Fernet.generate_key(), Fernet.generate_key()
    seed(engine, Vault([old]))
    crud.create_connection(
        engine,
        Vault([lost]),
        workspace_id=1,
        system="zoho",
        name="lost",
        base_url="http://x",
        secrets={"a": "b"},
    )

    reports = {r.name: r for r in keys.status(engine, Vault([new, old]))}

    connection = reports["connection.secrets_encrypted"]
    assert (connection.current, connection.old, len(connection.unreadable)) == (0, 7, 1)
    assert reports["token.access_token_encrypted"].done  # no tokens: nothing to do


@pytest.fixture
def cli_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The CLI's settings pointed at a SQLite file in tmp_path; the key set per test."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'keys.db'}")
    monkeypatch.setenv("ML_CONNECTOR_DATA_DIR", str(tmp_path))
    forget()
    yield tmp_path
    forget()


def forget() -> None:
    if get_engine.cache_info().currsize:
        get_engine().dispose()
    get_engine.cache_clear()
    get_settings.cache_clear()
    get_vault.cache_clear()


def use_keys(monkeypatch: pytest.MonkeyPatch, *keys_: bytes) -> None:
    monkeypatch.setenv("ML_CONNECTOR_KEYS", ",".join(k.decode() for k in keys_))
    forget()


def test_the_command_line_walks_through_a_rotation(
    cli_database: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from storage.migrate import upgrade

    assert keys.main(["generate"]) == 0
    old = capsys.readouterr().out.strip().encode()
    Fernet(old)  # a usable key
    new = Fernet.generate_key()
    use_keys(monkeypatch, old)
    upgrade(get_engine())
    seed(get_engine(), get_vault())

    assert keys.main(["rotate"]) == 0  # one key: nothing to rotate to, so it explains the procedure
    assert "put it FIRST" in capsys.readouterr().out
    use_keys(monkeypatch, new, old)
    assert keys.main(["status"]) == 1
    assert "still on older keys" in capsys.readouterr().out
    assert keys.main(["rotate"]) == 0
    said = capsys.readouterr().out
    assert "7 re-encrypted" in said and "vacuumed" in said and "remove the older key" in said
    use_keys(monkeypatch, new)
    assert keys.main(["status"]) == 0
    use_keys(monkeypatch, old)
    assert keys.main(["status"]) == 2  # the old key alone reads nothing any more
    assert "cannot be decrypted" in capsys.readouterr().out
