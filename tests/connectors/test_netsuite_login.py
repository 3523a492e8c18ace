"""NetSuite's catch-all INVALID_LOGIN: retried with fresh tokens before the credentials are blamed."""

from __future__ import annotations

import pytest

from connectors.errors import ConfigurationError
from tests.connectors.conftest import Harness


@pytest.mark.parametrize("harness", ["netsuite"], indirect=True)
async def test_a_stray_invalid_login_is_retried_with_a_fresh_token(harness: Harness) -> None:
    await harness.cheap_call()
    harness.emulator.faults.fail_next(401, 2)  # refused, refused again after the refresh, then fine

    await harness.cheap_call()

    assert [a.status for a in harness.api_attempts()][-3:] == [401, 401, 200]
    assert len(harness.token_attempts()) >= 2


@pytest.mark.parametrize("harness", ["netsuite"], indirect=True)
async def test_persistent_invalid_login_becomes_a_configuration_error(harness: Harness) -> None:
    await harness.cheap_call()
    harness.attempts.clear()
    harness.emulator.faults.fail_next(401, 100)

    with pytest.raises(ConfigurationError) as caught:
        await harness.cheap_call()

    assert "INVALID_LOGIN" in caught.value.message
    assert "permission" in caught.value.message
    api = harness.api_attempts()
    assert len(api) == 10 and all(a.status == 401 for a in api)  # five tries, each with one refresh
    assert len(harness.token_attempts()) == 5
