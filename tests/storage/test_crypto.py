from __future__ import annotations

import multiprocessing
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from storage.crypto import SecretsUnreadable, Vault, load_keys


def test_load_keys_creates_a_private_key_file_on_first_start(tmp_path: Path) -> None:
    keys = load_keys("", tmp_path)

    key_file = tmp_path / "keys"
    assert len(keys) == 1
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_keys("", tmp_path) == keys  # the second start reads the same key


def _first_start(data_dir: str, barrier: Any, keys: Any) -> None:
    barrier.wait()
    try:
        keys.put([key.decode() for key in load_keys("", Path(data_dir))])
    except Exception as exc:  # the parent reports what a process saw instead of a key
        keys.put(f"{type(exc).__name__}: {exc}")


def test_load_keys_processes_starting_together_all_read_one_whole_key(tmp_path: Path) -> None:
    # The UI and the runner started by hand at the same moment: whichever creates the key file, the
    # other must never read it empty or half-written, and both must use the same key.
    context = multiprocessing.get_context("fork")  # cheap to start; the child only calls load_keys
    for attempt in range(5):
        data_dir = tmp_path / f"start-{attempt}"
        barrier = context.Barrier(4)
        keys = context.Queue()
        processes = [
            context.Process(target=_first_start, args=(str(data_dir), barrier, keys)) for _ in range(4)
        ]
        for process in processes:
            process.start()
        seen = [keys.get(timeout=60) for _ in processes]
        for process in processes:
            process.join(30)

        assert all(isinstance(found, list) and len(found) == 1 for found in seen), seen
        assert len({found[0] for found in seen}) == 1, seen  # one key, whoever wrote it
        assert [path.name for path in data_dir.iterdir()] == ["keys"]  # no temporary file left behind
        assert stat.S_IMODE((data_dir / "keys").stat().st_mode) == 0o600


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
