"""A stack shared by the cases of one module (per database kind), for tables of cases that store nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import Engine

from storage.crypto import Vault
from storage.settings import Settings
from tests.e2e.stack import Stack, running_stack


@pytest.fixture(scope="module")
def shared_stack(module_engine: Engine, module_vault: Vault, module_settings: Settings) -> Iterator[Stack]:
    """One running stack for a module's refusal cases: each case asserts it stored nothing, so the cases
    cannot disturb one another."""
    with running_stack(module_engine, module_vault, module_settings) as running:
        yield running
