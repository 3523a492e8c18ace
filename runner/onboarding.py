"""Onboarding as service functions: what the workspaces page and the new-integration wizard call.

The steps a person clicks through, each reachable from pytest without a browser:

    create_workspace, rename_workspace     one workspace per customer of the operator
    save_connection                        credentials from the connectors' declared fields, validated
    ping                                   the real token exchange plus one call, with its latency
    create_integration                     a pair of connections and every flow the pair supports, paused
    flow_reviews                           what each enabled flow maps by default, for review
    activate, set_active                   switch the integration on (after a good ping), pause, resume

Webhook URLs and secrets, the Zuora callout settings and the Zoho channel are in
runner.onboarding_webhooks. Bad input raises `InputError`, whose `problems` map each field to a message
naming it; nothing is written then. Secrets go into the database encrypted and never come back out
through these functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from connectors.errors import ConfigurationError
from connectors.ping import PingResult
from connectors.registry import SYSTEMS, default_base_url
from connectors.spec import CredentialField, SystemSpec
from connectors.sync import ping_connection
from runner.flows import flows_between, registry
from runner.mapping_rows import rules_to_rows
from storage import crud
from storage.crypto import Vault
from storage.models import ConnectionPublic, IntegrationPublic, Workspace

NAME_LIMIT = 200  # characters in a workspace, connection or integration name (the columns' size)
AUTH_MODE = "auth_mode"  # the declared field that picks a system's authentication mode
NAME, BASE_URL = "name", "base_url"  # the form fields every connection has beside its declared ones
# The declared field that says where a connection lives, kept in Connection.environment for display.
ENVIRONMENT_FIELD = {"netsuite": "account_id", "zuora": "environment", "zoho": "data_centre"}


class InputError(ValueError):
    """Input a person must fix. `problems` maps a field name to a message naming the field."""

    def __init__(self, problems: Mapping[str, str]) -> None:
        self.problems = dict(problems)
        super().__init__("; ".join(self.problems.values()))


@dataclass(frozen=True)
class Pair:
    """Two systems an integration can connect; NetSuite is the source of the flows that start there."""

    key: str
    title: str
    source: str
    target: str

    @property
    def systems(self) -> tuple[str, str]:
        return (self.source, self.target)


PAIRS: dict[str, Pair] = {
    pair.key: pair
    for pair in (
        Pair("netsuite-zuora", "NetSuite ↔ Zuora", "netsuite", "zuora"),
        Pair("netsuite-zoho", "NetSuite ↔ Zoho CRM", "netsuite", "zoho"),
    )
}


# --- workspaces -----------------------------------------------------------------------------------


def create_workspace(engine: Engine, *, name: str) -> Workspace:
    """A new workspace; InputError when the name is empty, too long or taken."""
    name = _name(name, "Workspace name")
    if crud.get_workspace_by_name(engine, name=name) is not None:
        raise InputError({NAME: f"Workspace name {name!r} is taken; choose another"})
    try:
        return crud.create_workspace(engine, name=name)
    except IntegrityError:  # created by someone else since the check
        raise InputError({NAME: f"Workspace name {name!r} is taken; choose another"}) from None


def rename_workspace(engine: Engine, *, workspace_id: int, name: str) -> Workspace:
    """Rename a workspace; InputError for a bad or taken name, LookupError when it does not exist."""
    name = _name(name, "Workspace name")
    other = crud.get_workspace_by_name(engine, name=name)
    if other is not None and other.id != workspace_id:
        raise InputError({NAME: f"Workspace name {name!r} is taken; choose another"})
    try:
        renamed = crud.rename_workspace(engine, workspace_id=workspace_id, name=name)
    except IntegrityError:
        raise InputError({NAME: f"Workspace name {name!r} is taken; choose another"}) from None
    if renamed is None:
        raise LookupError(f"no workspace with id {workspace_id}")
    return renamed


@dataclass(frozen=True)
class IntegrationView:
    """One integration as the workspaces page lists it."""

    integration: IntegrationPublic
    source: ConnectionPublic | None
    target: ConnectionPublic | None

    @property
    def status(self) -> str:
        return "active" if self.integration.active else "paused"


@dataclass(frozen=True)
class WorkspaceView:
    workspace: Workspace
    connections: list[ConnectionPublic]
    integrations: list[IntegrationView]


def workspaces_overview(engine: Engine) -> list[WorkspaceView]:
    """Every workspace by name, with its connections and integrations (no secrets)."""
    connections = crud.list_connections(engine)
    by_id = {c.id: c for c in connections}
    integrations = crud.list_integrations(engine)
    return [
        WorkspaceView(
            workspace=workspace,
            connections=[c for c in connections if c.workspace_id == workspace.id],
            integrations=[
                IntegrationView(i, by_id.get(i.source_connection_id), by_id.get(i.target_connection_id))
                for i in integrations
                if i.workspace_id == workspace.id
            ],
        )
        for workspace in crud.list_workspaces(engine)
    ]


# --- connections ----------------------------------------------------------------------------------


def spec_of(system: str) -> SystemSpec:
    return SYSTEMS[system].spec


def auth_modes(system: str) -> tuple[str, ...]:
    """The authentication modes a system declares (empty for a system with one way to sign in)."""
    return next((f.choices for f in spec_of(system).fields if f.name == AUTH_MODE), ())


def auth_mode_of(system: str, values: Mapping[str, Any]) -> str | None:
    """The mode `values` ask for, else the system's default; None for a single-mode system."""
    if not auth_modes(system):
        return None
    return str(values.get(AUTH_MODE) or spec_of(system).default_mode or "") or None


