"""Spark 4 Python Data Source streaming readers of the three sources.

Their offsets are the embedded engine's own cursors (as JSON), read by the
same source classes, so both engines share one cursor and reset semantics.
All three yield rows of one envelope schema, so a query can union them and a
micro-batch covers every source in one warehouse transaction.

- ``cohortflow_test_runs``: byte ranges of the log, split into partitions at
  newlines (executors share a backfill); rows carry ``(file, offset, line)``.
  The offset is keyed by file identity (device, inode), which is what a
  directory of rotated files would extend.
- ``cohortflow_students``: a rowid range of the students table.
- ``cohortflow_batches``: the batch API, read on the driver by cursor.

Each offset is tagged with its source's name (``{"source": ..., "cursor": ...}``),
so the sink can tell them apart in the checkpoint; a new checkpoint starts
from the warehouse's committed cursors (option ``startCursor``), so either
engine can pick up where the other stopped. Readers raise our errors as
:class:`~cohortflow.engines.spark.failures.CarriedError` so they keep their
type across the JVM.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pyarrow as pa
from pyspark.sql.datasource import (
    DataSource,
    DataSourceStreamReader,
    InputPartition,
    SimpleDataSourceStreamReader,
)
from pyspark.sql.streaming.datasource import (
    ReadAllAvailable,
    ReadLimit,
    ReadMaxBytes,
    ReadMaxRows,
    SupportsTriggerAvailableNow,
)

from cohortflow.engines.spark.failures import carried, carried_iter
from cohortflow.sources import BatchApi, BatchesCursor, LogCursor, RunLog, StudentsCursor, StudentsTable

ENVELOPE = (
    "source string, file string, offset long, line binary, id long, name string, "
    "batch_id long, created_at string, raw string, reason string"
)
ENVELOPE_ARROW = pa.schema(
    [
        ("source", pa.string()),
        ("file", pa.string()),
        ("offset", pa.int64()),
        ("line", pa.binary()),
        ("id", pa.int64()),
        ("name", pa.string()),
        ("batch_id", pa.int64()),
        ("created_at", pa.string()),
        ("raw", pa.string()),
        ("reason", pa.string()),
    ]
)


def behave_as_worker() -> None:
    """Set up this Spark Python worker for a clean stop (call it from code that runs in workers).

    - SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group,
      Spark's Python workers included, and pyspark's worker turns it into
      KeyboardInterrupt: the current micro-batch would fail. The driver stops
      the query between micro-batches instead.
    - A hang-up is silent: when a query stops, the JVM closes a worker's socket
      and then terminates it; the worker's dying traceback about the closed
      socket (often cut short by the termination) is noise on the user's terminal.
      Any other uncaught error is still printed.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    if not isinstance(sys.excepthook, _UnlessHungUp):
        sys.excepthook = _UnlessHungUp(sys.excepthook)


ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], object]


class _UnlessHungUp:
    """An excepthook that stays silent on a hang-up and passes any other error on."""

    def __init__(self, then: ExceptHook) -> None:
        self.then = then

    def __call__(self, kind: type[BaseException], error: BaseException, trace: TracebackType | None) -> None:
        if not hung_up(error):
            self.then(kind, error, trace)


