"""Workload 3, freshness: how long from an upstream append to its effect in the warehouse.

The simulator streams (1x: ``--interval-ms 500``; 100x: ``--interval-ms 5``)
and ``cohortflow run`` follows it. An independent observer process (this
file's ``observe`` command) appends its own marker records and times them on
one monotonic clock until the warehouse shows them:

* student: it commits a uniquely named student into ``students.db`` the way
  the upstream writer does, then polls the warehouse ``students`` row;
* line: it then appends a completed run of that (fresh) student to the log
  and polls until that student's ``lessons_completed`` turns 1.

Idle CPU: a follower over frozen data (the API up, nothing new), measured
with psutil ``cpu_times`` over a window, as % of one core.

Usage (the observer alone):
    python bench/freshness.py observe DATA_DIR WAREHOUSE SAMPLES OUT.json
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import (
    Result,
    Sizes,
    bench_script,
    check,
    cohortflow,
    median,
    percentile,
    run_child,
    served,
    source_options,
    status,
)

POLL_S = 0.002
TIMEOUT_S = 10.0
MARKER_LINE = (
    '{{"result": "3/3", "student_id", {sid}, "lesson_id": 7, '
    '"lesson_title": "JS Fundamentals: Looping Code Along"}}\n'
)
P50_TARGET_MS, P99_TARGET_MS, IDLE_TARGET_PCT = 150.0, 500.0, 1.0
FOLLOW_CPU_TARGET_MS = 20.0


# --- the observer (a separate process) --------------------------------------------------------------


def _wait_for(warehouse: sqlite3.Connection, query: str, params: tuple[Any, ...], ok: Any) -> float | None:
    """Poll until ``ok(row)``; return the monotonic time it became true (None on timeout)."""
    deadline = time.monotonic() + TIMEOUT_S
    while time.monotonic() < deadline:
        with suppress(sqlite3.OperationalError):  # the pipeline may be creating the schema
            row = warehouse.execute(query, params).fetchone()
            if ok(row):
                return time.monotonic()
        time.sleep(POLL_S)
    return None


def _add_student(students: sqlite3.Connection) -> tuple[int, float]:
    """Commit one student like the upstream writer; return its id and the commit time."""
    created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    students.execute("BEGIN IMMEDIATE")
    cursor = students.execute(
        "INSERT INTO students (name, batch_id, created_at) VALUES (?, 1, ?)",
        (f"bench-marker-{uuid.uuid4().hex[:12]}", created),
    )
    students.execute("COMMIT")
    return int(cursor.lastrowid or 0), time.monotonic()


def _append_line(log: Path, sid: int) -> float:
    """Append the marker line between two whole upstream lines; return the write time."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # do not land inside a half-written burst
            with open(log, "rb") as reader:
                reader.seek(-1, os.SEEK_END)
                if reader.read(1) == b"\n":
                    break
            time.sleep(0.0005)
        os.write(fd, MARKER_LINE.format(sid=sid).encode())
        return time.monotonic()
    finally:
        os.close(fd)


def observe(data_dir: Path, warehouse_path: Path, samples: int, out: Path) -> None:
    students = sqlite3.connect(data_dir / "students.db", isolation_level=None)
    students.execute("PRAGMA busy_timeout = 5000")
    warehouse = sqlite3.connect(f"file:{warehouse_path}?mode=ro", uri=True, isolation_level=None)
    student_ms: list[float] = []
    line_ms: list[float] = []
    lost = 0
    for _ in range(samples):
        sid, committed = _add_student(students)
        seen = _wait_for(warehouse, "SELECT 1 FROM students WHERE id = ?", (sid,), lambda r: r is not None)
        if seen is None:
            lost += 1
            continue
        student_ms.append((seen - committed) * 1000)
        written = _append_line(data_dir / "test_runs.log", sid)
        query = "SELECT lessons_completed FROM students WHERE id = ?"
        counted = _wait_for(warehouse, query, (sid,), lambda r: r is not None and r[0] >= 1)
        if counted is None:
            lost += 1
        else:
            line_ms.append((counted - written) * 1000)
        time.sleep(random.uniform(0.02, 0.1))
    out.write_text(json.dumps({"student_ms": student_ms, "line_ms": line_ms, "lost": lost}))


# --- the harness ---------------------------------------------------------------------------------


@contextmanager
def following(data_dir: Path, url: str, warehouse: Path) -> Any:
    """``cohortflow run`` in follow mode for the duration of the block."""
    cmd = cohortflow("run", "--quiet", *source_options(data_dir, url), "--warehouse", str(warehouse))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            msg = f"the follower exited {proc.returncode}: {err[-2000:]}"
            raise RuntimeError(msg)


