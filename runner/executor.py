"""Run one job: fetch, map, write, and audit every step (design.md invariants 2-4).

Outcomes by reaction:
- success → job succeeded, audit `succeeded`;
- transient (429, 5xx, timeouts, a busy link) → job back in the queue with backoff (the system's
  Retry-After when it gave one), audit `retrying`, or `failed` once attempts run out;
- configuration (credentials, permissions) → same as transient: the person fixes the connection and the
  queued jobs go through;
- remote (record rejected) and mapping errors → job dead at once, audit `failed`, replayable;
- anything else is a bug: retried like a transient error, logged with its traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar, cast

from anyio import to_thread
from sqlalchemy.orm.attributes import set_attribute

from connectors.errors import ConnectorError, RemoteError
from runner import backfill
from runner.flows import BatchFlow, Flow, FlowContext, Postpone, WriteResult, registry
from runner.mapping import Mapped, MappingError, apply, create_only_fields, flows_back_fields
from runner.services import Services, current_trail
from storage import audit, crud, hot, lookups, queue, triage
from storage.construct import construct
from storage.models import AuditRecord, Integration, Job, JobKind, Mapping, Outcome

log = logging.getLogger("ml_connector.jobs")
T = TypeVar("T")


async def execute(services: Services, job: Job, *, worker: str) -> str:
    """Run `job` and record its outcome; returns the audit outcome."""
    if job.kind == JobKind.BACKFILL:
        # A backfill pages through the source and queues sync jobs; it is audited by the jobs it queues.
        return await backfill.execute(services, job, worker=worker)
    flow = registry().get(job.flow)
    trail: list[Any] = []
    token = current_trail.set(trail)
    record = _new_record(job, flow)
    error: Exception | None = None
    try:
        if flow is None:
            raise MappingError("flow", f"unknown flow {job.flow!r}")
        ctx = await _job_context(services, job, flow, worker=f"job:{job.id}")
        ctx.job_payload = dict(job.payload)
        mapped = await _prepare(services, job, flow, record, ctx)
        _record_write(record, await flow.write(ctx, record.source_id, mapped))
    except Exception as exc:
        error = exc
    finally:
        current_trail.reset(token)
    settlement = _judge(job, record, error)
    # The audit record and the job's new state commit together: a crash before that commit re-runs the
    # job (its writes are idempotent), never leaving a finished job without its audit trail.
    await _settle(services, [settlement], [(record, trail)], worker=worker)
    _finished(services, job, record, len(trail))
    return record.outcome


async def execute_batch(services: Services, jobs: list[Job], *, worker: str) -> list[str]:
    """Run jobs of one integration's batch flow together: each record fetched and mapped on its own
    (with its own trail), then one `write_batch` call for every record that mapped, then per-record
    audit and outcome. A record that fails to fetch, map or write fails alone; the batch goes on."""
    flow = cast(BatchFlow, registry()[jobs[0].flow])
    records = [_new_record(job, flow) for job in jobs]
    trails: list[list[Any]] = [[] for _ in jobs]
    errors: list[Exception | None] = [None] * len(jobs)
    try:
        ctx = await _job_context(services, jobs[0], flow, worker=f"batch:{jobs[0].id}")
    except Exception as exc:
        errors = [exc] * len(jobs)
    else:
        prefetched = await _prefetch(flow, ctx, jobs, trails)

        async def prepare(index: int) -> Mapped | None:
            token = current_trail.set(trails[index])
            try:
                return await _prepare(services, jobs[index], flow, records[index], ctx, prefetched)
            except Exception as exc:
                errors[index] = exc
                return None
            finally:
                current_trail.reset(token)

        mapped = await _each(prepare, len(jobs), lanes=getattr(ctx.source, "max_concurrency", None))
        ready = [(i, m) for i, m in enumerate(mapped) if m is not None]
        shared: list[Any] = []
        ctx.item_workers = [f"job:{jobs[i].id}" for i, _ in ready]
        ctx.item_trails = [trails[i] for i, _ in ready]
        token = current_trail.set(shared)
        try:
            results: list[WriteResult | Exception] = await flow.write_batch(
                ctx, [(records[i].source_id, m) for i, m in ready]
            )
        except Exception as exc:
            results = [exc] * len(ready)
        finally:
            current_trail.reset(token)
        for (i, _), result in zip(ready, results, strict=True):
            if shared:
                # The batch's shared calls belong to every record in it; in time order with the calls a
                # batch flow made for this record alone (its item trail).
                trails[i].extend(shared)
                trails[i].sort(key=lambda attempt: attempt.at)
            if isinstance(result, Exception):
                errors[i] = result
            else:
                _record_write(records[i], result)
    settlements = [
        _judge(job, record, error) for job, record, error in zip(jobs, records, errors, strict=True)
    ]
    await _settle(services, settlements, list(zip(records, trails, strict=True)), worker=worker)
    for job, record, trail in zip(jobs, records, trails, strict=True):
        _finished(services, job, record, len(trail), quiet=True)
    _log_batch(jobs, records)
    return [record.outcome for record in records]


async def _prefetch(
    flow: Flow, ctx: FlowContext, jobs: list[Job], trails: list[list[Any]]
) -> dict[str, dict[str, Any]]:
    """The source records of the batch's ordinary sync jobs, read together when the flow can
    (`fetch_many`, e.g. one SuiteQL query for a batch of customers); {} otherwise. The bulk read's HTTP
    attempts go into the trail of every record it was made for. Should it fail, nothing is lost: each
    record is then fetched on its own, and fails or succeeds alone."""
    fetch_many = getattr(flow, "fetch_many", None)
    wanted = [i for i, job in enumerate(jobs) if job.kind != JobKind.REPLAY]
    if fetch_many is None or not wanted:
        return {}
    bulk: list[Any] = []
    token = current_trail.set(bulk)
    try:
        found: dict[str, dict[str, Any]] = await fetch_many(
            ctx, [flow.source_id(jobs[i].payload) for i in wanted]
        )
    except Exception as exc:
        log.info(
            "%s: bulk read of %d records failed (%s); reading them one by one", flow.name, len(wanted), exc
        )
        found = {}
    finally:
        current_trail.reset(token)
    if bulk:
        for i in wanted:
            trails[i].extend(bulk)
    return found


async def _each(run: Callable[[int], Awaitable[T]], count: int, *, lanes: int | None) -> list[T]:
    """`run(0)` … `run(count - 1)`, at most `lanes` at a time (None: all at once), results in order.

    A batch's fetches go through a source client that takes `max_concurrency` calls at once: that many
    lanes, each taking the next index when its last one is done, keep it as busy as one task per record
    queued on the client's semaphore would, without a task and a semaphore wait per record."""
    if lanes is None or lanes >= count:
        return list(await asyncio.gather(*(run(i) for i in range(count))))
    results: list[T | None] = [None] * count
    indexes = iter(range(count))

    async def lane() -> None:
        for index in indexes:  # shared: each index is taken by exactly one lane
            results[index] = await run(index)

    await asyncio.gather(*(lane() for _ in range(lanes)))
    return cast(list[T], results)


