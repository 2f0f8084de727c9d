"""Records read from the students table and the batch API, as the warehouse stores them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """One batch (class/cohort) served by the batch API."""

    id: int
    name: str
    created_at: str


@dataclass(frozen=True, slots=True)
class StudentRecord:
    """One row of the upstream ``students`` table."""

    id: int
    name: str
    batch_id: int
    created_at: str
