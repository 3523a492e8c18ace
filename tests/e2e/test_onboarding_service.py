"""Onboarding's service functions against the sandbox emulators over HTTP, on SQLite and PostgreSQL: what
the wizard and the workspaces page call, without a browser."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import select

from connectors.sandbox import Sandbox, build
from runner import onboarding
from runner import onboarding_webhooks as webhooks
from runner.flows import flows_between
from runner.onboarding import InputError
from storage import crud
from storage.crypto import Vault
from storage.db import session_scope
from storage.models import ChannelRenewal
from storage.types import utcnow
from tests.support.live import serve

RUNNER_URL = "https://runner.example.test"
WRONG_SECRET = "not-the-secret-5f3a"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    """The three emulators on loopback for the whole module (each test makes its own workspace)."""
    running, sockets = build("127.0.0.1", {"netsuite": 0, "zuora": 0, "zoho": 0})
    with ExitStack() as stack:
        for name in ("netsuite", "zuora", "zoho"):
            stack.enter_context(serve(getattr(running, name).app, sock=sockets[name]))
        yield running


def netsuite_values(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "auth_mode": "m2m",
        "account_id": c.netsuite_account_id,
        "client_id": c.netsuite_client_id,
        "certificate_id": c.netsuite_certificate_id,
        "private_key": c.netsuite_private_key,
    }


def zuora_values(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "environment": "US API Sandbox (Cloud 1)",
        "client_id": c.zuora_client_id,
        "client_secret": c.zuora_client_secret,
    }


def zoho_values(sandbox: Sandbox) -> dict[str, str]:
    c = sandbox.credentials
    return {
        "data_centre": "eu",
        "client_id": c.zoho_client_id,
        "client_secret": c.zoho_client_secret,
        "refresh_token": c.zoho_refresh_token,
    }


VALUES = {"netsuite": netsuite_values, "zuora": zuora_values, "zoho": zoho_values}


def save(
    engine: Engine, vault: Vault, sandbox: Sandbox, workspace_id: int, system: str, **changes: str
) -> int:
    """Save the sandbox connection of `system` (values overridden by `changes`); returns its id."""
    url = getattr(sandbox.credentials, f"{system}_url")
    connection = onboarding.save_connection(
        engine, vault, workspace_id=workspace_id, system=system, name=system.title(),
        values={**VALUES[system](sandbox), **changes}, base_url=url, sandbox=True,
    )  # fmt: skip
    return connection.id


def renewals(engine: Engine) -> list[ChannelRenewal]:
    with session_scope(engine) as session:
        return list(session.exec(select(ChannelRenewal)).all())


def workspace(engine: Engine, name: str = "Acme") -> int:
    created = onboarding.create_workspace(engine, name=name)
    assert created.id is not None
    return created.id


def test_onboarding_netsuite_zuora_pings_both_and_activates(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zuora")}

    pings = {s: onboarding.ping(engine, vault, connection_id=i, sandbox=True) for s, i in ids.items()}
    integration = onboarding.create_integration(
        engine,
        vault,
        workspace_id=workspace_id,
        name="Acme billing",
        pair="netsuite-zuora",
        connection_ids=ids,
    )
    onboarding.activate(engine, integration_id=integration.id)

    assert all(p.ok for p in pings.values()), [p.message for p in pings.values()]
    assert all(p.latency_ms > 0 for p in pings.values())
    assert all(c.last_ping_ok for c in crud.list_connections(engine, workspace_id=workspace_id))
    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None and stored.active
    assert stored.flows == flows_between({"netsuite", "zuora"})
    assert (stored.source_connection_id, stored.target_connection_id) == (ids["netsuite"], ids["zuora"])


def test_onboarding_creates_integrations_paused(engine: Engine, vault: Vault, sandbox: Sandbox) -> None:
    workspace_id = workspace(engine)
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zoho")}

    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="CRM", pair="netsuite-zoho", connection_ids=ids
    )

    assert not integration.active
    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None and not stored.active


def test_onboarding_webhook_setup_gives_urls_and_the_stored_secrets(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zuora")}
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="Billing", pair="netsuite-zuora", connection_ids=ids
    )

    setup = webhooks.webhook_setup(engine, vault, integration_id=integration.id, runner_url=RUNNER_URL + "/")
    callout = webhooks.zuora_callout_text(setup.zuora_url, setup.zuora_secret)

    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None
    secrets = crud.integration_secrets(vault, stored)
    assert setup.netsuite_url == f"{RUNNER_URL}/webhooks/netsuite/{integration.key}"
    assert setup.zuora_url == f"{RUNNER_URL}/webhooks/zuora/{integration.key}"
    assert (setup.netsuite_secret, setup.zuora_secret) == (
        secrets["netsuite_secret"],
        secrets["zuora_hmac_secret"],
    )
    assert setup.public
    for expected in (
        "SHA-256",
        "HEX",
        "X-Zuora-Signature",
        "sha256={{Request.HMAC.Signed}}",
        "{{Request.Body}}",
    ):
        assert expected in callout
    assert setup.zuora_secret in callout and setup.zuora_url in callout
    name, script = webhooks.suitescript()
    assert name.endswith(".js") and "@NScriptType UserEventScript" in script
    assert "custscript_ml_connector_secret" in webhooks.install_guide()


def test_onboarding_zoho_channel_is_enabled_in_zoho_and_kept(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zoho")}
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="CRM", pair="netsuite-zoho", connection_ids=ids
    )

    outcome = webhooks.provision_zoho_channel(
        engine, vault, integration_id=integration.id, runner_url=RUNNER_URL, sandbox=True
    )
    again = webhooks.provision_zoho_channel(
        engine, vault, integration_id=integration.id, runner_url=RUNNER_URL, sandbox=True
    )

    assert outcome.ok, outcome.message
    assert outcome.expires_at is not None and outcome.expires_at > utcnow() + timedelta(days=6)
    stored = webhooks.zoho_channel(engine, integration_id=integration.id)
    assert stored is not None and stored.status == "active" and stored.expires_at == outcome.expires_at
    in_zoho = [c for c in sandbox.zoho.channels() if str(c["channel_id"]) == outcome.channel_id]
    assert in_zoho and {c["notify_url"] for c in in_zoho} == {f"{RUNNER_URL}/webhooks/zoho/{integration.key}"}
    assert (again.ok, again.channel_id, again.message) == (True, outcome.channel_id, "Already enabled")
    assert [(r.action, r.expires_at) for r in renewals(engine)] == [("provisioned", outcome.expires_at)]


def test_onboarding_zoho_channel_refused_is_marked_failed_with_what_to_do(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    ids = {
        "netsuite": save(engine, vault, sandbox, workspace_id, "netsuite"),
        "zoho": save(engine, vault, sandbox, workspace_id, "zoho", client_secret=WRONG_SECRET),
    }
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="CRM", pair="netsuite-zoho", connection_ids=ids
    )

    outcome = webhooks.provision_zoho_channel(
        engine, vault, integration_id=integration.id, runner_url=RUNNER_URL, sandbox=True
    )

    assert not outcome.ok and outcome.expires_at is None
    assert "tries again" in outcome.message
    stored = webhooks.zoho_channel(engine, integration_id=integration.id)
    assert stored is not None and stored.status == "failed" and stored.last_error
    assert [(r.action, r.detail) for r in renewals(engine)] == [("failed", stored.last_error)]


def test_onboarding_ping_with_a_wrong_secret_says_what_to_do(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    connection_id = save(engine, vault, sandbox, workspace_id, "zuora", client_secret=WRONG_SECRET)

    result = onboarding.ping(engine, vault, connection_id=connection_id, sandbox=True)

    assert not result.ok and result.reaction == "config"
    assert "client ID and secret" in result.message and WRONG_SECRET not in result.message
    stored = crud.get_connection(engine, connection_id=connection_id)
    assert stored is not None and stored.last_ping_ok is False and stored.last_ping_message == result.message


def test_onboarding_activate_refuses_before_a_good_ping(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zuora")}
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="Billing", pair="netsuite-zuora", connection_ids=ids
    )

    with pytest.raises(InputError) as refused:
        onboarding.activate(engine, integration_id=integration.id)

    assert set(refused.value.problems) == {"netsuite", "zuora"}
    assert "NetSuite connection" in refused.value.problems["netsuite"]
    stored = crud.get_integration(engine, integration_id=integration.id)
    assert stored is not None and not stored.active


@pytest.mark.parametrize(
    ("system", "changes", "base_url", "sandbox_mode", "field", "says"),
    [
        ("netsuite", {"account_id": "acme corp"}, None, True, "account_id", "Account ID does not look right"),
        ("netsuite", {"private_key": ""}, None, True, "private_key", "Private key (PEM) is required"),
        (
            "netsuite",
            {"private_key": "not a key"},
            None,
            True,
            "private_key",
            "Private key (PEM) does not look",
        ),
        ("netsuite", {"auth_mode": "tba"}, None, True, "consumer_key", "Consumer key is required"),
        ("zuora", {"environment": ""}, None, True, "environment", "Environment is required"),
        ("zuora", {"environment": "Mars"}, None, True, "environment", "Environment must be one of"),
        ("zuora", {}, "https://rest.zuora.com.evil.test", True, "base_url", "is not a Zuora host"),
        ("zuora", {}, "http://rest.zuora.com", True, "base_url", "not an https URL"),
        ("zoho", {"data_centre": "moon"}, None, True, "data_centre", "Data centre must be one of"),
        ("zoho", {}, None, False, "base_url", "not an https URL"),
        ("zoho", {"client_id": "  "}, None, True, "client_id", "Client ID is required"),
    ],
)
def test_onboarding_save_connection_refuses_bad_input_naming_the_field(
    engine: Engine,
    vault: Vault,
    sandbox: Sandbox,
    system: str,
    changes: dict[str, str],
    base_url: str | None,
    sandbox_mode: bool,
    field: str,
    says: str,
) -> None:
    workspace_id = workspace(engine)

    with pytest.raises(InputError) as refused:
        onboarding.save_connection(
            engine, vault, workspace_id=workspace_id, system=system, name="Mine",
            values={**VALUES[system](sandbox), **changes},
            base_url=base_url if base_url is not None else getattr(sandbox.credentials, f"{system}_url"),
            sandbox=sandbox_mode,
        )  # fmt: skip

    assert field in refused.value.problems, refused.value.problems
    assert says in refused.value.problems[field]
    assert crud.list_connections(engine) == []


def test_onboarding_save_connection_without_base_url_uses_the_environment_address(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)

    saved = onboarding.save_connection(
        engine, vault, workspace_id=workspace_id, system="zuora", name="Zuora EU",
        values={**zuora_values(sandbox), "environment": "EU Production"}, sandbox=False,
    )  # fmt: skip

    assert (saved.base_url, saved.environment) == ("https://rest.eu.zuora.com", "EU Production")
    assert saved.settings == {
        "environment": "EU Production",
        "client_id": sandbox.credentials.zuora_client_id,
    }


def test_onboarding_edit_keeps_a_secret_left_empty_and_replaces_a_new_one(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    connection_id = save(engine, vault, sandbox, workspace_id, "zoho")
    secret = sandbox.credentials.zoho_client_secret

    onboarding.save_connection(
        engine, vault, workspace_id=workspace_id, system="zoho", name="Zoho renamed",
        connection_id=connection_id,
        values={**zoho_values(sandbox), "client_secret": "", "refresh_token": "1000.new"},
        base_url=sandbox.credentials.zoho_url, sandbox=True,
    )  # fmt: skip

    stored = crud.get_connection(engine, connection_id=connection_id)
    assert stored is not None and stored.name == "Zoho renamed"
    assert crud.connection_secrets(vault, stored) == {"client_secret": secret, "refresh_token": "1000.new"}
    assert secret not in str(stored.settings) and secret not in stored.secrets_encrypted
    assert onboarding.stored_secret_names(engine, vault, connection_id=connection_id) == {
        "client_secret",
        "refresh_token",
    }


def test_onboarding_switching_auth_mode_drops_the_other_modes_fields(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    tba = {"auth_mode": "tba", "account_id": "1234567", "consumer_key": "ck", "consumer_secret": "cs",
           "token_id": "ti", "token_secret": "ts"}  # fmt: skip
    first = onboarding.save_connection(
        engine, vault, workspace_id=workspace_id, system="netsuite", name="NS", values=tba,
        base_url=sandbox.credentials.netsuite_url, sandbox=True,
    )  # fmt: skip

    onboarding.save_connection(
        engine, vault, workspace_id=workspace_id, system="netsuite", name="NS",
        values=netsuite_values(sandbox), base_url=sandbox.credentials.netsuite_url, sandbox=True,
        connection_id=first.id,
    )  # fmt: skip

    stored = crud.get_connection(engine, connection_id=first.id)
    assert stored is not None
    assert set(crud.connection_secrets(vault, stored)) == {"private_key"}
    assert stored.settings["auth_mode"] == "m2m" and "consumer_key" not in stored.settings
    assert stored.environment == sandbox.credentials.netsuite_account_id


def test_onboarding_workspace_names_are_required_and_unique(engine: Engine) -> None:
    first = workspace(engine, "Acme")
    other = workspace(engine, "Globex")

    with pytest.raises(InputError) as empty:
        onboarding.create_workspace(engine, name="   ")
    with pytest.raises(InputError) as taken:
        onboarding.create_workspace(engine, name=" Acme ")
    with pytest.raises(InputError) as rename_taken:
        onboarding.rename_workspace(engine, workspace_id=other, name="Acme")
    onboarding.rename_workspace(engine, workspace_id=first, name="Acme Finance")

    assert empty.value.problems == {"name": "Workspace name is required"}
    assert "taken" in taken.value.problems["name"] and "taken" in rename_taken.value.problems["name"]
    assert [w.name for w in crud.list_workspaces(engine)] == ["Acme Finance", "Globex"]


def test_onboarding_create_integration_names_what_is_missing(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    elsewhere = save(engine, vault, sandbox, workspace(engine, "Other"), "zuora")

    with pytest.raises(InputError) as refused:
        onboarding.create_integration(
            engine, vault, workspace_id=workspace_id, name="", pair="netsuite-zuora",
            connection_ids={"netsuite": None, "zuora": elsewhere},
        )  # fmt: skip

    assert set(refused.value.problems) == {"name", "netsuite", "zuora"}
    assert crud.list_integrations(engine) == []


def test_onboarding_overview_lists_integrations_with_status_and_pause_resume(
    engine: Engine, vault: Vault, sandbox: Sandbox
) -> None:
    workspace_id = workspace(engine)
    workspace(engine, "Empty")
    ids = {system: save(engine, vault, sandbox, workspace_id, system) for system in ("netsuite", "zuora")}
    integration = onboarding.create_integration(
        engine, vault, workspace_id=workspace_id, name="Billing", pair="netsuite-zuora", connection_ids=ids
    )

    before = onboarding.workspaces_overview(engine)
    onboarding.set_active(engine, integration_id=integration.id, active=True)
    after = onboarding.workspaces_overview(engine)

    assert [(v.workspace.name, len(v.connections), len(v.integrations)) for v in before] == [
        ("Acme", 2, 1),
        ("Empty", 0, 0),
    ]
    view = before[0].integrations[0]
    assert (view.status, view.source and view.source.system, view.target and view.target.system) == (
        "paused",
        "netsuite",
        "zuora",
    )
    assert after[0].integrations[0].status == "active"
    with pytest.raises(LookupError):
        onboarding.set_active(engine, integration_id=integration.id + 100, active=False)


def test_onboarding_flow_reviews_show_each_flows_default_rules() -> None:
    reviews = onboarding.flow_reviews("netsuite-zuora")

    assert [r.name for r in reviews] == flows_between({"netsuite", "zuora"})
    assert all(r.rows and set(r.rows[0]) == {"Target", "Source", "Transform", "Notes"} for r in reviews)
    invoice = next(r for r in reviews if r.name == "invoice")
    assert any("[]." in row["Target"] for row in invoice.rows)