def _wait_caught_up(warehouse: Path, students: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if warehouse.exists():
            with suppress(sqlite3.OperationalError):
                conn = sqlite3.connect(f"file:{warehouse}?mode=ro", uri=True)
                try:
                    found = conn.execute("SELECT count(*) FROM students").fetchone()[0]
                finally:
                    conn.close()
                if found >= students:
                    return
        time.sleep(0.2)
    msg = f"the follower did not catch up with {students} students in {timeout_s:.0f} s"
    raise RuntimeError(msg)


def stream_paths(scratch: Path, interval_ms: int) -> tuple[Path, Path]:
    """The data directory and warehouse of one stream run."""
    return scratch / f"fresh-{interval_ms}ms", scratch / f"fresh-{interval_ms}ms.db"


def stream_run(scratch: Path, sizes: Sizes, interval_ms: int, samples: int) -> dict[str, Any]:
    """Observer samples with the simulator streaming at ``interval_ms``."""
    from cohortflow.simulator.process import SimulatorProcess

    data, warehouse = stream_paths(scratch, interval_ms)
    history = (
        *("--history-test-runs", str(sizes.lines), "--history-students", str(sizes.students)),
        *("--history-batches", str(sizes.batches)),
    )
    args = (
        "--seed",
        "11",
        "--start-time",
        "2025-01-01T00:00:00",
        "--interval-ms",
        str(interval_ms),
        *history,
    )
    with (
        SimulatorProcess(data, *args, ready_timeout_s=300) as sim,
        following(data, f"{sim.url}/batches", warehouse) as proc,
    ):
        _wait_caught_up(warehouse, sizes.students)
        out = scratch / f"observer-{interval_ms}.json"
        cmd = bench_script("freshness.py", "observe", str(data), str(warehouse), str(samples), str(out))
        with follower_cost(proc.pid, data / "test_runs.log", warehouse) as cost:
            check(run_child(cmd, timeout_s=samples * 2 * TIMEOUT_S + 60), "the observer")
        return {**json.loads(out.read_text()), **cost}


@contextmanager
def follower_cost(pid: int, log: Path, warehouse: Path) -> Any:
    """The follower's CPU time per 1k log lines it committed during the block (filled in at exit)."""
    import psutil

    process, cost = psutil.Process(pid), {}
    before, start = process.cpu_times(), _committed_offset(warehouse)
    yield cost
    after, end = process.cpu_times(), _committed_offset(warehouse)
    with log.open("rb") as f:
        f.seek(start)
        lines = f.read(end - start).count(b"\n")
    cpu_s = (after.user - before.user) + (after.system - before.system)
    cost.update({"cpu_s": cpu_s, "lines": lines, "cpu_ms_per_1k": 1e6 * cpu_s / lines if lines else None})


def _committed_offset(warehouse: Path) -> int:
    conn = sqlite3.connect(f"file:{warehouse}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT value FROM pipeline_state WHERE key = 'cursor:test_runs'").fetchone()
    finally:
        conn.close()
    return int(json.loads(row[0])["offset"]) if row else 0


def idle_cpu(data: Path, warehouse: Path, students: int, window_s: float, windows: int = 3) -> list[float]:
    """% of one core a follower uses with nothing new to read, per window (after a stream on ``data``)."""
    import psutil

    shares = []
    with served(data) as sim, following(data, f"{sim.url}/batches", warehouse) as proc:
        _wait_caught_up(warehouse, students)
        time.sleep(2.0)
        process = psutil.Process(proc.pid)
        for _ in range(windows):
            before, began = process.cpu_times(), time.monotonic()
            time.sleep(window_s)
            after, ended = process.cpu_times(), time.monotonic()
            used = (after.user - before.user) + (after.system - before.system)
            shares.append(100 * used / (ended - began))
    return shares


def results(by_rate: dict[str, dict[str, Any]], idle: list[float], window_s: float) -> list[Result]:
    rows = []
    for rate, data in by_rate.items():
        for kind, key in (("student row", "student_ms"), ("completed-run line", "line_ms")):
            values = data[key]
            p50, p95, p99 = (percentile(values, q) for q in (50, 95, 99))
            at_100x = rate.startswith("100x")
            ok = p50 <= P50_TARGET_MS and p99 <= P99_TARGET_MS if values else False
            lost = f", {data['lost']} lost" if data["lost"] else ""
            rows.append(
                Result(
                    f"Freshness at {rate}",
                    f"{kind} → warehouse",
                    f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms (n={len(values)}{lost})",
                    "",
                    "",
                    "p50 ≤ 150 ms, p99 ≤ 500 ms" if at_100x else "",
                    status(ok) if at_100x else "n/a",
                    {"p50": p50, "p95": p95, "p99": p99, "n": len(values), "lost": data["lost"]},
                )
            )
    rows += [_cost_row(rate, data) for rate, data in by_rate.items() if data.get("lines")]
    idle_pct = median(idle)
    windows = ", ".join(f"{x:.2f}" for x in idle)
    rows.append(
        Result(
            "Idle CPU",
            "follower, frozen sources, API up",
            f"{idle_pct:.2f}% of one core (median of {len(idle)} windows of {window_s:.0f} s: {windows})",
            "",
            "",
            "< 1% of a core",
            status(idle_pct < IDLE_TARGET_PCT),
            {"idle_pct": idle_pct},
        )
    )
    return rows


def _cost_row(rate: str, data: dict[str, Any]) -> Result:
    per_1k, at_100x = data["cpu_ms_per_1k"], rate.startswith("100x")
    return Result(
        f"Follower cost at {rate}",
        "CPU of `cohortflow run` per 1k lines committed",
        f"{per_1k:.0f} ms per 1k lines ({data['cpu_s']:.2f} s CPU for {data['lines']:,} lines)",
        "",
        "",
        f"≤ {FOLLOW_CPU_TARGET_MS:.0f} ms" if at_100x else "",
        status(per_1k <= FOLLOW_CPU_TARGET_MS) if at_100x else "n/a",
        {"cpu_ms_per_1k": per_1k, "lines": data["lines"]},
    )


def main() -> None:
    if len(sys.argv) != 6 or sys.argv[1] != "observe":
        sys.exit(__doc__)
    observe(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5]))


if __name__ == "__main__":
    main()
