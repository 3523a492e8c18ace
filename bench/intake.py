"""Durable webhook intake: accepts per second and p50/p99 latency, ours against a bare insert.
`python -m bench.intake [--quick] [--senders N] [--no-postgres] [--profile]`.

For each database (a SQLite file; PostgreSQL when it answers on 127.0.0.1:5432), three endpoints are
loaded, served by two child processes on loopback, so the load generator's CPU is not theirs:

* ours, NetSuite: POST /webhooks/netsuite/<key> with the integration's shared secret: the runner checks
  it, validates the event and commits the event and its job in one transaction before answering 202;
* ours, Zuora: POST /webhooks/zuora/<key>, each callout signed (HMAC-SHA256) with the integration's
  secret and carrying its own Zuora-Notification-Id, so each is a new delivery (checked for a duplicate,
  then stored with its job);
* bare: a Starlette handler that only inserts the raw body into a table of the same database
  (bench/serve.py), the floor any durable intake pays: our overhead is the ratio to it.

The runner is `python -m runner` with its worker pool off (bench/serve.py), so it does intake only. The
load generator is an httpx2 client in this process with `--senders` senders, each sending its next
request when the previous one is answered (a closed loop). After a warm-up, the three endpoints take
turns, one window each per round, so whatever else the machine runs weighs on all three alike; the
answers received inside the windows count (each window's first 0.2 s is not measured). Afterwards the
database must hold every event that was acknowledged. Target: ours at least half the bare handler's
rate.

Prints a table and writes bench/results/intake.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AsyncExitStack, ExitStack, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
import sqlalchemy as sa
from cryptography.fernet import Fernet

from bench.common import (
    HOST,
    RESULTS,
    Target,
    child,
    child_env,
    cpu_seconds,
    free_port,
    note,
    own_cpu_seconds,
    percentile,
    postgres_database,
    print_table,
    print_targets,
    sqlite_database,
    warn_if_busy,
    write_results,
)
from bench.profile import print_profile, recording
from bench.serve import BARE_TABLE
from connectors.sandbox import SandboxCredentials
from connectors.zuora.callouts import sign
from demo.wiring import INTEGRATION_KEY, wire
from storage import crud, migrate
from storage.crypto import Vault
from storage.db import make_engine

SENDERS = 32  # requests in flight at once
WARMUP = 1.0  # seconds of load on each endpoint before the rounds (connections, caches)
WINDOW = 1.0  # seconds one endpoint is measured per round
SETTLE = 0.2  # seconds of each window's start not counted (the previous endpoint's tail drains)
ROUNDS = 5  # windows per endpoint
QUICK_ROUNDS = 2
TARGET_RATIO = 0.5  # ours ÷ bare, at least
NOWHERE = "http://127.0.0.1:9"  # the wired connections' URLs: with no workers, nothing calls them

RequestFor = Callable[[int], tuple[str, bytes, dict[str, str]]]  # n → (path, body, headers)


@dataclass
class Endpoint:
    """One endpoint under load and the process that serves it."""

    name: str
    title: str
    url: str
    pid: int
    request_for: RequestFor


@dataclass
class Load:
    """What the measured windows of one endpoint saw, summed."""

    database: str
    endpoint: str
    senders: int
    seconds: float = 0.0  # measured, all windows together
    accepted: int = 0  # 2xx answers received inside a window
    refused: dict[str, int] = field(default_factory=dict)  # other answers in the windows, by status
    server_cpu_seconds: float = 0.0  # the serving process's CPU over the windows
    loadgen_cpu_seconds: float = 0.0  # this process's (the load generator's) over the windows
    acknowledged: int = 0  # 2xx answers over the whole run, warm-up and tails included
    stored: int = 0  # rows the database holds for this endpoint afterwards
    p50_ms: float = float("nan")
    p99_ms: float = float("nan")
    ratio_to_bare: float | None = None
    cpu_ratio_to_bare: float | None = None  # bare's CPU per accept ÷ ours: the ratio were both CPU-bound
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def per_second(self) -> float:
        return self.accepted / self.seconds if self.seconds else float("nan")

    @property
    def server_cores(self) -> float:
        """CPU seconds per wall second: 1.0 is one core busy throughout."""
        return self.server_cpu_seconds / self.seconds if self.seconds else float("nan")

    @property
    def loadgen_cores(self) -> float:
        return self.loadgen_cpu_seconds / self.seconds if self.seconds else float("nan")

    @property
    def cpu_ms_per_accept(self) -> float:
        """The server's CPU milliseconds per accepted request: its cost, whatever else the machine runs."""
        return self.server_cpu_seconds * 1000 / self.accepted if self.accepted else float("nan")

    def summary(self) -> dict[str, Any]:
        kept = {k: v for k, v in asdict(self).items() if k != "latencies_ms"}
        return {
            **kept,
            "per_second": self.per_second,
            "server_cores": self.server_cores,
            "loadgen_cores": self.loadgen_cores,
            "server_cpu_ms_per_accept": self.cpu_ms_per_accept,
        }


