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

from runner.executor import execute, execute_batch
from runner.flows import registry
from runner.outage import PausedIntegrations
from runner.services import Services
from storage import queue
from storage.models import Job, JobKind

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
        self.paused = PausedIntegrations(services.engine)  # their jobs wait in the queue (runner.outage)

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
                full, room = self._claimable()
                full |= await self.paused.current()
                try:
                    jobs = await to_thread.run_sync(
                        partial(
                            queue.claim,
                            self.services.engine,
                            worker=self.name,
                            limit=free,
                            lease=self.lease,
                            skip_integrations=full,
                            per_integration_limit=room,
                        )
                    )
                except Exception:
                    log.exception("claiming jobs failed; trying again in %.1fs", self.idle_wait)
            for group in await self._grouped(jobs):
                lead = group[0]
                if self._lanes.get(lead.integration_id, 0) >= self.lane_cap(lead.integration_id):
                    # The claim overfilled this lane: hand the jobs back at once, attempts unspent.
                    # Their place in the queue (run_after) is kept, so they are first once the lane frees.
                    for job in group:
                        await to_thread.run_sync(
                            partial(queue.hand_back, self.services.engine, job, worker=self.name)
                        )
                    continue
                self._lanes[lead.integration_id] = self._lanes.get(lead.integration_id, 0) + 1
                task = asyncio.create_task(self._run_group(group), name=f"job-{lead.id}")
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

    def _claimable(self) -> tuple[frozenset[int], dict[int, int]]:
        """The lanes to skip (full here) and, for each lane running here, how many more of its jobs this
        claim may take (its cap less what runs). Claiming more would overfill the lane and every job
        over its cap would go straight back to the queue, a transaction each, for nothing. A lane not
        running here yet is limited only by the pool's free slots."""
        full: set[int] = set()
        room: dict[int, int] = {}
        for integration_id, running in self._lanes.items():
            left = self.lane_cap(integration_id) - running
            if left <= 0:
                full.add(integration_id)
            else:
                room[integration_id] = left
        return frozenset(full), room

    async def stop(self, grace: float = 10.0) -> None:
        """Stop claiming; give running jobs `grace` seconds, then cancel them (their leases expire)."""
        self._stopping = True
        self._wake.set()
        if self._running:
            _done, pending = await asyncio.wait(self._running, timeout=grace)
            for task in pending:
                task.cancel()

    async def _grouped(self, jobs: list[Job]) -> list[list[Job]]:
        """The claimed jobs as units of work: one job each, except that jobs of a batch flow (Zoho takes
        100 records a call) are grouped per integration and flow and topped up to a full batch from
        the queue, so a backlog goes out in full batches."""
        flows = registry()
        units: list[list[Job]] = []
        batches: dict[tuple[int, str], list[Job]] = {}
        for job in jobs:
            if _batched(job):
                batches.setdefault((job.integration_id, job.flow), []).append(job)
            else:
                units.append([job])
        for (integration_id, name), group in batches.items():
            size = flows[name].batch_size
            chunks = [group[i : i + size] for i in range(0, len(group), size)]
            last = chunks[-1]
            if len(last) < size and self._lanes.get(integration_id, 0) + len(chunks) <= self.lane_cap(
                integration_id
            ):
                last += await to_thread.run_sync(
                    partial(
                        queue.claim_batch,
                        self.services.engine,
                        worker=self.name,
                        integration_id=integration_id,
                        flow=name,
                        limit=size - len(last),
                        lease=self.lease,
                    )
                )
            units.extend(chunks)
        return units

    async def _run_group(self, jobs: list[Job]) -> None:
        keeper = asyncio.create_task(self._keep_leases(jobs))
        try:
            if _batched(jobs[0]):
                await execute_batch(self.services, jobs, worker=self.name)
            else:
                await execute(self.services, jobs[0], worker=self.name)
            self.completed += len(jobs)
        except Exception:
            log.exception("jobs %s crashed outside their own error handling", [job.id for job in jobs])
        finally:
            keeper.cancel()
            self._lanes[jobs[0].integration_id] -= 1
            self._wake.set()  # a lane slot freed: jobs skipped for a full lane may now be claimed

    async def _keep_leases(self, jobs: list[Job]) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            lost = await to_thread.run_sync(
                partial(queue.extend_leases, self.services.engine, jobs, worker=self.name, lease=self.lease)
            )
            for job in lost:
                log.warning("job %s: lease lost to another runner", job.id)
            jobs = [job for job in jobs if job not in lost]
            if not jobs:
                return


def _batched(job: Job) -> bool:
    """Whether `job` runs in a batch: a sync of a flow that writes many records a call."""
    flow = registry().get(job.flow)
    return flow is not None and flow.batch_size > 1 and job.kind != JobKind.BACKFILL
