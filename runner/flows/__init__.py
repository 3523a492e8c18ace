"""The flows: each reads a source record, maps it, and writes it idempotently to its target.

A flow declares its name and systems, its default mapping, and three steps the executor drives:
`source_id` (from the job payload), `fetch` (the full source record, kept as the audit snapshot) and
`write` (the mapped payload to the target, guarded by the link table and a destination-side key).
Replays skip `fetch` and re-send a stored payload or re-map a stored snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Engine

from connectors.http import ApiClient
from runner.mapping import Mapped
from storage.models import Integration


@dataclass
class FlowContext:
    """What a flow needs while it runs one job."""

    engine: Engine
    integration: Integration
    source: ApiClient
    target: ApiClient
    worker: str


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
    name: ClassVar[str]
    title: ClassVar[str]
    source_system: ClassVar[str]
    target_system: ClassVar[str]
    default_mapping: ClassVar[dict[str, Any]]

    def source_id(self, job_payload: dict[str, Any]) -> str: ...

    async def fetch(self, ctx: FlowContext, source_id: str) -> dict[str, Any]: ...

    async def write(self, ctx: FlowContext, source_id: str, mapped: Mapped) -> WriteResult: ...


@lru_cache(maxsize=1)
def registry() -> dict[str, Flow]:
    """Every flow by name."""
    from runner.flows.customer_account import CustomerToAccount

    flows: list[Flow] = [CustomerToAccount()]
    return {flow.name: flow for flow in flows}


def flows_for_record(record_type: str, enabled: list[str]) -> list[str]:
    """The enabled flows a NetSuite record type feeds."""
    feeds = {"customer": ["customer_account"]}
    return [name for name in feeds.get(record_type, []) if name in enabled]


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
