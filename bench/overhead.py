"""Overhead: the runner's CPU per synced record with zero-latency emulators, and its memory through a
large backfill to Zoho. `python -m bench.overhead [--quick] [--records N] [--backfill N] [--profile]`.

CPU: the emulators answer at once (Zuora's per-minute rate limit lifted, the concurrency limits kept),
so the runner (`python -m runner`, a child process, SQLite) is the bottleneck; it backfills `--records`
customers through NetSuite → Zuora, then through NetSuite → Zoho, and its CPU seconds over each
backfill (/proc/<pid>/stat) divided by the records synced is its cost per record: fetching, mapping,
writing, the job queue and the audit trail included. Target: at most 1 ms a record.

Memory: a fresh runner backfills `--backfill` customers to Zoho while its resident memory (VmRSS) is
sampled twice a second; VmHWM is its peak. Target: flat (over the second half of the records, RSS
peaks within 10 % of the first half's peak; the slope is printed too) and under 300 MiB. The issue asks for 100,000 records; that alone takes
minutes on a 2-core machine, so the default run does fewer and `--backfill 100000` does the full one.

Beside them, in the same run, a bare httpx2 client (as shipped: its default transport, uvloop, ten
calls in flight) in a child process of its own makes `--bare-calls` GETs to the same zero-latency
emulator; its CPU per call is the yardstick the runner's figure is divided by. The machine's speed
moves the absolute figures (the same commit measured 2.3–2.8 times slower on one day than another),
so "runner CPU per record ÷ one bare HTTP call" is the figure to compare across runs.

`--profile` samples the runner with py-spy during the CPU runs and prints where its CPU goes.
Prints tables and writes bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from bench.common import (
    REPO,
    RESULTS,
    MemorySampler,
    Target,
    note,
    print_table,
    print_targets,
    warn_if_busy,
    write_results,
)
from bench.e2e import CONCURRENCY
from bench.profile import print_profile, recording
from bench.stack import LIFTED_RATE_LIMIT, BackfillRun, running_stack

RECORDS = 1_000  # customers per flow for the CPU measurement
QUICK_RECORDS = 300
BACKFILL = 10_000  # customers in the memory run (the 100,000: --backfill 100000)
QUICK_BACKFILL = 3_000
TARGET_CPU_MS = 1.0  # runner CPU per record, at most
TARGET_MEMORY_MIB = 300.0  # peak resident memory, below
FLAT = 0.10  # the second half's peak may exceed the first half's by this share at most
SAMPLE_EVERY = 0.5  # seconds between memory samples
TIMEOUT_RATE = 10.0  # records/s below which a run is given up (a broken setup, not a slow machine)
FLOWS = (("customer_account", "NetSuite → Zuora"), ("customer_zoho", "NetSuite → Zoho"))
BARE_CALLS = 3_000  # GETs the bare client makes for the yardstick
# The yardstick: a bare httpx2 client, its CPU per call. A small authenticated-path GET that the emulator
# refuses at once (401, a short JSON body): the cheapest real round trip, no work on our side.
_BARE_CLIENT = """
import asyncio, sys, time
import httpx2, uvloop

async def main(url: str, count: int) -> None:
    limits = httpx2.Limits(max_connections=10, max_keepalive_connections=10)
    async with httpx2.AsyncClient(limits=limits) as client:
        gate = asyncio.Semaphore(10)

        async def one() -> None:
            async with gate:
                (await client.get(url)).json()

        await asyncio.gather(*(one() for _ in range(200)))  # the pool filled, the code paths warm
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(count)))
        print(1000 * (time.process_time() - started) / count)

