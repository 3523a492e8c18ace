"""End to end: records per second NetSuite → Zuora and NetSuite → Zoho against emulators with realistic
latency and concurrency limits, as a share of the ceiling. `python -m bench.e2e [--quick]`.

Every emulator answers each API call after 0.3 s and refuses (429) calls beyond its concurrency limit:
NetSuite 5, Zuora 40, Zoho 10 in flight (Zuora's per-minute request limit is lifted: the ceiling is the
issue's, from concurrency and latency).
The runner (`python -m runner`, a child process, default settings, SQLite) backfills every NetSuite
customer through one flow, then the other; a record counts when its audit record says it succeeded.

The ceiling is what the slowest system allows: for each system a record needs, concurrency ÷ latency ×
records per call, and the smallest wins (the output names each term). Records per second are counted
from the first record's success to the last's (bench/stack.py): the sustained rate. The table also
gives the start (from the backfill's first NetSuite call to the first success: counting the customers,
reading the first page of ids, the first record's round trips, a whole batch for Zoho) and the rate
over the whole span, start included, which a longer backfill brings closer to the sustained one.
Targets: the sustained rate at least 90 % of the ceiling, with under 1 % of the calls answered 429.

Prints a table and writes bench/results/e2e.json.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.common import Target, note, print_table, print_targets, warn_if_busy, write_results
from bench.stack import LIFTED_RATE_LIMIT, BackfillRun, Stack, running_stack
from runner.flows.customer_account import BATCH

LATENCY = 0.3  # seconds every emulator takes to answer an API call
CONCURRENCY = {"netsuite": 5, "zuora": 40, "zoho": 10}  # API calls each emulator takes at once
TARGET_SHARE = 0.90  # of the ceiling, at least
TARGET_429 = 0.01  # share of API calls answered 429, below
# Customers each backfill syncs: about 20-35 s at each flow's ceiling (NetSuite → Zuora runs at Zuora's
# 131/s now that customers are read in bulk; NetSuite → Zoho at NetSuite's 16.7/s).
RECORDS = {"customer_account": 3_000, "customer_zoho": 600}
QUICK_RECORDS = {"customer_account": 1_000, "customer_zoho": 250}


@dataclass(frozen=True)
class Leg:
    """The calls one record costs on one system."""

    system: str
    calls_per_record: float
    calls: str  # what they are, for the reader


@dataclass(frozen=True)
class FlowUnderTest:
    flow: str
    title: str
    legs: tuple[Leg, ...]

    def integration_id(self, stack: Stack) -> int:
        target = self.legs[-1].system
        return stack.wiring.zoho_integration_id if target == "zoho" else stack.wiring.integration_id


FLOWS = (
    FlowUnderTest(
        "customer_account",
        "NetSuite → Zuora",
        (
            # customer_account runs in batches of BATCH: the customers read with one SuiteQL query (the
            # default mapping reads only fields SuiteQL gives as the record API does), one Object Query
            # (crmid.IN) per 99 records, a POST each.
            Leg("netsuite", 1 / BATCH, f"one SuiteQL query per {BATCH} customers"),
            Leg("zuora", 1 + 1 / 99, "POST /v1/accounts, plus one Object Query by crmId per 99"),
        ),
    ),
    FlowUnderTest(
        "customer_zoho",
        "NetSuite → Zoho",
        (
            Leg("netsuite", 1, "GET the customer with its sublists"),
            Leg("zoho", 1 / 100, "one upsert per 100 records"),
        ),
    ),
)


def ceiling(flow: FlowUnderTest, per_minute: dict[str, int]) -> tuple[float, list[str]]:
    """Records per second the systems allow, and one line per term saying how it is worked out."""
    terms: list[tuple[float, str]] = []
    for leg in flow.legs:
        limit = CONCURRENCY[leg.system]
        rate = limit / LATENCY / leg.calls_per_record
        terms.append(
            (
                rate,
                f"{leg.system}: {limit} in flight ÷ {LATENCY:g} s × {_records(1 / leg.calls_per_record)} "
                f"per call ({leg.calls}) = {rate:,.1f} records/s",
            )
        )
        if leg.system in per_minute:
            rate = per_minute[leg.system] / 60 / leg.calls_per_record
            terms.append(
                (
                    rate,
                    f"{leg.system}: {per_minute[leg.system]:,} calls a minute ÷ 60 s × "
                    f"{_records(1 / leg.calls_per_record)} per call = {rate:,.1f} records/s",
                )
            )
    best = min(terms)
    lines = [text + ("   ← the bottleneck" if (rate, text) == best else "") for rate, text in terms]
    return best[0], lines


def _records(n: float) -> str:
    return f"{n:g} record" + ("" if n == 1 else "s")


def target_rate(run: BackfillRun) -> tuple[float, str]:
    """The rate the target is judged on: the sustained one, unless the first success came in the run's
    second half (batches that all finish together at the end: from the first success on, the "sustained"
    rate counts a burst), then the whole span's, start included."""
    if run.first_success < run.seconds / 2:
        return run.per_second, "sustained"
    return run.overall_per_second, "whole span"


