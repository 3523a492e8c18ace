"""`python -m runner`: bring the schema up to date and serve the runner with uvicorn."""

from __future__ import annotations

import gc
import logging

import uvicorn

from runner.app import create_app
from storage import migrate
from storage.settings import get_settings

# The collector's thresholds in the runner (CPython's defaults are 700, 10, 10): a young-generation
# collection every 10,000 net allocations instead of every 700. A synced record allocates thousands of
# short-lived objects (HTTP, JSON, ORM rows) that reference counting frees at once; the collector only
# needs to find cycles, and running it 14 times less often was ~8% less runner CPU per record in an
# alternated A/B (bench/overhead.py), memory still flat.
GC_THRESHOLDS = (10_000, 50, 100)


def tune_gc() -> None:
    """Collect less often, and move everything built so far (modules, settings, the migrated schema's
    metadata) out of the collector's sight for good: it lives as long as the process, and every full
    collection would walk it again (`gc.freeze`, CPython's own advice for long-running servers)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per job outcome is ours; per-request and per-tick lines from libraries are noise.
    for noisy in ("httpx2", "httpcore2", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = get_settings()
    migrate.upgrade()
    tune_gc()
    # No access log: webhook URLs may carry a shared secret in the query string.
    # proxy_headers=False: uvicorn would otherwise take X-Forwarded-For from any local client as the peer
    # address, which defeats the NetSuite IP allowlist; the intake decides itself when to trust it.
    uvicorn.run(
        create_app(),
        host=settings.runner_host,
        port=settings.runner_port,
        access_log=False,
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