uvloop.run(main(sys.argv[1], int(sys.argv[2])))
"""


def bare_call_ms(workdir: Path, calls: int) -> float:
    """The yardstick: a bare httpx2 client's CPU per GET against a zero-latency emulator, in a child."""
    with running_stack(workdir, zuora_rate_limit=LIFTED_RATE_LIMIT) as stack:
        url = f"{stack.sandbox.credentials.zuora_url}/v1/accounts/yardstick"
        note(f"bare httpx2 client: {calls:,} GETs to the zero-latency Zuora emulator")
        done = subprocess.run(
            [sys.executable, "-c", _BARE_CLIENT, url, str(calls)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=True,
        )
    return float(done.stdout.strip().splitlines()[-1])


def cpu_runs(workdir: Path, records: int, profile: bool) -> list[tuple[str, BackfillRun, dict[str, Any]]]:
    """Each flow on a stack and runner of its own, so a run that overran cannot spill into the next."""
    runs = []
    for flow, title in FLOWS:
        with running_stack(workdir, zuora_rate_limit=LIFTED_RATE_LIMIT) as stack:
            stack.set_faults(0.0, CONCURRENCY)
            stack.seed_customers(records)
            integration = (
                stack.wiring.zoho_integration_id if flow == "customer_zoho" else stack.wiring.integration_id
            )
            with stack.runner(f"runner-{flow}") as runner:
                note(f"{title}: backfilling {records:,} customers with zero-latency emulators")
                profiling = recording(runner.pid, RESULTS / f"profile-overhead-{flow}.txt")
                with profiling if profile else nullcontext([]) as found:
                    run = stack.backfill(
                        runner, flow=flow, integration_id=integration, timeout=records / TIMEOUT_RATE + 60
                    )
        summary: dict[str, Any] = {}
        if found:
            print_profile(f"runner CPU during {title}", found[0])
            summary = found[0].as_dict()
        runs.append((title, run, summary))
    return runs


def memory_run(workdir: Path, records: int) -> dict[str, Any]:
    with running_stack(workdir, zuora_rate_limit=LIFTED_RATE_LIMIT) as stack:
        stack.set_faults(0.0, CONCURRENCY)
        started = time.perf_counter()
        stack.seed_customers(records)
        note(f"seeded {records:,} NetSuite customers in {time.perf_counter() - started:.1f}s")
        with stack.runner("runner-memory") as runner:
            idle = runner.memory_mib()["VmRSS"]
            note(f"NetSuite → Zoho: backfilling {records:,} customers, sampling the runner's memory")
            with MemorySampler(runner.pid, SAMPLE_EVERY, progress=lambda: stack.progress) as sampler:
                run = stack.backfill(
                    runner,
                    flow="customer_zoho",
                    integration_id=stack.wiring.zoho_integration_id,
                    timeout=records / TIMEOUT_RATE + 60,
                )
            peak = runner.memory_mib()["VmHWM"]
    samples = sampler.samples
    # Halves by records done, not by time: the first half takes in the warm-up (pools, caches filling).
    first = [rss for _, done, rss in samples if done < records / 2] or [float("nan")]
    second = [(done, rss) for _, done, rss in samples if done >= records / 2] or [(0, float("nan"))]
    return {
        "run": run,
        "idle_mib": idle,
        "peak_mib": peak,
        "first_half_max_mib": max(first),
        "second_half_min_mib": min(rss for _, rss in second),
        "second_half_max_mib": max(rss for _, rss in second),
        "second_half_mib_per_10k_records": growth_per_10k(second),
        "flat": max(rss for _, rss in second) <= max(first) * (1 + FLAT),
        "samples": [(round(t, 1), done, round(rss, 1)) for t, done, rss in samples],
    }


def growth_per_10k(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of RSS (MiB) over records done, per 10,000 records."""
    try:
        fit = statistics.linear_regression([float(done) for done, _ in points], [rss for _, rss in points])
    except statistics.StatisticsError:  # fewer than two samples, or no records done between them
        return 0.0
    return 10_000 * fit.slope


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records")
    parser.add_argument("--records", type=int, default=None, help="customers per flow for the CPU runs")
    parser.add_argument("--backfill", type=int, default=None, help="customers in the memory run")
    parser.add_argument("--profile", action="store_true", help="sample the runner with py-spy (CPU runs)")
    parser.add_argument(
        "--bare-calls", type=int, default=BARE_CALLS, help="GETs for the bare-client yardstick"
    )
    args = parser.parse_args(argv)
    records = args.records or (QUICK_RECORDS if args.quick else RECORDS)
    backfill = args.backfill or (QUICK_BACKFILL if args.quick else BACKFILL)
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        bare = bare_call_ms(Path(tmp), args.bare_calls)
        runs = cpu_runs(Path(tmp), records, args.profile)
        memory = memory_run(Path(tmp), backfill)
    big: BackfillRun = memory["run"]
    every = [*((title, run) for title, run, _ in runs), ("NetSuite → Zoho (memory run)", big)]
    rows = [
        (
            title,
            run.succeeded,
            run.seconds,
            run.overall_per_second,
            run.runner_cpu_seconds,
            run.cpu_ms_per_record,
            run.cpu_ms_per_record / bare,
        )
        for title, run in every
    ]
    print_table(
        "runner CPU with zero-latency emulators (runner in its own process; SQLite)",
        ("flow", "records", "seconds", "records/s", "runner CPU s", "runner CPU ms/record", "÷ bare call"),
        rows,
    )
    print(f"\nyardstick: a bare httpx2 GET costs its client {bare:.3f} ms of CPU on this machine, this run")
    samples = memory["samples"]
    step = max(1, len(samples) // 12)
    shown = [*samples[::step], *([samples[-1]] if samples and samples[-1] is not samples[::step][-1] else [])]
    print_table(
        f"runner memory while backfilling {big.records:,} customers to Zoho "
        f"(idle before: {memory['idle_mib']:.0f} MiB; every {step * SAMPLE_EVERY:g} s shown)",
        ("seconds", "records done", "RSS MiB"),
        shown,
    )
    print(
        f"\nRSS over the first half of the records: peak {memory['first_half_max_mib']:.0f} MiB; over the "
        f"second half: {memory['second_half_min_mib']:.0f}–{memory['second_half_max_mib']:.0f} MiB, "
        f"{memory['second_half_mib_per_10k_records']:+.1f} MiB per 10,000 records; "
        f"VmHWM (the peak) {memory['peak_mib']:.0f} MiB"
    )
    warn_if_busy()
    targets = [
        Target(
            f"runner CPU per record, {title}",
            f"≤ {TARGET_CPU_MS:g} ms",
            f"{run.cpu_ms_per_record:.2f} ms",
            run.finished and run.cpu_ms_per_record <= TARGET_CPU_MS,
        )
        for title, run, _ in runs
    ]
    targets.append(
        Target(
            f"runner memory, {big.records:,}-record Zoho backfill",
            f"flat, < {TARGET_MEMORY_MIB:.0f} MiB",
            f"{'flat' if memory['flat'] else 'growing'}, peak {memory['peak_mib']:.0f} MiB"
            + ("" if big.finished else ", unfinished"),
            big.finished and memory["flat"] and memory["peak_mib"] < TARGET_MEMORY_MIB,
        )
    )
    print_targets(targets)
    write_results(
        "overhead",
        {
            "what": "runner CPU per synced record (zero-latency emulators) and memory through a Zoho backfill",
            "concurrency": CONCURRENCY,
            "bare_httpx2_call_cpu_ms": bare,
            "cpu_runs": [{"title": t, **run.as_dict(), "profile": p} for t, run, p in runs],
            "memory": {**memory, "run": big.as_dict()},
        },
        targets,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