def form_fields(system: str, mode: str | None) -> list[CredentialField]:
    """The declared fields a connection form shows for `mode`, without the mode picker itself."""
    return [f for f in spec_of(system).fields_for(mode) if f.name != AUTH_MODE]


def stored_secret_names(engine: Engine, vault: Vault, *, connection_id: int) -> frozenset[str]:
    """Which secret fields a connection holds a value for (never the values): the form says "saved"."""
    connection = crud.get_connection(engine, connection_id=connection_id)
    if connection is None:
        return frozenset()
    return frozenset(k for k, v in crud.connection_secrets(vault, connection).items() if v)


def save_connection(
    engine: Engine,
    vault: Vault,
    *,
    workspace_id: int,
    system: str,
    name: str,
    values: Mapping[str, str],
    base_url: str = "",
    sandbox: bool,
    connection_id: int | None = None,
) -> ConnectionPublic:
    """Create a connection (or replace one's fields) from a person's form values, validated first.

    `values` holds the system's declared fields by name; secret fields left empty keep the value saved
    before (the form never shows it again). `base_url` overrides the address the account id, environment
    or data centre implies (an emulator in sandbox mode); it must be one of the system's hosts. Fields the
    chosen authentication mode does not use are dropped. Raises InputError naming every bad field, and
    LookupError for a connection that is not this workspace's of this system; nothing is written then.
    """
    if system not in SYSTEMS:
        raise InputError({"system": f"System {system!r} is not one of {', '.join(SYSTEMS)}"})
    spec = spec_of(system)
    previous: dict[str, Any] = {}
    kept_settings: dict[str, Any] = {}
    if connection_id is not None:
        existing = crud.get_connection(engine, connection_id=connection_id)
        if existing is None or existing.workspace_id != workspace_id or existing.system != system:
            raise LookupError(f"no {spec.title} connection {connection_id} in workspace {workspace_id}")
        previous = crud.connection_secrets(vault, existing)
        declared = {f.name for f in spec.fields}
        # Settings the form does not own (a concurrency cap set by the operator) survive an edit.
        kept_settings = {k: v for k, v in existing.settings.items() if k not in declared}
    mode = auth_mode_of(system, values)
    cleaned: dict[str, str] = {AUTH_MODE: mode} if mode else {}
    for spec_field in form_fields(system, mode):
        raw = str(values.get(spec_field.name) or "")
        value = raw if spec_field.multiline else raw.strip()
        if spec_field.secret and not value.strip():
            value = str(previous.get(spec_field.name) or "")
        cleaned[spec_field.name] = value
    problems: dict[str, str] = {}
    try:
        clean_name = _name(name, "Connection name")
    except InputError as exc:
        problems.update(exc.problems)
    problems.update(spec.validate(cleaned))
    address = base_url.strip()
    if not problems:
        try:
            address = address or default_base_url(system, cleaned)
            spec.check_host(address, sandbox=sandbox)
        except ConfigurationError as exc:
            problems[BASE_URL] = f"Base URL: {exc.message}"
    if problems:
        raise InputError(problems)
    secret_names = {f.name for f in spec.fields if f.secret}
    settings = {**kept_settings, **{k: v for k, v in cleaned.items() if k not in secret_names and v}}
    secrets = {k: v for k, v in cleaned.items() if k in secret_names and v}
    environment = cleaned.get(ENVIRONMENT_FIELD.get(system, ""), "")
    arguments: dict[str, Any] = dict(
        name=clean_name, base_url=address, environment=environment, settings=settings, secrets=secrets
    )
    if connection_id is None:
        return crud.create_connection(engine, vault, workspace_id=workspace_id, system=system, **arguments)
    saved = crud.update_connection(engine, vault, connection_id=connection_id, **arguments)
    if saved is None:
        raise LookupError(f"connection {connection_id} was removed")
    return saved


