"""Keeping the SQLite WAL bounded while analysts hold read transactions.

SQLite's automatic checkpoint copies WAL frames into the database, but it can
only start the WAL file over when every reader has let go of the snapshots
that still need it. A pipeline committing many times a second and a few
analysts with overlapping read transactions never leave such a moment, so the
WAL grows for as long as both go on.

The pipeline is the only writer, so it can make that moment: once the WAL
passes :data:`SOFT_LIMIT`, after a commit, it runs ``wal_checkpoint(TRUNCATE)``,
which holds back our next commit (never the readers) until the readers' current
transactions end, copies everything and truncates the WAL to zero. SQLite
waits for two rounds of readers (those older than our last commit, then those
older than the copy), each wait bounded by ``patience``, so freshness pauses
for about twice the longest reader transaction. A reader that keeps one
transaction open longer than ``patience`` pins the WAL: the pipeline gives up for now, keeps
committing, warns (once, then every few minutes) and tries again with backoff.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from cohortflow.retry import Backoff

log = logging.getLogger(__name__)

SOFT_LIMIT = 32 << 20
#: After a truncation, SQLite cuts a WAL that regrew past this back to it (``journal_size_limit``).
SIZE_LIMIT = 16 << 20
PATIENCE_SECONDS = 5.0
REMINDER_SECONDS = 300.0
MIN_SPACING_WAITS = 10


class WalGuard:
    """Checkpoints and truncates the WAL of one warehouse file when it grows past a soft limit."""

    def __init__(
        self,
        path: Path,
        soft_limit: int = SOFT_LIMIT,
        patience: float = PATIENCE_SECONDS,
        busy_timeout: float = 30.0,
    ) -> None:
        self.wal = path.with_name(path.name + "-wal")
        self.soft_limit = soft_limit
        self.patience = patience
        self.busy_timeout = busy_timeout
        self.backoff = Backoff(base=2.0, cap=60.0)
        self.truncations = 0
        self._reminded_at = 0.0

    def size(self) -> int:
        """The WAL file's size in bytes (0 when there is none)."""
        try:
            return os.stat(self.wal).st_size
        except FileNotFoundError:
            return 0

    def after_commit(self, conn: sqlite3.Connection) -> None:
        """Truncate the WAL if it passed the soft limit and we may try now."""
        size = self.size()
        now = time.monotonic()
        if size < self.soft_limit or not self.backoff.ready(now):
            return
        busy = self._truncate(conn)
        if not busy:
            if self.backoff.failures:
                log.info("the warehouse WAL was truncated again (readers let go)")
            self.backoff.succeeded()
            self.truncations += 1
            return
        pinned = f"a reader held a transaction open for over {self.patience:g} s"
        # Ten waits apart at least, from the wait's end: a pinned WAL costs commits at most ~10% of the time.
        self.backoff.failed(time.monotonic(), pinned, not_before=MIN_SPACING_WAITS * self.patience)
        if self.backoff.failures == 1 or now - self._reminded_at > REMINDER_SECONDS:
            self._reminded_at = now
            log.warning(
                "%s: the warehouse WAL `%s` is %.0f MiB and cannot shrink until it ends "
                "(analysts: keep read transactions short); committing on, retrying with backoff",
                pinned,
                self.wal,
                size / (1 << 20),
            )

    def _truncate(self, conn: sqlite3.Connection) -> bool:
        """Run ``wal_checkpoint(TRUNCATE)`` waiting at most ``patience``; True when readers blocked it."""
        conn.execute(f"PRAGMA busy_timeout={int(self.patience * 1000)}")
        try:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
        return bool(busy)
