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

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any

from anyio import to_thread

from connectors.errors import ConnectorError, RemoteError
from runner import backfill
from runner.flows import Flow, FlowContext, Postpone, registry
from runner.mapping import Mapped, MappingError, apply, create_only_fields
from runner.services import Services, current_trail
from storage import audit, crud, queue
from storage.models import AuditRecord, Integration, Job, JobKind, Outcome

log = logging.getLogger("ml_connector.jobs")


async def execute(services: Services, job: Job, *, worker: str) -> str:
    """Run `job` and record its outcome; returns the audit outcome."""
    if job.kind == JobKind.BACKFILL:
        # A backfill pages through the source and queues sync jobs; it is audited by the jobs it queues.
        return await backfill.execute(services, job, worker=worker)
    flows = registry()
    flow = flows.get(job.flow)
    trail: list[Any] = []
    token = current_trail.set(trail)
    started = datetime.now(UTC)
    record = AuditRecord(
        job_id=job.id,
        integration_id=job.integration_id,
        flow=job.flow,
        source_system=flow.source_system if flow else "",
        source_id=str(job.payload.get("id", "")),
        target_system=flow.target_system if flow else "",
        started_at=started,
    )
    # The audit record is written before the job changes state: a crash in between re-runs the job
    # (its writes are idempotent) rather than leaving a finished job without its audit trail.
    settle: Callable[[], object]
    try:
        if flow is None:
            raise MappingError("flow", f"unknown flow {job.flow!r}")
        await _run(services, job, flow, record, worker)
        record.outcome = Outcome.SUCCEEDED
        settle = partial(queue.finish, services.engine, job, worker=worker)
    except Postpone as exc:
        record.outcome = Outcome.RETRYING
        record.error_class = "transient"
        record.error_message = str(exc)
        settle = partial(
            queue.postpone, services.engine, job, worker=worker, delay=exc.delay, reason=str(exc)
        )
    except (MappingError, RemoteError) as exc:
        record.outcome = Outcome.FAILED
        record.error_class = "config" if isinstance(exc, MappingError) else "remote"
        record.error_message = str(exc)
        settle = partial(queue.fail, services.engine, job, worker=worker, error=str(exc))
    except ConnectorError as exc:
        record.error_class = exc.reaction
        record.error_message = str(exc)
        record.outcome = Outcome.FAILED if job.attempts >= job.max_attempts else Outcome.RETRYING
        settle = partial(
            queue.retry_later, services.engine, job, worker=worker, error=str(exc), delay=exc.retry_after
        )
    except Exception as exc:
        log.exception("job %s (%s) hit a bug", job.id, job.flow)
        record.error_class = "bug"
        record.error_message = f"{type(exc).__name__}: {exc}"
        record.outcome = Outcome.FAILED if job.attempts >= job.max_attempts else Outcome.RETRYING
        settle = partial(queue.retry_later, services.engine, job, worker=worker, error=record.error_message)
    finally:
        current_trail.reset(token)
    record.finished_at = datetime.now(UTC)
    await to_thread.run_sync(partial(audit.write_record, services.engine, record, trail))
    await to_thread.run_sync(settle)
    _log_outcome(job, record, len(trail))
    if services.on_job is not None:
        services.on_job(job.flow, record.outcome, (record.finished_at - record.started_at).total_seconds())
    return record.outcome


async def _run(services: Services, job: Job, flow: Flow, record: AuditRecord, worker: str) -> None:
    integration = await services.integration(job.integration_id)
    if integration is None:
        raise MappingError("integration", f"integration {job.integration_id} no longer exists")
    ctx = await flow_context(services, integration, flow, worker=f"job:{job.id}")
    source_id = flow.source_id(job.payload)
    record.source_id = source_id
    replayed = await _original(services, job)
    if replayed is not None:
        record.replay_of = replayed.id
    if replayed is not None and not job.payload.get("refetch") and job.payload.get("mode") == "payload":
        # Re-send what was sent, with the create-only fields of the mapping version that produced it.
        spec = await _spec(services, integration.id or 0, flow, replayed.mapping_version or 0)
        record.source_snapshot = replayed.source_snapshot
        record.mapping_version = replayed.mapping_version
        mapped = Mapped(payload=dict(replayed.payload or {}), create_only=create_only_fields(spec))
    else:
        if replayed is not None and not job.payload.get("refetch"):
            snapshot = dict(replayed.source_snapshot or {})  # remap: never re-fetch unless asked
        else:
            snapshot = await flow.fetch(ctx, source_id)
        record.source_snapshot = snapshot
        mapping = await to_thread.run_sync(
            partial(crud.active_mapping, services.engine, integration_id=integration.id or 0, flow=flow.name)
        )
        spec = mapping.spec if mapping is not None else flow.default_mapping
        record.mapping_version = mapping.version if mapping is not None else 0
        mapped = apply(spec, snapshot)
    record.payload = mapped.payload
    result = await flow.write(ctx, source_id, mapped)
    record.target_id = result.target_id
    record.action = result.action
    record.response = result.response


async def flow_context(
    services: Services, integration: Integration, flow: Flow, *, worker: str
) -> FlowContext:
    """The clients of the flow's source and target systems, taken from the integration's pair.

    The link claimant (`worker`) is the job, not the runner: a retry of this job (here or on another
    runner after a crash) may take its own claim over at once, while a different job for the same
    record waits.
    """
    clients = {}
    for connection_id in (integration.source_connection_id, integration.target_connection_id):
        client = await services.client_for(connection_id)
        clients[client.system] = client
    missing = [s for s in (flow.source_system, flow.target_system) if s not in clients]
    if missing:
        raise MappingError(
            "integration",
            f"flow {flow.name} needs a {' and a '.join(missing)} connection; this integration pairs "
            f"{' and '.join(sorted(clients))}: disable the flow or pair the right systems",
        )
    return FlowContext(
        engine=services.engine,
        integration=integration,
        source=clients[flow.source_system],
        target=clients[flow.target_system],
        worker=worker,
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
    return found[0]


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


def _log_outcome(job: Job, record: AuditRecord, attempts: int) -> None:
    duration = (record.finished_at - record.started_at).total_seconds() if record.finished_at else 0.0
    level = logging.INFO if record.outcome == Outcome.SUCCEEDED else logging.WARNING
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
