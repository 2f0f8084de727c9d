"""Long-reading analysts against a SQLite warehouse, and a watch of its WAL (tests and bench).

``python -m cohortflow.testing.analysts WAREHOUSE HOLD_SECONDS`` is one analyst:
a loop of read transactions, each held ``HOLD_SECONDS`` (a dashboard or a
notebook that forgets to commit quickly), until SIGTERM.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from cohortflow.state import LOG_KEY


def analyst(warehouse: Path, hold: float) -> None:
    """Hold read transactions of ``hold`` seconds back to back until SIGTERM."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    conn = sqlite3.connect(warehouse, isolation_level=None, timeout=30)
    print("reading", flush=True)
    while not stop.is_set():
        conn.execute("BEGIN")
        conn.execute("SELECT count(*), sum(lessons_completed) FROM students").fetchone()
        stop.wait(hold)  # the analyst's open transaction, pinning its snapshot
        conn.execute("COMMIT")
    conn.close()


class Analysts:
    """``count`` analyst processes, started one ``hold / count`` apart so their reads overlap."""

    def __init__(self, warehouse: Path, count: int = 4, hold: float = 2.0) -> None:
        self.warehouse, self.count, self.hold = warehouse, count, hold
        self.procs: list[subprocess.Popen[str]] = []

    def __enter__(self) -> Analysts:
        command = [sys.executable, "-m", "cohortflow.testing.analysts", str(self.warehouse), str(self.hold)]
        for _ in range(self.count):
            proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            self.procs.append(proc)
            assert proc.stdout is not None
            proc.stdout.readline()  # "reading": its first transaction is open
            if len(self.procs) < self.count:  # stagger: there is never a moment without a reader
                time.sleep(self.hold / self.count)
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.communicate(timeout=30)  # reaps it and closes its pipe


@dataclass
class WalWatch:
    """Samples the WAL size and the log cursor's commit time while a pipeline follows."""

    warehouse: Path
    wal_sizes: list[int] = field(default_factory=list)
    commit_times: list[float] = field(default_factory=list)
    last_stamp: str | None = None

    def sample(self) -> None:
        """One look: WAL bytes now; the monotonic time whenever the log cursor moved."""
        try:
            self.wal_sizes.append(os.stat(f"{self.warehouse}-wal").st_size)
        except FileNotFoundError:
            self.wal_sizes.append(0)
        stamp = self._log_commit_stamp()
        if stamp is not None and stamp != self.last_stamp:
            self.last_stamp = stamp
            self.commit_times.append(time.monotonic())

    def _log_commit_stamp(self) -> str | None:
        conn = sqlite3.connect(self.warehouse, timeout=30)
        try:
            row = conn.execute("SELECT updated_at FROM pipeline_state WHERE key = ?", (LOG_KEY,)).fetchone()
        except sqlite3.OperationalError:  # no schema yet
            row = None
        finally:
            conn.close()
        return str(row[0]) if row else None

    def watch(self, seconds: float, every: float = 0.1) -> None:
        """Sample for ``seconds``."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.sample()
            time.sleep(every)

    def figures(self) -> dict[str, float]:
        """Peak and final WAL MiB, and the longest gap between two observed commits."""
        gaps = [b - a for a, b in zip(self.commit_times, self.commit_times[1:], strict=False)]
        return {
            "wal_peak_mib": max(self.wal_sizes, default=0) / (1 << 20),
            "wal_last_mib": (self.wal_sizes or [0])[-1] / (1 << 20),
            "longest_commit_gap_s": max(gaps, default=0.0),
            "commits_seen": len(self.commit_times),
        }


if __name__ == "__main__":
    analyst(Path(sys.argv[1]), float(sys.argv[2]))