async def window(
    client: httpx2.AsyncClient, endpoint: Endpoint, load: Load, numbers: Any, *, seconds: float, settle: float
) -> None:
    """Load `endpoint` with `load.senders` closed-loop senders for `seconds`; what happens after the
    first `settle` seconds is added to `load` (warm-up: `settle` = `seconds`)."""
    start = time.perf_counter()
    counted_from, end = start + settle, start + seconds
    latencies: list[float] = []
    refused: Counter[str] = Counter()

    async def sender() -> None:
        while time.perf_counter() < end:
            path, body, headers = endpoint.request_for(next(numbers))
            began = time.perf_counter()
            try:
                response = await client.post(path, content=body, headers=headers)
                outcome = str(response.status_code)
            except httpx2.HTTPError as exc:
                outcome = type(exc).__name__
            done = time.perf_counter()
            ok = outcome.startswith("2")
            load.acknowledged += ok
            if counted_from <= done <= end:  # throughput: answers per second of the window
                if ok:
                    latencies.append((done - began) * 1000)
                else:
                    refused[outcome] += 1

    async def cpu_meter() -> tuple[float, float, float]:
        await asyncio.sleep(max(0.0, counted_from - time.perf_counter()))
        server, own, wall = cpu_seconds(endpoint.pid), own_cpu_seconds(), time.perf_counter()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        return cpu_seconds(endpoint.pid) - server, own_cpu_seconds() - own, time.perf_counter() - wall

    meter = asyncio.create_task(cpu_meter())
    await asyncio.gather(*(sender() for _ in range(load.senders)))
    server_cpu, own_cpu, elapsed = await meter
    if settle >= seconds:
        return
    load.seconds += elapsed
    load.accepted += len(latencies)
    load.latencies_ms += latencies
    load.server_cpu_seconds += server_cpu
    load.loadgen_cpu_seconds += own_cpu
    for outcome, n in refused.items():
        load.refused[outcome] = load.refused.get(outcome, 0) + n


async def rounds(endpoints: list[Endpoint], loads: dict[str, Load], args: argparse.Namespace) -> None:
    """Warm each endpoint up, then measure them in turn, `args.rounds` windows each."""
    limits = httpx2.Limits(max_connections=args.senders, max_keepalive_connections=args.senders)
    numbers = iter(range(1, 1 << 62))
    async with AsyncExitStack() as stack:
        clients = {
            e.name: await stack.enter_async_context(
                httpx2.AsyncClient(base_url=e.url, limits=limits, timeout=30.0)
            )
            for e in endpoints
        }
        for e in endpoints:
            await window(clients[e.name], e, loads[e.name], numbers, seconds=args.warmup, settle=args.warmup)
        for _ in range(args.rounds):
            for e in endpoints:
                await window(
                    clients[e.name], e, loads[e.name], numbers, seconds=WINDOW + SETTLE, settle=SETTLE
                )
    for load in loads.values():
        load.p50_ms = percentile(load.latencies_ms, 0.50)
        load.p99_ms = percentile(load.latencies_ms, 0.99)


def netsuite_events(key: str, secret: str) -> RequestFor:
    """What our User Event script sends on each customer save."""
    headers = {"Content-Type": "application/json", "X-Webhook-Secret": secret}

    def request(n: int) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps({"recordType": "customer", "id": str(1000 + n), "eventType": "edit"}).encode()
        return f"/webhooks/netsuite/{key}", body, headers

    return request


