"""A consistent past, written fast: batches, then students, then test-run lines.

The history lays ``K`` batches, ``M`` students and ``N`` runs on one virtual
timeline of span ``D`` (long enough for the streaming rates at
``--interval-ms``), ending one second before now, or starting at
``--start-time`` for byte-identical output. Batch ``k`` sits near ``k/K`` of
the span, student ``i`` near ``i/M`` (always after its batch), run ``j`` at
``(j+1)/N``; a run names a student created before it, or at
``unknown_rate`` one of the next few ids. Everything is drawn with numpy in
fixed-size chunks (bounded memory, deterministic per seed), students go in
one transaction, and each chunk of lines is one write.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
from numpy.typing import NDArray

from cohortflow.simulator.batches import BatchLedger, BatchNamer
from cohortflow.simulator.catalogue import DEFAULT_MIX, TRACKS, LineMix
from cohortflow.simulator.clock import SECOND_US, format_many
from cohortflow.simulator.dirty import with_dirt
from cohortflow.simulator.names import draw_names
from cohortflow.simulator.runs import IntArray, draw_runs, render
from cohortflow.simulator.students import StudentsWriter

RUN_CHUNK = 1 << 17
STUDENT_CHUNK = 1 << 16
NEWEST_BATCH_SHARE = 0.7
"""Share of new students who join the newest batch (the rest: any existing one)."""


@dataclass(frozen=True)
class HistoryPlan:
    """How much history to write and where it sits in time."""

    batches: int
    students: int
    test_runs: int
    start_us: int
    span_us: int

    @property
    def end_us(self) -> int:
        """The instant the history ends (the stream continues after it)."""
        return self.start_us + self.span_us

    @property
    def empty(self) -> bool:
        """True when there is nothing to write."""
        return not (self.batches or self.students or self.test_runs)


def history_span_us(batches: int, students: int, test_runs: int, interval_us: int) -> int:
    """The span the streaming rates would need for this much history."""
    intervals = max(10 * batches, math.ceil(1.25 * students), math.ceil(test_runs / 10), 1)
    return intervals * interval_us


def plan_history(
    counts: tuple[int, int, int], interval_us: int, *, start_us: int | None, now_us: int
) -> HistoryPlan:
    """Place ``(batches, students, test_runs)`` in time: from ``start_us``, or ending before now."""
    span = history_span_us(*counts, interval_us)
    start = now_us - span - SECOND_US if start_us is None else start_us
    return HistoryPlan(*counts, start_us=start, span_us=span)


def _spread(rng: np.random.Generator, count: int, span: int, first_at: int) -> IntArray:
    """``count`` strictly increasing offsets near ``i * span / count``, jittered."""
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    step = span / count
    base = np.floor(np.arange(count, dtype=np.float64) * step).astype(np.int64)
    jitter = rng.integers(0, max(1, int(step) // 2), size=count, dtype=np.int64)
    return base + jitter + first_at


@dataclass(frozen=True)
class _People:
    batch_offsets: IntArray
    student_offsets: IntArray


def _write_batches(
    rng: np.random.Generator, plan: HistoryPlan, ledger: BatchLedger, batch_offsets: IntArray
) -> None:
    namer = BatchNamer.from_rng(rng)
    tracks = rng.integers(0, len(TRACKS), size=plan.batches)
    moments = batch_offsets + plan.start_us
    created = format_many(moments)
    names = [namer.name(TRACKS[t], m) for t, m in zip(tracks.tolist(), moments.tolist(), strict=True)]
    ledger.add_many(list(zip(names, created, strict=True)))


def choose_batches(rng: np.random.Generator, existing: IntArray) -> IntArray:
    """Per student, the newest of ``existing[i]`` batches, or at times any of them."""
    anyone = rng.integers(1, existing + 1, dtype=np.int64)
    newest = rng.random(len(existing)) < NEWEST_BATCH_SHARE
    return np.where(newest, existing, anyone)


def _student_rows(
    rng: np.random.Generator, plan: HistoryPlan, people: _People
) -> Iterator[tuple[str, int, str]]:
    for start in range(0, plan.students, STUDENT_CHUNK):
        offsets = people.student_offsets[start : start + STUDENT_CHUNK]
        existing = np.searchsorted(people.batch_offsets, offsets, side="left").astype(np.int64)
        batch_ids = choose_batches(rng, existing).tolist()
        created = format_many(offsets + plan.start_us)
        yield from zip(draw_names(rng, len(offsets)), batch_ids, created, strict=True)


@dataclass(frozen=True)
class RunOptions:
    """How test-run lines are drawn."""

    unknown_rate: float = 0.02
    dirty_rate: float = 0.0
    mix: LineMix = DEFAULT_MIX


def _run_chunks(
    rng: np.random.Generator, plan: HistoryPlan, student_offsets: IntArray
) -> Iterator[tuple[np.random.Generator, NDArray[np.int64]]]:
    """Per chunk: an independent generator and each line's count of existing students."""
    step = plan.span_us / max(plan.test_runs, 1)
    for chunk, chunk_rng in enumerate(rng.spawn(math.ceil(plan.test_runs / RUN_CHUNK))):
        start = chunk * RUN_CHUNK
        positions = np.arange(start, min(start + RUN_CHUNK, plan.test_runs), dtype=np.float64)
        existing = np.searchsorted(student_offsets, (positions + 1) * step, side="left")
        yield chunk_rng, existing.astype(np.int64)


