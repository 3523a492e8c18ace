"""The worker pool: claims jobs in batches and runs up to `concurrency` of them at once.

It sleeps on an event rather than polling hot: webhook intake in the same process wakes it at once, and
the scheduler's pickup job wakes it every few seconds for jobs that became due or were queued by
another process (the app's replays, another runner's retries). While a job runs, its lease is extended
so a slow remote system does not make a healthy runner look dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from functools import partial

from anyio import to_thread

from runner.executor import execute
from runner.services import Services
from storage import queue
from storage.models import Job

log = logging.getLogger("ml_connector.worker")


def worker_name() -> str:
    """A name unique to this process: host, pid and a short random tag."""
    return f"{socket.gethostname()}:{os.getpid()}:{os.urandom(3).hex()}"


class WorkerPool:
    def __init__(
        self, services: Services, *, concurrency: int, lease: float, idle_wait: float, name: str | None = None
    ) -> None:
        self.services = services
        self.concurrency = concurrency
        self.lease = lease
        self.idle_wait = idle_wait
        self.name = name or worker_name()
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task[None]] = set()
        self._lanes: dict[int, int] = {}  # integration id → jobs running in this pool
        self._stopping = False
        self.completed = 0

    def wake(self) -> None:
        """Ask the pool to look for work now (safe to call from the event loop's thread only)."""
        self._wake.set()

    def lane_cap(self, integration_id: int) -> int:
        """Slots one integration may hold: its target's cap, but never all of them, so a slow system
        leaves room for the others (at least a quarter of the pool stays free for other lanes)."""
        share = max(1, (self.concurrency * 3) // 4)
        return min(share, self.services.lane_limit(integration_id))

    async def run(self) -> None:
        """Claim and run jobs until `stop()`."""
        while not self._stopping:
            free = self.concurrency - len(self._running)
            jobs: list[Job] = []
            if free > 0:
                full = frozenset(i for i, n in self._lanes.items() if n >= self.lane_cap(i))
                try:
                    jobs = await to_thread.run_sync(
                        partial(
                            queue.claim,
                            self.services.engine,
                            worker=self.name,
                            limit=free,
                            lease=self.lease,
                            skip_integrations=full,
                        )
                    )
                except Exception:
                    log.exception("claiming jobs failed; trying again in %.1fs", self.idle_wait)
            for job in jobs:
                if self._lanes.get(job.integration_id, 0) >= self.lane_cap(job.integration_id):
                    # The batch overfilled this lane: hand the job back at once, attempt unspent.
                    # Its place in the queue (run_after) is kept, so it is first in line once the lane frees.
                    await to_thread.run_sync(
                        partial(queue.hand_back, self.services.engine, job, worker=self.name)
                    )
                    continue
                self._lanes[job.integration_id] = self._lanes.get(job.integration_id, 0) + 1
                task = asyncio.create_task(self._run_one(job), name=f"job-{job.id}")
                self._running.add(task)
                task.add_done_callback(self._running.discard)
            if len(self._running) >= self.concurrency:
                # Full: wait for a slot to free up before claiming more.
                await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
                continue
            if jobs:
                # There may be more right away. Jobs handed back for a full lane left slots free: the
                # next claim skips that lane, so those slots go to other integrations' jobs.
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_wait)

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; give running jobs `grace` seconds, then cancel them (their leases expire)."""
        self._stopping = True
        self._wake.set()
        if self._running:
            _done, pending = await asyncio.wait(self._running, timeout=grace)
            for task in pending:
                task.cancel()

    async def _run_one(self, job: Job) -> None:
        keeper = asyncio.create_task(self._keep_lease(job))
        try:
            await execute(self.services, job, worker=self.name)
            self.completed += 1
        except Exception:
            log.exception("job %s crashed outside its own error handling", job.id)
        finally:
            keeper.cancel()
            self._lanes[job.integration_id] -= 1
            self._wake.set()  # a lane slot freed: jobs skipped for a full lane may now be claimed

    async def _keep_lease(self, job: Job) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            ours = await to_thread.run_sync(
                partial(queue.extend_lease, self.services.engine, job, worker=self.name, lease=self.lease)
            )
            if not ours:
                log.warning("job %s: lease lost to another runner", job.id)
                return