def zuora_callouts(key: str, secret: str) -> RequestFor:
    """Signed "Subscription Created" callouts as our callout template has Zuora send them, each a new
    notification (its own Zuora-Notification-Id)."""

    def request(n: int) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps(
            {
                "event": "Subscription Created",
                "eventCategory": 1210,
                "notification": "Subscription Created",
                "tenantId": "19",
                "accountId": f"8ad09be48db5aa{n:018d}",
                "accountNumber": f"A{n:08d}",
                "subscriptionId": uuid.uuid4().hex,
                "subscriptionNumber": f"A-S{n:08d}",
                "version": 1,
                "subscriptionStatus": "Active",
                "effectiveDate": "2026-11-01",
                "amendmentType": None,
                "orderNumber": None,
                "orderActionType": None,
            }
        ).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Zuora-Signature": sign(secret, body),
            "Zuora-Notification-Id": uuid.uuid4().hex,
            "Zuora-Request-Id": uuid.uuid4().hex,
        }
        return f"/webhooks/zuora/{key}", body, headers

    return request


def bare_events() -> RequestFor:
    headers = {"Content-Type": "application/json"}

    def request(n: int) -> tuple[str, bytes, dict[str, str]]:
        body = json.dumps({"recordType": "customer", "id": str(1000 + n), "eventType": "edit"}).encode()
        return "/events", body, headers

    return request


def dummy_credentials() -> SandboxCredentials:
    """Connections for the wiring; with the worker pool off, nothing ever calls these URLs."""
    return SandboxCredentials(
        netsuite_url=NOWHERE, netsuite_account_id="1234567_SB1", netsuite_client_id="bench",
        netsuite_certificate_id="bench", netsuite_private_key="unused", zuora_url=NOWHERE,
        zuora_client_id="bench", zuora_client_secret="unused", zoho_url=NOWHERE,
        zoho_client_id="1000.BENCH", zoho_client_secret="unused", zoho_refresh_token="1000.unused",
    )  # fmt: skip


