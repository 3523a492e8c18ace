"""`python -m runner`: bring the schema up to date and serve the runner with uvicorn."""

from __future__ import annotations

import ctypes
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
# alternated A/B (bench/overhead.py). The older generations keep CPython's ratios (10, 10): with them
# raised as well (50, 100), cyclic garbage waited so long for a full collection that a 100,000-record
# backfill's memory rose to a 320 MiB plateau instead of staying flat.
GC_THRESHOLDS = (10_000, 10, 10)


# glibc's malloc gives each thread that allocates its own arena, up to eight per core, and returns little
# of an arena's freed memory to the system. The runner's database work runs on a pool of worker threads,
# so its resident memory grew with the arenas' fragmentation, not its data: a 100,000-record backfill
# plateaued at ~320 MiB, of which tracemalloc saw a few MiB of live Python objects; with two arenas it
# stays flat at ~175 MiB, for about as much CPU (0.68 against 0.65 ms a record in an alternated A/B,
# within its noise; bench/overhead.py). The same as MALLOC_ARENA_MAX=2, set from inside: the worker
# threads start after it.
M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's <malloc.h>
MALLOC_ARENAS = 2


def limit_malloc_arenas() -> bool:
    """Cap glibc's malloc arenas at MALLOC_ARENAS; False where the C library is not glibc (nothing to
    tune) or refused."""
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, MALLOC_ARENAS))


def tune_gc() -> None:
    """Collect less often, and move everything built so far (modules, settings, the migrated schema's
    metadata) out of the collector's sight for good: it lives as long as the process, and every full
    collection would walk it again (`gc.freeze`, CPython's own advice for long-running servers)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> None:
    limit_malloc_arenas()
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
