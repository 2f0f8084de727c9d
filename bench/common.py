"""Shared pieces of the benchmark suite: data sets, child processes, results and the report.

Every workload measures its baselines in the same run and reports ratios
(the machine is shared and noisy). Child processes are timed with
``os.wait4`` so the peak RSS is that child's own (``ru_maxrss``).
"""

from __future__ import annotations

import json
import os
import platform
import re
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from cohortflow.simulator.process import SimulatorProcess

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = sys.executable
SEED = "7"
START_TIME = "2025-01-01T00:00:00"
#: Share of truly broken log lines in the benchmark data: the floor must agree on them too.
DIRTY_RATE = "0.001"


@dataclass(frozen=True)
class Sizes:
    """How much history a data set holds."""

    lines: int
    students: int
    batches: int

    @property
    def label(self) -> str:
        return human_count(self.lines)


def human_count(n: int) -> str:
    """10_000_000 -> '10M', 100_000 -> '100k'."""
    for size, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= size and n % (size // 10) == 0:
            value = n / size
            return f"{value:g}{suffix}"
    return f"{n:,}"


@dataclass
class Result:
    """One line of the report table."""

    workload: str
    case: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    status: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Mismatch(Exception):
    """Two implementations disagree on the per-batch answer: a correctness failure."""


def status(ok: bool | None) -> str:
    """The Status cell: met, missed, or not applicable."""
    if ok is None:
        return "n/a"
    return "met" if ok else "**missed**"


# --- child processes ---------------------------------------------------------------------------


@dataclass
class ChildRun:
    """A finished child process: wall time, its own peak RSS and output."""

    wall_s: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    peak_tree_rss_mib: float = 0.0
    """The child with all its descendants (a JVM, say), sampled every 100 ms."""


def run_child(cmd: Sequence[str], env: dict[str, str] | None = None, timeout_s: float = 1800) -> ChildRun:
    """Run ``cmd`` to its end; ``wait4`` gives this child's own peak RSS."""
    out_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-child-{os.getpid()}-{time.monotonic_ns()}"
    with open(f"{out_path}.out", "w+b") as out, open(f"{out_path}.err", "w+b") as err:
        began = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env={**os.environ, **(env or {})})
        deadline = began + timeout_s
        tree = _TreeRss(proc.pid)
        while True:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                continue
            tree.sample()
            time.sleep(0.005)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
    for suffix in (".out", ".err"):
        Path(f"{out_path}{suffix}").unlink(missing_ok=True)
    return ChildRun(wall, usage.ru_maxrss / 1024, proc.returncode, stdout, stderr, tree.peak_mib)


class _TreeRss:
    """Peak summed RSS of a process and its descendants, sampled at most every 100 ms."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mib = 0.0
        self._next = 0.0

    def sample(self) -> None:
        import psutil

        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + 0.1
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return
        total = 0
        for process in procs:
            try:
                total += process.memory_info().rss
            except psutil.Error:
                continue
        self.peak_mib = max(self.peak_mib, total / 2**20)


def check(run: ChildRun, what: str) -> ChildRun:
    """Raise with the child's stderr tail when it failed."""
    if run.returncode != 0:
        tail = "\n".join(run.stderr.strip().splitlines()[-15:])
        msg = f"{what} exited {run.returncode}:\n{tail}"
        raise RuntimeError(msg)
    return run


def bench_script(name: str, *args: str) -> list[str]:
    """The command line of one of our scripts in ``bench/``."""
    return [PYTHON, str(BENCH / name), *args]


def cohortflow(*args: str) -> list[str]:
    """The command line of ``cohortflow ARGS`` in this interpreter."""
    return [PYTHON, "-m", "cohortflow", *args]


# --- data sets -----------------------------------------------------------------------------------


def generate(data_dir: Path, sizes: Sizes, *extra: str) -> ChildRun:
    """Write a history with the project's simulator (fixed seed and start time)."""
    cmd = cohortflow(
        *("generate", "--data-dir", str(data_dir), "--seed", SEED, "--start-time", START_TIME),
        *("--history-test-runs", str(sizes.lines), "--history-students", str(sizes.students)),
        *("--history-batches", str(sizes.batches), "--dirty-rate", DIRTY_RATE, "--no-stream", *extra),
    )
    return check(run_child(cmd), f"generate {sizes}")


@contextmanager
def served(data_dir: Path) -> Iterator[SimulatorProcess]:
    """The batch API over frozen data (``--no-stream --serve``)."""
    with SimulatorProcess(data_dir, "--no-stream", "--serve", ready_timeout_s=120) as sim:
        yield sim


