"""Records read from the students table and the batch API, as the warehouse stores them.

Named tuples: a backfill makes hundreds of thousands, and they go to ``executemany`` as they are.
"""

from __future__ import annotations

from typing import NamedTuple


class BatchRecord(NamedTuple):
    """One batch (class/cohort) served by the batch API."""

    id: int
    name: str
    created_at: str


class StudentRecord(NamedTuple):
    """One row of the upstream ``students`` table."""

    id: int
    name: str
    batch_id: int
    created_at: str
