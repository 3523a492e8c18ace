"""Running reconciliations in the runner: the daily schedule, the pickup of requested runs, one run.

`schedule_due` (singleton work, under a lease) requests a run for each active integration whose last
run was requested longer ago than its interval (integration setting `reconcile_interval`, seconds, else
Settings.reconcile_interval; 0 turns the schedule off for that integration); the first is due one
interval after the integration was created. `pickup` (every runner) claims a requested run, or a running
one whose lease ran out because its runner died, and runs it as a task; `execute` does the work, renewing
the run's lease as it reports progress, and stops if another runner took the run over.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from functools import partial

from anyio import to_thread
from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError
from runner.backfill import count_rows
from runner.executor import flow_context
from runner.flows import netsuite_table, registry
from runner.reconcile.checks import CHECKED_FLOWS, FlowReport, Sides, check_invoices, check_records
from runner.services import Services
from storage import crud
from storage import reconcile as store
from storage.models import Integration
from storage.reconcile import ReconciliationRun, RunTrigger
from storage.types import utcnow

log = logging.getLogger("ml_connector.reconcile")

MAX_RUNS_PER_RUNNER = 2  # reconciliations one runner works on at once


class LeaseLost(Exception):
    """Another runner took this run over (this one was too slow to renew its lease)."""


def checked_flows(integration: Integration) -> list[str]:
    """The integration's enabled flows a reconciliation compares, in the integration's order."""
    return [name for name in integration.flows or [] if name in CHECKED_FLOWS and name in registry()]


def schedule_due(engine: Engine, *, default_interval: float) -> list[int]:
    """Request a scheduled run for every active integration that is due one; returns the run ids."""
    now = utcnow()
    last = store.last_requested(engine)
    requested = []
    for public in crud.list_integrations(engine):
        integration = crud.get_integration(engine, integration_id=public.id)
        if integration is None or not integration.active or not checked_flows(integration):
            continue
        interval = float((integration.settings or {}).get("reconcile_interval", default_interval) or 0)
        if interval <= 0:
            continue
        since = last.get(public.id, integration.created_at)
        if now - since >= timedelta(seconds=interval):
            run = store.create_run(
                engine, integration_id=public.id, requested_by="schedule", trigger=RunTrigger.SCHEDULED
            )
            requested.append(run.id or 0)
    return requested


class Reconciler:
    """A runner's reconciliation pickup: claims runs and works on at most MAX_RUNS_PER_RUNNER at once."""

    def __init__(self, services: Services, *, worker: str, lease: float) -> None:
        self.services = services
        self.worker = worker
        self.lease = lease
        self.tasks: set[asyncio.Task[None]] = set()

    async def pickup(self) -> None:
        while len(self.tasks) < MAX_RUNS_PER_RUNNER:
            run = await to_thread.run_sync(
                partial(store.claim_run, self.services.engine, worker=self.worker, lease=self.lease)
            )
            if run is None:
                return
            task = asyncio.ensure_future(execute(self.services, run, worker=self.worker, lease=self.lease))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def execute(services: Services, run: ReconciliationRun, *, worker: str, lease: float) -> None:
    """Do one claimed run: compare each checked flow, report progress, store totals and drifts."""
    engine = services.engine
    run_id = run.id or 0
    state = {"done": 0, "total": 0}

    async def report(phase: str | None = None) -> None:
        kept = await to_thread.run_sync(
            partial(
                store.progress, engine, run_id=run_id, worker=worker, lease=lease, phase=phase,
                done=state["done"], total=state["total"],
            )
        )  # fmt: skip
        if not kept:
            raise LeaseLost(f"reconciliation {run_id} was taken over by another runner")

    async def tick(count: int) -> None:
        state["done"] += count
        await report()

    async def keep_lease() -> None:
        while True:
            await asyncio.sleep(lease / 3)
            await report()

    keeper = asyncio.ensure_future(keep_lease())
    try:
        integration = await services.integration(run.integration_id)
        if integration is None:
            raise LookupError(f"integration {run.integration_id} no longer exists")
        flows = checked_flows(integration)
        if not flows:
            raise LookupError(
                f"the integration {integration.name!r} has no flow a reconciliation compares "
                f"(enable one of {', '.join(sorted(CHECKED_FLOWS))})"
            )
        contexts = {}
        for name in flows:
            flow = registry()[name]
            contexts[name] = Sides(await flow_context(services, integration, flow, worker=worker), flow)
        await report(phase="counting NetSuite records")
        state["total"] = await _count(contexts)
        await report()
        reports: list[FlowReport] = []
        for name, sides in contexts.items():
            await report(phase=f"comparing {sides.flow.title}")
            if name == "invoice":
                reports.append(await check_invoices(sides, tick=tick))
            else:
                reports.append(await check_records(sides, tick=tick))
        state["done"] = state["total"] = max(state["done"], state["total"])
        await report(phase="storing the report")
    except LeaseLost as exc:
        log.warning("%s; this runner stops", exc)
        return
    except (ConnectorError, LookupError) as exc:
        await to_thread.run_sync(
            partial(store.fail_run, engine, run_id=run_id, worker=worker, error=str(exc))
        )
        log.warning("reconciliation %s failed: %s", run_id, exc)
        return
    except Exception as exc:
        log.exception("reconciliation %s hit a bug", run_id)
        error = f"{type(exc).__name__}: {exc}"
        await to_thread.run_sync(partial(store.fail_run, engine, run_id=run_id, worker=worker, error=error))
        return
    finally:
        keeper.cancel()
    totals = {"flows": [r.totals for r in reports]}
    invoices = next((r.totals for r in reports if r.flow == "invoice"), None)
    if invoices is not None:
        totals["invoices"] = {"by_period": invoices["by_period"], "by_customer": invoices["by_customer"]}
    found = [item for r in reports for item in r.found]
    stored = await to_thread.run_sync(
        partial(store.finish_run, engine, run_id=run_id, worker=worker, totals=totals, found=found)
    )
    log.info("reconciliation %s of integration %s: %d drifts%s", run_id, run.integration_id, len(found),
             "" if stored else " (not stored: another runner took the run over)")  # fmt: skip


async def _count(contexts: dict[str, Sides]) -> int:
    """NetSuite records the run will compare (the progress bar's total)."""
    total = 0
    for sides in contexts.values():
        table, where = netsuite_table(sides.flow.source_record)
        total += await count_rows(sides.netsuite, table, where)
    return total
