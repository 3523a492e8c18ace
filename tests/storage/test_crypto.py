from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from storage.crypto import SecretsUnreadable, Vault, load_keys


def test_load_keys_creates_a_private_key_file_on_first_start(tmp_path: Path) -> None:
    keys = load_keys("", tmp_path)

    key_file = tmp_path / "keys"
    assert len(keys) == 1
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_keys("", tmp_path) == keys  # the second start reads the same key


def test_load_keys_prefers_the_environment(tmp_path: Path) -> None:
    new, old = Fernet.generate_key(), Fernet.generate_key()

    keys = load_keys(f"{new.decode()}, {old.decode()}", tmp_path)

    assert keys == [new, old]
    assert not (tmp_path / "keys").exists()


def test_vault_round_trips_json_values() -> None:
    vault = Vault([Fernet.generate_key()])
    secret = {"client_secret": "s3cr3t", "n": 1}

    token = vault.encrypt(secret)

    assert "s3cr3t" not in token
    assert vault.decrypt(token) == secret


def test_vault_rotation_moves_secrets_to_the_new_key() -> None:
    old_key, new_key = Fernet.generate_key(), Fernet.generate_key()
    written_with_old = Vault([old_key]).encrypt("value")
    both = Vault([new_key, old_key])

    rotated = both.rotate(written_with_old)

    assert Vault([new_key]).decrypt(rotated) == "value"
    with pytest.raises(SecretsUnreadable, match="cannot be decrypted"):
        Vault([new_key]).decrypt(written_with_old)
