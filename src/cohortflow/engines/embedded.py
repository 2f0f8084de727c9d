"""The embedded engine: one process follows the three sources into the warehouse.

Each tick reads what is new from every source, parses the log slice, and
stages all of it with the advanced cursors in ONE warehouse transaction. The
in-memory cursors move only after that commit, so a crash anywhere replays
exactly the uncommitted slice. A backfill folds many log chunks into one
transaction (bounded by ``txn_bytes`` and ``commit_seconds``, so a crash loses
at most one interval of work) to amortise the recompute.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from typing import TypeVar

from cohortflow.config import PipelineConfig
from cohortflow.errors import SourceError, SourceMissing, SourceReset, SourceUnavailable, WarehouseUnavailable
from cohortflow.health import HealthBoard, health_key
from cohortflow.parse import RunsDelta, summarise_lines
from cohortflow.retry import Backoff
from cohortflow.sources import (
    BatchApi,
    LogCursor,
    RunLog,
    StudentsTable,
)
from cohortflow.sources.batches import BatchesRead, BatchListing
from cohortflow.sources.logcursor import LogChunk
from cohortflow.sources.prefetch import BatchPrefetcher
from cohortflow.sources.student_changes import StudentChangeDetector, StudentChanges
from cohortflow.sources.students import StudentsPage
from cohortflow.state import (
    BATCHES_KEY,
    LOG_KEY,
    STUDENTS_KEY,
    WRITER_KEY,
    Cursors,
    OnCommit,
    TickStats,
    record_sources,
)
from cohortflow.warehouse import Transaction, Warehouse, open_warehouse
from cohortflow.warehouse.reconcile import reconcile_batches

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_Parsed = tuple[LogChunk, RunsDelta]


@dataclass
class _Reads:
    """What a tick read before it opened the transaction."""

    batches: BatchesRead | None = None
    students: StudentsPage | None = None
    chunk: LogChunk | None = None
    student_changes: StudentChanges | None = None


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
        self.student_changes = StudentChangeDetector(self.students, self.warehouse, paced=not config.once)
        self.api = BatchApi(config.batches_url, timeout=config.http_timeout)
        self.batches = BatchPrefetcher(
            self.api,
            config.batches_poll_seconds,
            reconcile_every=config.batches_reconcile_seconds,
            idle_interval=config.batches_idle_poll_seconds,
        )
        self.on_commit = on_commit
        self.cursors = Cursors()
        self._parser = ThreadPoolExecutor(1, thread_name_prefix="parse")  # overlaps parse with apply
        self.health = HealthBoard()
        self.health.adopt("batches", self.batches.backoff)

    def open(self) -> None:
        """Create the schema, take the writer lease and load committed cursors."""
        self.warehouse.ensure_schema()
        self.warehouse.acquire_writer()
        record_sources(self.warehouse, self.config)
        self.cursors = Cursors.from_state(self.warehouse.state())

    def close(self) -> None:
        """Stop polling; release the warehouse and the HTTP client."""
        self.batches.stop()
        self._parser.shutdown(wait=True, cancel_futures=True)
        self.api.close()
        self.log.close()
        self.warehouse.close()

    def run(self, stop: threading.Event | None = None) -> TickStats:
        """Run until caught up (``once``) or until ``stop`` is set; return the totals."""
        stop = stop or threading.Event()
        totals = TickStats()
        try:
            self.students.check(must_exist=self.config.once)  # a bad path fails at once
            self.log.check(once=self.config.once)
            self._reconnect(stop)
            self.batches.start(self.cursors.batches)
            goal = _OnceGoal() if self.config.once else None
            while not stop.is_set():
                if goal is not None:
                    self._aim(goal)
                started = time.monotonic()
                stats = self._tick_guarded(stop)
                totals.add(stats)
                if goal is not None and self._finished(goal, stats):
                    break
                stop.wait(self._pause(stats, started))
        finally:
            self.close()
        return totals

    def _pause(self, stats: TickStats, started: float) -> float:
        """How long to wait before the next tick: idle polls, trickles coalesce, backlogs go on."""
        if stats.empty:
            return self.config.poll_seconds
        if stats.backlog or stats.again or self.config.once:
            return 0.0
        return max(0.0, started + self.config.coalesce_seconds - time.monotonic())

    def _aim(self, goal: _OnceGoal) -> None:
        """Where ``--once`` stops: each source's end as of its first answer (writers may go on).

        No identity check here: a reset is for the ticks to handle.
        """
        if goal.log_end is None:
            goal.log_end = self._guard("test_runs", self.log.end)
        if goal.students_end is None:
            goal.students_end = self._guard("students", self.students.max_id)

    def _finished(self, goal: _OnceGoal, stats: TickStats) -> bool:
        """Whether ``--once`` is done; raises naming the sources that could not finish."""
        idle = stats.empty
        done = {
            "test_runs": goal.log_end is not None
            and (self.log.reached(self.cursors.log, goal.log_end) or idle),
            "students": goal.students_end is not None
            and self.student_changes.passes > 0  # --once applies edits made before it started, too
            and (self.cursors.students.last_id >= goal.students_end or idle),
            "batches": self.batches.settled,
        }
        pending = [source for source, finished in done.items() if not finished]
        if not pending or any(self.health[s].ok for s in pending):
            return not pending  # a healthy source still has work: keep going
        if all(self.health.failing_for(s) >= self._patience(s) for s in pending):
            failed = "; ".join(f"`{s}` {self.health[s].describe()}" for s in pending)
            msg = f"--once could not finish {failed}; the other sources are ingested up to their end"
            raise SourceUnavailable(msg)
        return False

    def _patience(self, source: str) -> float:
        """How long ``--once`` retries a source: a missing file is not waited for."""
        return 0.0 if self.health[source].state == "waiting" else self.config.api_patience

    def _guard(self, source: str, read: Callable[[], _T], proves_ok: bool = True) -> _T | None:
        """Read one source; a transient failure marks its health and yields None (others go on).

        ``proves_ok=False`` for a read that may not touch the source at all (it cannot clear a
        failure).
        """
        if not self.health.ready(source):
            return None
        try:
            result = read()
        except SourceReset:
            raise
        except SourceError as exc:
            self.health.failed(source, exc)
            return None
        if proves_ok:
            self.health.succeeded(source)
        return result

    def _tick_guarded(self, stop: threading.Event) -> TickStats:
        try:
            return self.tick(stop)
        except SourceReset as exc:
            if self.config.on_reset != "restart":
                raise
            log.warning("%s; --on-reset restart: rebuilding the warehouse from scratch", exc)
            self.warehouse.wipe()
            record_sources(self.warehouse, self.config)
            self.cursors = Cursors()
            self.batches.rewind(self.cursors.batches)
            return TickStats(again=True)
        except WarehouseUnavailable as exc:
            log.warning("warehouse unreachable (%s); reconnecting", exc)
            self._reconnect(stop)
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
        """Read what is new, then commit it with the advanced cursors in one transaction.

        Each source is read on its own: one that fails is marked in its health and left for
        a later tick, and the others are committed without it.
        """
        stats, started = TickStats(), time.monotonic()
        try:
            poll_changes = partial(self.student_changes.poll, self.cursors.students)
            changes = self._guard("students", poll_changes, proves_ok=False)  # paced: may not read
            students = self._guard("students", self._read_students)
            chunk = self._guard("test_runs", self._read_log)
            reads = _Reads(
                self._take_batches(), students, chunk, changes
            )  # taken last: nothing may raise after
            if reads.batches is None and reads.students is None and reads.chunk is None and not changes:
                self._report_health()
                return stats
            with self.warehouse.transaction() as tx:
                cursors = self._stage(tx, reads, stats, stop)
                self._stage_health(tx)
        except BaseException:
            self.batches.rewind(self.cursors.batches)  # batches taken but not committed: read again
            raise
        self.cursors = cursors
        stats.seconds = time.monotonic() - started
        if reads.student_changes is not None:
            self.student_changes.committed(reads.student_changes)
        if self.on_commit:
            self.on_commit(stats, cursors)
        return stats

    def _take_batches(self) -> BatchesRead | None:
        """Every batch read the poller has ready; the poller's health becomes the source's."""
        read = self.batches.take()
        self.health.put("batches", self.batches.health())
        return read

    def _stage(
        self, tx: Transaction, reads: _Reads, stats: TickStats, stop: threading.Event | None
    ) -> Cursors:
        cursors = self.cursors
        tx.set_state(WRITER_KEY, "embedded")  # a Spark checkpoint refuses a warehouse written since
        # The log's first chunk parses on the worker while batches and students are staged here.
        parsed = self._parser.submit(self._parse, reads.chunk) if reads.chunk is not None else None
        if reads.batches is not None:
            tx.add_batches(reads.batches.batches)
            tx.add_rejects("batches", reads.batches.rejects)
            cursors = replace(cursors, batches=reads.batches.cursor)
            tx.set_state(BATCHES_KEY, cursors.batches.to_json())
            stats.batches = len(reads.batches.batches) + self._reconcile(tx, reads.batches.listing)
        if reads.students is not None:
            tx.add_students(reads.students.students)
            tx.add_rejects("students", reads.students.rejects)
            cursors = replace(cursors, students=reads.students.cursor)
            tx.set_state(STUDENTS_KEY, cursors.students.to_json())
            stats.students = len(reads.students.students)
            stats.backlog |= (
                len(reads.students.students) + len(reads.students.rejects) >= self.students.page_size
            )
        if reads.student_changes is not None:
            tx.update_students(reads.student_changes.upserts)
            tx.delete_students(reads.student_changes.deletes)
            tx.add_rejects("students", reads.student_changes.rejects)
            stats.students += len(reads.student_changes.upserts) + len(reads.student_changes.deletes)
        if parsed is not None:
            cursors = replace(cursors, log=self._stage_log(tx, parsed, stats, stop))
            tx.set_state(LOG_KEY, cursors.log.to_json())
        stats.quarantined = tx.counts.get("quarantined", 0)
        return cursors

    def _stage_log(
        self, tx: Transaction, parsed: Future[_Parsed | None], stats: TickStats, stop: threading.Event | None
    ) -> LogCursor:
        """Stage parsed chunks in order while the worker reads and parses the next one."""
        cursor = self.cursors.log
        deadline = time.monotonic() + self.config.commit_seconds
        pending: Future[_Parsed | None] | None = parsed
        while pending is not None:
            parsed_chunk = self._next_parsed(pending)
            if parsed_chunk is None:
                break  # at the end, or the log failed mid-tick: commit what was read
            chunk, delta = parsed_chunk
            stats.lines += chunk.lines.num_rows
            stats.log_bytes += chunk.consumed
            caught_up = chunk.consumed < self.config.chunk_bytes // 2  # a short read: at the end for now
            more = not (caught_up or self._txn_full(stats, deadline) or (stop and stop.is_set()))
            stats.backlog |= not caught_up
            pending = self._parser.submit(self._read_and_parse, chunk.cursor) if more else None
            tx.add_runs(delta)
            cursor = chunk.cursor
        return cursor

    def _txn_full(self, stats: TickStats, deadline: float) -> bool:
        """A backfill commits every ``txn_bytes`` or ``commit_seconds``, whichever comes first."""
        return stats.log_bytes >= self.config.txn_bytes or time.monotonic() >= deadline

    def _next_parsed(self, pending: Future[_Parsed | None]) -> _Parsed | None:
        """The worker's next chunk (None at the end); a failed read marks the log's health."""
        return self._guard("test_runs", pending.result)

    def _parse(self, chunk: LogChunk) -> _Parsed | None:
        return chunk, summarise_lines(chunk.lines)

    def _read_and_parse(self, cursor: LogCursor) -> _Parsed | None:
        chunk = self.log.read(cursor, self.config.chunk_bytes)
        return None if chunk is None else self._parse(chunk)

    def _read_log(self) -> LogChunk | None:
        chunk = self.log.read(self.cursors.log, self.config.chunk_bytes)
        if self.log.waiting:
            msg = f"`{self.log.name}` does not exist (yet); waiting for it to appear"
            raise SourceMissing(msg)
        return chunk

    def _read_students(self) -> StudentsPage | None:
        return self.students.read(self.cursors.students)

    def _reconcile(self, tx: Transaction, listing: BatchListing | None) -> int:
        """Apply a full listing of the batch API, if one came; return the batches it added."""
        if listing is None:
            return 0
        counts = reconcile_batches(
            tx,
            listing.records,
            listing.reach,
            listing.listed_at,
            gone_after=self.config.batches_gone_after,
            source=self.api.url,
        )
        return counts.added

    def _report_health(self) -> None:
        """Record changed source healths for `cohortflow status` (outside a data commit)."""
        changes = self.health.take_changes()
        if changes:
            with self.warehouse.transaction() as tx:
                for source, health in changes.items():
                    tx.set_state(health_key(source), health.to_json())

    def _stage_health(self, tx: Transaction) -> None:
        for source, health in self.health.take_changes().items():
            tx.set_state(health_key(source), health.to_json())


@dataclass
class _OnceGoal:
    """The sources' ends that ``--once`` aims at, each known once its source first answers."""

    log_end: LogCursor | None = None
    students_end: int | None = None
