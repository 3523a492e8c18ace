"""What every benchmark shares: tables, the results file, throwaway databases, child processes and
their CPU and memory, uvicorn servers in this process, and small statistics.

A child process's CPU and memory come from Linux /proc (`utime + stime` in /proc/<pid>/stat, `VmRSS` and
`VmHWM` in /proc/<pid>/status), so the load generator and the emulators, which run in the benchmark's
own process, never count as the runner's.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx2
import sqlalchemy as sa
import uvicorn

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
HOST = "127.0.0.1"  # every server and request of the benchmarks stays on loopback
POSTGRES_ADMIN_URL = os.environ.get(
    "ML_CONNECTOR_BENCH_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
STARTUP_DEADLINE = 60.0  # seconds a child server gets to answer its health check
STOP_GRACE = 15.0  # seconds a child gets to exit after SIGTERM before it is killed
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")  # /proc/<pid>/stat counts CPU time in these per second

T = TypeVar("T")


# ----------------------------------------------------------------------------------------- output


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """An aligned text table: the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: list[str]) -> str:
        first = row[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])

    print(f"\n{title}")
    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))
    sys.stdout.flush()


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def note(text: str) -> None:
    """A progress line on stderr, so stdout holds the tables only."""
    print(f"  {text}", file=sys.stderr, flush=True)


@dataclass
class Target:
    """One target of the issue, what was measured against it, and whether it holds."""

    name: str
    wanted: str
    measured: str
    holds: bool


def print_targets(targets: Sequence[Target]) -> None:
    rows = [(t.name, t.wanted, t.measured, "yes" if t.holds else "NO") for t in targets]
    print_table("targets", ("target", "wanted", "measured", "holds"), rows)


def load_average() -> float:
    """Runnable processes averaged over the last minute: above the CPU count, others compete with us."""
    return os.getloadavg()[0]


def warn_if_busy() -> None:
    """Say so when the machine was busy with other work: rates then understate, CPU per item holds."""
    load, cpus = load_average(), os.cpu_count() or 1
    if load > cpus:
        print(
            f"note: the machine is busy (1-minute load average {load:.1f} on {cpus} CPUs): other processes "
            "compete for the cores, so rates and latencies understate; CPU per item is the steadier figure",
            flush=True,
        )


