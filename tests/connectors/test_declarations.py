"""What each system declares as data: credential fields with their patterns, and its status quirks."""

from __future__ import annotations

import pytest

from connectors.errors import AmbiguousLogin, ConfigurationError, RemoteError, TransientError
from connectors.http import STATUS_REACTIONS, reaction_for
from connectors.registry import SYSTEMS


@pytest.mark.parametrize(
    ("client_id", "acceptable"),
    [
        ("1000.ABCDEF0123456789", True),
        ("1000.abc", True),
        ("abc", False),
        ("1000.", False),
        ("1000.A B", False),
    ],
)
def test_zoho_client_id_must_start_with_1000(client_id: str, acceptable: bool) -> None:
    values = {"data_centre": "com", "client_id": client_id, "client_secret": "s", "refresh_token": "r"}

    problems = SYSTEMS["zoho"].spec.validate(values)

    assert ("client_id" not in problems) is acceptable
    if not acceptable:
        assert "starts with 1000." in problems["client_id"]


@pytest.mark.parametrize(
    ("system", "status", "reaction"),
    [
        ("netsuite", 401, AmbiguousLogin),  # INVALID_LOGIN is NetSuite's catch-all: retried before blamed
        ("zuora", 401, ConfigurationError),
        ("zoho", 401, ConfigurationError),
        ("netsuite", 429, TransientError),
        ("zoho", 404, RemoteError),
        ("zuora", 503, TransientError),
    ],
)
def test_status_reactions_are_one_table_with_declared_overrides(
    system: str, status: int, reaction: type[Exception]
) -> None:
    table = SYSTEMS[system].client.status_reactions

    assert reaction_for(status, table) is reaction
    assert {s: k for s, k in table.items() if STATUS_REACTIONS.get(s) is not k} == (
        {401: AmbiguousLogin} if system == "netsuite" else {}
    )
