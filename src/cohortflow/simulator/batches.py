"""The batch list behind the API: a hidden SQLite file plus an in-memory index.

``.batches.db`` is the simulator's own bookkeeping (only the simulator reads
it); the API serves from memory, loaded from that file at start and appended
to after each durable insert. Batch ids are ``1..n`` in creation order and
``created_at`` strictly increases with the id, so one sorted list answers
every ``after`` query with a binary search.
"""

from __future__ import annotations

import bisect
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohortflow.simulator.catalogue import TRACKS

_DDL = (
    "CREATE TABLE IF NOT EXISTS batches ("
    "id INTEGER PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL)"
)
_GREGORIAN_OFFSET_100NS = 0x01B21DD213814000  # 1582-10-15 to 1970-01-01, in 100 ns


@dataclass(frozen=True)
class Batch:
    """One batch as the API serves it."""

    id: int
    name: str
    created_at: str

    def as_json(self) -> dict[str, object]:
        """The API's record, keys in the upstream's order."""
        return {"id": self.id, "name": self.name, "created_at": self.created_at}


@dataclass(frozen=True)
class BatchNamer:
    """Names batches ``<track>-<uuid1>`` with a time-based uuid, as the upstream does.

    The uuid's clock fields come from the batch's own ``created_at`` and its
    node and clock sequence from the seed, so names are reproducible.
    """

    node: int
    clock_seq: int

    @classmethod
    def from_rng(cls, rng: np.random.Generator) -> BatchNamer:
        """A namer with a random (multicast-flagged, like Python's) node id."""
        node = int(rng.integers(0, 2**48)) | 0x010000000000
        return cls(node=node, clock_seq=int(rng.integers(0, 2**14)))

    def name(self, track: str, created_us: int) -> str:
        """The name of a batch of ``track`` created at ``created_us``."""
        stamp = created_us * 10 + _GREGORIAN_OFFSET_100NS
        fields = (
            stamp & 0xFFFFFFFF,
            (stamp >> 32) & 0xFFFF,
            ((stamp >> 48) & 0x0FFF) | 0x1000,
            ((self.clock_seq >> 8) & 0x3F) | 0x80,
            self.clock_seq & 0xFF,
            self.node,
        )
        return f"{track}-{uuid.UUID(fields=fields)}"

    def track(self, rng: np.random.Generator) -> str:
        """Draw a track uniformly."""
        return TRACKS[int(rng.integers(0, len(TRACKS)))]


class BatchLedger:
    """Durable, append-only batch list with a fast in-memory ``after`` index."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        self._conn.execute(_DDL)
        self._lock = threading.Lock()
        rows = self._conn.execute("SELECT id, name, created_at FROM batches ORDER BY id")
        self._batches = [Batch(int(i), str(n), str(c)) for i, n, c in rows]
        self._keys = [batch.created_at for batch in self._batches]

    def close(self) -> None:
        """Close the hidden database."""
        self._conn.close()

    def __len__(self) -> int:
        return len(self._batches)

    @property
    def last(self) -> Batch | None:
        """The newest batch, or None before the first."""
        return self._batches[-1] if self._batches else None

    def add(self, name: str, created_at: str) -> Batch:
        """Persist a new batch (next id) and make it visible to the API."""
        return self.add_many([(name, created_at)])[-1]

    def add_many(self, rows: Sequence[tuple[str, str]]) -> list[Batch]:
        """Persist many batches in one transaction, then publish them."""
        start = len(self._batches) + 1
        new = [Batch(start + i, name, created) for i, (name, created) in enumerate(rows)]
        if new and self._keys and new[0].created_at <= self._keys[-1]:
            msg = "batch created_at must increase"
            raise ValueError(msg)
        self._conn.execute("BEGIN IMMEDIATE")
        self._conn.executemany(
            "INSERT INTO batches (id, name, created_at) VALUES (?, ?, ?)",
            [(b.id, b.name, b.created_at) for b in new],
        )
        self._conn.execute("COMMIT")
        with self._lock:
            self._batches.extend(new)
            self._keys.extend(b.created_at for b in new)
        return new

    def page(self, after: str | None, limit: int) -> list[Batch]:
        """Up to ``limit`` batches with ``created_at > after`` (all when None), oldest first."""
        with self._lock:
            start = 0 if after is None else bisect.bisect_right(self._keys, after)
            return self._batches[start : start + limit]
