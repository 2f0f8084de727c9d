"""The pipeline's shared vocabulary: committed cursors, what a tick did, and state keys.

Engines, the CLI, reports and the dashboard all speak it; none of them
needs another engine to do so.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cohortflow.config import SOURCE_FIELDS, PipelineConfig
from cohortflow.sources import BatchesCursor, LogCursor, StudentsCursor
from cohortflow.warehouse import Warehouse

LOG_KEY = "cursor:test_runs"
STUDENTS_KEY = "cursor:students"
BATCHES_KEY = "cursor:batches"
SOURCES_KEY = "meta:sources"


def followed_sources(config: PipelineConfig) -> dict[str, str]:
    """The sources ``config`` follows, as recorded in the warehouse (paths made absolute)."""
    return {
        "students_db": str(config.students_db.resolve()),
        "test_runs_log": str(config.test_runs_log.resolve()),
        "batches_url": config.batches_url,
    }


def record_sources(warehouse: Warehouse, config: PipelineConfig) -> None:
    """Write down which sources this warehouse follows, for `status` and other readers."""
    with warehouse.transaction() as tx:
        tx.set_state(SOURCES_KEY, followed_sources(config))


def with_recorded_sources(
    config: PipelineConfig, state: dict[str, Any], explicit: Collection[str] = ()
) -> PipelineConfig:
    """``config`` pointed at the sources the pipeline recorded, except the ``explicit`` fields."""
    recorded = state.get(SOURCES_KEY) or {}
    found = {name: recorded[name] for name in SOURCE_FIELDS if name in recorded and name not in explicit}
    paths = {name: Path(value) for name, value in found.items() if name != "batches_url"}
    return replace(config, **{**found, **paths})


WRITER_KEY = "meta:last_writer"  # "embedded" or "spark:<query id>": who committed last
WAREHOUSE_ID_KEY = "meta:warehouse_id"  # a Spark checkpoint records it, to refuse another warehouse's


@dataclass(frozen=True)
class Cursors:
    """Where each source was read up to, as committed in the warehouse."""

    log: LogCursor = field(default_factory=LogCursor)
    students: StudentsCursor = field(default_factory=StudentsCursor)
    batches: BatchesCursor = field(default_factory=BatchesCursor)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Cursors:
        """Load the committed cursors (missing ones start from the beginning)."""
        return cls(
            LogCursor.from_json(state.get(LOG_KEY)),
            StudentsCursor.from_json(state.get(STUDENTS_KEY)),
            BatchesCursor.from_json(state.get(BATCHES_KEY)),
        )


@dataclass
class TickStats:
    """What one tick committed."""

    batches: int = 0
    students: int = 0
    lines: int = 0
    log_bytes: int = 0
    quarantined: int = 0
    again: bool = False  # nothing committed, but go again at once (after a restart or a retry)
    backlog: bool = False  # a source had more than one read's worth: go again at once
    seconds: float = 0.0  # wall time from the tick's first read to its commit

    @property
    def empty(self) -> bool:
        """Whether the tick found nothing new at all."""
        return not (self.batches or self.students or self.log_bytes or self.again)

    @classmethod
    def from_counts(cls, counts: dict[str, int]) -> TickStats:
        """The stats of a transaction, from its row counts."""
        return cls(
            batches=counts.get("batches", 0),
            students=counts.get("students", 0),
            lines=counts.get("lines", 0),
            quarantined=counts.get("quarantined", 0),
        )

    def add(self, other: TickStats) -> None:
        """Fold another tick's counts into these totals."""
        self.batches += other.batches
        self.students += other.students
        self.lines += other.lines
        self.log_bytes += other.log_bytes
        self.quarantined += other.quarantined
        self.seconds += other.seconds


OnCommit = Callable[[TickStats, Cursors], None]
"""Called after each commit with what it committed and the cursors now durable."""
