"""Workload 4, writer friendliness: the upstream's students commits while the pipeline works.

A writer process of our own (this file's ``write`` command) commits one
student at a time through the simulator's own `StudentsWriter` (rollback
journal, ``BEGIN IMMEDIATE``, ``busy_timeout``, retry on busy: exactly how
the generator writes) and records each commit's latency. It runs alone
(before and after, pooled), then while ``cohortflow run --once`` backfills
the big data set flat out from the same ``students.db``. The added p99 is
the stall the pipeline causes (CPU and lock contention alike).

Usage (the writer alone):
    python bench/writer.py write STUDENTS_DB INTERVAL_MS SECONDS OUT.json
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    PYTHON,
    ChildRun,
    Result,
    check,
    cohortflow,
    percentile,
    run_child,
    served,
    source_options,
    status,
)

STALL_TARGET_MS = 50.0
#: 50 commits/s. At 5-10 ms the pipeline's read-only `students.db` reads starve for > 2 s and
#: `cohortflow run` dies with "database is locked" (reported; see docs/benchmarks.md).
INTERVAL_MS = 20


def write(db: Path, interval_ms: int, seconds: float, out: Path) -> None:
    """Commit one student every ``interval_ms`` until ``seconds`` pass or SIGTERM."""
    from cohortflow.simulator.students import StudentsWriter

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    writer = StudentsWriter(db, stopping=stop)
    latencies: list[float] = []
    deadline = time.monotonic() + seconds
    next_at = time.monotonic()
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
            began = time.perf_counter()
            writer.add(f"bench-writer-{len(latencies)}", 1, created)
            latencies.append((time.perf_counter() - began) * 1000)
            next_at += interval_ms / 1000
            stop.wait(max(0.0, next_at - time.monotonic()))
    finally:
        writer.close()
    out.write_text(json.dumps({"latency_ms": latencies, "retries": writer.retries}))


def _writer(db: Path, seconds: float, out: Path, interval_ms: int = INTERVAL_MS) -> subprocess.Popen[bytes]:
    cmd = [PYTHON, str(BENCH / "writer.py"), "write", str(db), str(interval_ms), str(seconds), str(out)]
    return subprocess.Popen(cmd)


def _collect(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    if proc.wait(timeout=600) != 0:
        msg = f"the writer exited {proc.returncode}"
        raise RuntimeError(msg)
    return dict(json.loads(out.read_text()))


def measure(data_dir: Path, scratch: Path, alone_s: float) -> dict[str, Any]:
    """Latencies alone (before + after) and during a flat-out backfill of ``data_dir``."""
    work = scratch / "writer-data"
    work.mkdir(parents=True, exist_ok=True)
    shutil.copy2(data_dir / "students.db", work / "students.db")
    log = work / "test_runs.log"
    if not log.exists():
        os.link(data_dir / "test_runs.log", log)
    db = work / "students.db"
    alone: list[float] = []
    before = _writer(db, alone_s, scratch / "writer-before.json")
    alone += _collect(before, scratch / "writer-before.json")["latency_ms"]
    with served(data_dir) as sim:
        busy_out = scratch / "writer-busy.json"
        busy = _writer(db, 3600, busy_out)
        time.sleep(0.5)
        warehouse = scratch / "writer-warehouse.db"
        cmd = cohortflow("run", "--once", "--quiet", *source_options(work, f"{sim.url}/batches"))
        with ThreadPoolExecutor(1) as pool:
            began = time.perf_counter()
            backfill = pool.submit(run_child, [*cmd, "--warehouse", str(warehouse)])
            _wait_log_ingested(warehouse, log.stat().st_size, backfill)
            flat_out_s = time.perf_counter() - began
            busy.send_signal(signal.SIGTERM)  # the flat-out part is over: stop measuring
            during = _collect(busy, busy_out)
            finished = check(backfill.result(), "the backfill beside the writer")
    after = _writer(db, alone_s, scratch / "writer-after.json")
    alone += _collect(after, scratch / "writer-after.json")["latency_ms"]
    return {
        "alone": alone,
        "busy": during["latency_ms"],
        "retries": during["retries"],
        "flat_out_s": flat_out_s,
        "backfill_s": finished.wall_s,
    }


def _wait_log_ingested(warehouse: Path, size: int, backfill: Future[ChildRun]) -> None:
    """Until the warehouse's committed log cursor reaches ``size`` (or the backfill ended)."""
    while not backfill.done():
        with suppress(sqlite3.Error, FileNotFoundError):
            conn = sqlite3.connect(f"file:{warehouse}?mode=ro", uri=True)
            try:
                row = conn.execute(
                    "SELECT value FROM pipeline_state WHERE key = 'cursor:test_runs'"
                ).fetchone()
            finally:
                conn.close()
            if row and json.loads(row[0]).get("offset", 0) >= size:
                return
        time.sleep(0.1)


def results(data: dict[str, Any], label: str) -> list[Result]:
    alone, busy = data["alone"], data["busy"]
    a50, a99 = percentile(alone, 50), percentile(alone, 99)
    b50, b99 = percentile(busy, 50), percentile(busy, 99)
    added = b99 - a99
    workload = "Writer: upstream students commits (1 per 20 ms, `StudentsWriter`)"
    return [
        Result(
            workload,
            "alone (before + after)",
            f"p50 {a50:.1f} ms, p99 {a99:.1f} ms, max {max(alone, default=0):.0f} ms (n={len(alone)})",
            "",
            "",
            "",
            "n/a",
            {"p50": a50, "p99": a99},
        ),
        Result(
            workload,
            f"during a {label} backfill (flat out for {data['flat_out_s']:.0f} s)",
            f"p50 {b50:.1f} ms, p99 {b99:.1f} ms, max {max(busy, default=0):.0f} ms "
            f"(n={len(busy)}, {data['retries']} busy retries)",
            f"alone p99 {a99:.1f} ms",
            f"+{added:.1f} ms p99",
            "added p99 ≤ 50 ms",
            status(added <= STALL_TARGET_MS if busy else None),
            {"p50": b50, "p99": b99, "added_p99": added},
        ),
    ]


def main() -> None:
    if len(sys.argv) != 6 or sys.argv[1] != "write":
        sys.exit(__doc__)
    write(Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), Path(sys.argv[5]))


if __name__ == "__main__":
    main()
