"""What analysts and operators read: the leaderboard and the pipeline's status."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from typing import Any

from rich.table import Table

from cohortflow.config import PipelineConfig
from cohortflow.errors import CohortflowError
from cohortflow.sources import BatchApi, RunLog, StudentsTable
from cohortflow.state import BATCHES_KEY, HEALTH_KEY, LOG_KEY, STUDENTS_KEY, Cursors
from cohortflow.warehouse import Warehouse

LEADERBOARD_COLUMNS = ("rank", "batch_id", "name", "students_completed_3plus", "students_total")


def leaderboard_table(
    rows: list[dict[str, Any]], title: str = "Batches by students with 3+ lessons"
) -> Table:
    """A rich table of the leaderboard."""
    table = Table(title=title)
    for column, justify in zip(
        ("Rank", "Batch", "Name", "Students 3+", "Students"),
        ("right", "right", "left", "right", "right"),
        strict=True,
    ):
        # Fold, never cut: a batch name is only useful whole.
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*(str(row[c]) for c in LEADERBOARD_COLUMNS))
    return table


def render_leaderboard(rows: list[dict[str, Any]], fmt: str) -> str:
    """The leaderboard as JSON or CSV text."""
    if fmt == "json":
        return json.dumps(rows, ensure_ascii=False, indent=2)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=[*LEADERBOARD_COLUMNS, "created_at", "updated_at"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


@dataclass(frozen=True)
class SourceStatus:
    """One source's cursor, how far behind it is, and its health."""

    source: str
    cursor: str
    lag: str
    last_commit: str | None
    health: str


def pipeline_status(warehouse: Warehouse, config: PipelineConfig) -> dict[str, Any]:
    """Cursors, lag per source, last commit times and quarantine counts."""
    rows = {
        key: (value, updated)
        for key, value, updated in warehouse.execute("SELECT key, value, updated_at FROM pipeline_state")
    }
    state = {key: json.loads(value) for key, (value, _) in rows.items()}
    cursors = Cursors.from_state(state)
    health = state.get(HEALTH_KEY) or {"ok": True}
    sources = [
        SourceStatus(
            "test_runs",
            f"byte {cursors.log.offset}",
            _lag(lambda: f"{RunLog(config.test_runs_log).lag(cursors.log)} bytes"),
            rows.get(LOG_KEY, (None, None))[1],
            "ok",
        ),
        SourceStatus(
            "students",
            f"id {cursors.students.last_id}",
            _lag(
                lambda: (
                    f"{max(0, StudentsTable(config.students_db).max_id() - cursors.students.last_id)} rows"
                )
            ),
            rows.get(STUDENTS_KEY, (None, None))[1],
            "ok",
        ),
        SourceStatus(
            "batches",
            f"{cursors.batches.created_at} ids {list(cursors.batches.boundary_ids)}",
            _lag(lambda: f"{_batches_behind(config, cursors)} batches"),
            rows.get(BATCHES_KEY, (None, None))[1],
            "ok"
            if health.get("ok", True)
            else f"failing ({health.get('failures')}x): {health.get('last_error')}",
        ),
    ]
    return {
        "sources": [s.__dict__ for s in sources],
        "quarantine": [{"source": s, "reason": r, "count": n} for s, r, n in warehouse.quarantine_counts()],
    }


def _lag(measure: Any) -> str:
    try:
        return str(measure())
    except CohortflowError as exc:
        return f"unknown ({exc})"


def _batches_behind(config: PipelineConfig, cursors: Cursors) -> int:
    api = BatchApi(config.batches_url, timeout=config.http_timeout)
    try:
        return len(api.read(cursors.batches).batches)
    finally:
        api.close()


def status_tables(status: dict[str, Any]) -> list[Table]:
    """Rich tables for `cohortflow status`."""
    sources = Table(title="Sources")
    for column in ("Source", "Cursor", "Lag", "Last commit", "Health"):
        sources.add_column(column)
    for s in status["sources"]:
        sources.add_row(s["source"], s["cursor"], s["lag"], s["last_commit"] or "never", s["health"])
    quarantine = Table(title="Quarantine")
    for column in ("Source", "Reason", "Count"):
        quarantine.add_column(column)
    for q in status["quarantine"]:
        quarantine.add_row(q["source"], q["reason"], str(q["count"]))
    return [sources, quarantine]
