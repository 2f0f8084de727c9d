"""The live stream: every interval a burst of runs, students and batches at the upstream's ratios.

At interval ``n`` (from 0): a new batch when ``n % 10 == 0``, then four new
students (one commit each) when ``n % 5 == 0``, then 1 to 19 test runs written
as one burst, sometimes flushed in two pieces with a short pause in between
(a reader may see a half-written last line, as with the upstream).

`StreamScript` decides *what* happens from the seed alone (so a run can be
replayed record by record); `Streamer` decides *when* and writes it.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohortflow.simulator.batches import BatchLedger, BatchNamer
from cohortflow.simulator.catalogue import TRACKS
from cohortflow.simulator.clock import UtcClock, format_us
from cohortflow.simulator.dirty import with_dirt
from cohortflow.simulator.history import NEWEST_BATCH_SHARE, RunOptions
from cohortflow.simulator.names import draw_names
from cohortflow.simulator.rotation import RotatePolicy, Rotator
from cohortflow.simulator.runs import draw_runs, render
from cohortflow.simulator.students import StudentNotWritten, StudentsWriter

BATCH_EVERY = 10
STUDENTS_EVERY = 5
STUDENTS_PER_TICK = 4
MAX_RUNS_PER_TICK = 19
SPLIT_SHARE = 0.3
"""Share of bursts flushed in two pieces."""
MAX_SPLIT_PAUSE_S = 0.02


@dataclass
class StreamState:
    """How many batches and students exist (their ids are ``1..n``)."""

    batches: int = 0
    students: int = 0


@dataclass(frozen=True)
class Burst:
    """The log bytes of one interval and how they are flushed."""

    data: bytes
    lines: int
    split_at: int | None = None
    pause_s: float = 0.0


@dataclass(frozen=True)
class Tick:
    """Everything interval ``n`` writes, in order."""

    batch_track: str | None
    students: list[tuple[str, int]]
    burst: Burst


class StreamScript:
    """The deterministic sequence of records for a seed (timestamps aside)."""

    def __init__(self, rng: np.random.Generator, options: RunOptions, *, interval_s: float) -> None:
        self._rng = rng
        self._options = options
        self._max_pause = min(MAX_SPLIT_PAUSE_S, interval_s / 4)

    def tick(self, n: int, state: StreamState) -> Tick:
        """What interval ``n`` writes, given what exists; advances ``state`` as if written."""
        track = None
        if n % BATCH_EVERY == 0 or state.batches == 0:
            track = TRACKS[int(self._rng.integers(0, len(TRACKS)))]
            state.batches += 1
        students = []
        if n % STUDENTS_EVERY == 0 or state.students == 0:
            students = self._students(state)
        return Tick(track, students, self._burst(state))

    def _students(self, state: StreamState) -> list[tuple[str, int]]:
        existing = np.full(STUDENTS_PER_TICK, state.batches, dtype=np.int64)
        anyone = self._rng.integers(1, existing + 1)
        newest = self._rng.random(STUDENTS_PER_TICK) < NEWEST_BATCH_SHARE
        batch_ids = np.where(newest, existing, anyone).tolist()
        state.students += STUDENTS_PER_TICK
        return list(zip(draw_names(self._rng, STUDENTS_PER_TICK), batch_ids, strict=True))

    def _burst(self, state: StreamState) -> Burst:
        count = int(self._rng.integers(1, MAX_RUNS_PER_TICK + 1))
        existing = np.full(count, state.students, dtype=np.int64)
        columns = draw_runs(self._rng, existing, self._options.unknown_rate, self._options.mix)
        pieces = with_dirt(self._rng, columns, render(columns), self._options.dirty_rate)
        data = b"".join(pieces)
        if self._rng.random() >= SPLIT_SHARE or len(data) < 2:
            return Burst(data, count)
        split_at = int(self._rng.integers(1, len(data)))
        # The pause between a burst's two pieces; at very short intervals it may be under 1 ms.
        low = min(0.001, self._max_pause)
        return Burst(data, count, split_at, float(self._rng.uniform(low, self._max_pause)))


EDIT_KINDS = ("rename", "move", "delete")


@dataclass(frozen=True)
class Edit:
    """One change to an existing student: a new name, a new batch, or its deletion."""

    kind: str
    student_id: int
    name: str = ""
    batch_id: int = 0


class EditScript:
    """``--edit-rate`` edits per second (fractions accumulate), from their own seeded generator.

    Each edit picks a kind uniformly and a student uniformly among the ids written so far
    (one already deleted is simply not found: the statement changes nothing).
    """

    def __init__(self, rng: np.random.Generator, rate_per_s: float, *, interval_s: float) -> None:
        self._rng = rng
        self._per_interval = rate_per_s * interval_s
        self._due = 0.0

    def edits(self, state: StreamState) -> list[Edit]:
        """The edits of one interval, given what exists."""
        self._due += self._per_interval
        count = int(self._due)
        self._due -= count
        return [self._edit(state) for _ in range(count if state.students else 0)]

    def _edit(self, state: StreamState) -> Edit:
        kind = EDIT_KINDS[int(self._rng.integers(0, len(EDIT_KINDS)))]
        student_id = int(self._rng.integers(1, state.students + 1))
        if kind == "rename":
            return Edit(kind, student_id, name=draw_names(self._rng, 1)[0])
        if kind == "move":
            return Edit(kind, student_id, batch_id=int(self._rng.integers(1, state.batches + 1)))
        return Edit(kind, student_id)


def apply_edit(students: StudentsWriter, edit: Edit) -> None:
    """Write one edit (one commit)."""
    if edit.kind == "rename":
        students.rename(edit.student_id, edit.name)
    elif edit.kind == "move":
        students.move(edit.student_id, edit.batch_id)
    else:
        students.delete(edit.student_id)


class LogAppender:
    """Appends to ``test_runs.log`` with raw ``write(2)`` calls (no buffering); rotates it if asked."""

    def __init__(self, path: Path, rotate: RotatePolicy | None = None) -> None:
        self._path = path
        self._fd = self._open()
        self._rotator = None if rotate is None else Rotator(path, rotate)
        self._end_dangling_line(path)

    def _open(self) -> int:
        return os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    @property
    def rotations(self) -> int:
        """How many times the log was rotated."""
        return 0 if self._rotator is None else self._rotator.rotations

    def _end_dangling_line(self, path: Path) -> None:
        """A previous generator killed mid-line left a fragment: end it as one broken line."""
        if path.stat().st_size == 0:
            return
        with open(path, "rb") as log:
            log.seek(-1, os.SEEK_END)
            if log.read(1) != b"\n":
                self.write(b"\n")

    def write(self, data: bytes | memoryview) -> None:
        """Write all of ``data``."""
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]

    def write_burst(self, burst: Burst) -> None:
        """Write a burst, in two pieces with a pause when it is split."""
        if burst.split_at is None:
            self.write(burst.data)
        else:
            self.write(burst.data[: burst.split_at])
            time.sleep(burst.pause_s)
            self.write(burst.data[burst.split_at :])
        self._rotate_if_due()

    def _rotate_if_due(self) -> None:
        """Between bursts only: every file then ends at a newline."""
        if self._rotator is not None and self._rotator.due(self._fd) and self._rotator.rotate():
            os.close(self._fd)
            self._fd = self._open()

    def close(self) -> None:
        """Close the file descriptor."""
        os.close(self._fd)


@dataclass
class StreamCounts:
    """What the stream wrote."""

    intervals: int = 0
    batches: int = 0
    students: int = 0
    test_runs: int = 0
    edits: int = 0


@dataclass
class Sinks:
    """Where a stream writes."""

    ledger: BatchLedger
    students: StudentsWriter
    log: LogAppender
    clock: UtcClock
    namer: BatchNamer
    edits: EditScript | None = None
    """Renames, moves and deletes of existing students (``--edit-rate``)."""
    still_there: Callable[[], bool] = lambda: True
    """False once the data directory was reset under the running stream."""


class Streamer:
    """Runs a `StreamScript` in real time until stopped or out of time."""

    def __init__(self, script: StreamScript, sinks: Sinks, state: StreamState, *, interval_s: float) -> None:
        self._script = script
        self._sinks = sinks
        self._state = state
        self._interval = interval_s
        self.counts = StreamCounts()
        self.reset_under_us = False
        """True when the stream ended because its data directory was reset."""

    def run(self, stopping: threading.Event, duration_s: float | None = None) -> StreamCounts:
        """Write interval after interval; each burst is whole before a stop is honoured."""
        started = time.monotonic()
        deadline = None if duration_s is None else started + duration_s
        next_at = started
        while not stopping.is_set() and (deadline is None or time.monotonic() < deadline):
            if not self._step():
                break
            self.counts.intervals += 1
            next_at = max(next_at + self._interval, time.monotonic() - self._interval)
            wake = next_at if deadline is None else min(next_at, deadline)
            stopping.wait(max(0.0, wake - time.monotonic()))
        return self.counts

    def _step(self) -> bool:
        """Write one interval; False when the stream must end (stopping, or data reset)."""
        try:
            self._apply(self._script.tick(self.counts.intervals, self._state))
        except StudentNotWritten:
            return False
        except (sqlite3.Error, OSError):
            if self._sinks.still_there():
                raise
        self.reset_under_us = not self._sinks.still_there()
        return not self.reset_under_us

    def _apply(self, tick: Tick) -> None:
        sinks = self._sinks
        if tick.batch_track is not None:
            moment = sinks.clock.tick()
            sinks.ledger.add(sinks.namer.name(tick.batch_track, moment), format_us(moment))
            self.counts.batches += 1
        for name, batch_id in tick.students:
            sinks.students.add(name, batch_id, format_us(sinks.clock.tick()))
            self.counts.students += 1
        for edit in [] if sinks.edits is None else sinks.edits.edits(self._state):
            apply_edit(sinks.students, edit)
            self.counts.edits += 1
        sinks.log.write_burst(tick.burst)
        self.counts.test_runs += tick.burst.lines
