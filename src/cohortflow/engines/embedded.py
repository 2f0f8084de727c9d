"""The embedded engine: one process follows the three sources into the warehouse.

Each tick reads what is new from every source, parses the log slice, and
stages all of it with the advanced cursors in ONE warehouse transaction. The
in-memory cursors move only after that commit, so a crash anywhere replays
exactly the uncommitted slice. A backfill folds many log chunks into one
transaction (bounded by ``txn_bytes``) to amortise the recompute.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace

from cohortflow.config import PipelineConfig
from cohortflow.errors import SourceReset, SourceUnavailable, WarehouseUnavailable
from cohortflow.parse import parse_runs, summarise_runs
from cohortflow.retry import Backoff
from cohortflow.sources import (
    BatchApi,
    LogCursor,
    RunLog,
    StudentsTable,
)
from cohortflow.sources.batches import BatchesRead
from cohortflow.sources.prefetch import BatchPrefetcher
from cohortflow.sources.runlog import LogChunk
from cohortflow.sources.students import StudentsPage
from cohortflow.state import (
    BATCHES_KEY,
    HEALTH_KEY,
    LOG_KEY,
    STUDENTS_KEY,
    WRITER_KEY,
    Cursors,
    OnCommit,
    TickStats,
)
from cohortflow.warehouse import Transaction, Warehouse, open_warehouse

log = logging.getLogger(__name__)


@dataclass
class _Reads:
    """What a tick read before it opened the transaction."""

    batches: BatchesRead | None = None
    students: StudentsPage | None = None
    chunk: LogChunk | None = None


class EmbeddedEngine:
    """Follow (or catch up with) the sources into the warehouse, exactly once."""

    def __init__(
        self,
        config: PipelineConfig,
        warehouse: Warehouse | None = None,
        on_commit: OnCommit | None = None,
    ) -> None:
        self.config = config
        self.warehouse = warehouse or open_warehouse(config.warehouse, writer=True)
        self.log = RunLog(config.test_runs_log)
        self.students = StudentsTable(config.students_db)
        self.api = BatchApi(config.batches_url, timeout=config.http_timeout)
        self.batches = BatchPrefetcher(self.api, config.batches_poll_seconds)
        self.on_commit = on_commit
        self.cursors = Cursors()
        self._health_reported: str | None = None

    def open(self) -> None:
        """Create the schema, take the writer lease and load committed cursors."""
        self.warehouse.ensure_schema()
        self.warehouse.acquire_writer()
        self.cursors = Cursors.from_state(self.warehouse.state())

    def close(self) -> None:
        """Stop polling; release the warehouse and the HTTP client."""
        self.batches.stop()
        self.api.close()
        self.warehouse.close()

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run until caught up (``once``) or until ``stop`` is set; return the totals."""
        stop = stop or threading.Event()
        totals = TickStats()
        try:
            self._reconnect(stop)
            self.batches.start(self.cursors.batches)
            ends: tuple[int, int] | None = None
            while not stop.is_set():
                if self.config.once and ends is None:
                    ends = self._source_ends()
                stats = self._tick_guarded(stop)
                totals.add(stats)
                if ends is not None and (stats.empty or self._reached(ends)) and self._caught_up():
                    break
                if stats.empty:
                    stop.wait(self.config.poll_seconds)
        finally:
            self.close()
        return totals

    def _source_ends(self) -> tuple[int, int] | None:
        """Where ``--once`` stops: the log's last complete line and the newest student, now.

        None while a source cannot answer (asked again before the next tick). No identity check
        here: a reset is for the ticks to handle.
        """
        try:
            return self.log.aligned_end(LogCursor()).offset, self.students.max_id()
        except SourceUnavailable as exc:
            log.warning("%s; trying again", exc)
            return None

    def _reached(self, ends: tuple[int, int]) -> bool:
        """Whether the committed cursors passed the ends ``--once`` aims at (writers may go on)."""
        return self.cursors.log.offset >= ends[0] and self.cursors.students.last_id >= ends[1]

    def _caught_up(self) -> bool:
        if self.batches.settled:
            return True
        backoff = self.batches.backoff
        if backoff.failures and time.monotonic() - backoff.failing_since > self.config.api_patience:
            msg = (
                f"gave up waiting for the batch API after {self.config.api_patience:.0f} s: "
                f"{backoff.last_error}; the other sources are ingested up to their end"
            )
            raise SourceUnavailable(msg)
        return False

    def _tick_guarded(self, stop: threading.Event) -> TickStats:
        try:
            return self.tick(stop)
        except SourceReset as exc:
            if self.config.on_reset != "restart":
                raise
            log.warning("%s; --on-reset restart: rebuilding the warehouse from scratch", exc)
            self.warehouse.wipe()
            self.cursors = Cursors()
            self.batches.rewind(self.cursors.batches)
            return TickStats(again=True)
        except WarehouseUnavailable as exc:
            log.warning("warehouse unreachable (%s); reconnecting", exc)
            self._reconnect(stop)
            return TickStats(again=True)
        except SourceUnavailable as exc:
            log.warning("%s; trying again", exc)  # e.g. the upstream writer held its lock too long
            return TickStats(again=True)

    def _reconnect(self, stop: threading.Event) -> None:
        """(Re)open the warehouse with backoff and load the committed cursors."""
        backoff = Backoff(base=0.2, cap=5.0)
        deadline = time.monotonic() + self.config.api_patience
        while not stop.is_set():
            self.warehouse.close()
            try:
                self.open()
                self.batches.rewind(self.cursors.batches)
                return
            except WarehouseUnavailable as exc:
                if self.config.once and time.monotonic() > deadline:
                    raise
                backoff.failed(time.monotonic(), str(exc))
                log.warning("warehouse still unreachable: %s", exc)
                stop.wait(max(0.05, backoff.next_at - time.monotonic()))

    def tick(self, stop: threading.Event | None = None) -> TickStats:
        """Read what is new, then commit it with the advanced cursors in one transaction."""
        stats = TickStats()
        try:
            students, chunk = self._read_students(), self._read_log()
            reads = _Reads(self.batches.take(), students, chunk)  # taken last: the others may raise
            if reads.batches is None and reads.students is None and reads.chunk is None:
                self._report_health()
                return stats
            with self.warehouse.transaction() as tx:
                cursors = self._stage(tx, reads, stats, stop)
        except BaseException:
            self.batches.rewind(self.cursors.batches)  # batches taken but not committed: read again
            raise
        self.cursors = cursors
        self._report_health()
        if self.on_commit:
            self.on_commit(stats, cursors)
        return stats

    def _stage(
        self, tx: Transaction, reads: _Reads, stats: TickStats, stop: threading.Event | None
    ) -> Cursors:
        cursors = self.cursors
        tx.set_state(WRITER_KEY, "embedded")  # a Spark checkpoint refuses a warehouse written since
        if reads.batches is not None:
            tx.add_batches(reads.batches.batches)
            tx.add_rejects("batches", reads.batches.rejects)
            cursors = replace(cursors, batches=reads.batches.cursor)
            tx.set_state(BATCHES_KEY, cursors.batches.to_json())
            stats.batches = len(reads.batches.batches)
        if reads.students is not None:
            tx.add_students(reads.students.students)
            tx.add_rejects("students", reads.students.rejects)
            cursors = replace(cursors, students=reads.students.cursor)
            tx.set_state(STUDENTS_KEY, cursors.students.to_json())
            stats.students = len(reads.students.students)
        if reads.chunk is not None:
            cursors = replace(cursors, log=self._stage_log(tx, reads.chunk, stats, stop))
            tx.set_state(LOG_KEY, cursors.log.to_json())
        stats.quarantined = tx.counts.get("quarantined", 0)
        return cursors

    def _stage_log(
        self,
        tx: Transaction,
        chunk: LogChunk | None,
        stats: TickStats,
        stop: threading.Event | None,
    ) -> LogCursor:
        cursor = self.cursors.log
        while chunk is not None:
            tx.add_runs(summarise_runs(parse_runs(chunk.lines)))
            tx.add_rejects(
                "test_runs",
                [(f"{self.log.name}:{o}", raw, "line_too_long") for o, raw in chunk.oversized],
            )
            cursor = chunk.cursor
            stats.lines += chunk.lines.num_rows + len(chunk.oversized)
            stats.log_bytes += chunk.consumed
            caught_up = chunk.consumed < self.config.chunk_bytes // 2  # a short read: at the end for now
            if caught_up or stats.log_bytes >= self.config.txn_bytes or (stop is not None and stop.is_set()):
                break
            chunk = self.log.read(cursor, self.config.chunk_bytes)
        return cursor

    def _read_log(self) -> LogChunk | None:
        return self.log.read(self.cursors.log, self.config.chunk_bytes)

    def _read_students(self) -> StudentsPage | None:
        return self.students.read(self.cursors.students)

    def _report_health(self) -> None:
        """Record the batch API's health for `cohortflow status` when it changes."""
        backoff = self.batches.backoff
        error = backoff.last_error
        if error == self._health_reported:
            return
        health = {"ok": error is None, "failures": backoff.failures, "last_error": error}
        with self.warehouse.transaction() as tx:
            tx.set_state(HEALTH_KEY, health)
        self._health_reported = error
