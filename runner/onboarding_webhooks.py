"""Onboarding's last mile: where NetSuite, Zuora and Zoho CRM send changes, and with which secret.

    webhook_setup            the integration's webhook URLs and current secrets
    suitescript, install_guide   NetSuite's User Event script and how to deploy it
    zuora_callout_settings   the callout template settings runner.intake_zuora verifies (HMAC SHA-256)
    provision_zoho_channel   the Zoho notification channel, enabled through Zoho's watch API

The webhook secrets are the one kind of secret these functions hand out: a person must paste them into
NetSuite and Zuora. The Zoho channel's token never leaves the server; Zoho gets it over its API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.errors import ConfigurationError, ConnectorError
from connectors.http import ApiClient
from connectors.netsuite import spec as netsuite_spec
from connectors.ping import unreachable_hint
from connectors.sync import with_client
from connectors.zoho.client import ZohoClient
from runner.channels import FAILED
from runner.flows.zoho_change import MODULES as ZOHO_MODULES
from runner.intake_zuora import NOTIFICATION_HEADER, SIGNATURE_HEADER
from runner.onboarding import InputError
from storage import channels as channel_store
from storage import crud
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import Channel, ChannelRenewal
from storage.types import utcnow

SUITESCRIPT_DIR = Path(netsuite_spec.__file__).parent / "suitescript"
SUITESCRIPT = SUITESCRIPT_DIR / "ml_connector_user_event.js"
INSTALL_GUIDE = SUITESCRIPT_DIR / "INSTALL.md"

ZOHO_WATCH_EVENTS = [f"{module}.all" for module in ZOHO_MODULES]  # every module the write-back reads
CHANNEL_LIFETIME = timedelta(days=7)  # the longest Zoho grants; runner.channels renews before it ends
# The ChannelRenewal action of a channel's first enabling, beside runner.channels' renewed/re-provisioned.
PROVISIONED = "provisioned"


# --- webhooks -------------------------------------------------------------------------------------


def webhook_url(runner_url: str, system: str, key: str) -> str:
    """Where `system` sends this integration's events: `{runner}/webhooks/{system}/{key}`."""
    return f"{runner_url.rstrip('/')}/webhooks/{system}/{key}"


@dataclass(frozen=True)
class WebhookSetup:
    """What a person pastes into NetSuite (script parameters) and Zuora (callout template)."""

    integration_key: str
    netsuite_url: str
    netsuite_secret: str
    zuora_url: str
    zuora_secret: str
    zoho_url: str

    @property
    def public(self) -> bool:
        """NetSuite's N/https and Zuora's callouts reach only https URLs (on a public certificate)."""
        return self.netsuite_url.startswith("https://")


def webhook_setup(engine: Engine, vault: Vault, *, integration_id: int, runner_url: str) -> WebhookSetup:
    """The integration's webhook URLs and current secrets; LookupError when it does not exist."""
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise LookupError(f"no integration with id {integration_id}")
    secrets = crud.integration_secrets(vault, integration)
    return WebhookSetup(
        integration_key=integration.key,
        netsuite_url=webhook_url(runner_url, "netsuite", integration.key),
        netsuite_secret=secrets.get("netsuite_secret", ""),
        zuora_url=webhook_url(runner_url, "zuora", integration.key),
        zuora_secret=secrets.get("zuora_hmac_secret", ""),
        zoho_url=webhook_url(runner_url, "zoho", integration.key),
    )


def suitescript() -> tuple[str, str]:
    """The User Event script's file name and source, for download."""
    return SUITESCRIPT.name, SUITESCRIPT.read_text(encoding="utf-8")


def install_guide() -> str:
    """The step-by-step guide to deploying the script in NetSuite (Markdown)."""
    return INSTALL_GUIDE.read_text(encoding="utf-8")


# The callout body runner.intake_zuora reads: key, what it holds, and Zuora's merge field where one is
# documented (shared/api/zuora.md §6); the others are picked with the template's "Insert merge fields".
CALLOUT_BODY: tuple[tuple[str, str, str], ...] = (
    ("event", 'the event name: "Subscription Created", "Amendment Processed", "Order Processed" or '
     '"Order Action Processed" (typed as text in each template)', ""),
    ("eventCategory", "the standard event's code (1210 Subscription Created, 1310 Amendment Processed); "
     "null for Orders events", ""),
    ("notification", "the notification's name", ""),
    ("tenantId", "the tenant id", "<Tenant.ID>"),
    ("accountId", "the account id", "<Account.ID>"),
    ("accountNumber", "the account number", "<Account.Number>"),
    ("subscriptionId", "the id of the subscription version the change produced (required)",
     "<Subscription.ID>"),
    ("subscriptionNumber", "the subscription number, e.g. A-S00000001 (required)", ""),
    ("version", "the subscription version, a whole number (no quotes)", ""),
    ("subscriptionStatus", "Active, Cancelled, ...", ""),
    ("effectiveDate", "the change's effective date, YYYY-MM-DD", ""),
    ("amendmentType", "Amendment Processed only, else null", "<Amendment.type>"),
    ("orderNumber", "Orders tenants only, else null", ""),
    ("orderActionType", "Order Action Processed only, else null", ""),
)  # fmt: skip


