"""What the dashboard shows, read from the warehouse: each view is a list of row dicts.

Every value a user chooses reaches SQL as a bound parameter; column and
order names come from fixed whitelists.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cohortflow.state import BATCHES_KEY, LOG_KEY, STUDENTS_KEY
from cohortflow.warehouse import Warehouse

TRACKS = ("web", "ios", "data_science")
LEADERBOARD_COLUMNS = (
    *("rank", "batch_id", "name", "students_completed_3plus", "students_total"),
    *("created_at", "updated_at"),
)
STUDENT_COLUMNS = ("id", "name", "created_at", "lessons_completed")
REJECT_COLUMNS = ("id", "source", "location", "reason", "raw", "ingested_at")
MAX_TOP = 1_000

# The batch_leaderboard view's rank (1 + batches with more students at 3+; ties share a rank),
# computed per row shown: with the batches_by_completed index a page reads a few index
# entries instead of ranking every batch (tests/dashboard checks both agree).
_RANKED = """SELECT 1 + (SELECT count(*) FROM batches w
        WHERE w.students_completed_3plus > b.students_completed_3plus) AS rank,
    b.id, b.name, b.students_completed_3plus, b.students_total, b.created_at, b.updated_at
    FROM batches b"""
_LEADERBOARD = f"""{_RANKED}
    WHERE b.name LIKE ? ESCAPE '!' AND lower(b.name) LIKE ? ESCAPE '!'
    ORDER BY b.students_completed_3plus DESC, b.id LIMIT ?"""
_BATCH = f"{_RANKED} WHERE b.id = ?"
_TOTALS = """SELECT (SELECT count(*) FROM batches), (SELECT count(*) FROM students),
    (SELECT count(*) FROM quarantine), (SELECT max(updated_at) FROM pipeline_state)"""
_VERSION = "SELECT max(updated_at), count(*) FROM pipeline_state"
_STUDENTS = "SELECT id, name, created_at, lessons_completed FROM students WHERE batch_id = ?"
_REJECTS = "SELECT id, source, location, reason, raw, ingested_at FROM quarantine"


def _like(text: str) -> str:
    """``text`` as a literal inside a LIKE pattern (``!`` is our escape character)."""
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


@dataclass(frozen=True)
class LeaderboardQuery:
    """Which part of the leaderboard a page asked for."""

    track: str = ""
    search: str = ""
    top: int = 20

    @classmethod
    def from_params(cls, params: Any) -> LeaderboardQuery:
        """Read ``track``, ``q`` and ``top`` from query parameters; unknown values mean 'all'."""
        track = params.get("track", "")
        return cls(
            track=track if track in TRACKS else "",
            search=params.get("q", "").strip()[:200],
            top=_clamp_int(params.get("top"), 20, 1, MAX_TOP),
        )


def _clamp_int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return max(low, min(high, int(value))) if value else default
    except ValueError:
        return default


def leaderboard(warehouse: Warehouse, query: LeaderboardQuery) -> list[dict[str, Any]]:
    """The top batches (ties share a rank), filtered by track and a name search."""
    track = f"{_like(query.track)}-%" if query.track else "%"
    search = f"%{_like(query.search.lower())}%"
    rows = warehouse.execute(_LEADERBOARD, (track, search, query.top))
    return [dict(zip(LEADERBOARD_COLUMNS, row, strict=True)) for row in rows]


def totals(warehouse: Warehouse) -> dict[str, Any]:
    """Counts of batches, students and quarantined records, and the last commit time."""
    batches, students, quarantined, last_commit = warehouse.execute(_TOTALS)[0]
    return {
        "batches": int(batches),
        "students": int(students),
        "quarantined": int(quarantined),
        "last_commit": last_commit,
    }


def version(warehouse: Warehouse) -> tuple[Any, ...]:
    """Something that changes with every commit the pipeline makes."""
    return tuple(warehouse.execute(_VERSION)[0])


def batch(warehouse: Warehouse, batch_id: int) -> dict[str, Any] | None:
    """One batch with its rank, or None."""
    rows = warehouse.execute(_BATCH, (batch_id,))
    return dict(zip(LEADERBOARD_COLUMNS, rows[0], strict=True)) if rows else None


def students(warehouse: Warehouse, batch_id: int, sort: str, descending: bool) -> list[dict[str, Any]]:
    """A batch's students with their completed lessons, sorted by a whitelisted column."""
    column = sort if sort in STUDENT_COLUMNS else "lessons_completed"
    order = "DESC" if descending else "ASC"
    sql = f"{_STUDENTS} ORDER BY {column} {order}, id"  # whitelisted names only
    return [dict(zip(STUDENT_COLUMNS, row, strict=True)) for row in warehouse.execute(sql, (batch_id,))]


def quarantine_counts(warehouse: Warehouse) -> list[dict[str, Any]]:
    """Quarantined records by source and reason."""
    return [{"source": s, "reason": r, "count": n} for s, r, n in warehouse.quarantine_counts()]


def latest_rejects(warehouse: Warehouse, reason: str, limit: int) -> list[dict[str, Any]]:
    """The newest quarantined records, optionally of one reason."""
    if reason:
        rows = warehouse.execute(f"{_REJECTS} WHERE reason = ? ORDER BY id DESC LIMIT ?", (reason, limit))
    else:
        rows = warehouse.execute(f"{_REJECTS} ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(zip(REJECT_COLUMNS, row, strict=True)) for row in rows]


def state_times(warehouse: Warehouse) -> dict[str, Any]:
    """When each source last committed data."""
    keys = (LOG_KEY, STUDENTS_KEY, BATCHES_KEY)
    rows = warehouse.execute("SELECT key, value, updated_at FROM pipeline_state WHERE key IN (?, ?, ?)", keys)
    found = {key: (json.loads(value), updated) for key, value, updated in rows}
    return {
        "test_runs": found.get(LOG_KEY, (None, None))[1],
        "students": found.get(STUDENTS_KEY, (None, None))[1],
        "batches": found.get(BATCHES_KEY, (None, None))[1],
    }
