"""Run the whole benchmark suite (see docs/benchmarks.md); ``bench/run`` calls this.

Exit status: 0 when every workload ran and every answer agreed with the floor,
2 when an answer disagreed (a correctness bug), 1 when a workload failed.
Missed performance targets are reported, not failures.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import backfill
import durability
import freshness
import report
import tick
import writer
from cohortflow.config import PipelineConfig
from common import (
    BENCH,
    ROOT,
    Mismatch,
    Result,
    Sizes,
    generate,
    machine,
    print_table,
    results_payload,
    save_json,
    served,
)

WORKLOADS = ("backfill", "tick", "writer", "freshness", "durability")


@dataclass
class Plan:
    """Sizes and repeats of one run."""

    quick: bool
    backfills: list[Sizes]
    tick_small: Sizes
    fresh_history: Sizes
    repeats: int
    large_repeats: int
    tick_rounds: int
    samples: int
    idle_s: float
    writer_alone_s: float
    postgres: bool
    spark: bool
    naive_large: str
    only: set[str] = field(default_factory=lambda: set(WORKLOADS))

    @property
    def mode(self) -> str:
        return "quick" if self.quick else "full"


def plan_from(args: argparse.Namespace) -> Plan:
    students, batches = args.students, args.batches
    base = Sizes(args.lines or 1_000_000, students, batches)
    backfills = [base] if args.quick else [base, Sizes(10_000_000, students, batches)]
    if args.quick and args.lines is None:
        backfills = [Sizes(1_000_000, students, batches)]
    small_lines = 100_000 if args.lines is None else max(args.lines // 10, 1000)
    fresh = Sizes(20_000, 2_000, 100) if args.lines is None else Sizes(max(args.lines // 10, 500), 200, 20)
    return Plan(
        quick=args.quick,
        backfills=backfills,
        tick_small=Sizes(small_lines, students, batches),
        fresh_history=fresh,
        repeats=args.repeats or (2 if args.quick else 3),
        large_repeats=args.repeats or 2,
        tick_rounds=7 if args.quick else 11,
        samples=args.samples or (25 if args.quick else 80),
        idle_s=5.0 if args.quick else 10.0,
        writer_alone_s=5.0 if args.quick else 10.0,
        postgres=not args.no_postgres,
        spark=not args.no_spark,
        naive_large="run" if args.naive_10m else "extrapolate",
        only=set(args.only.split(",")) if args.only else set(WORKLOADS),
    )


@dataclass
class Run:
    """State shared by the workloads of one run."""

    plan: Plan
    scratch: Path
    results: list[Result] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Path] = field(default_factory=dict)
    backfills: dict[str, backfill.Backfill] = field(default_factory=dict)
    mismatch: bool = False
    failed: bool = False

    def dataset(self, sizes: Sizes) -> Path:
        """The generated data directory for these sizes (generated once)."""
        key = f"{sizes.lines}-{sizes.students}-{sizes.batches}"
        if key not in self.data:
            path = self.scratch / f"data-{key}"
            began = time.perf_counter()
            generate(path, sizes)
            log_mb = (path / "test_runs.log").stat().st_size / 1e6
            say(f"generated {sizes} in {time.perf_counter() - began:.1f} s ({log_mb:,.0f} MB log)")
            self.data[key] = path
        return self.data[key]


def say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# --- workloads -------------------------------------------------------------------------------------


def run_backfill(run: Run) -> None:
    per_line: float | None = None
    for sizes in run.plan.backfills:
        is_large = sizes is run.plan.backfills[-1] and len(run.plan.backfills) > 1
        say(f"backfill {sizes.label}")
        measured = backfill.measure(
            run.dataset(sizes),
            run.scratch,
            sizes,
            repeats=run.plan.large_repeats if is_large else run.plan.repeats,
            naive=run.plan.naive_large if is_large else "run",
            postgres=run.plan.postgres and not is_large,
            spark=run.plan.spark and not is_large,
            naive_per_line_s=per_line,
        )
        per_line = backfill.naive_per_line(measured) or per_line
        run.backfills[sizes.label] = measured
        full_size = not run.plan.quick and is_large
        run.results += backfill.results(measured, rss_target=full_size, floor_target=full_size)


def run_tick(run: Run) -> None:
    large = run.plan.backfills[-1]
    small = run.plan.tick_small
    say(f"tick: history {small.label} vs {large.label}")
    large_wh = run.backfills[large.label].warehouse if large.label in run.backfills else ""
    with served(run.dataset(small)) as small_api, served(run.dataset(large)) as large_api:
        small_wh = str(run.scratch / f"tick-{small.label}.db")
        backfill.engine_run(run.dataset(small), f"{small_api.url}/batches", small_wh)
        if not large_wh:
            large_wh = str(run.scratch / f"tick-{large.label}.db")
            backfill.engine_run(run.dataset(large), f"{large_api.url}/batches", large_wh)
        followers = [
            tick.Follower.open(
                small.label, run.dataset(small), small_wh, f"{small_api.url}/batches", small.students
            ),
            tick.Follower.open(
                large.label, run.dataset(large), large_wh, f"{large_api.url}/batches", large.students
            ),
        ]
        try:
            times = tick.measure(followers, run.plan.tick_rounds)
        finally:
            for follower in followers:
                follower.close()
        poll_ms = tick.api_poll_ms(f"{large_api.url}/batches")
    run.results += tick.results(times, small, large, poll_ms)
    if poll_ms > 20:
        run.notes.append(
            f"One batch API page takes {poll_ms:.0f} ms: the simulator's HTTP handler sends headers and "
            "body in two writes and Nagle + delayed ACK hold the second (~1.3 ms with TCP_NODELAY). "
            "A backfill pages 100 times (10k batches): the floor does it in a thread while Polars parses, "
            "the engine waits for it."
        )


def run_writer(run: Run) -> None:
    sizes = run.plan.backfills[0]
    say(f"writer: alone vs beside a {sizes.label} backfill")
    data = writer.measure(run.dataset(sizes), run.scratch, run.plan.writer_alone_s)
    run.results += writer.results(data, sizes.label)
    run.notes.append(
        f"The writer commits every {writer.INTERVAL_MS} ms: at one commit per 5-10 ms the pipeline's "
        "read-only `students.db` reads (rollback journal) starve for over 2 s and `cohortflow run` "
        "exits with `database is locked`."
    )


def run_freshness(run: Run) -> None:
    by_rate = {}
    for rate, interval in (("1x (500 ms)", 500), ("100x (5 ms)", 5)):
        say(f"freshness at {rate}, {run.plan.samples} samples")
        by_rate[rate] = freshness.stream_run(run.scratch, run.plan.fresh_history, interval, run.plan.samples)
    say(f"idle CPU, 3 windows of {run.plan.idle_s:.0f} s")
    data, warehouse = freshness.stream_paths(run.scratch, 500)
    idle = freshness.idle_cpu(data, warehouse, run.plan.fresh_history.students, run.plan.idle_s)
    run.results += freshness.results(by_rate, idle, run.plan.idle_s)


def run_durability(run: Run) -> None:
    sizes = run.plan.backfills[0]
    data = run.dataset(sizes)
    say("durability: WAL under four 2 s readers at 100x")
    tiny = sizes.lines < 100_000  # the smoke test's size: just show it works
    seconds = 5.0 if tiny else 60.0 if run.plan.quick else 90.0
    wal = durability.wal_under_readers(run.scratch, run.plan.fresh_history, seconds)
    # Five kills need a backfill of many intervals: the largest data set; at 1M (quick) 1 s intervals.
    largest = run.plan.backfills[-1]
    interval = 1.0 if largest.lines <= 1_000_000 else PipelineConfig.commit_seconds
    say(f"durability: kill -9 during a {largest.label} backfill, --commit-seconds {interval:g}")
    killed = durability.kills(run.dataset(largest), run.scratch, 5, interval)
    say("durability: periodic commits vs one transaction")
    cost = durability.commit_cost(data, run.scratch, run.plan.repeats)
    run.results += durability.results(wal, killed, cost, sizes, largest)


STEPS: dict[str, Callable[[Run], None]] = {
    "backfill": run_backfill,
    "tick": run_tick,
    "writer": run_writer,
    "freshness": run_freshness,
    "durability": run_durability,
}


def execute(run: Run) -> None:
    for name in WORKLOADS:
        if name not in run.plan.only:
            continue
        began = time.perf_counter()
        try:
            STEPS[name](run)
        except Mismatch as exc:
            run.mismatch = True
            run.results.append(Result(name, "CORRECTNESS", f"MISMATCH: {exc}", status="**FAILED**"))
            say(f"MISMATCH in {name}: {exc}")
        except Exception as exc:
            run.failed = True
            run.results.append(Result(name, "error", f"{type(exc).__name__}: {exc}", status="**FAILED**"))
            say(f"{name} failed:\n{traceback.format_exc()}")
        say(f"{name} took {time.perf_counter() - began:.0f} s")


def standard_notes(plan: Plan) -> list[str]:
    return [
        "Backfill timings are medians of interleaved runs (engine, floor, engine on the empty log, "
        "engine on empty sources, engine, ...); the naive baseline, PostgreSQL and Spark run once "
        "(Spark at the 1M size only).",
        "Students + batches ingestion is a difference of two medians of whole runs (empty log minus "
        "empty sources): start-up noise lands on it in full, so at small sizes it can even be negative.",
        "The 10M naive figure is "
        + ("measured." if plan.naive_large == "run" else "extrapolated linearly from the 1M run (not run)."),
        "PostgreSQL is a throwaway server with fsync=off and synchronous_commit=off: "
        "an optimistic bound for the warehouse writes; its server RSS is not in the peak RSS.",
        "The floor holds the whole log's lines in memory (Polars), so its peak RSS grows with the log.",
        "Other engineers' tests ran on the same 2 cores during the run (see the load average): "
        "absolute times are noisy, same-run ratios less so.",
    ]


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1M lines, shorter runs (CI smoke)")
    parser.add_argument("--lines", type=int, default=None, help="backfill lines (overrides 1M/10M)")
    parser.add_argument("--students", type=int, default=200_000, help="history students")
    parser.add_argument("--batches", type=int, default=10_000, help="history batches")
    parser.add_argument("--repeats", type=int, default=None, help="engine/floor backfill runs each")
    parser.add_argument("--samples", type=int, default=None, help="freshness markers per rate")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of {','.join(WORKLOADS)}")
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL backfill")
    parser.add_argument("--no-spark", action="store_true", help="skip the Spark engine's backfill")
    parser.add_argument("--naive-10m", action="store_true", help="run the naive baseline at 10M too")
    parser.add_argument("--docs", type=Path, default=None, help="where to write the Markdown report")
    parser.add_argument("--no-docs", action="store_true", help="do not write the Markdown report")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--out", type=Path, default=BENCH / "out", help="scratch and results JSON directory")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    plan = plan_from(args)
    info = machine()
    args.out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f"run-{plan.mode}-", dir=args.out))
    run = Run(plan, scratch)
    began = time.perf_counter()
    try:
        execute(run)
    finally:
        if args.keep:
            say(f"kept {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    info["suite_wall"] = f"{time.perf_counter() - began:.0f} s"
    info["loadavg_at_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    run.notes = standard_notes(plan) + run.notes
    print_table(run.results)
    save_json(args.out / f"results-{plan.mode}.json", results_payload(run.results, info, run.notes))
    if not args.no_docs:
        path = args.docs or ROOT / "docs" / "benchmarks.md"
        sizes = ", ".join(s.label for s in plan.backfills)
        title = f"{plan.mode.title()} run ({sizes} lines)"
        report.write(path, plan.mode, report.section(plan.mode, title, info, run.results, run.notes))
        say(f"wrote {path}")
    return 2 if run.mismatch else 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
