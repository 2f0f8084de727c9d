"""``cohortflow generate`` as a library call: history, then the API, then the stream.

Order of events (the pipeline's tests rely on it):

1. take the data directory's generator lock (refuse if one runs there);
2. write the history, if asked (refused when the directory already has data);
3. with ``--no-stream`` and no ``--serve``: stop here;
4. listen on the batch API, write ``.simulator.json`` atomically and print
   ``cohortflow-simulator ready port=<PORT>`` (one flushed stdout line);
5. stream (or, with ``--no-stream --serve``, only serve) until stopped;
6. close the server, remove ``.simulator.json``, print a summary to stderr.
"""

from __future__ import annotations

import errno
import os
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from cohortflow.errors import ConfigError
from cohortflow.simulator.batches import BatchLedger, BatchNamer
from cohortflow.simulator.batches_api import BatchApiServer
from cohortflow.simulator.clock import UtcClock, now_us, parse_us, to_us
from cohortflow.simulator.datadir import (
    READY_LINE,
    DataDir,
    GeneratorLock,
    remove_ready,
    write_ready,
)
from cohortflow.simulator.history import (
    HistorySeeds,
    RunOptions,
    plan_history,
    write_history,
)
from cohortflow.simulator.rotation import RotatePolicy
from cohortflow.simulator.stream import (
    EditScript,
    LogAppender,
    Sinks,
    StreamCounts,
    Streamer,
    StreamScript,
    StreamState,
)
from cohortflow.simulator.students import DEFAULT_BUSY_TIMEOUT_MS, StudentsWriter


@dataclass(frozen=True)
class GenerateOptions:
    """Every ``cohortflow generate`` option (see docs/simulator.md)."""

    data_dir: Path = Path("data")
    host: str = "127.0.0.1"
    port: int = 8000
    seed: int | None = None
    interval_ms: int = 500
    history_batches: int = 0
    history_students: int = 0
    history_test_runs: int = 0
    unknown_student_rate: float = 0.02
    dirty_rate: float = 0.0
    exact_after: bool = False
    stream: bool = True
    serve: bool = False
    duration_s: float | None = None
    start_time: datetime | None = None
    busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS
    edit_rate: float = 0.0
    crash_writer: bool = False
    rotate_every: str | None = None
    rotate_style: str = "rename"

    @property
    def history_counts(self) -> tuple[int, int, int]:
        """``(batches, students, test_runs)`` of the history."""
        return (self.history_batches, self.history_students, self.history_test_runs)

    def validate(self) -> None:
        """Raise `ConfigError` naming the flag when an option cannot work."""
        for problem in _problems(self):
            raise ConfigError(problem)
        RotatePolicy.parse(self.rotate_every, self.rotate_style)


def _problems(options: GenerateOptions) -> list[str]:
    checks = [
        (options.interval_ms >= 1, "--interval-ms must be at least 1"),
        (0 <= options.port <= 65535, "--port must be in 0..65535 (0 picks a free port)"),
        (min(options.history_counts) >= 0, "--history-* counts cannot be negative"),
        (
            options.history_students == 0 or options.history_batches > 0,
            "--history-students needs --history-batches >= 1 (every student has a batch)",
        ),
        (0 <= options.unknown_student_rate <= 1, "--unknown-student-rate must be in 0..1"),
        (0 <= options.dirty_rate <= 1, "--dirty-rate must be in 0..1"),
        (options.duration_s is None or options.duration_s >= 0, "--duration must be >= 0"),
        (options.edit_rate >= 0, "--edit-rate must be >= 0 (students edited per second)"),
    ]
    return [message for ok, message in checks if not ok]


