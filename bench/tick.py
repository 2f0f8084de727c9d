"""Workload 2, tick cost vs history: append a 1 MiB delta, time one `EmbeddedEngine.tick()`.

Two engines live in this process, one over a short history (100k lines) and
one over a long one (the backfill's 1M or 10M), both already caught up. Each
round appends a fresh 1 MiB of realistic lines (the simulator's own line
renderer, naming existing students) to both logs and times both ticks,
alternating, so noise hits both alike. The batch API is polled once at open
and then not again (``batches_poll_seconds`` is huge): its cost is timed
separately, it is not a function of the delta.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from cohortflow.config import PipelineConfig
from cohortflow.engines.embedded import EmbeddedEngine
from cohortflow.simulator.runs import draw_runs, render
from common import Result, Sizes, median, status
from floor import lessons_per_student

DELTA_BYTES = 1 << 20
TICK_TARGET_MS = 15.0
HISTORY_TARGET = 1.2
FLOOR_TARGET = 2.0
FLOOR = "floor"  # the floor's parse of the same delta bytes, timed beside the ticks


def delta(rng: np.random.Generator, students: int, size: int = DELTA_BYTES) -> bytes:
    """About ``size`` bytes of whole, clean lines naming students ``1..students`` (2% unknown)."""
    lines = size // 60
    columns = draw_runs(rng, np.full(lines, students, dtype=np.int64), 0.02)
    data = render(columns).data.tobytes()
    return data[: data.rfind(b"\n", 0, size) + 1]


@dataclass
class Follower:
    """One caught-up engine over one data set."""

    label: str
    engine: EmbeddedEngine
    log: Path
    students: int

    @classmethod
    def open(cls, label: str, data_dir: Path, warehouse: str, url: str, students: int) -> Follower:
        config = PipelineConfig(
            students_db=data_dir / "students.db",
            test_runs_log=data_dir / "test_runs.log",
            batches_url=url,
            warehouse=warehouse,
            batches_poll_seconds=1e9,
        )
        engine = EmbeddedEngine(config)
        engine.open()
        while not engine.tick().empty:
            pass  # catch up (normally nothing: the warehouse was backfilled)
        return cls(label, engine, data_dir / "test_runs.log", students)

    def timed_tick(self, data: bytes) -> float:
        with open(self.log, "ab") as log:
            log.write(data)
        began = time.perf_counter()
        stats = self.engine.tick()
        elapsed = time.perf_counter() - began
        if stats.log_bytes != len(data):
            msg = f"{self.label}: the tick took {stats.log_bytes} bytes, expected {len(data)}"
            raise RuntimeError(msg)
        return elapsed

    def close(self) -> None:
        self.engine.close()


def api_poll_ms(url: str, repeats: int = 5) -> float:
    """Median time of one batch API GET (what a tick adds when it polls the API)."""
    times = []
    with httpx.Client() as client:
        for _ in range(repeats):
            began = time.perf_counter()
            client.get(url).raise_for_status()
            times.append(time.perf_counter() - began)
    return median(times) * 1000


def measure(followers: list[Follower], rounds: int, seed: int = 1) -> dict[str, list[float]]:
    """Tick times (s) per follower; one warm-up round is dropped."""
    rng = np.random.default_rng(seed)
    times: dict[str, list[float]] = {f.label: [] for f in followers} | {FLOOR: []}
    for round_no in range(rounds + 1):
        for follower in followers:
            data = delta(rng, follower.students)
            elapsed = follower.timed_tick(data)
            began = time.perf_counter()
            lessons_per_student(data)
            floor_s = time.perf_counter() - began
            if round_no:
                times[follower.label].append(elapsed)
                times[FLOOR].append(floor_s)
    return times


def results(times: dict[str, list[float]], small: Sizes, large: Sizes, poll_ms: float) -> list[Result]:
    small_ms = median(times[small.label]) * 1000
    large_ms = median(times[large.label]) * 1000
    ratio = large_ms / small_ms
    workload = "Tick: 1 MiB delta (~12k lines), in-process `EmbeddedEngine.tick()`"
    rows = []
    for sizes, ms in ((small, small_ms), (large, large_ms)):
        samples = times[sizes.label]
        rows.append(
            Result(
                workload,
                f"history {sizes.label} lines",
                f"{ms:.1f} ms median (min {min(samples) * 1000:.1f}, "
                f"max {max(samples) * 1000:.1f}, n={len(samples)})",
                "",
                "",
                "≤ 15 ms",
                status(ms <= TICK_TARGET_MS),
                {"median_ms": ms},
            )
        )
    rows.append(
        Result(
            workload,
            f"history-independence: {large.label} vs {small.label}",
            f"{large_ms:.1f} ms vs {small_ms:.1f} ms",
            f"history {small.label}",
            f"{ratio:.2f}x",
            "≤ 1.2x",
            status(ratio <= HISTORY_TARGET),
            {"ratio": ratio},
        )
    )
    floor_ms = median(times[FLOOR]) * 1000
    rows.append(
        Result(
            workload,
            f"tick vs the floor's program on the same bytes (history {large.label})",
            f"{large_ms:.1f} ms vs {floor_ms:.1f} ms",
            "floor on the delta",
            f"{large_ms / floor_ms:.2f}x",
            f"≤ {FLOOR_TARGET:.0f}x",
            status(large_ms / floor_ms <= FLOOR_TARGET),
            {"floor_ms": floor_ms, "ratio": large_ms / floor_ms},
        )
    )
    rows.append(
        Result(
            workload,
            "one batch API poll (not in the ticks above)",
            f"{poll_ms:.1f} ms median GET /batches",
            "",
            "",
            "",
            "n/a",
            {"poll_ms": poll_ms},
        )
    )
    return rows