def _new_record(job: Job, flow: Flow | None) -> AuditRecord:
    # construct(): one record per job on the hot path, without SQLModel's per-field constructor.
    return construct(
        AuditRecord,
        job_id=job.id,
        integration_id=job.integration_id,
        flow=job.flow,
        source_system=flow.source_system if flow else "",
        source_id=str(job.payload.get("id", "")),
        target_system=flow.target_system if flow else "",
        started_at=datetime.now(UTC),
    )


def _record_write(record: AuditRecord, result: WriteResult) -> None:
    _put(record, target_id=result.target_id, action=result.action, response=result.response)


def _put(record: AuditRecord, **values: Any) -> None:
    """Set fields of a record as SQLModel's `__setattr__` does on a table model (SQLAlchemy's tracked
    set, and the field counted as set) without pydantic's assignment machinery on top: per record, per
    field, on the hot path (storage.queue._set does the same for jobs)."""
    fields_set = record.__pydantic_fields_set__
    for name, value in values.items():
        set_attribute(record, name, value)
        fields_set.add(name)


def _judge(job: Job, record: AuditRecord, error: Exception | None) -> queue.Settlement:
    """Set the record's outcome from the job's error (None: success); returns how to settle the job."""
    _put(record, finished_at=datetime.now(UTC))
    if error is None:
        _put(record, outcome=Outcome.SUCCEEDED)
        return queue.succeeded(job)
    record.error_message = str(error)
    if isinstance(error, Postpone):
        record.outcome = Outcome.RETRYING
        record.error_class = "transient"
        return queue.postponed(job, delay=error.delay, reason=str(error))
    if isinstance(error, (MappingError, RemoteError)):
        record.outcome = Outcome.FAILED
        record.error_class = "config" if isinstance(error, MappingError) else "remote"
        return queue.failed(job, error=str(error))
    record.outcome = Outcome.FAILED if job.attempts >= job.max_attempts else Outcome.RETRYING
    if isinstance(error, ConnectorError):
        record.error_class = error.reaction
        return queue.retrying(job, error=str(error), delay=error.retry_after)
    log.error("job %s (%s) hit a bug", job.id, job.flow, exc_info=error)
    record.error_class = "bug"
    record.error_message = f"{type(error).__name__}: {error}"
    return queue.retrying(job, error=record.error_message)