def machine_info(postgres_url: str | None = POSTGRES_ADMIN_URL) -> dict[str, Any]:
    """CPU count, Python, SQLite and PostgreSQL versions, and when: what a reader needs to compare runs."""
    return {
        "cpus": os.cpu_count(),
        "load_average_1m": round(load_average(), 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version(postgres_url) if postgres_url else None,
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_results(name: str, results: dict[str, Any], targets: Sequence[Target] = ()) -> Path:
    """Write bench/results/<name>.json with the machine info and the targets; returns the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    report = {
        "benchmark": name,
        "machine": machine_info(),
        "targets": [t.__dict__ for t in targets],
        **results,
    }
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False, default=str) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}", flush=True)
    return path


# -------------------------------------------------------------------------------------- databases


def postgres_version(url: str = POSTGRES_ADMIN_URL) -> str | None:
    """The server's version, or None when nothing answers at `url`."""
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as connection:
            return str(connection.execute(sa.text("SHOW server_version")).scalar())
    except Exception:  # unreachable, refused, no such role: all mean "no PostgreSQL here"
        return None
    finally:
        engine.dispose()


@contextmanager
def sqlite_database(directory: Path, name: str = "bench.db") -> Iterator[str]:
    """A SQLite file under `directory`, removed with its WAL files afterwards."""
    path = directory / name
    try:
        yield f"sqlite:///{path}"
    finally:
        for suffix in ("", "-wal", "-shm", ".migrate-lock"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A throwaway PostgreSQL database (dropped afterwards), or None with a printed note when the
    server does not answer at ML_CONNECTOR_BENCH_POSTGRES."""
    if postgres_version() is None:
        print(f"\nPostgreSQL does not answer at {POSTGRES_ADMIN_URL}: its rows are skipped", flush=True)
        yield None
        return
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"mlc_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# ------------------------------------------------------------------------------- child processes


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process `pid` has used so far, all its threads together."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def own_cpu_seconds() -> float:
    """User + system CPU seconds of this process (the load generator and the emulators)."""
    times = os.times()
    return times.user + times.system


def memory_mib(pid: int) -> dict[str, float]:
    """Resident memory now (VmRSS) and its peak so far (VmHWM) of process `pid`, in MiB."""
    values: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            values[name] = int(rest.split()[0]) / 1024  # the file says kB
    return values


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def child_env(**settings: str) -> dict[str, str]:
    """This process's environment without any ML_CONNECTOR_* or DATABASE_URL of the developer's own,
    plus `settings` (names as given), so a child runs on the benchmark's database only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ML_CONNECTOR_") and k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1", **settings})
    return env


@dataclass
class Child:
    """A server child process with its log file; `stop()` ends it (SIGTERM, then SIGKILL)."""

    name: str
    url: str
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def memory_mib(self) -> dict[str, float]:
        return memory_mib(self.pid)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def wait_ready(self, path: str = "/healthz") -> Child:
        """Wait until `path` answers below 500; raises with the log's tail if the child exits first."""

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                return httpx2.get(f"{self.url}{path}", timeout=2.0).status_code < 500
            except httpx2.TransportError:
                return False

        wait_until(ready, timeout=STARTUP_DEADLINE, interval=0.1, what=f"{self.name} at {self.url}{path}")
        return self

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(STOP_GRACE)


# `python -c LAUNCH <module> <args…>` runs `python -m <module> <args…>`, but first asks Linux to send the
# child SIGTERM when the benchmark process dies (PR_SET_PDEATHSIG), so no server outlives a benchmark
# that was killed.
LAUNCH = (
    "import ctypes, os, runpy, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "
    "os.getppid() == 1 and sys.exit('the benchmark process is gone'); "
    "sys.argv = sys.argv[1:]; "
    "runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)"
)


@contextmanager
def child(name: str, module: str, env: dict[str, str], workdir: Path, port: int) -> Iterator[Child]:
    """Start `python -m <module>` (a string, arguments after the module name) in `workdir`, its output in
    <workdir>/<name>.log, and stop it afterwards (and when this process dies).

    The working directory is the benchmark's own, so no `.env` of a developer's checkout leaks in.
    """
    log_path = workdir / f"{name}.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *module.split()],
            cwd=workdir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    started = Child(name, f"http://{HOST}:{port}", log_path, process)
    try:
        yield started
    finally:
        started.stop()


@dataclass
class MemorySampler:
    """Samples a process's resident memory every `interval` seconds in a thread, with a label from
    `progress` (e.g. records done) beside each sample."""

    pid: int
    interval: float = 0.5  # seconds
    progress: Callable[[], int] = lambda: 0
    samples: list[tuple[float, int, float]] = field(default_factory=list)  # (seconds, progress, RSS MiB)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> MemorySampler:
        started = time.monotonic()

        def run() -> None:
            while not self._stop.is_set():
                with contextlib.suppress(OSError):  # the process may be gone at the very end
                    rss = memory_mib(self.pid)["VmRSS"]
                    self.samples.append((time.monotonic() - started, self.progress(), rss))
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="memory-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)


# ---------------------------------------------------------------------- servers in this process


@contextmanager
def serve(app: Any, sock: socket.socket | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a daemon thread of this process; yields its base URL."""
    if sock is None:
        # IPPROTO_TCP (not 0) lets asyncio set TCP_NODELAY; without it keep-alive answers wait on Nagle.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, 0))
    host, port = sock.getsockname()[:2]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="auto", proxy_headers=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_until(lambda: server.started, timeout=STARTUP_DEADLINE, what=f"server on port {port}")
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(STOP_GRACE)
        sock.close()


# ------------------------------------------------------------------------------------ statistics


def wait_until(
    predicate: Callable[[], T], *, timeout: float, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll `predicate` until it returns something truthy; raise TimeoutError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def percentile(values: Sequence[float], share: float) -> float:
    """The `share` (0..1) percentile of `values` by the nearest-rank method; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered), max(1, math.ceil(share * len(ordered))))
    return ordered[rank - 1]
