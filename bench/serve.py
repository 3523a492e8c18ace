"""The two servers the intake benchmark loads, each in a process of its own: `python -m bench.serve runner`
or `python -m bench.serve bare`. Both read DATABASE_URL and ML_CONNECTOR_RUNNER_HOST/PORT like the runner.

runner  `python -m runner` itself (its logging, migration and uvicorn settings, runner.__main__.main)
        with the worker pool left off (`create_app(run_workers=False)`), so while it is measured the
        process does webhook intake and nothing else; the jobs the intake queues stay queued.
bare    the baseline: a Starlette app whose one route, POST /events, inserts the raw body into a table
        of the same database (engine from storage.db.make_engine, the runner's settings) in a worker
        thread, as the runner's intake does, and answers 202; served by uvicorn with the runner's options.
"""

from __future__ import annotations

import argparse
import logging
from functools import partial

import sqlalchemy as sa
import uvicorn
from anyio import to_thread
from sqlalchemy.engine import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from storage.db import make_engine
from storage.settings import get_settings

BARE_TABLE = "bench_bare_event"


def bare_table(metadata: sa.MetaData) -> sa.Table:
    return sa.Table(
        BARE_TABLE,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("body", sa.Text, nullable=False),
    )


def bare_app(engine: Engine) -> Starlette:
    """POST /events: insert the body, answer 202. GET /healthz: 200. Nothing else."""
    metadata = sa.MetaData()
    table = bare_table(metadata)
    metadata.create_all(engine)
    insert = table.insert()

    def store(body: bytes) -> None:
        with engine.begin() as connection:
            connection.execute(insert, {"body": body.decode("utf-8")})

    async def accept(request: Request) -> Response:
        body = await request.body()
        await to_thread.run_sync(partial(store, body))
        return JSONResponse({"accepted": True}, status_code=202)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/events", accept, methods=["POST"]), Route("/healthz", healthz)])


def serve_runner_without_workers() -> None:
    import runner.__main__ as runner_main
    from runner.app import create_app

    # The runner's own main() (logging, migration, uvicorn options), with the worker pool off.
    runner_main.create_app = partial(create_app, run_workers=False)  # type: ignore[assignment]
    runner_main.main()


def serve_bare() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = get_settings()
    engine = make_engine(settings.effective_database_url)
    uvicorn.run(
        bare_app(engine),
        host=settings.runner_host,
        port=settings.runner_port,
        access_log=False,
        proxy_headers=False,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.serve", description=__doc__.splitlines()[0])
    parser.add_argument("server", choices=("runner", "bare"))
    args = parser.parse_args(argv)
    if args.server == "runner":
        serve_runner_without_workers()
    else:
        serve_bare()


if __name__ == "__main__":
    main()