def source_options(data_dir: Path, batches_url: str) -> list[str]:
    return [
        *("--students-db", str(data_dir / "students.db")),
        *("--test-runs-log", str(data_dir / "test_runs.log")),
        *("--batches-url", batches_url),
    ]


def fetch_batches(url: str) -> list[dict[str, Any]]:
    """Every batch the API serves, paging on ``after`` and de-duplicating by id."""
    seen: dict[int, dict[str, Any]] = {}
    after: str | None = None
    with httpx.Client(timeout=30) as client:
        while True:
            page = client.get(url, params={"after": after} if after else {}).json()
            before = len(seen)
            for item in page:
                seen.setdefault(item["id"], item)
            if len(page) < 100:
                return list(seen.values())
            if len(seen) == before:
                msg = f"{url}: a full page with no new batch (more than 100 share one second)"
                raise RuntimeError(msg)
            after = page[-1]["created_at"].replace(" ", "T")[:23]


# --- answers -------------------------------------------------------------------------------------

Answer = dict[int, tuple[int, int]]
"""batch id -> (students_total, students_completed_3plus)."""


def save_answer(path: Path, answer: Answer) -> None:
    path.write_text(json.dumps({str(k): list(v) for k, v in sorted(answer.items())}))


def load_answer(path: Path) -> Answer:
    return {int(k): (int(v[0]), int(v[1])) for k, v in json.loads(path.read_text()).items()}


def warehouse_answer(target: str) -> Answer:
    """The engine's per-batch answer, read from its warehouse ``batches`` table."""
    query = "SELECT id, students_total, students_completed_3plus FROM batches"
    if target.startswith("postgres"):
        import psycopg

        with psycopg.connect(target) as conn:
            rows = conn.execute(query).fetchall()
    else:
        conn = sqlite3.connect(f"file:{target}?mode=ro", uri=True)
        try:
            rows = conn.execute(query).fetchall()
        finally:
            conn.close()
    return {int(i): (int(t), int(d)) for i, t, d in rows}


def compare(name: str, got: Answer, want: Answer, want_name: str = "floor") -> None:
    """Raise Mismatch, with the first differences, when two answers differ."""
    if got == want:
        return
    missing = sorted(set(want) - set(got))[:5]
    extra = sorted(set(got) - set(want))[:5]
    differ = [(b, got[b], want[b]) for b in sorted(set(got) & set(want)) if got[b] != want[b]]
    total = (sum(v[0] for v in got.values()), sum(v[1] for v in got.values()))
    want_total = (sum(v[0] for v in want.values()), sum(v[1] for v in want.values()))
    msg = (
        f"{name} disagrees with the {want_name}: {len(got)} vs {len(want)} batches, "
        f"sums (students_total, completed_3plus) {total} vs {want_total}; "
        f"{len(differ)} batches differ, first (id, {name}, {want_name}): {differ[:5]}; "
        f"missing ids {missing}; extra ids {extra}"
    )
    raise Mismatch(msg)


# --- statistics ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def spread(values: Sequence[float]) -> str:
    """'median (min-max, n=3)' for a few timings in seconds."""
    if len(values) == 1:
        return f"{values[0]:.2f} s (n=1)"
    return f"{median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


# --- the machine and the report --------------------------------------------------------------------


def machine() -> dict[str, str]:
    """What this run ran on."""
    import polars

    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as info:
        mem_kib = int(re.findall(r"\d+", info.readline())[0])
    load = os.getloadavg()
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "ram": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "polars": polars.__version__,
        "sqlite": sqlite3.sqlite_version,
        "loadavg_at_start": " ".join(f"{x:.2f}" for x in load),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": _git_commit(),
    }


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return out.stdout.strip()


COLUMNS = ("Workload", "Case", "Measured", "Baseline (same run)", "Ratio", "Target", "Status")


def table_lines(results: Sequence[Result]) -> list[str]:
    """The results as a Markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        cells = (r.workload, r.case, r.measured, r.baseline, r.ratio, r.target, r.status)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


def print_table(results: Sequence[Result]) -> None:
    """Print the table to the terminal (plain Markdown reads well enough)."""
    print("\n".join(table_lines(results)), flush=True)


def save_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def results_payload(results: Sequence[Result], info: dict[str, str], notes: Sequence[str]) -> dict[str, Any]:
    return {"machine": info, "results": [asdict(r) for r in results], "notes": list(notes)}