def bench_database(database: str, url: str, workdir: Path, args: argparse.Namespace) -> list[Load]:
    """The three endpoints on one database."""
    engine = make_engine(url)
    migrate.upgrade(engine)
    key = Fernet.generate_key()
    vault = Vault([key])
    wire(engine, vault, dummy_credentials())
    integration = crud.get_integration_by_key(engine, key=INTEGRATION_KEY)
    assert integration is not None
    secrets = crud.integration_secrets(vault, integration)
    slug = database.lower()
    ports = {"runner": free_port(), "bare": free_port()}

    def env(server: str) -> dict[str, str]:
        return child_env(
            DATABASE_URL=url,
            ML_CONNECTOR_KEYS=key.decode(),
            ML_CONNECTOR_DATA_DIR=str(workdir / "data"),
            ML_CONNECTOR_RUNNER_HOST=HOST,
            ML_CONNECTOR_RUNNER_PORT=str(ports[server]),
        )

    with ExitStack() as stack:
        servers = {
            name: stack.enter_context(
                child(f"{name}-{slug}", f"bench.serve {name}", env(name), workdir, ports[name])
            ).wait_ready()
            for name in ("runner", "bare")
        }
        runner, bare = servers["runner"], servers["bare"]
        endpoints = [
            Endpoint("netsuite", "ours: NetSuite event", runner.url, runner.pid,
                     netsuite_events(INTEGRATION_KEY, secrets["netsuite_secret"])),
            Endpoint("zuora", "ours: Zuora callout (signed)", runner.url, runner.pid,
                     zuora_callouts(INTEGRATION_KEY, secrets["zuora_hmac_secret"])),
            Endpoint("bare", "bare insert", bare.url, bare.pid, bare_events()),
        ]  # fmt: skip
        loads = {e.name: Load(database, e.title, args.senders) for e in endpoints}
        profiles = {
            name: stack.enter_context(
                recording(process.pid, RESULTS / f"profile-intake-{slug}-{name}.txt")
                if args.profile
                else nullcontext([])
            )
            for name, process in servers.items()
        }
        note(f"{database}: {args.rounds} rounds of {WINDOW:g}s per endpoint after {args.warmup:g}s warm-up")
        asyncio.run(rounds(endpoints, loads, args))
    for name, found in profiles.items():
        if found:
            print_profile(f"{database}, {name} process over all its windows", found[0])
    with engine.connect() as connection:
        stored = dict(
            connection.execute(sa.text("SELECT system, COUNT(*) FROM inboundevent GROUP BY system")).all()
        )
        stored["bare"] = connection.execute(sa.text(f"SELECT COUNT(*) FROM {BARE_TABLE}")).scalar_one()
    engine.dispose()
    bare = loads["bare"]
    for name, load in loads.items():
        load.stored = int(stored.get(name, 0))
        if load.stored < load.acknowledged:
            raise SystemExit(
                f"{database} {load.endpoint}: {load.acknowledged} acknowledged, {load.stored} stored"
            )
        load.ratio_to_bare = load.per_second / bare.per_second if bare.per_second else None
        load.cpu_ratio_to_bare = bare.cpu_ms_per_accept / load.cpu_ms_per_accept if load.accepted else None
    return list(loads.values())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.intake", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds instead of {ROUNDS}")
    parser.add_argument("--senders", type=int, default=SENDERS, help="requests in flight at once")
    parser.add_argument("--warmup", type=float, default=WARMUP, help="seconds per endpoint before the rounds")
    parser.add_argument("--rounds", type=int, default=None, help=f"windows of {WINDOW:g}s per endpoint")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--profile", action="store_true", help="sample both servers with py-spy meanwhile")
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else ROUNDS
    loads: list[Load] = []
    with tempfile.TemporaryDirectory(prefix="bench-intake-") as tmp:
        workdir = Path(tmp)
        with sqlite_database(workdir) as url:
            loads += bench_database("SQLite", url, workdir, args)
        if not args.no_postgres:
            with postgres_database() as pg_url:
                if pg_url is not None:
                    loads += bench_database("PostgreSQL", pg_url, workdir, args)
    rows = [
        (
            f"{load.database}, {load.endpoint}",
            load.per_second,
            load.p50_ms,
            load.p99_ms,
            f"{load.server_cores:.2f}",
            f"{load.loadgen_cores:.2f}",
            load.cpu_ms_per_accept,
            f"{load.ratio_to_bare:.2f}" if load.ratio_to_bare is not None else "-",
            f"{load.cpu_ratio_to_bare:.2f}" if load.cpu_ratio_to_bare is not None else "-",
            sum(load.refused.values()),
        )
        for load in loads
    ]
    header = (
        "endpoint", "accepts/s", "p50 ms", "p99 ms", "server cores", "loadgen cores", "server CPU ms/accept",
        "rate ÷ bare", "bare CPU ÷ ours", "errors",
    )  # fmt: skip
    print_table(
        f"webhook intake: {args.senders} closed-loop senders, {args.rounds} windows of {WINDOW:g}s per endpoint "
        "(cores: CPU seconds per wall second, 1.00 = one core busy throughout)",
        header,
        rows,
    )
    print(
        "rate ÷ bare is the target's measure; bare CPU ÷ ours is the ratio were each server CPU-bound on a core "
        "of its own (when the bare server's cores stay well below 1.00, the load generator or the machine, "
        "not the bare handler, set its rate, and rate ÷ bare flatters us)"
    )
    if args.profile:
        print("note: py-spy sampled the servers meanwhile and took CPU of its own: these rates understate")
    warn_if_busy()
    targets = [
        Target(
            f"intake rate, {load.database}, {load.endpoint.removeprefix('ours: ')}",
            f"≥ {TARGET_RATIO:.0%} of bare",
            f"{load.ratio_to_bare:.0%} ({load.per_second:,.0f}/s)",
            load.ratio_to_bare >= TARGET_RATIO,
        )
        for load in loads
        if load.endpoint.startswith("ours") and load.ratio_to_bare is not None
    ]
    print_targets(targets)
    write_results(
        "intake",
        {
            "what": "webhook accepts per second and latency, ours vs a bare insert handler, per database",
            "senders": args.senders,
            "warmup_seconds": args.warmup,
            "window_seconds": WINDOW,
            "rounds": args.rounds,
            "loads": [load.summary() for load in loads],
        },
        targets,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
