"""The SQLite backend: a WAL-mode file readable while the pipeline writes."""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from cohortflow.errors import WarehouseError, WarehouseLocked, WarehouseUnavailable
from cohortflow.warehouse.dialects import SQLITE, Dialect


class SQLiteBackend:
    """A warehouse in one SQLite file; the single-writer lease is an flock beside it."""

    dialect: Dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.display = str(self.path)
        self._lock_file: IO[str] | None = None

    def connect(self, writer: bool) -> sqlite3.Connection:
        """Open the file in autocommit mode; the writer sets WAL journal and NORMAL sync."""
        if writer:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            msg = f"there is no warehouse at `{self.display}` yet: run `cohortflow run` first"
            raise WarehouseError(msg)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
        if writer:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a crash of the process never loses a commit; only power loss might.
            conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def acquire_writer(self, conn: Any) -> None:
        """Hold an exclusive flock on ``<warehouse>.lock``; the kernel drops it if we die."""
        if self._lock_file is not None:
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115 - held for our lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            msg = f"another cohortflow pipeline (pid {holder}) is writing to `{self.display}`"
            raise WarehouseLocked(msg) from exc
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._lock_file = handle

    def release_writer(self, conn: Any) -> None:
        """Release the flock."""
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def load(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Row inserts are SQLite's fastest load (its dialect never asks for this)."""
        marks = ", ".join("?" for _ in columns)
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def wrap_error(self, exc: Exception) -> WarehouseError | None:
        """Map sqlite3 errors: a locked or unreadable file is transient, the rest terminal."""
        if not isinstance(exc, sqlite3.Error):
            return None
        text = str(exc)
        if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
            return WarehouseUnavailable(f"warehouse `{self.display}` is busy: {text}")
        return WarehouseError(f"warehouse `{self.display}`: {text}")