def parse_start_time(text: str) -> datetime:
    """Parse ``--start-time`` (ISO 8601; naive means UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        msg = f"--start-time {text!r} is not ISO 8601, e.g. 2026-01-01T00:00:00"
        raise ConfigError(msg) from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass
class Summary:
    """What one ``generate`` run wrote."""

    seed: int
    history_seconds: float = 0.0
    history_log_bytes: int = 0
    port: int | None = None
    stream: StreamCounts = field(default_factory=StreamCounts)
    student_lock_retries: int = 0
    log_rotations: int = 0


@dataclass(frozen=True)
class _Seeds:
    people: np.random.Generator
    runs: np.random.Generator
    stream: np.random.Generator
    namer: np.random.Generator
    edits: np.random.Generator

    @classmethod
    def of(cls, seed: int) -> _Seeds:
        return cls(*np.random.default_rng(seed).spawn(5))  # spawned by index: the first four never change


def _say(stream: TextIO, text: str) -> None:
    print(text, file=stream, flush=True)


def _check_consistent(ledger: BatchLedger, students: StudentsWriter, data: DataDir) -> None:
    if students.max_batch_id() > len(ledger):
        msg = (
            f"`{data.students_db}` names batches that `{data.batches_db}` lacks; "
            "the data directory is inconsistent: run `cohortflow reset` first"
        )
        raise ConfigError(msg)


def _clock_floor(ledger: BatchLedger, students: StudentsWriter) -> int:
    stamps = [students.last_created_at(), ledger.last.created_at if ledger.last else None]
    return max((parse_us(s) for s in stamps if s is not None), default=0)


class Generator:
    """One ``generate`` run over a data directory."""

    def __init__(self, options: GenerateOptions, *, out: TextIO, err: TextIO) -> None:
        options.validate()
        self.options = options
        self.data = DataDir(options.data_dir)
        self.summary = Summary(seed=secrets.randbits(63) if options.seed is None else options.seed)
        self._seeds = _Seeds.of(self.summary.seed)
        self._out = out
        self._err = err

    def run(self, stopping: threading.Event) -> Summary:
        """Do the whole run (see the module docstring); return what was written."""
        _say(self._err, f"cohortflow-simulator seed={self.summary.seed} data-dir={self.data.root}")
        with GeneratorLock(self.data):
            ledger = BatchLedger(self.data.batches_db)
            try:
                self._run_with(ledger, stopping)
            finally:
                ledger.close()
        return self.summary

    def _run_with(self, ledger: BatchLedger, stopping: threading.Event) -> None:
        options = self.options
        if not options.stream:
            if any(options.history_counts) or options.crash_writer:
                self._with_students(ledger, stopping, stream=False)
            if options.serve:
                self._serve(ledger, lambda: _wait(stopping, options.duration_s))
            return
        self._with_students(ledger, stopping, stream=True)

    def _with_students(self, ledger: BatchLedger, stopping: threading.Event, *, stream: bool) -> None:
        students = StudentsWriter(
            self.data.students_db, busy_timeout_ms=self.options.busy_timeout_ms, stopping=stopping
        )
        try:
            _check_consistent(ledger, students, self.data)
            if any(self.options.history_counts):
                self._write_history(ledger, students, stopping)
            if stream and not stopping.is_set():
                self._serve(ledger, lambda: self._stream(ledger, students, stopping))
            if self.options.crash_writer:
                _say(self._err, "cohortflow-simulator: --crash-writer: dying mid-transaction")
                students.crash_mid_transaction()
        finally:
            self.summary.student_lock_retries = students.retries
            students.close()

    def _write_history(
        self, ledger: BatchLedger, students: StudentsWriter, stopping: threading.Event
    ) -> None:
        if len(ledger) or students.max_id() or self.data.test_runs_log.exists():
            msg = (
                f"`{self.data.root}` already holds generated data; history needs an empty "
                "directory: run `cohortflow reset` first (or drop the --history-* options)"
            )
            raise ConfigError(msg)
        options = self.options
        start = None if options.start_time is None else to_us(options.start_time)
        plan = plan_history(
            options.history_counts, options.interval_ms * 1000, start_us=start, now_us=now_us()
        )
        began = time.perf_counter()
        self.summary.history_log_bytes = write_history(
            plan,
            HistorySeeds(self._seeds.people, self._seeds.runs),
            ledger=ledger,
            students=students,
            log_path=self.data.test_runs_log,
            options=self._run_options(),
            stopping=stopping,
        )
        self.summary.history_seconds = time.perf_counter() - began
        _say(self._err, _history_line(plan.batches, plan.students, plan.test_runs, self.summary))

    def _run_options(self) -> RunOptions:
        return RunOptions(unknown_rate=self.options.unknown_student_rate, dirty_rate=self.options.dirty_rate)

    def _serve(self, ledger: BatchLedger, work: Callable[[], None]) -> None:
        server = _bind(self.options, ledger)
        server.start()
        try:
            self.summary.port = server.port
            self._announce(server.port)
            work()
        finally:
            server.stop()
            remove_ready(self.data)

    def _announce(self, port: int) -> None:
        started = datetime.now(UTC).isoformat()
        info = {"pid": os.getpid(), "port": port, "host": self.options.host, "started_at": started}
        write_ready(self.data, info)
        _say(self._out, READY_LINE.format(port=port))

    def _stream(self, ledger: BatchLedger, students: StudentsWriter, stopping: threading.Event) -> None:
        log = LogAppender(
            self.data.test_runs_log, RotatePolicy.parse(self.options.rotate_every, self.options.rotate_style)
        )
        try:
            streamer = Streamer(
                stream_script(self.options, self.summary.seed),
                self._sinks(ledger, students, log),
                StreamState(batches=len(ledger), students=students.max_id()),
                interval_s=self.options.interval_ms / 1000,
            )
            try:
                streamer.run(stopping, self.options.duration_s)
            finally:
                self.summary.stream = streamer.counts
                self.summary.log_rotations = log.rotations
            if streamer.reset_under_us:
                _say(self._err, f"cohortflow-simulator: `{self.data.root}` was reset; stopping")
        finally:
            log.close()

    def _sinks(self, ledger: BatchLedger, students: StudentsWriter, log: LogAppender) -> Sinks:
        return Sinks(
            ledger=ledger,
            students=students,
            log=log,
            clock=UtcClock(_clock_floor(ledger, students)),
            namer=BatchNamer.from_rng(self._seeds.namer),
            edits=self._edit_script(),
            still_there=self.data.ready_file.exists,
        )

    def _edit_script(self) -> EditScript | None:
        if not self.options.edit_rate:
            return None
        interval_s = self.options.interval_ms / 1000
        return EditScript(self._seeds.edits, self.options.edit_rate, interval_s=interval_s)


def stream_script(options: GenerateOptions, seed: int) -> StreamScript:
    """The record sequence a stream with these options and seed writes (replayable in tests)."""
    run_options = RunOptions(unknown_rate=options.unknown_student_rate, dirty_rate=options.dirty_rate)
    return StreamScript(_Seeds.of(seed).stream, run_options, interval_s=options.interval_ms / 1000)


def _history_line(batches: int, students: int, runs: int, summary: Summary) -> str:
    rate = runs / summary.history_seconds if summary.history_seconds else 0.0
    return (
        f"cohortflow-simulator history batches={batches} students={students} test_runs={runs} "
        f"bytes={summary.history_log_bytes} seconds={summary.history_seconds:.2f} "
        f"lines_per_second={rate:.0f}"
    )


def _bind(options: GenerateOptions, ledger: BatchLedger) -> BatchApiServer:
    try:
        return BatchApiServer((options.host, options.port), ledger, exact_after=options.exact_after)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            msg = f"port {options.port} on {options.host} is in use: pass --port 0 or another --port"
        else:
            msg = f"cannot listen on {options.host}:{options.port}: {exc.strerror}; check --host"
        raise ConfigError(msg) from exc


def _wait(stopping: threading.Event, duration_s: float | None) -> None:
    stopping.wait(duration_s)


def stop_on_signals(stopping: threading.Event) -> None:
    """Make SIGINT and SIGTERM request a clean stop (main thread only)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda _signum, _frame: stopping.set())


def ignore_signals() -> None:
    """Ignore SIGINT and SIGTERM from now on (Python would reset them to fatal at exit)."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)


def stopped_line(summary: Summary) -> str:
    """The summary line printed on exit."""
    counts = summary.stream
    return (
        f"cohortflow-simulator stopped intervals={counts.intervals} batches={counts.batches} "
        f"students={counts.students} test_runs={counts.test_runs} "
        f"student_lock_retries={summary.student_lock_retries} edits={counts.edits} "
        f"log_rotations={summary.log_rotations}"
    )


def generate(options: GenerateOptions) -> Summary:
    """Run ``cohortflow generate`` as this process's main job until done, signalled, or out of time.

    SIGINT/SIGTERM request a clean stop; afterwards they are ignored, so a late
    one cannot kill the process while it exits (embed `Generator` instead to
    keep your own signal handling).
    """
    generator = Generator(options, out=sys.stdout, err=sys.stderr)  # validates first
    stopping = threading.Event()
    stop_on_signals(stopping)
    try:
        summary = generator.run(stopping)
    finally:
        ignore_signals()  # a stop request during our own exit must not kill us mid-way
    if summary.port is not None:
        _say(sys.stderr, stopped_line(summary))
    return summary
