"""`python -m bench [intake] [e2e] [overhead] [audit] [--quick]`: run the benchmarks, all of them when none
is named, each in a process of its own, then list every target and whether it holds.

    intake    durable webhook intake vs a bare insert, SQLite and PostgreSQL   bench/intake.py
    e2e       records/s NetSuite → Zuora and → Zoho against realistic limits   bench/e2e.py
    overhead  runner CPU per record and memory through a large backfill       bench/overhead.py
    audit     the audit page with 1,000,000 audit records                     bench/audit_page.py

`--quick` runs each smaller (about two minutes in all instead of about five on a 2-core machine).
Options a single benchmark takes are passed on to it: `python -m bench overhead --backfill 100000`.
Each one prints its tables and writes bench/results/<name>.json; a benchmark still running after
`--deadline` seconds is interrupted (its servers and databases are cleaned up).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from bench.common import REPO, RESULTS, print_table

DEADLINE = 900.0  # seconds one benchmark may run before it is interrupted
INTERRUPT_GRACE = 60.0  # seconds an interrupted benchmark gets to clean up before it is killed


@dataclass(frozen=True)
class Benchmark:
    module: str
    results: str  # bench/results/<results>.json
    quick: tuple[str, ...]  # its arguments under --quick


BENCHMARKS = {
    "intake": Benchmark("bench.intake", "intake", ("--quick",)),
    "e2e": Benchmark("bench.e2e", "e2e", ("--quick",)),
    "overhead": Benchmark("bench.overhead", "overhead", ("--quick",)),
    "audit": Benchmark("bench.audit_page", "audit_page", ("--rows", "200000", "--repeat", "2")),
}


def run(name: str, args: list[str], deadline: float) -> tuple[int, float]:
    """Run one benchmark to its end (or interrupt it at the deadline); its exit status and seconds."""
    benchmark = BENCHMARKS[name]
    print(f"\n=== {name}: python -m {benchmark.module} {' '.join(args)}".rstrip(), flush=True)
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", benchmark.module, *args], cwd=REPO)
    try:
        status = process.wait(deadline)
    except subprocess.TimeoutExpired:
        print(f"{name} still ran after {deadline:.0f}s: interrupted", flush=True)
        process.send_signal(signal.SIGINT)  # KeyboardInterrupt: its servers and databases are cleaned up
        try:
            process.wait(INTERRUPT_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        status = -1
    except KeyboardInterrupt:
        process.wait(INTERRUPT_GRACE)  # the child got the same Ctrl-C and cleans up
        raise
    return status, time.monotonic() - started


def summary_rows(name: str, since: float) -> list[tuple[str, str, str, str]]:
    """The targets a benchmark wrote to its results file during this run."""
    path = RESULTS / f"{BENCHMARKS[name].results}.json"
    if not path.exists() or path.stat().st_mtime < since:
        return [(f"{name}: no results written", "", "", "")]
    report = json.loads(path.read_text())
    rows = [
        (t["name"], t["wanted"], t["measured"], "yes" if t["holds"] else "NO")
        for t in report.get("targets", [])
    ]
    if name == "audit":  # bench/audit_page.py states no target: its time to first render, per database
        for result in report.get("results", []):
            render = result.get("render", {}).get("first render, new session", {})
            if render:
                rows.append(
                    (
                        f"audit page, {result['rows']:,} records, {result['database']}: first render",
                        "(no target)",
                        f"{render['median_ms']:,.0f} ms (median of {render['runs']})",
                        "-",
                    )
                )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Run the benchmarks.")
    parser.add_argument("names", nargs="*", metavar="name", help=f"{', '.join(BENCHMARKS)} (default: all)")
    parser.add_argument("--quick", action="store_true", help="a smaller run of each")
    parser.add_argument("--deadline", type=float, default=DEADLINE, help="seconds per benchmark at most")
    args, passed_on = parser.parse_known_args(argv)
    names = list(dict.fromkeys(args.names)) or list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)}; there are {', '.join(BENCHMARKS)}")
    if passed_on and len(names) != 1:
        parser.error(f"options for one benchmark ({' '.join(passed_on)}) need exactly one benchmark named")
    started = time.time()
    timings: list[tuple[str, int, float]] = []
    for name in names:
        extra = list(BENCHMARKS[name].quick) if args.quick else []
        status, seconds = run(name, extra + passed_on, args.deadline)
        timings.append((name, status, seconds))
    rows = [row for name in names for row in summary_rows(name, started)]
    print_table("=== every target", ("target", "wanted", "measured", "holds"), rows)
    print_table(
        "=== benchmarks run",
        ("benchmark", "exit status", "seconds"),
        [(name, status, seconds) for name, status, seconds in timings],
    )
    return 0 if all(status == 0 for _, status, _ in timings) else 1


if __name__ == "__main__":
    raise SystemExit(main())