async def _settle(
    services: Services,
    settlements: list[queue.Settlement],
    audited: list[tuple[AuditRecord, list[Any]]],
    *,
    worker: str,
) -> None:
    """Write the audit records and settle the jobs in one transaction (storage.queue.settle)."""
    lost = await to_thread.run_sync(
        partial(queue.settle, services.engine, settlements, worker=worker, audit_records=audited)
    )
    for job in lost:
        log.warning("job %s: lease lost to another runner before it could be settled", job.id)


def _finished(
    services: Services, job: Job, record: AuditRecord, attempts: int, *, quiet: bool = False
) -> None:
    _log_outcome(job, record, attempts, quiet=quiet)
    if services.on_job is not None and record.finished_at is not None:
        services.on_job(job.flow, record.outcome, (record.finished_at - record.started_at).total_seconds())


async def _job_context(services: Services, job: Job, flow: Flow, *, worker: str) -> FlowContext:
    """The flow context of a job (or a batch): what `flow_context` builds, from one database read. The
    integration, its connections' edit stamps and the active mapping rows come in one transaction; the
    clients, specs and lookup tables already built from those same rows are reused."""
    state = await to_thread.run_sync(
        partial(hot.job_state, services.engine, integration_id=job.integration_id, flow=flow.name)
    )
    if state.integration is None:
        raise MappingError("integration", f"integration {job.integration_id} no longer exists")
    tables, mapping = await services.mappings_in_force(state)
    return await flow_context(
        services, state.integration, flow, worker=worker, stamps=state.connections, in_force=(tables, mapping)
    )


async def _prepare(
    services: Services,
    job: Job,
    flow: Flow,
    record: AuditRecord,
    ctx: FlowContext,
    prefetched: dict[str, dict[str, Any]] | None = None,
) -> Mapped:
    """The payload to write for `job`: fetched (or taken from the batch's bulk read, `prefetched`) and
    mapped, or taken from the audit record it replays."""
    source_id = flow.source_id(job.payload)
    record.source_id = source_id
    integration_id = ctx.integration.id or 0
    replayed = await _original(services, job)
    if replayed is not None:
        record.replay_of = replayed.id
    if replayed is not None and not job.payload.get("refetch") and job.payload.get("mode") == "payload":
        # Re-send what was sent, with the create-only fields of the mapping version that produced it.
        spec = await _spec(services, integration_id, flow, replayed.mapping_version or 0)
        record.source_snapshot = replayed.source_snapshot
        record.mapping_version = replayed.mapping_version
        mapped = Mapped(
            payload=dict(replayed.payload or {}),
            create_only=create_only_fields(spec),
            flows_back=flows_back_fields(spec),
        )
    else:
        snapshot: dict[str, Any] | None = None
        if replayed is not None and not job.payload.get("refetch"):
            snapshot = dict(replayed.source_snapshot or {})  # remap: never re-fetch unless asked
            lacks = getattr(flow, "snapshot_lacks", None)
            missing = lacks(ctx, snapshot) if lacks is not None else []
            if missing:
                raise MappingError(
                    "source_snapshot",
                    f"the stored snapshot was read in bulk with only the fields mapping version "
                    f"{replayed.mapping_version} needed; the current mapping also reads {', '.join(missing)}: "
                    "replay with 'Re-read each source record first' to read the whole record",
                )
        elif prefetched:
            snapshot = prefetched.get(source_id)
        if snapshot is None:
            snapshot = await flow.fetch(ctx, source_id)
        record.source_snapshot = snapshot
        record.mapping_version = ctx.mapping_version
        mapped = apply(ctx.mapping or flow.default_mapping, snapshot, lookups=ctx.lookups)
    record.payload = mapped.payload
    return mapped


async def flow_context(
    services: Services,
    integration: Integration,
    flow: Flow,
    *,
    worker: str,
    stamps: dict[int, datetime] | None = None,
    in_force: tuple[dict[str, dict[str, Any]], Mapping | None] | None = None,
) -> FlowContext:
    """The clients of the flow's source and target systems, taken from the integration's pair.

    The link claimant (`worker`) is the job, not the runner: a retry of this job (here or on another
    runner after a crash) may take its own claim over at once, while a different job for the same
    record waits. `stamps` (connection id → updated_at, just read) lets cached clients be reused
    without reading their connections again; `in_force` gives the lookup tables and mapping already
    read, instead of reading them here.
    """
    clients = {}
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        if stamps is not None:
            client = await services.client_at(connection_id, stamps.get(connection_id))
        else:
            client = await services.client_for(connection_id)
        clients[client.system] = client
    missing = [s for s in (flow.source_system, flow.target_system) if s not in clients]
    if missing:
        raise MappingError(
            "integration",
            f"flow {flow.name} needs a {' and a '.join(missing)} connection; this integration pairs "
            f"{' and '.join(sorted(clients))}: disable the flow or pair the right systems",
        )
    integration_id = integration.id or 0

    def tables_and_mapping() -> tuple[dict[str, dict[str, Any]], Mapping | None]:
        # Read once per job, or once per batch: the mapping in force when the work started.
        return (
            lookups.lookups_for(services.engine, integration_id=integration_id),
            crud.active_mapping(services.engine, integration_id=integration_id, flow=flow.name),
        )

    tables, mapping = in_force if in_force is not None else await to_thread.run_sync(tables_and_mapping)
    return FlowContext(
        engine=services.engine,
        integration=integration,
        source=clients[flow.source_system],
        target=clients[flow.target_system],
        worker=worker,
        lookups=tables,
        mapping=mapping.spec if mapping is not None else None,
        mapping_version=mapping.version if mapping is not None else 0,
    )


