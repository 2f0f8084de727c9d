"""``/metrics``: the pipeline's figures in the Prometheus text format, read from the warehouse.

Everything comes from committed state (counters and the tick histogram kept
by :class:`cohortflow.tickmetrics.TickRecorder`, cursors, quarantine counts),
so the scrape works whether or not the pipeline runs. Lag is measured against
the sources at scrape time; a source that cannot answer is left out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cohortflow.config import PipelineConfig
from cohortflow.errors import CohortflowError
from cohortflow.health import SOURCES, SourceHealth, health_key
from cohortflow.sources import BatchApi, RunLog, StudentsTable
from cohortflow.state import BATCHES_KEY, LOG_KEY, STUDENTS_KEY, Cursors
from cohortflow.tickmetrics import METRICS_KEY, TickMetrics
from cohortflow.warehouse import Warehouse

SOURCE_KEYS = {"test_runs": LOG_KEY, "students": STUDENTS_KEY, "batches": BATCHES_KEY}
ROW_TABLES = ("batches", "students", "lessons", "lesson_completions", "pending_title_completions")


@dataclass
class Figures:
    """One consistent read of what /metrics reports."""

    state: dict[str, tuple[Any, str]] = field(default_factory=dict)  # key -> (value, updated_at)
    rows: dict[str, int] = field(default_factory=dict)
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)
    lag: dict[str, tuple[str, int]] = field(default_factory=dict)  # source -> (unit, amount)


def read_figures(warehouse: Warehouse) -> Figures:
    """Read state, row counts and quarantine counts (call inside one read-only snapshot)."""
    state = {
        key: (json.loads(value), updated)
        for key, value, updated in warehouse.execute("SELECT key, value, updated_at FROM pipeline_state")
    }
    rows = {
        table: int(warehouse.execute(f"SELECT count(*) FROM {table}")[0][0])  # fixed table names
        for table in ROW_TABLES
    }
    return Figures(state, rows, warehouse.quarantine_counts())


def measure_lag(figures: Figures, config: PipelineConfig) -> None:
    """How far each source is ahead of its committed cursor (outside any transaction)."""
    cursors = Cursors.from_state({key: value for key, (value, _) in figures.state.items()})
    probes: dict[str, tuple[str, Callable[[], int]]] = {
        "test_runs": ("bytes", lambda: RunLog(config.test_runs_log).size() - cursors.log.offset),
        "students": ("rows", lambda: StudentsTable(config.students_db).max_id() - cursors.students.last_id),
        "batches": ("batches", lambda: _batches_ahead(config, cursors)),
    }
    for source, (unit, probe) in probes.items():
        try:
            figures.lag[source] = (unit, max(0, int(probe())))
        except CohortflowError:
            continue  # a source that cannot answer now has no lag sample


def _batches_ahead(config: PipelineConfig, cursors: Cursors) -> int:
    api = BatchApi(config.batches_url, timeout=min(config.http_timeout, 2.0))
    try:
        return len(api.read(cursors.batches).batches)
    finally:
        api.close()


def _epoch(timestamp: str | None) -> float | None:
    return datetime.fromisoformat(timestamp).timestamp() if timestamp else None


class FiguresCollector(Collector):
    """Turns one :class:`Figures` read into metric families."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        """Yield every family /metrics exposes."""
        yield from self._ingested()
        yield self._tick_histogram()
        yield from self._sources()
        yield from self._tables()

    def _ticks(self) -> TickMetrics:
        return TickMetrics.from_json(self.figures.state.get(METRICS_KEY, (None, None))[0])

    def _ingested(self) -> Iterator[Metric]:
        counters = self._ticks().counters
        for name, what in (
            ("lines", "test-run log lines ingested (valid or quarantined)"),
            ("log_bytes", "test-run log bytes ingested"),
            ("students", "students rows ingested"),
            ("batches", "batches ingested from the API"),
            ("quarantined", "records sent to quarantine"),
            ("ticks", "committed ticks"),
        ):
            yield CounterMetricFamily(f"cohortflow_{name}_ingested", f"Total {what}.", value=counters[name])

    def _tick_histogram(self) -> Metric:
        ticks = self._ticks()
        return HistogramMetricFamily(
            "cohortflow_tick_duration_seconds",
            "Wall time of a committed tick, from its first read to its commit.",
            buckets=ticks.cumulative(),
            sum_value=ticks.seconds_sum,
        )

    def _sources(self) -> Iterator[Metric]:
        last = GaugeMetricFamily(
            "cohortflow_source_last_commit_timestamp_seconds",
            "When data of this source was last committed (Unix time).",
            labels=["source"],
        )
        for source, key in SOURCE_KEYS.items():
            when = _epoch(self.figures.state.get(key, (None, None))[1])
            if when is not None:
                last.add_metric([source], when)
        yield last
        lag = GaugeMetricFamily(
            "cohortflow_source_lag",
            "How far the source is ahead of the committed cursor.",
            labels=["source", "unit"],
        )
        for source, (unit, amount) in self.figures.lag.items():
            lag.add_metric([source, unit], amount)
        yield lag
        healthy = GaugeMetricFamily(
            "cohortflow_source_healthy",
            "1 while a source reads normally, 0 while it is failing, locked, waiting, blocked or limited.",
            labels=["source", "state"],
        )
        for source in SOURCES:
            health = SourceHealth.from_json(self.figures.state.get(health_key(source), (None, None))[0])
            healthy.add_metric([source, health.state], 1 if health.ok else 0)
        yield healthy
        times = [_epoch(updated) for _, updated in self.figures.state.values()]
        stamps = [t for t in times if t is not None]
        if stamps:
            yield GaugeMetricFamily(
                "cohortflow_last_commit_timestamp_seconds",
                "The pipeline's last commit (Unix time).",
                value=max(stamps),
            )

    def _tables(self) -> Iterator[Metric]:
        rows = GaugeMetricFamily("cohortflow_rows", "Rows in each warehouse table.", labels=["table"])
        for table, count in self.figures.rows.items():
            rows.add_metric([table], count)
        yield rows
        quarantine = GaugeMetricFamily(
            "cohortflow_quarantine_records",
            "Quarantined records by source and reason.",
            labels=["source", "reason"],
        )
        for source, reason, count in self.figures.quarantine:
            quarantine.add_metric([source, reason], count)
        yield quarantine


def render(figures: Figures) -> bytes:
    """The Prometheus text exposition of ``figures``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FiguresCollector(figures))
    return generate_latest(registry)
