"""Reading an upstream SQLite file the way SQLite's own readers do, and saying why when we cannot.

We open a normal (read-write capable) connection and switch it to
``PRAGMA query_only``: it never changes data, but like any SQLite reader it
rolls back a *hot journal* left by a writer that died mid-transaction, and in
WAL mode it can rebuild a missing ``-shm`` index (and, as any reader that is the
last to close a WAL database, checkpoints it: the data stays the same). A
``mode=ro`` connection can do neither and fails forever. Where the rollback is impossible (a read-only
file, directory or medium) the source is *blocked*: :class:`SourceBlocked`
says why and how to fix it, and the engine retries it with backoff.

Errors are mapped by SQLite result code, never by message text:

=================================  ==========================================
SQLITE_BUSY, SQLITE_LOCKED         SourceLocked (the writer holds a lock)
SQLITE_READONLY*, SQLITE_CANTOPEN  SourceBlocked (cannot recover the journal)
SQLITE_NOTADB                      ConfigError (not a SQLite file)
anything else                      SourceUnavailable
=================================  ==========================================
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from cohortflow.errors import ConfigError, SourceBlocked, SourceError, SourceLocked, SourceUnavailable

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_BLOCKED = frozenset({sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM})
BLOCKED_HINT = (
    "a writer died mid-transaction and left a hot journal that only a process allowed to write "
    "the file and its directory can roll back: give the pipeline write access to both (it never "
    "changes data), or open the database once with the sqlite3 shell as its owner"
)


def check_file(path: Path, option: str, *, must_exist: bool) -> bool:
    """Raise ConfigError for a path that can never be a SQLite file; False when absent for now."""
    if not path.parent.is_dir():
        msg = f"{option} `{path}`: directory `{path.parent}` does not exist"
        raise ConfigError(msg)
    if path.is_dir():
        msg = f"{option} `{path}` is a directory, not a SQLite file"
        raise ConfigError(msg)
    if not path.exists():
        if must_exist:
            msg = f"{option} `{path}` does not exist; check the path (or start the writer first)"
            raise ConfigError(msg)
        return False
    with open(path, "rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:  # an empty file is an empty database being created
        msg = f"{option} `{path}` is not a SQLite database"
        raise ConfigError(msg)
    return True


def connect_for_reading(path: Path, busy_ms: int) -> sqlite3.Connection:
    """A connection that reads like any SQLite reader (recovers hot journals) but never writes data."""
    uri = f"{path.resolve().as_uri()}?mode=rw"  # rw: never create the file; read-only files open read-only
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_ms / 1000, isolation_level=None)
    except sqlite3.Error as exc:
        raise wrap(path, exc) from exc
    try:
        conn.execute("PRAGMA query_only = ON")
    except sqlite3.Error as exc:
        conn.close()
        raise wrap(path, exc) from exc
    return conn


def wrap(path: Path, exc: sqlite3.Error) -> SourceError | ConfigError:
    """Our error for a SQLite error, chosen by its result code."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code == sqlite3.SQLITE_NOTADB:
        return ConfigError(f"`{path}` is not a SQLite database ({exc})")
    if code in _BLOCKED:
        return SourceBlocked(f"`{path}` cannot be read: {exc}", hint=BLOCKED_HINT)
    if code in _BUSY:
        return SourceLocked(f"`{path}` is locked by its writer: {exc}")
    return SourceUnavailable(f"`{path}` cannot be read: {exc}")