def ping(engine: Engine, vault: Vault, *, connection_id: int, sandbox: bool) -> PingResult:
    """Ping a saved connection (token exchange plus one cheap call) and remember the outcome on it.

    Never raises for a bad connection: a failure comes back with `ok` False and, in `message`, what to
    do about it (the client's `explain()`). LookupError when there is no such connection.
    """
    connection = crud.get_connection(engine, connection_id=connection_id)
    if connection is None:
        raise LookupError(f"no connection with id {connection_id}")
    result = ping_connection(
        connection.system,
        base_url=connection.base_url,
        settings=connection.settings,
        secrets=crud.connection_secrets(vault, connection),
        sandbox=sandbox,
    )
    crud.record_ping(engine, connection_id=connection_id, ok=result.ok, message=result.message)
    return result


# --- integrations ---------------------------------------------------------------------------------


def create_integration(
    engine: Engine,
    vault: Vault,
    *,
    workspace_id: int,
    name: str,
    pair: str,
    connection_ids: Mapping[str, int | None],
) -> IntegrationPublic:
    """An integration between the pair's two connections of this workspace, with every flow the pair
    supports and fresh webhook secrets; paused until `activate`. InputError names what is missing."""
    problems: dict[str, str] = {}
    try:
        clean_name = _name(name, "Integration name")
    except InputError as exc:
        problems.update(exc.problems)
    chosen = PAIRS.get(pair)
    if chosen is None:
        raise InputError({**problems, "pair": f"Pair {pair!r} is not one of {', '.join(PAIRS)}"})
    for system in chosen.systems:
        connection_id = connection_ids.get(system)
        connection = crud.get_connection(engine, connection_id=connection_id) if connection_id else None
        if connection is None or connection.workspace_id != workspace_id or connection.system != system:
            problems[system] = f"{spec_of(system).title} connection: save one in this workspace first"
    if problems:
        raise InputError(problems)
    created = crud.create_integration(
        engine,
        vault,
        workspace_id=workspace_id,
        name=clean_name,
        source_connection_id=int(connection_ids[chosen.source] or 0),
        target_connection_id=int(connection_ids[chosen.target] or 0),
        flows=flows_between(set(chosen.systems)),
    )
    # Paused until the person has pasted the webhook settings and activates it: an active integration
    # is polled at once.
    crud.set_integration_active(engine, integration_id=created.id, active=False)
    return created.model_copy(update={"active": False})


def set_active(engine: Engine, *, integration_id: int, active: bool) -> None:
    """Pause or resume an integration; LookupError when there is no such integration."""
    if not crud.set_integration_active(engine, integration_id=integration_id, active=active):
        raise LookupError(f"no integration with id {integration_id}")


def activate(engine: Engine, *, integration_id: int) -> None:
    """Switch an integration on once both its connections answered their latest ping; InputError names
    the connection to fix otherwise."""
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise LookupError(f"no integration with id {integration_id}")
    problems: dict[str, str] = {}
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        connection = crud.get_connection(engine, connection_id=connection_id)
        if connection is not None and not connection.last_ping_ok:
            title = spec_of(connection.system).title
            problems[connection.system] = f"{title} connection: ping it successfully before activating"
    if problems:
        raise InputError(problems)
    set_active(engine, integration_id=integration_id, active=True)


# --- mappings -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowReview:
    """One enabled flow and its default mapping, one row per target field."""

    name: str
    title: str
    rows: list[dict[str, str]] = field(default_factory=list)


def flow_reviews(pair: str) -> list[FlowReview]:
    """Every flow the pair enables, with its default mapping as table rows (Target, Source, Transform,
    Notes)."""
    flows = registry()
    return [
        FlowReview(name, flows[name].title, mapping_rows(flows[name].default_mapping))
        for name in flows_between(set(PAIRS[pair].systems))
    ]


def mapping_rows(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    """A mapping spec (runner.mapping) flattened for a read-only table, cells written as the Mappings
    page writes them (runner.mapping_rows); a list rule's element fields read `target[].field`."""
    rows: list[dict[str, str]] = []
    _flatten(rules_to_rows(list(spec.get("fields") or [])), "", rows)
    return rows


def _flatten(cells: list[dict[str, Any]], prefix: str, rows: list[dict[str, str]]) -> None:
    for cell in cells:
        target = prefix + cell["target"]
        notes = [label for flag, label in _FLAGS.items() if cell.get(flag)]
        if cell["default"]:
            notes.append(f"default {cell['default']}")
        if cell["each"]:
            source = f"each of {cell['each']}"
        elif cell["value"]:
            source = f"= {cell['value']}"
        else:
            source = cell["source"]
        rows.append(
            {"Target": target, "Source": source, "Transform": cell["transform"], "Notes": ", ".join(notes)}
        )
        _flatten(cell["fields"] or [], f"{target}[].", rows)


_FLAGS = {"required": "required", "create_only": "create only", "flows_back": "flows back to NetSuite"}


# --- helpers --------------------------------------------------------------------------------------


def _name(value: str, title: str) -> str:
    name = (value or "").strip()
    if not name:
        raise InputError({NAME: f"{title} is required"})
    if len(name) > NAME_LIMIT:
        raise InputError({NAME: f"{title} is too long: at most {NAME_LIMIT} characters"})
    return name
