from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from storage.settings import Settings


def test_settings_default_to_a_sqlite_file_under_the_data_dir(tmp_path: Path) -> None:
    settings = Settings.model_validate({"ML_CONNECTOR_DATA_DIR": str(tmp_path)})

    assert settings.effective_database_url == f"sqlite:///{tmp_path.resolve() / 'ml-connector.db'}"


def test_settings_accept_a_plain_postgresql_url_and_use_psycopg() -> None:
    settings = Settings.model_validate({"DATABASE_URL": "postgresql://u@db:5432/mlc"})

    assert settings.effective_database_url == "postgresql+psycopg://u@db:5432/mlc"


def test_settings_refuse_an_unknown_database_scheme_naming_the_variable() -> None:
    with pytest.raises(ValidationError, match="DATABASE_URL must start with"):
        Settings.model_validate({"DATABASE_URL": "mysql://root@localhost/db"})
