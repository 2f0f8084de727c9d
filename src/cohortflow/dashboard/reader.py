"""Read-only, short-lived access to the warehouse for the dashboard.

A page reads in one short transaction and lets go at once: a SQLite
connection is opened read-only (``mode=ro``, ``query_only``) and closed after
each read, so the dashboard never pins the WAL nor blocks the writer; a
PostgreSQL connection is opened with ``default_transaction_read_only`` and a
statement timeout, and kept in a small pool between reads (never inside a
transaction).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from urllib.parse import quote

from cohortflow.errors import WarehouseError
from cohortflow.warehouse import Backend, Warehouse, open_warehouse
from cohortflow.warehouse.sqlite import SQLiteBackend

#: How each dialect opens a read-only snapshot.
READ_BEGIN = {"sqlite": "BEGIN DEFERRED", "postgresql": "BEGIN READ ONLY"}
POOL_SIZE = 4


class ReadOnlySQLite(SQLiteBackend):
    """A SQLite warehouse opened read-only; it is never created nor changed."""

    def connect(self, writer: bool) -> sqlite3.Connection:
        """Open ``file:…?mode=ro`` in autocommit mode with ``query_only`` on."""
        if not self.path.exists():
            msg = f"there is no warehouse at `{self.display}` yet: run `cohortflow run` first"
            raise WarehouseError(msg)
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5, check_same_thread=False)
        conn.execute("PRAGMA query_only=1")
        return conn


def read_only_backend(target: str) -> Backend:
    """The read-only twin of the backend ``open_warehouse`` picks for ``target``."""
    backend = open_warehouse(target).backend  # checks the target's form; opens nothing yet
    if isinstance(backend, SQLiteBackend):
        return ReadOnlySQLite(backend.path)
    from cohortflow.dashboard.pgreader import ReadOnlyPostgres

    return ReadOnlyPostgres(getattr(backend, "url"))  # noqa: B009 - PostgresBackend, imported lazily


class Reader:
    """Hands out read-only warehouse connections for one short read each."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.backend = read_only_backend(target)
        self.pooled = self.backend.dialect.name != "sqlite"
        self._idle: list[Warehouse] = []
        self._lock = threading.Lock()

    @property
    def display(self) -> str:
        """The warehouse, without credentials."""
        return self.backend.display

    @contextmanager
    def snapshot(self) -> Iterator[Warehouse]:
        """One consistent read-only transaction, committed as soon as the block ends."""
        with self.connection() as warehouse:
            warehouse.execute(READ_BEGIN[warehouse.dialect.name])
            try:
                yield warehouse
            except BaseException:
                with suppress(WarehouseError):
                    warehouse.execute("ROLLBACK")
                raise
            warehouse.execute("COMMIT")

    @contextmanager
    def connection(self) -> Iterator[Warehouse]:
        """A read-only connection in autocommit mode: each statement is its own short read."""
        warehouse = self._take()
        try:
            yield warehouse
        except BaseException:
            warehouse.close()  # its state is unknown: never reuse it
            raise
        self._give(warehouse)

    def _take(self) -> Warehouse:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Warehouse(self.backend)

    def _give(self, warehouse: Warehouse) -> None:
        with self._lock:
            if self.pooled and len(self._idle) < POOL_SIZE:
                self._idle.append(warehouse)
                return
        warehouse.close()

    def close(self) -> None:
        """Close the pooled connections."""
        with self._lock:
            idle, self._idle = self._idle, []
        for warehouse in idle:
            with suppress(Exception):
                warehouse.close()