def share_429(run: BackfillRun) -> float:
    calls = sum(run.api_calls(system) for system in run.calls)
    return sum(run.api_429(system) for system in run.calls) / calls if calls else 0.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.e2e", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records per flow")
    for flow in FLOWS:
        parser.add_argument(f"--{flow.flow.replace('_', '-')}", type=int, metavar="RECORDS", default=None)
    args = parser.parse_args(argv)
    sizes = dict(QUICK_RECORDS if args.quick else RECORDS)
    for flow in FLOWS:
        sizes[flow.flow] = getattr(args, flow.flow) or sizes[flow.flow]
    runs: list[tuple[FlowUnderTest, BackfillRun, float, list[str]]] = []
    # The ceiling is the issue's: concurrency ÷ latency × records per call. Zuora's per-minute request
    # limit is lifted (as in bench.overhead) so that this ceiling, not a fixed window a short run never
    # fills, is what the runner is measured against.
    stack_at = running_stack
    with (
        tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp,
        stack_at(Path(tmp), zuora_rate_limit=LIFTED_RATE_LIMIT) as stack,
    ):
        stack.set_faults(LATENCY, CONCURRENCY)
        per_minute: dict[str, int] = {}
        with stack.runner() as runner:
            # Each backfill reads the whole customer table: the smaller flow goes first, then more
            # customers are seeded for the larger one.
            for flow in sorted(FLOWS, key=lambda f: sizes[f.flow]):
                records = stack.seed_customers(sizes[flow.flow])
                rate, lines = ceiling(flow, per_minute)
                note(f"{flow.title}: backfilling {records:,} customers (ceiling {rate:.1f} records/s)")
                run = stack.backfill(
                    runner,
                    flow=flow.flow,
                    integration_id=flow.integration_id(stack),
                    timeout=records / (0.5 * rate) + 60,
                )
                runs.append((flow, run, rate, lines))
    rows = []
    for flow, run, rate, _lines in runs:
        calls = ", ".join(
            f"{leg.system} {run.api_calls(leg.system) / max(1, run.succeeded):.2f}" for leg in flow.legs
        )
        rows.append(
            (
                flow.title,
                run.succeeded,
                run.per_second,
                rate,
                f"{run.per_second / rate:.0%}",
                run.first_success,
                run.seconds,
                run.overall_per_second,
                f"{share_429(run):.2%}",
                calls,
                run.cpu_ms_per_record,
            )
        )
    print_table(
        f"end to end: every API call answered after {LATENCY:g} s; NetSuite {CONCURRENCY['netsuite']}, "
        f"Zuora {CONCURRENCY['zuora']}, Zoho {CONCURRENCY['zoho']} calls in flight at most",
        ("flow", "records", "records/s", "ceiling/s", "of ceiling", "start s", "whole s", "whole records/s",
         "429s", "API calls/record", "runner CPU ms/record"),
        rows,
    )  # fmt: skip
    for flow, _run, rate, lines in runs:
        print(f"\nceiling of {flow.title}: {rate:.1f} records/s, the smallest of")
        for line in lines:
            print(f"  {line}")
    warn_if_busy()
    targets: list[Target] = []
    for flow, run, rate, _lines in runs:
        judged, basis = target_rate(run)
        share = judged / rate
        targets.append(
            Target(
                f"{flow.title}: rate",
                f"≥ {TARGET_SHARE:.0%} of {rate:.1f}/s",
                f"{share:.0%} ({judged:.1f}/s, {basis})" + ("" if run.finished else ", unfinished"),
                share >= TARGET_SHARE and run.finished,
            )
        )
        targets.append(
            Target(
                f"{flow.title}: 429s",
                f"< {TARGET_429:.0%} of API calls",
                f"{share_429(run):.2%}",
                share_429(run) < TARGET_429,
            )
        )
    print_targets(targets)
    write_results(
        "e2e",
        {
            "what": "records per second through each flow against emulators with latency and concurrency "
            "limits, as a share of the ceiling",
            "latency_seconds": LATENCY,
            "concurrency": CONCURRENCY,
            "runs": [
                {
                    "title": flow.title,
                    "ceiling_per_second": rate,
                    "ceiling_terms": lines,
                    "share_of_ceiling": run.per_second / rate,
                    "whole_share_of_ceiling": run.overall_per_second / rate,
                    "share_429": share_429(run),
                    **run.as_dict(),
                }
                for flow, run, rate, lines in runs
            ],
        },
        targets,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
