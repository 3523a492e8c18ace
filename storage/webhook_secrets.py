"""Webhook secrets that rotate with a grace period, so a sender can switch over without dropping events.

An integration's webhook secrets live in one encrypted JSON object (`Integration.webhook_secrets_encrypted`,
see storage.crypto). Each secret is a name ("netsuite_secret", "zuora_hmac_secret") whose value is the
current secret; a rotation keeps the value it replaced next to it, with when it was replaced:

    {"netsuite_secret": "<current>",
     "netsuite_secret.previous": "<the one before>",
     "netsuite_secret.rotated_at": "2025-01-08T09:30:00+00:00",
     "netsuite_secret.grace_seconds": "3600"}        only when `rotate` was given a grace of its own

Every value stays a string, so `storage.crud.integration_secrets` keeps returning `dict[str, str]` and
readers that only know the plain names keep working.

The receiver asks `accepted()` which values to compare against: the current one, plus the previous one
until the grace period after the rotation ends. The grace is the rotation's own (`rotate(...,
grace_seconds=)`, e.g. 0 to revoke a leaked secret at once), else `integration.settings
["secret_grace_seconds"]`, else 24 hours. Rotating again inside the grace period drops the oldest value:
only one previous secret is ever kept.

A rotation takes effect with the next delivery, also in a runner that cached the integration before it
(storage.intake: a delivery is stored only if the integration row is still the one it was judged on).
"""

from __future__ import annotations

import math
import secrets as pysecrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.crypto import Vault
from storage.db import is_sqlite, session_scope
from storage.models import Integration
from storage.types import utcnow

SECRET_NAMES = frozenset({"netsuite_secret", "zuora_hmac_secret"})
DEFAULT_GRACE = 24 * 3600.0  # seconds the previous secret stays valid after a rotation
NEW_SECRET_BYTES = 32  # random bytes in a generated secret (43 URL-safe characters)
GRACE_SETTING = "secret_grace_seconds"


def rotate(
    engine: Engine,
    vault: Vault,
    *,
    integration_id: int,
    name: str,
    new_secret: str | None = None,
    grace_seconds: float | None = None,
    now: datetime | None = None,
) -> str:
    """Make `new_secret` (or a freshly generated one) the current value of secret `name`; returns it.

    The value it replaces stays accepted for the grace period (see the module docstring). The row is
    read and written in one write transaction (a row lock on PostgreSQL, BEGIN IMMEDIATE on SQLite), so
    two rotations at once cannot lose each other's previous value. `now` (default: the current time)
    is when the rotation is recorded.

    Raises ValueError for an unknown name, an empty or unchanged secret or a negative grace, and
    LookupError when there is no such integration.
    """
    if name not in SECRET_NAMES:
        raise ValueError(
            f"unknown webhook secret {name!r}; expected one of {', '.join(sorted(SECRET_NAMES))}"
        )
    if grace_seconds is not None and not (math.isfinite(grace_seconds) and grace_seconds >= 0):
        raise ValueError("grace_seconds must be a number of seconds, 0 or more")
    secret = pysecrets.token_urlsafe(NEW_SECRET_BYTES) if new_secret is None else new_secret
    if not secret.strip():
        raise ValueError("a webhook secret cannot be empty")
    query = select(Integration).where(col(Integration.id) == integration_id)
    if not is_sqlite(engine):
        query = query.with_for_update()
    with session_scope(engine, write=True) as session:
        integration = session.exec(query).first()
        if integration is None:
            raise LookupError(f"no integration with id {integration_id}")
        values: dict[str, str] = dict(vault.decrypt(integration.webhook_secrets_encrypted) or {})
        current = values.get(name, "")
        if current == secret:
            raise ValueError(f"the new {name} is the current one; choose a different value")
        for suffix in ("previous", "rotated_at", "grace_seconds"):
            values.pop(f"{name}.{suffix}", None)
        if current:
            values[f"{name}.previous"] = current
            values[f"{name}.rotated_at"] = (now or utcnow()).isoformat()
            if grace_seconds is not None:
                values[f"{name}.grace_seconds"] = repr(float(grace_seconds))
        values[name] = secret
        integration.webhook_secrets_encrypted = vault.encrypt(values)
        session.add(integration)
    return secret


def accepted(vault: Vault, integration: Integration, name: str, now: datetime | None = None) -> list[str]:
    """The values of secret `name` a delivery may carry right now: the current one first, then the
    previous one while its grace period lasts. Empty when the secret was never set."""
    values: dict[str, str] = dict(vault.decrypt(integration.webhook_secrets_encrypted) or {})
    return accepted_values(values, integration.settings or {}, name, now)


def accepted_values(
    values: Mapping[str, str], settings: Mapping[str, Any], name: str, now: datetime | None = None
) -> list[str]:
    """`accepted` for secrets already decrypted (`values`) and the integration's `settings`: what
    webhook intake calls on its cached copy of an integration, so the grace period still ends on time."""
    result = [values[name]] if values.get(name) else []
    previous = values.get(f"{name}.previous", "")
    if previous:
        rotated_at = _parse_time(values.get(f"{name}.rotated_at"))
        if rotated_at is not None:
            grace = _grace(values.get(f"{name}.grace_seconds"), settings)
            if (now or utcnow()) < rotated_at + timedelta(seconds=grace):
                result.append(previous)
    return result


def _grace(own: str | None, settings: Mapping[str, Any]) -> float:
    """The rotation's own grace, else the integration's setting, else the default (bad values ignored)."""
    for raw in (own, settings.get(GRACE_SETTING)):
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            continue
        try:
            seconds = float(raw)
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    return DEFAULT_GRACE


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value if value.tzinfo is not None else None
