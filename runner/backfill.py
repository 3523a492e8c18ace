"""Backfill per flow: queue a sync of every existing record of a flow's NetSuite source table.

The app calls `start_backfill`; it enqueues one *driver* job (kind `backfill`). Each run of the driver
(`execute`) reads ONE page of ids by key, `SELECT id FROM <table> WHERE id > <cursor> ORDER BY id` with
`limit=1000, offset=0`, so NetSuite's 100,000-row cap per query never applies however large the table is.
Inactive records are included: the flows mark them inactive on the other side.

Each id becomes a per-record job of kind `poll` (the record was found by reading NetSuite, as a poll hit
is; `payload["backfill"]` names the driver, which is how progress is counted), unless a job of the flow
for that id is already waiting. The page's jobs and the advanced cursor commit together
(storage.backfills.record_page), so:

- a runner killed before that commit leaves the driver claimed at the old cursor; the next runner to
  claim it (once the lease runs out) reads that page again, and nothing was queued twice;
- a runner killed after it leaves the driver queued at the new cursor; the next page follows.

The driver then goes straight back to the queue for the next page (no attempt spent), or succeeds after a
short page. It settles itself; `execute` returns the outcome of this run:

    succeeded   the page went through (more pages may follow: the job is queued again)
    retrying    put back: the flow's queue is full (throttle), a transient/config error, or the lease was lost
    failed      dead-lettered: the flow or integration cannot be backfilled, NetSuite refused the query,
                or the attempts ran out

Progress for the app: `backfill_progress` and `list_backfills` (storage.backfills).
"""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any

from anyio import to_thread
from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError, RemoteError
from connectors.netsuite.client import SUITEQL_PAGE, NetSuiteClient, keyset_query
from runner.flows import Flow, netsuite_table, registry
from runner.services import Services
from storage import backfills, crud, queue
from storage.backfills import BackfillProgress, BackfillRefused, backfill_progress, list_backfills
from storage.models import Integration, Job, JobStatus, Outcome

__all__ = [
    "BackfillProgress",
    "BackfillRefused",
    "backfill_progress",
    "execute",
    "list_backfills",
    "source_table",
    "start_backfill",
]

log = logging.getLogger("ml_connector.backfill")

PAGE = SUITEQL_PAGE  # ids per page: NetSuite's largest SuiteQL page
MAX_WAITING = 5_000  # jobs of the flow still queued above which the next page waits
THROTTLE_DELAY = 5.0  # seconds the next page waits while the queue is that full


def source_table(flow: Flow) -> tuple[str, str]:
    """The SuiteQL table a flow's source record lives in, and the condition selecting its rows."""
    return netsuite_table(flow.source_record)


def start_backfill(
    engine: Engine, *, integration_id: int, flow: str, requested_by: str = "system", from_start: bool = False
) -> Job:
    """Queue a backfill of `flow` on an integration; returns its driver job.

    If the flow's latest backfill failed, it is resumed from its cursor (same job) unless `from_start`.
    Refused (BackfillRefused, a ValueError, with a message for the person who asked) when the flow does
    not exist, does not read a NetSuite table, is not enabled on the integration, or already has a
    backfill queued or running there.
    """
    found = registry().get(flow)
    if found is None:
        known = ", ".join(sorted(registry())) or "none"
        raise BackfillRefused(f"there is no flow {flow!r} (flows: {known})")
    if found.source_system != "netsuite" or not found.source_record:
        raise BackfillRefused(
            f"{flow} ({found.title}) is fed by {found.source_system}, not by a NetSuite table: a backfill "
            "pages through a NetSuite table with SuiteQL, so this flow has nothing to backfill"
        )
    integration = crud.get_integration(engine, integration_id=integration_id)
    if integration is None:
        raise BackfillRefused(f"there is no integration {integration_id}")
    if flow not in (integration.flows or []):
        raise BackfillRefused(
            f"{flow} is not enabled on the integration {integration.name!r}: enable the flow, then backfill it"
        )
    job = backfills.create(
        engine, integration_id=integration_id, flow=flow, requested_by=requested_by, from_start=from_start
    )
    log.info("backfill %s of %s on integration %s queued by %s", job.id, flow, integration_id, requested_by)
    return job