async def _original(services: Services, job: Job) -> AuditRecord | None:
    """The audit record a replay job replays, or None for an ordinary sync."""
    original_id = job.payload.get("replay_of") if job.kind == JobKind.REPLAY else None
    if original_id is None:
        return None
    found = await to_thread.run_sync(partial(audit.get_record, services.engine, int(original_id)))
    if found is None:
        raise MappingError(
            "replay_of", f"audit record {original_id} no longer exists (retention removed it?)"
        )
    record = found[0]
    edit_id = job.payload.get("edit_id")
    if edit_id is not None:
        # An edited replay (runner.triage.edit_and_replay) sends the payload a person corrected in the app.
        try:
            record.payload = await to_thread.run_sync(
                partial(triage.edited_payload, services.engine, int(edit_id))
            )
        except LookupError as exc:
            raise MappingError("edit_id", str(exc)) from None
    return record


async def _spec(services: Services, integration_id: int, flow: Flow, version: int) -> dict[str, Any]:
    if version == 0:
        return flow.default_mapping
    stored = await to_thread.run_sync(
        partial(
            crud.mapping_version,
            services.engine,
            integration_id=integration_id,
            flow=flow.name,
            version=version,
        )
    )
    return stored.spec if stored is not None else flow.default_mapping


def _log_outcome(job: Job, record: AuditRecord, attempts: int, *, quiet: bool = False) -> None:
    """One line per job run: INFO for a success (DEBUG when `quiet`: a batch sums its successes up in
    one INFO line, see `_log_batch`, and the audit trail holds each record), WARNING otherwise."""
    if record.outcome == Outcome.SUCCEEDED:
        level = logging.DEBUG if quiet else logging.INFO
    else:
        level = logging.WARNING
    if not log.isEnabledFor(level):
        return
    duration = (record.finished_at - record.started_at).total_seconds() if record.finished_at else 0.0
    log.log(
        level,
        "job=%s flow=%s source=%s target=%s outcome=%s action=%s attempts=%d http=%d duration_ms=%.0f error_class=%s error=%s",
        job.id,
        job.flow,
        record.source_id,
        record.target_id or "-",
        record.outcome,
        record.action or "-",
        job.attempts,
        attempts,
        duration * 1000,
        record.error_class or "-",
        (record.error_message or "-")[:300],
    )


def _log_batch(jobs: list[Job], records: list[AuditRecord]) -> None:
    """One INFO line per batch: how many of its jobs succeeded (each one's line is DEBUG; its audit
    record, found by job or source id, has its outcome and attempts) and how many did not (each of those
    also has its own WARNING line)."""
    if not log.isEnabledFor(logging.INFO):
        return
    outcomes = Counter(str(record.outcome) for record in records)
    done = [
        (job, record)
        for job, record in zip(jobs, records, strict=True)
        if record.outcome == Outcome.SUCCEEDED
    ]
    started = min(record.started_at for record in records)
    finished = max((record.finished_at or record.started_at) for record in records)
    log.info(
        "batch flow=%s jobs=%d outcomes=%s duration_ms=%.0f succeeded_jobs=%s succeeded_sources=%s",
        jobs[0].flow,
        len(jobs),
        ",".join(f"{outcome}:{count}" for outcome, count in sorted(outcomes.items())),
        (finished - started).total_seconds() * 1000,
        # job id:attempt of each success (a batch holds at most a few hundred): which run did which job
        ",".join(f"{job.id}:{job.attempts}" for job, _ in done) or "-",
        _id_list([record.source_id for _, record in done]),
    )


def _id_list(ids: list[str], shown: int = 100) -> str:
    """Ids for a log line, comma-separated, cut after `shown` of them."""
    text = ",".join(ids[:shown]) or "-"
    return text if len(ids) <= shown else f"{text},…(+{len(ids) - shown})"
