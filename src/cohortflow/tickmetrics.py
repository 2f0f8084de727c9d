"""Durable pipeline counters and a tick-duration histogram, kept in ``pipeline_state``.

The dashboard's ``/metrics`` reads them from the warehouse, so it needs
nothing from the pipeline process. :class:`TickRecorder` is an ``on_commit``
observer: it adds up ticks in memory and folds them into the ``metrics:ticks``
key in one small transaction of its own, at the first tick, then at most every
:data:`FLUSH_SECONDS`, and at the end. A write of another connection makes the
engine's connection drop its page cache, so a write per tick would cost each
tick a re-read of the pages it touches. A crash loses at most the last
``FLUSH_SECONDS`` of figures, as a Prometheus counter reset would; the data
itself is never affected.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field
from typing import Any

from cohortflow.errors import WarehouseError
from cohortflow.state import Cursors, OnCommit, TickStats
from cohortflow.warehouse import Warehouse, open_warehouse, schema

log = logging.getLogger(__name__)

METRICS_KEY = "metrics:ticks"
#: Upper bounds (seconds) of the tick-duration histogram buckets; +Inf is implied.
TICK_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
FLUSH_SECONDS = 2.0
COUNTERS = ("ticks", "lines", "log_bytes", "students", "batches", "quarantined")


@dataclass
class TickMetrics:
    """Cumulative counters and a duration histogram (``buckets[i]``: ticks ≤ ``TICK_BUCKETS[i]``)."""

    counters: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(TICK_BUCKETS) + 1))
    seconds_sum: float = 0.0

    @classmethod
    def from_json(cls, value: Any) -> TickMetrics:
        """Load the stored key; a missing or foreign-shaped key starts from zero."""
        metrics = cls()
        if isinstance(value, dict) and len(value.get("buckets", ())) == len(metrics.buckets):
            metrics.counters.update({k: int(v) for k, v in value.get("counters", {}).items()})
            metrics.buckets = [int(n) for n in value["buckets"]]
            metrics.seconds_sum = float(value.get("seconds_sum", 0.0))
        return metrics

    def to_json(self) -> dict[str, Any]:
        """The form stored in ``pipeline_state``."""
        return asdict(self)

    def observe(self, stats: TickStats, seconds: float) -> None:
        """Count one committed tick that took ``seconds``."""
        for name in COUNTERS[1:]:
            self.counters[name] += int(getattr(stats, name))
        self.counters["ticks"] += 1
        self.buckets[bisect.bisect_left(TICK_BUCKETS, seconds)] += 1
        self.seconds_sum += seconds

    def add(self, other: TickMetrics) -> None:
        """Fold ``other``'s counts into these."""
        for name, n in other.counters.items():
            self.counters[name] = self.counters.get(name, 0) + n
        self.buckets = [a + b for a, b in zip(self.buckets, other.buckets, strict=True)]
        self.seconds_sum += other.seconds_sum

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus-style ``(le, count ≤ le)`` pairs, ending with ``+Inf``."""
        bounds = [*(f"{b:g}" for b in TICK_BUCKETS), "+Inf"]
        running, out = 0, []
        for bound, n in zip(bounds, self.buckets, strict=True):
            running += n
            out.append((bound, running))
        return out


class TickRecorder:
    """An ``on_commit`` observer that adds each tick to :data:`METRICS_KEY` in the warehouse.

    It reads, adds and writes the key in one transaction, so a wipe
    (``--on-reset restart``) simply starts the counters again.
    """

    def __init__(self, target: str, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.target = target
        self.flush_seconds = flush_seconds
        self._warehouse: Warehouse | None = None
        self._pending = TickMetrics()
        self._flushed_at = -math.inf

    def __call__(self, stats: TickStats, cursors: Cursors) -> None:
        """Count one committed tick; write the counts if they are due."""
        self._pending.observe(stats, stats.seconds)
        if time.monotonic() - self._flushed_at >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Add the ticks counted since the last flush to the stored key."""
        if not self._pending.counters["ticks"]:
            return
        try:
            self._record(self._pending)
        except WarehouseError as exc:  # metrics must never stop the pipeline
            log.warning("tick metrics not recorded: %s", exc)
            self._close_connection()
            return
        self._pending, self._flushed_at = TickMetrics(), time.monotonic()

    def _record(self, pending: TickMetrics) -> None:
        warehouse = self._warehouse or open_warehouse(self.target)
        self._warehouse = warehouse
        warehouse.execute(warehouse.dialect.begin)
        try:
            rows = warehouse.execute(schema.SELECT_STATE_KEY, (METRICS_KEY,))
            metrics = TickMetrics.from_json(json.loads(rows[0][0]) if rows else None)
            metrics.add(pending)
            value = json.dumps(metrics.to_json(), sort_keys=True)
            warehouse.execute(schema.UPSERT_STATE, (METRICS_KEY, value, warehouse.clock()))
            warehouse.execute("COMMIT")
        except BaseException:
            with suppress(WarehouseError):
                warehouse.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Write what is pending, then close the recorder's own connection."""
        self.flush()
        self._close_connection()

    def _close_connection(self) -> None:
        if self._warehouse is not None:
            self._warehouse.close()
            self._warehouse = None


def all_of(*observers: OnCommit | None) -> OnCommit:
    """One ``on_commit`` observer that calls each given one in turn."""
    present = [o for o in observers if o is not None]

    def notify(stats: TickStats, cursors: Cursors) -> None:
        for observer in present:
            observer(stats, cursors)

    return notify