async def execute(services: Services, job: Job, *, worker: str) -> str:
    """Run one page of the backfill `job` (claimed by `worker`) and settle the job; returns the outcome."""
    engine = services.engine
    try:
        flow = _flow(job)
        waiting = await to_thread.run_sync(
            partial(backfills.waiting_jobs, engine, integration_id=job.integration_id, flow=job.flow)
        )
        if waiting > MAX_WAITING:
            # Don't flood the queue: webhooks' jobs would wait behind the whole table.
            reason = (
                f"throttled: {waiting} jobs of {job.flow} are waiting; next page in {THROTTLE_DELAY:.0f}s"
            )
            await to_thread.run_sync(
                partial(queue.postpone, engine, job, worker=worker, delay=THROTTLE_DELAY, reason=reason)
            )
            return Outcome.RETRYING
        client = await _netsuite(services, job, flow)
        table, where = source_table(flow)
        total = job.payload.get("total")
        after = str(job.payload.get("after_id") or "0")
        # The first page goes out with the count beside it, not after it: the jobs of a small table are
        # queued one round trip sooner, and a table that fits in one page needs no count at all.
        counting = asyncio.ensure_future(count_rows(client, table, where)) if total is None else None
        if counting is not None:  # a count left behind may fail unawaited: that is no news
            counting.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            body = await client.suiteql_page(
                keyset_query("id", table, where=where, after=int(after)), limit=PAGE, offset=0
            )
            ids = page_ids(body, after=after, table=table)
        except BaseException:
            if counting is not None:
                counting.cancel()
            raise
        last = len(ids) < PAGE
        if counting is not None and last:
            counting.cancel()  # the whole table was this page
            total = len(ids)
        elif counting is not None:
            total = await counting
        result = await to_thread.run_sync(
            partial(
                backfills.record_page,
                engine,
                job,
                worker=worker,
                ids=ids,
                after_id=ids[-1] if ids else after,
                total=int(total),
                last=last,
            )
        )
    except (BackfillRefused, RemoteError) as exc:
        # Retrying cannot help: the flow or integration changed, or NetSuite refused the query itself.
        log.warning("backfill %s of %s failed: %s", job.id, job.flow, exc)
        await to_thread.run_sync(partial(queue.fail, engine, job, worker=worker, error=str(exc)))
        return Outcome.FAILED
    except ConnectorError as exc:
        return await _retry(engine, job, worker, str(exc), exc.retry_after)
    except Exception as exc:
        log.exception("backfill %s of %s hit a bug", job.id, job.flow)
        return await _retry(engine, job, worker, f"{type(exc).__name__}: {exc}", None)
    if result is None:
        log.warning("backfill %s: lease lost to another runner; that runner goes on from the cursor", job.id)
        return Outcome.RETRYING
    log.info(
        "backfill %s of %s: %d ids after %s: %d queued, %d already waiting%s",
        job.id,
        job.flow,
        len(ids),
        after,
        result.queued,
        result.skipped,
        " (last page)" if last else "",
    )
    return Outcome.SUCCEEDED


async def count_rows(client: NetSuiteClient, table: str, where: str = "") -> int:
    """Rows in `table` (matching `where`), counted once for the progress bar.

    `SELECT COUNT(*)` first; where that is refused (the emulator's SQL subset has no aggregates), the
    `totalResults` of a one-row page, which stops at the per-query row cap: an estimate the backfill
    corrects once paging ends (storage.backfills.record_page sets the total to the rows actually read).
    """
    clause = f" WHERE {where}" if where else ""
    try:
        body = await client.suiteql_page(f"SELECT COUNT(*) AS n FROM {table}{clause}", limit=1)
        row = (body.get("items") or [{}])[0]
        return int(row.get("n", row.get("expr1")))
    except (RemoteError, TypeError, ValueError):
        pass
    body = await client.suiteql_page(f"SELECT id FROM {table}{clause} ORDER BY id", limit=1)
    return int(body.get("totalResults") or 0)


def page_ids(body: dict[str, Any], *, after: str, table: str) -> list[str]:
    """The ids of a keyset page, refusing a page that does not move past `after` in order (a paginator
    that could loop forever is a bug we would rather see as a failed job)."""
    ids: list[str] = []
    previous = int(after)
    for row in body.get("items") or []:
        raw = str(row.get("id", ""))
        if not raw.isdigit() or int(raw) <= previous:
            raise RemoteError(
                f"the keyset page of {table} after id {after} is not in ascending id order (got {raw!r} after "
                f"{previous}); the backfill stops rather than loop",
                system="netsuite",
            )
        previous = int(raw)
        ids.append(raw)
    return ids


def _flow(job: Job) -> Flow:
    flow = registry().get(job.flow)
    if flow is None or flow.source_system != "netsuite" or not flow.source_record:
        raise BackfillRefused(f"flow {job.flow!r} no longer exists or no longer reads a NetSuite table")
    return flow


async def _netsuite(services: Services, job: Job, flow: Flow) -> NetSuiteClient:
    integration: Integration | None = await services.integration(job.integration_id)
    if integration is None:
        raise BackfillRefused(f"integration {job.integration_id} no longer exists")
    if flow.name not in (integration.flows or []):
        raise BackfillRefused(
            f"{flow.name} was disabled on the integration {integration.name!r}: the backfill stops"
        )
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        try:
            client = await services.client_for(connection_id)
        except LookupError as exc:
            raise BackfillRefused(str(exc)) from exc
        if isinstance(client, NetSuiteClient):
            return client
    raise BackfillRefused(f"the integration {integration.name!r} has no NetSuite connection to read from")


async def _retry(engine: Engine, job: Job, worker: str, error: str, delay: float | None) -> str:
    status = await to_thread.run_sync(
        partial(queue.retry_later, engine, job, worker=worker, error=error, delay=delay)
    )
    log.warning("backfill %s of %s: %s (%s)", job.id, job.flow, error, status)
    return Outcome.FAILED if status == JobStatus.DEAD else Outcome.RETRYING
