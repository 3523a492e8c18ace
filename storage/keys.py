"""Fernet key rotation for every secret we keep: `python -m storage.keys {generate,status,rotate,scrub}`.

Secrets live encrypted in the `*_encrypted` columns of storage.models (connection secrets, access
tokens, webhook secrets, Zoho channel tokens), found here from the table metadata, so a column added
later is rotated without editing this file. A Fernet token does not say which key wrote it, so a value
"is on the newest key" when the newest key alone decrypts it.

The whole procedure, which `python -m storage.keys rotate` also prints:

1. `python -m storage.keys generate` prints a new key.
2. Put it first: `ML_CONNECTOR_KEYS="<new>,<old>"`, or a new first line in `<data dir>/keys`. Restart
   the app and every runner, so each process writes with the new key and still reads the old one.
3. `python -m storage.keys rotate` re-encrypts every value not yet on the new key, a batch at a time,
   each batch one transaction. It can be stopped and run again: values already on the new key are
   skipped, so a second run changes nothing. A value a running process rewrites meanwhile is left to
   that process (the update compares before it writes) and checked again on the next pass.
   Then it has the database drop the superseded copies (`scrub`): SQLite keeps rewritten rows in its
   write-ahead log and free pages, PostgreSQL in dead row versions, each readable with the old key
   until vacuumed. Backups taken before the rotation still hold them: keep the old key with those
   backups, or destroy them.
4. `python -m storage.keys status` reports nothing left on older keys; then remove the old key and
   restart. A value no configured key can read is reported by both commands, with its row, and
   means a key was removed too early: restore it before removing another.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import Column, Table, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlmodel import SQLModel

import storage.models  # noqa: F401  (registers the tables whose columns are scanned)
from storage.crypto import KEY_FILE_NAME, SecretsUnreadable, Vault, get_vault
from storage.db import get_engine, is_sqlite, session_scope
from storage.settings import get_settings

SUFFIX = "_encrypted"
BATCH_SIZE = 200  # rows per transaction: short write locks on SQLite, modest memory on big tables
MAX_PASSES = 3  # passes over a column while concurrent writers keep replacing values under us
SCRUB_LOCK_TIMEOUT = 10  # seconds PostgreSQL's VACUUM FULL waits for a table lock before giving up


@dataclass
class ColumnReport:
    """What one pass found (and, when rotating, did) in one encrypted column."""

    table: str
    column: str
    current: int = 0  # already on the newest key (or empty)
    rotated: int = 0  # re-encrypted under the newest key by this run
    old: int = 0  # on an older key, left as it was (status only)
    changed: int = 0  # rewritten by another process between our read and our write
    unreadable: list[int] = field(default_factory=list)  # row ids no configured key decrypts

    @property
    def name(self) -> str:
        return f"{self.table}.{self.column}"

    @property
    def done(self) -> bool:
        """Every value of the column is on the newest key."""
        return not (self.old or self.changed or self.unreadable)


def encrypted_columns() -> list[tuple[Table, Column]]:
    """Every `*_encrypted` column of the table models, table by table in name order."""
    found = []
    for table in sorted(SQLModel.metadata.tables.values(), key=lambda t: t.name):
        for column in table.columns:
            if column.name.endswith(SUFFIX):
                found.append((table, column))
    return found


def status(engine: Engine, vault: Vault) -> list[ColumnReport]:
    """Count, per column, values on the newest key, on older keys, and unreadable; writes nothing."""
    return [
        _pass(engine, vault, table, column, write=False, batch_size=BATCH_SIZE)
        for table, column in encrypted_columns()
    ]


def rotate(engine: Engine, vault: Vault, *, batch_size: int = BATCH_SIZE) -> list[ColumnReport]:
    """Re-encrypt every value not on the vault's newest key under it; idempotent and resumable.

    Returns one report per column, summed over the passes made (a column is passed over again, up to
    MAX_PASSES, while other processes rewrote values under it).
    """
    reports = []
    for table, column in encrypted_columns():
        total = ColumnReport(table.name, column.name)
        for _ in range(MAX_PASSES):
            found = _pass(engine, vault, table, column, write=True, batch_size=batch_size)
            total.rotated += found.rotated
            total.unreadable = found.unreadable
            total.changed = found.changed
            total.current = found.current
            if not found.changed:
                break
        reports.append(total)
    return reports


def _pass(
    engine: Engine, vault: Vault, table: Table, column: Column, *, write: bool, batch_size: int
) -> ColumnReport:
    report = ColumnReport(table.name, column.name)
    (key,) = table.primary_key.columns  # every table with secrets has a single integer id
    last: int | None = None
    while True:
        with session_scope(engine, write=write) as session:
            query = select(key, column).order_by(key).limit(batch_size)
            if last is not None:
                query = query.where(key > last)
            rows = session.execute(query).all()
            for row_id, value in rows:
                if vault.is_current(value or ""):
                    report.current += 1
                    continue
                try:
                    rotated = vault.rotate(value)
                except SecretsUnreadable:
                    report.unreadable.append(row_id)
                    continue
                if not write:
                    report.old += 1
                    continue
                # Compare-and-set: a process that rewrote the value since we read it wins.
                result = session.execute(
                    update(table).where(key == row_id, column == value).values({column.name: rotated})
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    report.rotated += 1
                else:
                    report.changed += 1
        if len(rows) < batch_size:
            return report
        last = rows[-1][0]


def scrub(engine: Engine) -> str:
    """Have the database drop superseded copies of rewritten values, so that no ciphertext under an old
    key stays in its files; returns what was done (or why not: it needs a moment with no writer).

    SQLite: checkpoint the write-ahead log, VACUUM (a fresh file without free pages), truncate the log.
    PostgreSQL: VACUUM FULL the tables with encrypted columns (small ones: connections, tokens,
    integrations, channels), which rewrites them without dead row versions.
    """
    tables = sorted({table.name for table, _ in encrypted_columns()})
    try:
        if is_sqlite(engine):
            raw = engine.raw_connection()  # autocommit (storage.db): VACUUM cannot run in a transaction
            try:
                cursor = raw.cursor()
                for statement in (
                    "PRAGMA wal_checkpoint(TRUNCATE)",
                    "VACUUM",
                    "PRAGMA wal_checkpoint(TRUNCATE)",
                ):
                    cursor.execute(statement)
                cursor.close()
            finally:
                raw.close()
            return "SQLite file vacuumed and its write-ahead log truncated"
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"SET lock_timeout = '{SCRUB_LOCK_TIMEOUT}s'")
            for name in tables:
                connection.exec_driver_sql(f'VACUUM FULL "{name}"')
        return f"VACUUM FULL of {', '.join(tables)}"
    except DBAPIError as exc:
        return (
            f"not done ({type(exc.orig).__name__}); run `python -m storage.keys scrub` while nothing writes"
        )


# The command line ------------------------------------------------------------------------------------

PROCEDURE = """\
To rotate the encryption key:
  1. python -m storage.keys generate            prints a new key
  2. put it FIRST: ML_CONNECTOR_KEYS="<new>,<old>" (or a new first line in {key_file}),
     then restart the app and every runner
  3. python -m storage.keys rotate              re-encrypts everything under the new key
  4. python -m storage.keys status              must report 0 on older keys; then remove the old key
     from ML_CONNECTOR_KEYS (or the key file) and restart"""


def _print_reports(reports: Sequence[ColumnReport], *, rotating: bool) -> None:
    for r in reports:
        parts = [f"{r.current} on the newest key"]
        if rotating:
            parts.append(f"{r.rotated} re-encrypted")
        if r.old:
            parts.append(f"{r.old} on older keys")
        if r.changed:
            parts.append(f"{r.changed} changed meanwhile")
        if r.unreadable:
            shown = ", ".join(map(str, r.unreadable[:10])) + (" …" if len(r.unreadable) > 10 else "")
            parts.append(f"{len(r.unreadable)} unreadable (ids {shown})")
        print(f"  {r.name:40} {', '.join(parts)}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m storage.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("generate", help="print a new Fernet key")
    commands.add_parser("status", help="count secrets per column on the newest key, older keys, none")
    commands.add_parser("scrub", help="have the database drop superseded copies of rotated secrets")
    rotate_cmd = commands.add_parser("rotate", help="re-encrypt every secret under the newest key")
    rotate_cmd.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="rows per transaction")
    args = parser.parse_args(argv)

    if args.command == "generate":
        print(Fernet.generate_key().decode())
        return 0
    key_file = get_settings().data_dir / KEY_FILE_NAME
    engine, vault = get_engine(), get_vault()
    if args.command == "scrub":
        print(f"superseded copies: {scrub(engine)}")
        return 0
    if args.command == "status":
        reports = status(engine, vault)
        _print_reports(reports, rotating=False)
        return _verdict(reports, vault, key_file, rotated=False)
    if vault.key_count == 1:
        print("Only one key is configured, so there is nothing to rotate to.\n")
        print(PROCEDURE.format(key_file=key_file))
    reports = rotate(engine, vault, batch_size=args.batch_size)
    _print_reports(reports, rotating=True)
    if any(r.rotated for r in reports):
        print(f"  superseded copies: {scrub(engine)}")
    return _verdict(reports, vault, key_file, rotated=True)


def _verdict(reports: Sequence[ColumnReport], vault: Vault, key_file: Path, *, rotated: bool) -> int:
    """Say what to do next; the exit status: 0 done, 1 values left on older keys, 2 unreadable values."""
    unreadable = sum(len(r.unreadable) for r in reports)
    left = sum(r.old + r.changed for r in reports)
    if unreadable:
        print(
            f"\n{unreadable} secrets cannot be decrypted by any configured key: a key they were written "
            "with is missing. Restore it (anywhere in the list) and run this again; remove no key now."
        )
        return 2
    if left:
        print(f"\n{left} secrets are still on older keys: run `python -m storage.keys rotate`.")
        return 1
    if vault.key_count > 1:
        print(
            "\nEvery secret is on the newest key. Next: remove the older key(s), keeping only the first, "
            f"from ML_CONNECTOR_KEYS (or {key_file}), and restart the app and every runner."
        )
    elif not rotated:  # `rotate` with one key printed the whole procedure already
        print("\nEvery secret is on the only configured key.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
