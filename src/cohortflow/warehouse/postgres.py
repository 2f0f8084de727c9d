"""The PostgreSQL backend (psycopg 3): a shared server analysts query directly.

Credentials come from the URL or the standard ``PG*`` variables (libpq reads
them); :attr:`PostgresBackend.display` and every error we raise leave them out.
The single-writer lease is a session advisory lock: the server drops it when
our connection dies, so a killed pipeline never blocks the next one.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from cohortflow.errors import WarehouseError, WarehouseLocked, WarehouseUnavailable
from cohortflow.warehouse.dialects import POSTGRES, Dialect

# pg_try_advisory_lock key: "cohortfl" as a big-endian int64, unique enough per database.
WRITER_LOCK_KEY = int.from_bytes(b"cohortfl", "big") & 0x7FFF_FFFF_FFFF_FFFF
# A bigint advisory key shows in pg_locks as classid (high 32 bits) and objid (low 32 bits), objsubid 1.
_HOLDS_LOCK = """SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND pid = pg_backend_pid() AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1)"""


def redact(url: str) -> str:
    """The URL without its password (and without query parameters, which may hold one)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{parts.username}@{host}" if parts.username else host
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class PostgresBackend:
    """A warehouse in a PostgreSQL database."""

    dialect: Dialect = POSTGRES

    def __init__(self, url: str, connect_timeout: int = 10) -> None:
        self.url = url
        self.display = redact(url)
        self.connect_timeout = connect_timeout
        self._secret = urlsplit(url).password
        self._holding = False

    def connect(self, writer: bool) -> psycopg.Connection[Any]:
        """Open an autocommit connection (the warehouse issues BEGIN/COMMIT itself)."""
        return psycopg.connect(
            self.url,
            autocommit=True,
            connect_timeout=self.connect_timeout,
            application_name="cohortflow",
        )

    def acquire_writer(self, conn: Any) -> None:
        """Take the session advisory lock that marks the one writing pipeline."""
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (WRITER_LOCK_KEY,)).fetchone()
        if not row[0]:
            msg = (
                f"another cohortflow pipeline is writing to `{self.display}` (it holds advisory lock "
                f"{WRITER_LOCK_KEY})"
            )
            raise WarehouseLocked(msg)
        self._holding = True

    def check_writer(self, conn: Any) -> None:
        """Before a commit: our session must still hold the lock (advisory locks are per database)."""
        if not self._holding:
            return
        row = conn.execute(_HOLDS_LOCK, (WRITER_LOCK_KEY >> 32, WRITER_LOCK_KEY & 0xFFFF_FFFF)).fetchone()
        if not row[0]:
            self._holding = False
            msg = f"this pipeline lost its writer lock on `{self.display}`"
            raise WarehouseLocked(msg)

    def after_commit(self, conn: Any) -> None:
        """Nothing to do: the server manages its own WAL."""

    def release_writer(self, conn: Any) -> None:
        """Unlock now rather than when the server notices the closed connection."""
        if self._holding and conn is not None:
            self._holding = False
            conn.execute("SELECT pg_advisory_unlock(%s)", (WRITER_LOCK_KEY,))

    def load(self, conn: Any, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """COPY rows into a (staging) table."""
        with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)

    def wrap_error(self, exc: Exception) -> WarehouseError | None:
        """Map psycopg errors: a lost or refused connection is transient, the rest terminal."""
        if not isinstance(exc, psycopg.Error):
            return None
        text = self._scrub(str(exc).strip())
        if isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
            return WarehouseUnavailable(f"warehouse `{self.display}` is unreachable: {text}")
        return WarehouseError(f"warehouse `{self.display}`: {text}")

    def _scrub(self, text: str) -> str:
        if self._secret:
            text = text.replace(self._secret, "***")
        return re.sub(r"password=\S+", "password=***", text)