def zuora_callout_settings(url: str, secret: str) -> list[tuple[str, str]]:
    """The callout template settings runner.intake_zuora verifies, as (setting, value) rows."""
    return [
        ("Events", "Subscription Created and Amendment Processed (Billing tenants); Order Processed and "
         "Order Action Processed (Orders tenants): one callout template each"),
        ("Callout URL (calloutBaseurl)", url),
        ("HTTP method", "POST"),
        ("Request body", "custom JSON body (useCustomRequestBody): every key of the body table, null when "
         "it does not apply"),
        ("Retriable (calloutRetry)", "on; Zuora retries with the same " + NOTIFICATION_HEADER),
        ("HMAC algorithm (hmacAlgorithm)", "SHA-256"),
        ("HMAC output format (hmacOutputFormat)", "HEX"),
        ("HMAC key, the header name (hmacKey)", SIGNATURE_HEADER),
        ("HMAC value (hmacValue)", "sha256={{Request.HMAC.Signed}}"),
        ("HMAC data (hmacData)", "{{Request.Body}}"),
        ("HMAC secret (hmacSecret)", secret),
    ]  # fmt: skip


def zuora_callout_text(url: str, secret: str) -> str:
    """The callout settings as plain text to copy, body keys included."""
    lines = [f"{setting}: {value}" for setting, value in zuora_callout_settings(url, secret)]
    lines.append("Body keys:")
    lines += [f"  {key}: {what}" + (f" [{merge}]" if merge else "") for key, what, merge in CALLOUT_BODY]
    return "\n".join(lines)


# --- Zoho notification channel --------------------------------------------------------------------


@dataclass(frozen=True)
class ChannelOutcome:
    """What enabling the integration's Zoho channel came to."""

    channel_id: str
    ok: bool
    expires_at: datetime | None
    message: str


def zoho_channel(engine: Engine, *, integration_id: int) -> Channel | None:
    """The integration's newest Zoho channel that is not disabled, if any."""
    with session_scope(engine) as session:
        return session.exec(
            select(Channel)
            .where(col(Channel.integration_id) == integration_id, col(Channel.status) != "disabled")
            .order_by(col(Channel.id).desc())
        ).first()


def provision_zoho_channel(
    engine: Engine,
    vault: Vault,
    *,
    integration_id: int,
    runner_url: str,
    sandbox: bool,
    now: datetime | None = None,
) -> ChannelOutcome:
    """Create the integration's Zoho notification channel and enable it with Zoho's watch API.

    The channel is stored first (so the runner's keep-alive knows it), then enabled for a week on every
    module the write-back reads, notifying `{runner}/webhooks/zoho/{key}`. A channel that is already
    enabled and not expired is left alone. When Zoho refuses, the channel is marked failed with the
    reason, the outcome says what to do, and the runner's keep-alive tries again on its next round.
    InputError when the integration does not pair with Zoho CRM.
    """
    now = now or utcnow()
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise LookupError(f"no integration with id {integration_id}")
    zoho = crud.get_connection(engine, connection_id=integration.target_connection_id)
    if zoho is None or zoho.system != "zoho":
        raise InputError({"integration": f"Integration {integration.name!r} does not connect to Zoho CRM"})
    channel = zoho_channel(engine, integration_id=integration_id)
    if channel is not None and channel.status == "active" and channel.expires_at and channel.expires_at > now:
        return ChannelOutcome(channel.channel_id, True, channel.expires_at, "Already enabled")
    if channel is None:
        channel = channel_store.create_channel(
            engine,
            vault,
            integration_id=integration_id,
            events=list(ZOHO_WATCH_EVENTS),
            notify_url=webhook_url(runner_url, "zoho", integration.key),
        )
    body = {
        "channel_id": channel.channel_id,
        "events": list(channel.events),
        "notify_url": channel.notify_url,
        "token": channel_store.channel_token(vault, channel),
        "channel_expiry": (now + CHANNEL_LIFETIME).isoformat(timespec="seconds"),
    }

    async def enable(client: ApiClient) -> tuple[list[dict[str, Any]], str]:
        assert isinstance(client, ZohoClient)
        try:
            return await client.watch([body]), ""
        except ConnectorError as exc:
            return [], unreachable_hint(exc) or client.explain(exc)

    try:
        results, problem = with_client(
            "zoho",
            base_url=zoho.base_url,
            settings=zoho.settings,
            secrets=crud.connection_secrets(vault, zoho),
            sandbox=sandbox,
            call=enable,
        )
    except ConfigurationError as exc:  # refused before any call: a host outside Zoho's
        results, problem = [], exc.message
    expiry = _granted_expiry(results)
    if expiry is None:
        problem = problem or _refusal(results)
        _record_channel(engine, channel.channel_id, action=FAILED, expires_at=None, detail=problem)
        message = f"Zoho did not enable the channel: {problem} The runner tries again on its next round."
        return ChannelOutcome(channel.channel_id, False, None, message)
    _record_channel(engine, channel.channel_id, action=PROVISIONED, expires_at=expiry, detail=None)
    return ChannelOutcome(channel.channel_id, True, expiry, "Enabled")


def _granted_expiry(results: list[dict[str, Any]]) -> datetime | None:
    """The channel_expiry Zoho granted, when the (single) result is a success."""
    if not results or results[0].get("code") != "SUCCESS":
        return None
    events = (results[0].get("details") or {}).get("events") or [{}]
    text = str(events[0].get("channel_expiry") or "")
    return datetime.fromisoformat(text) if text else None


def _refusal(results: list[dict[str, Any]]) -> str:
    if not results:
        return "no answer."
    first = results[0]
    return (
        f"{first.get('code', 'error')}: {first.get('message', '')} {first.get('details') or ''}".strip() + "."
    )


def _record_channel(
    engine: Engine, channel_id: str, *, action: str, expires_at: datetime | None, detail: str | None
) -> None:
    """The channel's new state and its renewal history row (what the Health page lists), together."""
    failed = action == FAILED
    with session_scope(engine, write=True) as session:
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
