"""The runner's Starlette app: webhook endpoints, /healthz, /metrics, /openapi.json (runner.openapi);
workers and the scheduler in the lifespan.

Every answer is JSON but /metrics: a path or method the app does not serve gets `{"error", "message"}`
like a refused webhook (404 not_found, 405 method_not_allowed with its Allow header), and so does a bug
(500 internal_error, the answer saying nothing of it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from functools import partial

from anyio import to_thread
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import select
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from connectors.http import Attempt
from runner.openapi import describe
from runner.scheduled import ScheduledWork
from runner.services import Services
from runner.webhooks import webhook_routes
from runner.worker import WorkerPool
from storage import migrate, queue
from storage.crypto import Vault, get_vault
from storage.db import get_engine, session_scope
from storage.models import Channel, Token
from storage.settings import Settings, get_settings
from storage.types import utcnow

log = logging.getLogger("ml_connector.runner")


class Metrics:
    """The runner's Prometheus metrics, in a registry of its own (one per app, so tests stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            "mlc_webhook_events_total",
            "Webhook deliveries by system and verdict",
            ["system", "verdict"],
            registry=self.registry,
        )
        self.jobs = Gauge("mlc_jobs", "Jobs by status", ["status"], registry=self.registry)
        self.oldest = Gauge(
            "mlc_oldest_queued_job_seconds", "Age of the oldest runnable job", registry=self.registry
        )
        self.job_seconds = Histogram(
            "mlc_job_duration_seconds",
            "Time one job took, by flow and outcome",
            ["flow", "outcome"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=self.registry,
        )
        self.remote_calls = Counter(
            "mlc_remote_calls_total", "HTTP calls to remote systems by status", ["system", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.token_expiry = Gauge(
            "mlc_token_seconds_to_expiry", "Seconds until each connection's token expires", ["connection"],
            registry=self.registry,
        )  # fmt: skip
        self.token_refreshes = Gauge(
            "mlc_token_refreshes_recent", "Token refreshes in the last 10 minutes per connection", ["connection"],
            registry=self.registry,
        )  # fmt: skip
        self.channel_expiry = Gauge(
            "mlc_channel_seconds_to_expiry", "Seconds until each Zoho channel lapses", ["channel"],
            registry=self.registry,
        )  # fmt: skip

    def observe_call(self, attempt: Attempt) -> None:
        self.remote_calls.labels(attempt.system, str(attempt.status or "network-error")).inc()

    def observe_job(self, flow: str, outcome: str, seconds: float) -> None:
        self.job_seconds.labels(flow, outcome).observe(seconds)

    def refresh_from_database(self, engine: Engine) -> None:
        """Gauges read at scrape time: token and channel expiry."""
        now = utcnow()
        horizon = now.timestamp() - 600
        with session_scope(engine) as session:
            for token in session.exec(select(Token)).all():
                label = str(token.connection_id)
                if token.expires_at is not None:
                    self.token_expiry.labels(label).set((token.expires_at - now).total_seconds())
                recent = [t for t in (token.extra or {}).get("refresh_times") or [] if float(t) > horizon]
                self.token_refreshes.labels(label).set(len(recent))
            for channel in session.exec(select(Channel)).all():
                if channel.expires_at is not None:
                    self.channel_expiry.labels(channel.channel_id).set(
                        (channel.expires_at - now).total_seconds()
                    )


def create_app(
    *,
    engine: Engine | None = None,
    settings: Settings | None = None,
    vault: Vault | None = None,
    run_workers: bool = True,
) -> Starlette:
    """The runner app. Arguments default to the process-wide settings, engine and vault."""
    settings = settings or get_settings()
    engine = engine or get_engine()
    vault = vault or get_vault()
    metrics = Metrics()
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await to_thread.run_sync(partial(migrate.upgrade, engine))
        services = Services(
            engine=engine,
            vault=vault,
            settings=settings,
            on_call=metrics.observe_call,
            on_job=metrics.observe_job,
        )
        pool = WorkerPool(
            services, concurrency=settings.workers, lease=settings.job_lease, idle_wait=settings.poll_interval
        )
        scheduler = AsyncIOScheduler(timezone="UTC")
        work = ScheduledWork(services, pool)
        work.install(scheduler)
        scheduler.start()
        await work.heartbeat()  # the app sees this runner at once, not one interval later
        state.update(pool=pool, scheduler=scheduler, services=services, work=work, started=time.time())
        task = asyncio.create_task(pool.run(), name="worker-pool") if run_workers else None
        log.info("runner %s up: database %s, %d workers", pool.name, engine.dialect.name, settings.workers)
        try:
            yield
        finally:
            scheduler.shutdown(wait=False)
            await pool.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            await services.aclose()

    async def healthz(_request: Request) -> Response:
        checks: dict[str, object] = {}
        ok = True
        try:
            await to_thread.run_sync(_ping_database, engine)
            stats = await to_thread.run_sync(partial(queue.stats, engine))
            checks["database"] = "ok"
            checks["oldest_queued_job_seconds"] = stats.oldest_queued_age
            checks["jobs"] = stats.by_status
        except Exception as exc:
            ok = False
            checks["database"] = f"unreachable: {type(exc).__name__}"
        scheduler = state.get("scheduler")
        checks["scheduler"] = (
            "running" if isinstance(scheduler, AsyncIOScheduler) and scheduler.running else "stopped"
        )
        ok = ok and checks["scheduler"] == "running"
        return JSONResponse({"ok": ok, **checks}, status_code=200 if ok else 503)

    async def metrics_endpoint(_request: Request) -> Response:
        stats = await to_thread.run_sync(partial(queue.stats, engine))
        for status, count in stats.by_status.items():
            metrics.jobs.labels(status).set(count)
        metrics.oldest.set(stats.oldest_queued_age or 0)
        await to_thread.run_sync(metrics.refresh_from_database, engine)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def openapi(_request: Request) -> Response:
        return JSONResponse(description)

    routes = [
        *webhook_routes(engine=engine, vault=vault, events=metrics.events, wake=partial(_wake, state)),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ]
    description = describe(routes)  # fails here, at start, if a route is undocumented
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.runner = state
    return app


HTTP_ERRORS = {
    404: ("not_found", "nothing is served at {path}; webhooks go to /webhooks/<netsuite|zuora|zoho>/<key>"),
    405: ("method_not_allowed", "{path} does not take {method}; use {allow}"),
}


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 (and any other HTTPException) as `{"error", "message"}`, headers kept (Allow)."""
    assert isinstance(exc, HTTPException)
    code, template = HTTP_ERRORS.get(exc.status_code, ("http_error", "{detail}"))
    message = template.format(
        path=request.url.path[:200],
        method=request.method,
        allow=(exc.headers or {}).get("Allow", "another method"),
        detail=exc.detail,
    )
    return JSONResponse({"error": code, "message": message}, status_code=exc.status_code, headers=exc.headers)


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: the answer names no detail of it (Starlette re-raises after answering, so the server
    logs the traceback)."""
    log.error("%s %s failed: %s", request.method, request.url.path[:200], type(exc).__name__)
    message = "the runner failed to handle this request; it is logged, send it again later"
    return JSONResponse({"error": "internal_error", "message": message}, status_code=500)


def _ping_database(engine: Engine) -> None:
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def _wake(state: dict[str, object]) -> None:
    """Tell the worker pool, once the lifespan started it, that webhook intake queued jobs."""
    pool = state.get("pool")
    if isinstance(pool, WorkerPool):
        pool.wake()
