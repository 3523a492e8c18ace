"""Encryption of secrets at rest with Fernet through a key list (MultiFernet), so keys can rotate.

Keys come from `ML_CONNECTOR_KEYS` (comma-separated, newest first) or, when that is empty, from
`<data dir>/keys`, created on first start with mode 0600. The newest key encrypts; every key decrypts,
so a new key can be put in front, everything re-encrypted with `Vault.rotate` (`python -m storage.keys
rotate` does it for every encrypted column), and then the old key dropped.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from storage.settings import get_settings

KEY_FILE_NAME = "keys"


class SecretsUnreadable(RuntimeError):
    """A stored secret cannot be decrypted with any configured key (a key was removed too early)."""


def load_keys(env_keys: str, data_dir: Path) -> list[bytes]:
    """The configured keys, newest first; creates the key file when neither source has one."""
    keys = [k.strip().encode() for k in env_keys.split(",") if k.strip()]
    if keys:
        return keys
    path = data_dir / KEY_FILE_NAME
    if not path.exists():
        _create_key_file(path)
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise SecretsUnreadable(
            f"{path} holds no key; add one (Fernet.generate_key()) or set ML_CONNECTOR_KEYS"
        )
    return [line.encode() for line in lines]


def _create_key_file(path: Path) -> None:
    """Write a new key to `path` unless it exists, so that no process ever reads it half-written.

    The key goes to a private temporary file first and is then hard-linked into place: `link` fails when
    `path` exists, so when the UI and the runner start together exactly one key wins, and the loser (and
    anyone reading meanwhile) only ever sees the whole file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(Fernet.generate_key() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return
    finally:
        os.unlink(temporary)


class Vault:
    """Encrypts and decrypts JSON-serialisable secrets."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("at least one Fernet key is needed")
        self._primary = Fernet(keys[0])
        self._fernet = MultiFernet([Fernet(k) for k in keys])
        self.key_count = len(keys)

    def encrypt(self, value: Any) -> str:
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode()

    def decrypt(self, token: str) -> Any:
        if not token:
            return None
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken as exc:
            raise SecretsUnreadable(
                "a stored secret cannot be decrypted with the configured keys; "
                "restore the key it was written with to ML_CONNECTOR_KEYS or the key file"
            ) from exc

    def rotate(self, token: str) -> str:
        """Re-encrypt `token` with the newest key; raises SecretsUnreadable if no key decrypts it."""
        if not token:
            return token
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken as exc:
            raise SecretsUnreadable(
                "a stored secret cannot be decrypted with the configured keys, so it cannot be re-encrypted"
            ) from exc

    def is_current(self, token: str) -> bool:
        """Whether `token` is encrypted with the newest key (an empty value counts as current)."""
        if not token:
            return True
        try:
            self._primary.decrypt(token.encode())
        except InvalidToken:
            return False
        return True


@lru_cache(maxsize=1)
def get_vault() -> Vault:
    """The process-wide vault built from the settings."""
    settings = get_settings()
    return Vault(load_keys(settings.keys, settings.data_dir))
