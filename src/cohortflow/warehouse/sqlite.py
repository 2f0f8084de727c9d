"""The SQLite backend: a WAL-mode file readable while the pipeline writes.

The writer holds a lease on the file's inode (:mod:`.lease`), checks before
each commit that the path still leads to that file, and keeps the WAL bounded
(:mod:`.wal`).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

from cohortflow.errors import WarehouseError, WarehouseGone, WarehouseUnavailable
from cohortflow.warehouse.dialects import SQLITE, Dialect
from cohortflow.warehouse.lease import FileLease, Identity, identity
from cohortflow.warehouse.sqlite_paths import check_readable, check_writable
from cohortflow.warehouse.wal import SIZE_LIMIT, WalGuard

BUSY_TIMEOUT_SECONDS = 30.0
_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED}


class SQLiteBackend:
    """A warehouse in one SQLite file."""

    dialect: Dialect = SQLITE

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.display = str(self.path)
        self.lease = FileLease(self.path, self.display)
        self.wal = WalGuard(self.path, busy_timeout=BUSY_TIMEOUT_SECONDS)
        self._new_lease = False
        self._gone = False
        self._side_files: dict[Path, Identity] = {}  # our -wal and -shm, to clean up if the file goes

    def connect(self, writer: bool) -> sqlite3.Connection:
        """Open the file in autocommit mode; the writer sets WAL journal and NORMAL sync."""
        if writer:
            check_writable(self.path)
            self.path.parent.mkdir(parents=True, exist_ok=True)
        else:
            check_readable(self.path)
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False
        )
        if writer:
            conn.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode: a crash of the process never loses a commit; only power loss might.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(f"PRAGMA journal_size_limit={SIZE_LIMIT}")
            # Checkpoints are the WalGuard's, past its soft limit: SQLite's own, at every commit that
            # leaves over 1000 pages, copied ~4 MiB at random offsets and synced the file each tick.
            conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def acquire_writer(self, conn: Any) -> None:
        """Lock the database file itself (through whatever path reaches it)."""
        self.lease.take()
        self._new_lease = True

    def check_writer(self, conn: Any) -> None:
        """Before a commit: the path must still lead to the file we hold (else WarehouseGone)."""
        try:
            self.lease.verify()
        except WarehouseGone:
            self._gone = True
            raise

    def after_commit(self, conn: Any) -> None:
        """Keep the WAL bounded; copy the first commit (who holds the lease) into the file itself.

        A reader through a hard link has another WAL name, so it sees only what was checkpointed.
        """
        if self.lease.identity is None:
            return
        if self._new_lease:
            self._new_lease = False
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._side_files = _identities(self.path, "-wal", "-shm")
        self.wal.after_commit(conn)

    def release_writer(self, conn: Any) -> None:
        """Unlock the file; if it went away, leave no WAL behind for a new file of that name."""
        try:
            if self._gone and conn is not None:
                self._leave_gone_file(conn)
        finally:
            self._gone = False
            self.lease.release()

    def _leave_gone_file(self, conn: Any) -> None:
        """Copy our WAL into the file we hold (complete if it was moved), then remove our -wal and -shm.

        SQLite does not checkpoint a moved file on close, and its WAL, named after the path, would
        otherwise be replayed into whatever file takes that name next.
        """
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        for side, ident in self._side_files.items():
            with suppress(FileNotFoundError):
                if identity(side) == ident:
                    side.unlink()

    def load(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Row inserts are SQLite's fastest load (its dialect never asks for this)."""
        marks = ", ".join("?" for _ in columns)
        conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)

    def wrap_error(self, exc: Exception) -> WarehouseError | None:
        """Map sqlite3 errors by code: busy or locked is transient, a full disk says what to free."""
        if not isinstance(exc, sqlite3.Error):
            return None
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code in _TRANSIENT:
            return WarehouseUnavailable(f"warehouse `{self.display}` is busy: {exc}")
        if code == sqlite3.SQLITE_FULL:
            return WarehouseError(self._disk_full())
        if code == sqlite3.SQLITE_NOTADB:
            return WarehouseError(
                f"`{self.display}` is not a SQLite database: point --warehouse at another file"
            )
        return WarehouseError(f"warehouse `{self.display}`: {exc}")

    def _disk_full(self) -> str:
        free, wal = shutil.disk_usage(self.path.parent).free / (1 << 20), self.wal.size() / (1 << 20)
        return (
            f"the disk holding warehouse `{self.display}` is full ({free:.1f} MiB free, its WAL "
            f"`{self.wal.wal.name}` is {wal:.1f} MiB); everything committed so far is kept: free space "
            "on that disk (or move the warehouse) and run again, it resumes from its last commit"
        )


def _identities(path: Path, *suffixes: str) -> dict[Path, Identity]:
    """The (device, inode) of the files beside ``path`` with these suffixes, where they exist."""
    found = {}
    for suffix in suffixes:
        side = path.with_name(path.name + suffix)
        with suppress(FileNotFoundError):
            found[side] = identity(side)
    return found
