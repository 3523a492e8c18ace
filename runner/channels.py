"""Keeping Zoho notification channels alive: renew well before expiry, re-provision when Zoho refuses.

Zoho keeps a channel at most a week and drops it silently after `channel_expiry` (shared/api/zoho.md
§3). Every channel that expires within `RENEW_BEFORE` is renewed with PATCH and the expiry Zoho answers
with is stored (it may shorten what we asked for). A 4xx or NOT_SUBSCRIBED means the channel lapsed or
was removed on Zoho's side: it is enabled again (POST) under the same id and token. Changes made while
a channel was down reach us through the polls.

Every attempt leaves a `ChannelRenewal` row (renewed, re-provisioned or failed, with the expiry it left
the channel with) in the same transaction as the channel's new state: the history the Health page shows.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from anyio import to_thread
from sqlmodel import col, select

from connectors.errors import ConnectorError, RemoteError
from connectors.zoho.client import ZohoClient
from runner.services import Services
from storage import channels as channel_store
from storage.db import session_scope
from storage.models import Channel, ChannelRenewal
from storage.types import utcnow

log = logging.getLogger("ml_connector.channels")

CHANNEL_LIFETIME = timedelta(days=7)  # the longest Zoho grants
RENEW_BEFORE = timedelta(days=1)  # renew channels expiring sooner than this

# What `keep_alive` reports per channel, and the `ChannelRenewal.action` it records.
RENEWED = "renewed"
REPROVISIONED = "re-provisioned"
FAILED = "failed"


def _due(services: Services, now: datetime) -> list[Channel]:
    with session_scope(services.engine) as session:
        rows = session.exec(select(Channel).where(col(Channel.status) != "disabled")).all()
        return [
            c
            for c in rows
            if c.status != "active" or c.expires_at is None or c.expires_at - now < RENEW_BEFORE
        ]


def _expiry_of(results: list[dict[str, Any]]) -> datetime | None:
    """The channel_expiry Zoho answered with, when the first result is a success."""
    if not results or results[0].get("code") != "SUCCESS":
        return None
    events = (results[0].get("details") or {}).get("events") or [{}]
    text = str(events[0].get("channel_expiry") or "")
    return datetime.fromisoformat(text) if text else None


async def keep_alive(services: Services, *, now: datetime | None = None) -> dict[str, str]:
    """Renew or re-provision every channel that needs it; returns channel id → what happened."""
    now = now or utcnow()
    outcome: dict[str, str] = {}
    for channel in await to_thread.run_sync(_due, services, now):
        outcome[channel.channel_id] = await _keep_one(services, channel, now)
    return outcome


async def _keep_one(services: Services, channel: Channel, now: datetime) -> str:
    integration = await services.integration(channel.integration_id)
    if integration is None:
        return "orphaned"
    client = await services.client_for(integration.target_connection_id)
    if not isinstance(client, ZohoClient):
        return "not zoho"
    body = {
        "channel_id": channel.channel_id,
        "events": list(channel.events),
        "notify_url": channel.notify_url,
        "token": channel_store.channel_token(services.vault, channel),
        "channel_expiry": (now + CHANNEL_LIFETIME).isoformat(timespec="seconds"),
    }
    action = RENEWED
    refusal: str | None = None
    try:
        try:
            results = await client.renew_watch([body])
            expiry = _expiry_of(results)
            if expiry is None:
                raise RemoteError(f"renewal refused: {results[:1]}", system="zoho")
        except RemoteError as refused:
            # Lapsed, removed or unknown on Zoho's side (NOT_SUBSCRIBED and other 4xx): enable it again.
            log.info("channel %s: renewal refused (%s); re-provisioning", channel.channel_id, refused.message)
            action, refusal = REPROVISIONED, refused.message
            expiry = _expiry_of(await client.watch([body]))
            if expiry is None:
                raise
    except ConnectorError as exc:
        await to_thread.run_sync(_record, services, channel.channel_id, FAILED, None, str(exc))
        log.warning("channel %s could not be kept alive: %s", channel.channel_id, exc)
        return FAILED
    await to_thread.run_sync(_record, services, channel.channel_id, action, expiry, refusal)
    log.info("channel %s %s until %s", channel.channel_id, action, expiry.isoformat())
    return action


def _record(
    services: Services, channel_id: str, action: str, expires_at: datetime | None, detail: str | None
) -> None:
    """Store what one keep-alive did: the channel's new state and a renewal history row, together.

    A failure marks the channel failed with the error; its history row keeps the expiry the channel
    still has (None when it was never enabled), so the page can say how long it has left.
    """
    failed = action == FAILED
    with session_scope(services.engine, write=True) as session:
        row = session.exec(select(Channel).where(col(Channel.channel_id) == channel_id)).first()
        if row is None:
            return
        row.status = "failed" if failed else "active"
        row.last_error = detail if failed else None
        if expires_at is not None:
            row.expires_at = expires_at
            row.renewed_at = utcnow()
        session.add(row)
        session.flush()
        assert row.id is not None
        session.add(
            ChannelRenewal(channel_id=row.id, action=action, expires_at=row.expires_at, detail=detail)
        )
