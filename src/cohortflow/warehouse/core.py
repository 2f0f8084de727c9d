"""The warehouse: one schema, one apply, any backend.

A :class:`Transaction` stages what a tick read (batches, students, parsed
runs, rejects) together with the source cursors, then recomputes only the
touched students and batches and commits it all at once. A crash before the
commit loses nothing: the cursors roll back with the rows they produced.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Protocol

from cohortflow.errors import WarehouseError, WarehouseLocked
from cohortflow.parse import RunsDelta
from cohortflow.records import BatchRecord, StudentRecord
from cohortflow.warehouse import schema
from cohortflow.warehouse.dialects import Dialect
from cohortflow.warehouse.text import REPLACED_KEY, TextRule


class Backend(Protocol):
    """How to reach one kind of database; everything else is shared."""

    dialect: Dialect
    display: str

    def connect(self, writer: bool) -> Any:
        """Open a DB-API connection in autocommit mode (we issue BEGIN/COMMIT).

        A reader must not create the warehouse nor change its settings.
        """

    def acquire_writer(self, conn: Any) -> None:
        """Take the single-writer lease or raise WarehouseLocked."""

    def check_writer(self, conn: Any) -> None:
        """Before each commit: raise unless we still hold the lease on the same database."""

    def after_commit(self, conn: Any) -> None:
        """Housekeeping after a writer's commit (e.g. bound the SQLite WAL)."""

    def release_writer(self, conn: Any) -> None:
        """Give the lease back (the OS or the server also drops it if we die)."""

    def wrap_error(self, exc: Exception) -> WarehouseError | None:
        """Map a driver exception to ours, or None when it is not a driver error."""

    def load(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Bulk-load rows into a table (only called when the dialect sets ``bulk_min_rows``)."""


WRITER_KEY = "meta:writer"


def writer_info() -> dict[str, Any]:
    """Who holds the writer lease, as recorded in pipeline_state for the next one to read."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_now()}


def _holder(info: Any) -> str:
    if not isinstance(info, dict):
        return ""
    return f" (pid {info.get('pid')} on {info.get('host')}, since {info.get('since')})"


def utc_now() -> str:
    """Now, as the warehouse stores our own timestamps."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Warehouse:
    """A connection to the warehouse and the operations the pipeline and analysts need."""

    def __init__(self, backend: Backend, writer: bool = False, clock: Callable[[], str] = utc_now) -> None:
        self.backend = backend
        self.writer = writer
        self.clock = clock
        self.leased = False
        self._conn: Any = None

    @property
    def dialect(self) -> Dialect:
        """The backend's SQL dialect."""
        return self.backend.dialect

    @property
    def conn(self) -> Any:
        """The open connection, opened on first use."""
        if self._conn is None:
            with self._errors():
                self._conn = self.backend.connect(self.writer)
        return self._conn

    def close(self) -> None:
        """Close the connection and give back the writer lease."""
        conn, self._conn = self._conn, None
        self.leased = False
        try:
            with suppress(Exception):  # a dead connection has lost its lease already
                self.backend.release_writer(conn)
        finally:
            if conn is not None:
                conn.close()

    def __enter__(self) -> Warehouse:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except Exception as exc:
            mapped = self.backend.wrap_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (dialect-rendered) and return its rows, if any."""
        with self._errors():
            cur = self.conn.cursor()
            try:
                cur.execute(_render(self.dialect, sql), params)
                return list(cur.fetchall()) if cur.description else []
            finally:
                cur.close()

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        batch = rows if isinstance(rows, list) else list(rows)
        if not batch:
            return
        with self._errors():
            cur = self.conn.cursor()
            try:
                cur.executemany(_render(self.dialect, sql), batch)
            finally:
                cur.close()

    def load(self, bulk: schema.Bulk, rows: Sequence[Sequence[Any]]) -> None:
        """Stage rows with the backend's bulk loader, then apply them set-based."""
        self.execute(bulk.ddl)
        with self._errors():
            self.backend.load(self.conn, bulk.stage, bulk.names, rows)
        self.execute(bulk.apply)
        self.execute(f"DELETE FROM {bulk.stage}")

    def ensure_schema(self) -> None:
        """Create the tables and views if missing; refuse a warehouse of another version."""
        with self.transaction() as tx:
            for ddl in schema.TABLES:
                tx.execute(ddl)
            found = tx.get_state("meta:schema_version")
            if found == "1":  # additive: the batch reconciler's columns
                for ddl in schema.MIGRATE_FROM_1:
                    tx.execute(ddl)
                found = None
            for ddl in schema.VIEWS:
                tx.execute(ddl)
            if found is None:
                tx.set_state("meta:schema_version", schema.SCHEMA_VERSION)
            elif found != schema.SCHEMA_VERSION:
                msg = (
                    f"warehouse `{self.backend.display}` has schema version {found}, this "
                    f"cohortflow writes version {schema.SCHEMA_VERSION}: rebuild it with "
                    "`cohortflow run --on-reset restart` or point --warehouse elsewhere"
                )
                raise WarehouseError(msg)

    def acquire_writer(self) -> None:
        """Become the only pipeline writing to this warehouse, and record who we are in it."""
        try:
            with self._errors():
                self.backend.acquire_writer(self.conn)
        except WarehouseLocked as exc:
            msg = f"{exc.message}{_holder(self.state().get(WRITER_KEY))}"
            raise WarehouseLocked(msg) from exc
        self.leased = True
        with self.transaction() as tx:
            tx.set_state(WRITER_KEY, writer_info())

    def state(self) -> dict[str, Any]:
        """Every pipeline_state entry, JSON-decoded."""
        return {key: json.loads(value) for key, value in self.execute(schema.SELECT_STATE)}

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """One atomic unit: commit on success, roll back on any error."""
        self.execute(self.dialect.begin)
        tx = Transaction(self)
        try:
            yield tx
            tx.finish()
            if self.leased:
                with self._errors():
                    self.backend.check_writer(self.conn)
            self.execute("COMMIT")
        except BaseException:
            self._rollback_quietly()
            raise
        if self.leased:
            with self._errors():
                self.backend.after_commit(self.conn)

    def _rollback_quietly(self) -> None:
        with suppress(Exception):
            self.execute("ROLLBACK")

    def wipe(self) -> None:
        """Delete every row the pipeline wrote (used by ``--on-reset restart``)."""
        with self.transaction() as tx:
            for table in schema.DATA_TABLES:
                tx.execute(f"DELETE FROM {table}")
            tx.set_state("meta:schema_version", schema.SCHEMA_VERSION)
            if self.leased:
                tx.set_state(WRITER_KEY, writer_info())

    def leaderboard(self, top: int) -> list[dict[str, Any]]:
        """The top batches by students who completed at least 3 lessons."""
        columns = (
            *("rank", "batch_id", "name", "students_completed_3plus", "students_total"),
            *("created_at", "updated_at"),
        )
        return [dict(zip(columns, row, strict=True)) for row in self.execute(schema.LEADERBOARD, (top,))]

    def quarantine_counts(self) -> list[tuple[str, str, int]]:
        """Quarantined records by source and reason."""
        return [(s, r, int(n)) for s, r, n in self.execute(schema.QUARANTINE_COUNTS)]


@lru_cache(maxsize=256)
def _render(dialect: Dialect, sql: str) -> str:
    return dialect.render(sql)


class Transaction:
    """Stages one tick's rows; :meth:`finish` recomputes what they touched."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse
        self.now = warehouse.clock()
        self.counts: dict[str, int] = {}
        self.text = TextRule()
        self._touched: set[int] = set()  # students in touched_students: a backfill names each many times
        for ddl in schema.TEMP_TABLES:
            self.execute(ddl)
        for statement in schema.CLEAR_TEMP:
            self.execute(statement)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement inside the transaction."""
        return self.warehouse.execute(sql, params)

    def _many(self, sql: str, rows: Sequence[Sequence[Any]], count_as: str | None = None) -> None:
        bulk = schema.BULK.get(sql)
        least = self.warehouse.dialect.bulk_min_rows
        if bulk is not None and least is not None and len(rows) >= least:
            self.warehouse.load(bulk, rows)
        else:
            self.warehouse.executemany(sql, rows)
        if count_as:
            self.counts[count_as] = self.counts.get(count_as, 0) + len(rows)

    def add_batches(self, batches: Sequence[BatchRecord]) -> None:
        """Stage newly served batches (idempotent by id)."""
        self._many(
            schema.INSERT_BATCH,
            [(b.id, self.text.value(b.name), b.created_at, self.now) for b in batches],
            "batches",
        )
        self._many(schema.TOUCH_BATCH, [(b.id,) for b in batches])

    def add_students(self, students: Sequence[StudentRecord]) -> None:
        """Stage new students (idempotent by id)."""
        holdable = self.text.holds(s.name for s in students)
        rows = students if holdable else [s._replace(name=self.text.value(s.name)) for s in students]
        self._many(schema.INSERT_STUDENT, rows, "students")
        self._touch_students(s.id for s in students)

    def update_students(self, students: Sequence[StudentRecord]) -> None:
        """Stage students edited upstream (or back after a delete): old and new batch are recomputed."""
        self._many(schema.TOUCH_BATCH_OF_STUDENT, [(s.id,) for s in students])
        rows = [(s.id, s.name, s.batch_id, s.created_at) for s in students]
        self._many(schema.UPSERT_STUDENT, rows, "students_updated")
        self._touch_students(s.id for s in students)

    def delete_students(self, ids: Sequence[int]) -> None:
        """Stage students deleted upstream; their completions stay but count for no batch."""
        self._many(schema.TOUCH_BATCH_OF_STUDENT, [(i,) for i in ids])
        self._many(schema.DELETE_STUDENT, [(i,) for i in ids], "students_deleted")

    def add_runs(self, delta: RunsDelta) -> None:
        """Stage what parsed test runs contribute: mappings, completions, rejects."""
        mappings = self._rows(delta.mappings, "lesson_id", "lesson_title")
        self._many(schema.INSERT_LESSON, mappings)
        titles = self._rows(delta.title_completions, "student_id", "lesson_title")
        self._many(schema.INSERT_PENDING, titles)
        self._many(schema.TOUCH_TITLE, [(t,) for t in {m[1] for m in mappings} | {t[1] for t in titles}])
        completions = self._rows(delta.completions, "student_id", "lesson_id")
        self._many(schema.INSERT_COMPLETION, completions, "completions")
        self._touch_students(c[0] for c in completions)
        rejects = [
            (f"{file}:{offset}", raw or "", reason)
            for file, offset, raw, reason in self._rows(delta.rejects, "file", "offset", "raw", "reason")
        ]
        self.add_rejects("test_runs", rejects)
        self.counts["lines"] = self.counts.get("lines", 0) + delta.lines

    def _touch_students(self, ids: Iterable[int]) -> None:
        """Mark students for FINISH's recount (each once per transaction)."""
        new = [i for i in dict.fromkeys(ids) if i not in self._touched]
        self._touched.update(new)
        self._many(schema.TOUCH_STUDENT, [(i,) for i in new])

    def add_rejects(self, source: str, rejects: Sequence[tuple[str, str, str]]) -> None:
        """Quarantine bad records: ``(location, raw, reason)`` each."""
        rows = [
            (source, self.text.value(loc), self.text.value(raw), reason, self.now)
            for loc, raw, reason in rejects
        ]
        self._many(schema.INSERT_QUARANTINE, rows, "quarantined")

    def get_state(self, key: str) -> Any:
        """Read one pipeline_state entry (JSON-decoded) as this transaction sees it."""
        rows = self.execute(schema.SELECT_STATE_KEY, (key,))
        return json.loads(rows[0][0]) if rows else None

    def set_state(self, key: str, value: Any) -> None:
        """Write a cursor or marker; it commits with the data."""
        self.execute(schema.UPSERT_STATE, (key, json.dumps(value, sort_keys=True), self.now))

    def finish(self) -> None:
        """Resolve late lesson titles, then recompute touched students and batches."""
        if self.warehouse.dialect.analyze_temp_tables:
            # Without statistics PostgreSQL guesses the touched set and plans the recount badly.
            self.execute(schema.ANALYZE_TOUCHED)
        for statement in schema.FINISH:
            self.execute(statement)
        self.execute(schema.RECOMPUTE_BATCHES, (self.now,))
        if self.text.replaced:
            self.set_state(REPLACED_KEY, (self.get_state(REPLACED_KEY) or 0) + self.text.replaced)

    def _rows(self, table: Any, *columns: str) -> list[tuple[Any, ...]]:
        """Arrow columns as a list of Python tuples for executemany, text made storable."""
        if table.num_rows == 0:
            return []
        return list(zip(*(self.text.column(table.column(c)).to_pylist() for c in columns), strict=True))
