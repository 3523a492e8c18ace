"""The flows: each reads a source record, maps it, and writes it idempotently to its target.

A flow declares its name and systems, its default mapping, and three steps the executor drives:
`source_id` (from the job payload), `fetch` (the full source record, kept as the audit snapshot) and
`write` (the mapped payload to the target, guarded by the link table and a destination-side key).
Replays skip `fetch` and re-send a stored payload or re-map a stored snapshot.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Engine

from connectors.http import ApiClient
from runner.mapping import Mapped
from storage.models import Integration


@dataclass
class FlowContext:
    """What a flow needs while it runs one job.

    `source` and `target` are the clients of the flow's own source and target systems (a Zuora → NetSuite
    flow gets the Zuora client as `source` even though its integration pairs NetSuite with Zuora);
    `lookups` holds the integration's active lookup tables by name, for the mapping, and `job_payload`
    what queued the job (a callout's event names), for flows whose fetch needs more than the source id.
    """

    engine: Engine
    integration: Integration
    source: ApiClient
    target: ApiClient
    worker: str
    lookups: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The payload of the job being run (what the webhook said); empty for a batch, which runs many.
    job_payload: dict[str, Any] = field(default_factory=dict)
    # The integration's active mapping of this flow (None: the flow's default) and its version (0).
    mapping: dict[str, Any] | None = None
    mapping_version: int = 0
    # Set by the executor for `write_batch`, one entry per item: the job's own link claimant (so a
    # retry of that job, in whatever batch, takes its claim over at once) and the job's own attempt
    # trail, for calls a batch flow makes for one record only. Empty: use `worker` and the shared trail.
    item_workers: list[str] = field(default_factory=list)
    item_trails: list[list[Any]] = field(default_factory=list)


class Postpone(Exception):
    """The job cannot run yet (another job holds the same record); requeue it without spending an attempt."""

    def __init__(self, reason: str, delay: float) -> None:
        super().__init__(reason)
        self.delay = delay


@dataclass(frozen=True)
class WriteResult:
    target_id: str
    action: str  # create | update | link
    response: dict[str, Any] = field(default_factory=dict)


class Flow(Protocol):
    """One sync flow. Per-record flows implement `fetch` and `write`; batch flows (`batch_size` > 1)
    also implement `fetch_many` and `write_batch`, and the worker hands them up to `batch_size` jobs of
    one integration at once."""

    name: ClassVar[str]
    title: ClassVar[str]
    source_system: ClassVar[str]
    target_system: ClassVar[str]
    # The NetSuite record type whose webhook events and poll hits feed this flow ("" for none).
    source_record: ClassVar[str]
    default_mapping: ClassVar[dict[str, Any]]
    required_fields: ClassVar[tuple[str, ...]]
    batch_size: ClassVar[int]

    def source_id(self, job_payload: dict[str, Any]) -> str: ...

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]: ...

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult: ...


class BatchFlow(Flow, Protocol):
    """A flow whose target takes many records a call: `write_batch` writes the mapped records in one go
    and answers one WriteResult, or the exception that record failed with, per item, in input order."""

    async def write_batch(
        self, ctx: FlowContext, items: list[tuple[str, Mapped]]
    ) -> list[WriteResult | Exception]: ...


# Every flow module; each defines FLOWS, a list of flow instances.
FLOW_MODULES = (
    "runner.flows.customer_account",
    "runner.flows.invoice",
    "runner.flows.subscription",
    "runner.flows.zoho_records",
    "runner.flows.zoho_change",
)


@lru_cache(maxsize=1)
def registry() -> dict[str, Flow]:
    """Every flow by name."""
    flows: list[Flow] = []
    for module in FLOW_MODULES:
        flows.extend(importlib.import_module(module).FLOWS)
    return {flow.name: flow for flow in flows}


def flows_for_record(record_type: str, enabled: list[str]) -> list[str]:
    """The enabled flows a NetSuite record type feeds, in the order the integration lists them."""
    flows = registry()
    return [name for name in enabled if name in flows and flows[name].source_record == record_type.lower()]


# Record types whose SuiteQL table is not named after them: (table, condition picking the type's rows).
# Invoices are transactions of type CustInvc (shared/api/netsuite.md §4).
SUITEQL_TABLES: dict[str, tuple[str, str]] = {"invoice": ("transaction", "type = 'CustInvc'")}


def netsuite_table(record_type: str) -> tuple[str, str]:
    """The SuiteQL table holding a NetSuite record type, and the condition selecting its rows ("" for all)."""
    return SUITEQL_TABLES.get(record_type, (record_type, ""))


def flows_between(systems: set[str]) -> list[str]:
    """Every flow an integration pairing these two systems can run (what onboarding enables)."""
    return [flow.name for flow in registry().values() if {flow.source_system, flow.target_system} == systems]


# Which flows a webhook event from each system feeds, as data. A name listed here whose code has not
# landed yet (not in `registry()`) gets no job: the event is still stored, but nothing is queued that
# no worker could run.
EVENT_FEEDS: dict[str, list[str]] = {
    "zuora": ["subscription_event"],  # Zuora callout -> NetSuite custom record (design.md §1)
    "zoho": ["zoho_change"],  # Zoho change notice -> fetch the record, audit, write back (design.md §1)
}


def flows_for_event(system: str, enabled: list[str]) -> list[str]:
    """The flows an event from `system` feeds: mapped in EVENT_FEEDS, enabled on the integration, and
    implemented (present in `registry()`), in the mapping's order."""
    implemented = registry()
    return [name for name in EVENT_FEEDS.get(system, []) if name in enabled and name in implemented]