def _render_chunk(
    job: tuple[np.random.Generator, NDArray[np.int64]], options: RunOptions
) -> list[bytes | memoryview]:
    rng, existing = job
    columns = draw_runs(rng, existing, options.unknown_rate, options.mix)
    return with_dirt(rng, columns, render(columns), options.dirty_rate)


def _write_runs(
    rng: np.random.Generator,
    plan: HistoryPlan,
    student_offsets: IntArray,
    log_path: Path,
    options: RunOptions,
    stopping: threading.Event,
) -> int:
    """Append the history's lines; chunks render on two threads, written in order."""
    written = 0
    jobs = _run_chunks(rng, plan, student_offsets)
    with ThreadPoolExecutor(max_workers=2) as pool, open(log_path, "ab") as log:
        pending = []
        for job in jobs:
            pending.append(pool.submit(_render_chunk, job, options))
            if len(pending) < 2:
                continue
            written += _write_pieces(log, pending.pop(0).result())
            if stopping.is_set():
                break
        for future in pending:
            written += _write_pieces(log, future.result())
    return written


def _write_pieces(log: BinaryIO, pieces: list[bytes | memoryview]) -> int:
    return sum(log.write(piece) for piece in pieces)


@dataclass(frozen=True)
class HistorySeeds:
    """Independent generators for the people (batches, students) and the runs."""

    people: np.random.Generator
    runs: np.random.Generator


def write_history(
    plan: HistoryPlan,
    seeds: HistorySeeds,
    *,
    ledger: BatchLedger,
    students: StudentsWriter,
    log_path: Path,
    options: RunOptions,
    stopping: threading.Event,
) -> int:
    """Write the planned history; return the bytes of log written."""
    people = _People(
        batch_offsets=_spread(seeds.people, plan.batches, plan.span_us, first_at=0),
        student_offsets=_spread(seeds.people, plan.students, plan.span_us, first_at=1),
    )
    if plan.batches:
        people.batch_offsets[0] = 0
        _write_batches(seeds.people, plan, ledger, people.batch_offsets)
    if plan.students:
        students.add_many(_student_rows(seeds.people, plan, people))
    log_path.touch()
    if plan.test_runs == 0:
        return 0
    return _write_runs(seeds.runs, plan, people.student_offsets, log_path, options, stopping)
