"""Zoho notification channels we keep for an integration: create, read, change status, reveal the token.

A channel is our record of one Zoho watch subscription (shared/api/zoho.md §3). Its `channel_id` is a
number we choose; its token is a random string Zoho echoes in every notification, which is how the
runner tells a real notification from a forged one, so it is stored encrypted like every other secret
(design.md invariant 6) and only `channel_token` decrypts it.
"""

from __future__ import annotations

import secrets as pysecrets
from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Channel

MAX_TOKEN_LENGTH = 50  # characters; Zoho refuses longer tokens with INVALID_DATA (zoho.md §3a)
TOKEN_BYTES = 24  # random bytes in a generated token (32 URL-safe characters, under Zoho's 50)
CHANNEL_ID_DIGITS = 16  # a generated channel id: a long, as Zoho requires, that no other row uses
STATUSES = frozenset({"active", "lapsed", "failed", "disabled"})


def new_channel_id() -> str:
    """A random channel id: Zoho wants a long, and leaves the choice to us (zoho.md §3a)."""
    return str(10 ** (CHANNEL_ID_DIGITS - 1) + pysecrets.randbelow(9 * 10 ** (CHANNEL_ID_DIGITS - 1)))


def create_channel(
    engine: Engine,
    vault: Vault,
    *,
    integration_id: int,
    events: list[str],
    notify_url: str,
    channel_id: str | None = None,
    token: str | None = None,
    expires_at: datetime | None = None,
) -> Channel:
    """Store a channel (status active) before asking Zoho to enable it; the token is generated unless
    given, and encrypted. Raises ValueError for a channel id that is not a number or a token Zoho would
    refuse."""
    channel_id = channel_id or new_channel_id()
    if not channel_id.isdigit():
        raise ValueError(f"a Zoho channel id is a number (a long); got {channel_id!r}")
    token = pysecrets.token_urlsafe(TOKEN_BYTES) if token is None else token
    if not token or len(token) > MAX_TOKEN_LENGTH:
        raise ValueError(f"a Zoho channel token must have 1 to {MAX_TOKEN_LENGTH} characters")
    with session_scope(engine) as session:
        channel = Channel(
            integration_id=integration_id,
            channel_id=channel_id,
            token_encrypted=vault.encrypt(token),
            events=list(events),
            notify_url=notify_url,
            expires_at=expires_at,
        )
        session.add(channel)
        session.flush()
        return channel


def get_channel(engine: Engine, *, integration_id: int, channel_id: str) -> Channel | None:
    """The integration's channel with Zoho's `channel_id`, or None (another integration's is None too)."""
    with session_scope(engine) as session:
        return session.exec(
            select(Channel).where(
                col(Channel.integration_id) == integration_id, col(Channel.channel_id) == channel_id
            )
        ).first()


def set_status(engine: Engine, *, channel_id: str, status: str, last_error: str | None = None) -> bool:
    """Move a channel to `status` (active | lapsed | failed | disabled); False when there is none.

    A disabled channel's notifications are refused by the runner, so disabling here is how a person
    stops a channel whose Zoho side cannot be reached any more.
    """
    if status not in STATUSES:
        raise ValueError(f"unknown channel status {status!r}; expected one of {', '.join(sorted(STATUSES))}")
    # A write transaction from the start: on SQLite a read that later writes can lose to a concurrent
    # writer ("database is locked") instead of waiting for it.
    with session_scope(engine, write=True) as session:
        channel = session.exec(select(Channel).where(col(Channel.channel_id) == channel_id)).first()
        if channel is None:
            return False
        channel.status = status
        channel.last_error = last_error
        session.add(channel)
        return True


def channel_token(vault: Vault, channel: Channel) -> str:
    """The channel's token in clear, for enabling the channel in Zoho and checking notifications."""
    return str(vault.decrypt(channel.token_encrypted) or "")
