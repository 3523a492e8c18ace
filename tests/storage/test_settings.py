from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from storage.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def test_settings_default_to_a_sqlite_file_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.model_validate({"ML_CONNECTOR_DATA_DIR": str(tmp_path)})

    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'ml-connector.db'}"


def test_settings_accept_a_plain_postgresql_url_and_use_psycopg() -> None:
    settings = Settings.model_validate({"DATABASE_URL": "postgresql://u@db:5432/mlc"})

    assert settings.effective_database_url == "postgresql+psycopg://u@db:5432/mlc"


def test_settings_refuse_an_unknown_database_scheme_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL must start with"):
        Settings.model_validate({"DATABASE_URL": "mysql://root@localhost/db"})


def test_importing_every_module_does_no_work(tmp_path: Path) -> None:
    # Style rule 7 and the issue: nothing happens at import time — no settings read, no engine, no data
    # directory, no key file. Imported in a fresh interpreter whose working directory is empty.
    script = """
import importlib, pkgutil, sys
for package in ("storage", "runner", "connectors", "demo"):
    module = importlib.import_module(package)
    for info in pkgutil.walk_packages(module.__path__, package + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)
from storage.settings import get_settings
from storage.db import get_engine
print(get_settings.cache_info().currsize, get_engine.cache_info().currsize)
"""
    env = {key: value for key, value in os.environ.items() if not key.startswith("ML_CONNECTOR")}
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["0", "0"]  # neither the settings nor the engine were built
    assert list(tmp_path.iterdir()) == []  # no ./data, no key file
