"""`python -m runner`: bring the schema up to date and serve the runner with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from runner.app import create_app
from storage import migrate
from storage.settings import get_settings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # One line per job outcome is ours; per-request and per-tick lines from libraries are noise.
    for noisy in ("httpx2", "httpcore2", "apscheduler", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = get_settings()
    migrate.upgrade()
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