def hung_up(error: BaseException | None) -> bool:
    """Whether ``error`` (or one it was raised while handling) is the other end closing the connection."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (EOFError, ConnectionError)):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def tagged(source: str, cursor: dict[str, Any]) -> dict[str, Any]:
    """A source's offset: its cursor, tagged with the source's name."""
    return {"source": source, "cursor": cursor}


def _cursor(offset: dict[str, Any]) -> dict[str, Any]:
    cursor: dict[str, Any] = offset["cursor"]
    return cursor


def _start(options: Mapping[str, str]) -> dict[str, Any] | None:
    """The cursor a fresh checkpoint starts from (the warehouse's committed one), if any."""
    text = options.get("startCursor")
    return json.loads(text) if text else None


def fit(
    schema: pa.Schema, columns: Mapping[str, pa.Array], rows: int, source: str | None = None
) -> pa.RecordBatch:
    """Columns cast into ``schema``, missing ones null; ``source`` (if given) fills the source column."""
    arrays = [
        pa.array([source] * rows, pa.string())
        if field.name == "source" and source is not None
        else columns[field.name].cast(field.type)
        if field.name in columns
        else pa.nulls(rows, field.type)
        for field in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


@dataclass
class LogRange(InputPartition):
    """A newline-aligned byte range of one file of the log (named by identity: it may be rotated)."""

    start: int
    end: int
    file: dict[str, Any]

    def __init__(self, start: int, end: int, file: dict[str, Any]) -> None:
        self.start, self.end, self.file = start, end, file


class RunsStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """The log by newline-aligned byte offsets, a backfill split over executors."""

    __test__ = False

    def __init__(self, options: Mapping[str, str]) -> None:
        behave_as_worker()
        self.log = RunLog(options["path"])
        self.max_bytes = int(options.get("maxBytesPerTrigger", "0"))
        self.part_bytes = int(options.get("partitionBytes", str(32 << 20)))
        self.chunk_bytes = int(options.get("chunkBytes", str(16 << 20)))
        self.start = LogCursor.from_json(_start(options))
        self.target: LogCursor | None = None

    def initialOffset(self) -> dict[str, Any]:
        return tagged("test_runs", self.start.to_json())

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxBytes(self.max_bytes) if self.max_bytes > 0 else ReadAllAvailable()

    @carried
    def prepareForTriggerAvailableNow(self) -> None:
        self.target = self.log.end()

    @carried
    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        return tagged("test_runs", self._latest(LogCursor.from_json(_cursor(start)), limit).to_json())

    def _latest(self, cursor: LogCursor, limit: ReadLimit) -> LogCursor:
        budget = limit.max_bytes if isinstance(limit, ReadMaxBytes) else None
        if self.target is not None:
            if self.log.reached(cursor, self.target):
                self.log.aligned_end(cursor, 0)  # still the file we read? (SourceReset if not)
                return cursor
            if cursor.identity == self.target.identity:
                remaining = self.target.offset - cursor.offset
                budget = remaining if budget is None else min(budget, remaining)
        return self.log.aligned_end(cursor, budget)

    @carried
    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        first, last = LogCursor.from_json(_cursor(start)), LogCursor.from_json(_cursor(end))
        # Offsets compare across a copy (copytruncate: same bytes); a move to the next file
        # ends at its offset 0, so it has no lines in between.
        if last.offset <= first.offset:
            return []
        cuts = self.log.cut_points(first.offset, last.offset, self.part_bytes, at=last)
        return [LogRange(s, e, last.to_json()) for s, e in cuts]

    @carried_iter
    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, LogRange)
        behave_as_worker()  # the reader was unpickled here: __init__ did not run
        at = LogCursor.from_json(partition.file)
        for lines in self.log.read_range(partition.start, partition.end, self.chunk_bytes, at=at):
            columns = {c: lines.column(c) for c in ("file", "offset", "line")}
            yield fit(ENVELOPE_ARROW, columns, lines.num_rows, "test_runs")

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to clean up: the log is never ours to delete."""


@dataclass
class StudentRange(InputPartition):
    """Students with ``after_id < id <= upto_id``."""

    after_id: int
    upto_id: int

    def __init__(self, after_id: int, upto_id: int) -> None:
        self.after_id, self.upto_id = after_id, upto_id


class StudentsStreamReader(DataSourceStreamReader, SupportsTriggerAvailableNow):
    """The students table by rowid."""

    def __init__(self, options: Mapping[str, str]) -> None:
        behave_as_worker()
        self.table = StudentsTable(options["path"])
        self.max_rows = int(options.get("maxRowsPerTrigger", "100000"))
        self.start = StudentsCursor.from_json(_start(options))
        self.target: int | None = None

    def initialOffset(self) -> dict[str, Any]:
        return tagged("students", self.start.to_json())

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_rows)

    @carried
    def prepareForTriggerAvailableNow(self) -> None:
        self.target = self.table.max_id()

    @carried
    def latestOffset(self, start: dict[str, Any], limit: ReadLimit) -> dict[str, Any]:
        cursor = StudentsCursor.from_json(_cursor(start))
        rows = limit.max_rows if isinstance(limit, ReadMaxRows) else self.max_rows
        if self.target is not None:
            rows = min(rows, self.target - cursor.last_id)
            if rows <= 0:
                return tagged("students", cursor.to_json())
        return tagged("students", self.table.latest(cursor, rows).to_json())

    def partitions(self, start: dict[str, Any], end: dict[str, Any]) -> list[InputPartition]:
        first = StudentsCursor.from_json(_cursor(start)).last_id
        last = StudentsCursor.from_json(_cursor(end)).last_id
        return [StudentRange(first, last)] if last > first else []

    @carried_iter
    def read(self, partition: InputPartition) -> Iterator[tuple[Any, ...]]:
        assert isinstance(partition, StudentRange)
        behave_as_worker()
        page = self.table.between(partition.after_id, partition.upto_id)
        if page is None:
            return
        for s in page.students:
            yield ("students", None, None, None, s.id, s.name, s.batch_id, s.created_at, None, None)
        for location, raw, reason in page.rejects:
            yield ("students", location, None, None, None, None, None, None, raw, reason)

    def commit(self, end: dict[str, Any]) -> None:
        """Nothing to clean up."""


class BatchesStreamReader(SimpleDataSourceStreamReader, SupportsTriggerAvailableNow):
    """The batch API, paged and de-duplicated by cursor on the driver."""

    def __init__(self, options: Mapping[str, str]) -> None:
        behave_as_worker()
        self.url = options["url"]
        self.timeout = float(options.get("timeout", "5"))
        self.start = BatchesCursor.from_json(_start(options))

    def prepareForTriggerAvailableNow(self) -> None:
        """Nothing to pin: every read already pages to the API's current end.

        Implementing it matters all the same: without it, Spark drops every
        source's read limit under ``availableNow``.
        """

    def initialOffset(self) -> dict[str, Any]:
        return tagged("batches", self.start.to_json())

    @carried
    def read(self, start: dict[str, Any]) -> tuple[Iterator[tuple[Any, ...]], dict[str, Any]]:
        with BatchApi(self.url, timeout=self.timeout) as api:
            read = api.read(BatchesCursor.from_json(_cursor(start)))
        return iter(_batch_rows(read.batches, read.rejects)), tagged("batches", read.cursor.to_json())

    @carried
    def readBetweenOffsets(self, start: dict[str, Any], end: dict[str, Any]) -> Iterator[tuple[Any, ...]]:
        """Replay: what was new after ``start`` and not after ``end`` (batches never change)."""
        until = BatchesCursor.from_json(_cursor(end))
        with BatchApi(self.url, timeout=self.timeout) as api:
            read = api.read(BatchesCursor.from_json(_cursor(start)))
        kept = [b for b in read.batches if not until.is_new(b)]
        rejected = [r for r in read.rejects if r[0].rsplit("#", 1)[-1] in until.rejected]
        return iter(_batch_rows(kept, rejected))


def _batch_rows(batches: list[Any], rejects: list[tuple[str, str, str]]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = [
        ("batches", None, None, None, b.id, b.name, None, b.created_at, None, None) for b in batches
    ]
    rows += [
        ("batches", loc, None, None, None, None, None, None, raw, reason) for loc, raw, reason in rejects
    ]
    return rows


class _Source(DataSource):
    """Common shape: the envelope schema."""

    def schema(self) -> str:
        return ENVELOPE


class RunsSource(_Source):
    """``spark.readStream.format("cohortflow_test_runs").option("path", ...)``."""

    __test__ = False

    @classmethod
    def name(cls) -> str:
        return "cohortflow_test_runs"

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return RunsStreamReader(self.options)


class StudentsSource(_Source):
    """``spark.readStream.format("cohortflow_students").option("path", ...)``."""

    @classmethod
    def name(cls) -> str:
        return "cohortflow_students"

    def streamReader(self, schema: Any) -> DataSourceStreamReader:
        return StudentsStreamReader(self.options)


class BatchesSource(_Source):
    """``spark.readStream.format("cohortflow_batches").option("url", ...)``."""

    @classmethod
    def name(cls) -> str:
        return "cohortflow_batches"

    def simpleStreamReader(self, schema: Any) -> SimpleDataSourceStreamReader:
        return BatchesStreamReader(self.options)


SOURCES = (RunsSource, StudentsSource, BatchesSource)
