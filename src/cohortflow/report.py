"""What analysts and operators read: the leaderboard and the pipeline's status."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from rich.table import Table
from rich.text import Text

from cohortflow.config import PipelineConfig
from cohortflow.errors import CohortflowError, SourceReset
from cohortflow.health import SourceHealth, health_key
from cohortflow.output import csv_text, escape_controls, same_timestamp
from cohortflow.sources import BatchApi, RunLog, StudentsTable
from cohortflow.state import BATCHES_KEY, LOG_KEY, STUDENTS_KEY, Cursors, with_recorded_sources
from cohortflow.warehouse import Warehouse
from cohortflow.warehouse.text import REPLACED_KEY

LEADERBOARD_COLUMNS = ("rank", "batch_id", "name", "students_completed_3plus", "students_total")
TIMESTAMP_COLUMNS = ("created_at", "updated_at")


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
        table.add_row(*(plain(row[c]) for c in LEADERBOARD_COLUMNS))
    return table


def plain(value: object) -> Text:
    """A table cell shown as written: no markup, control characters escaped."""
    return Text(escape_controls(str(value)))


def render_leaderboard(rows: list[dict[str, Any]], fmt: str, formula_guard: bool = True) -> str:
    r"""The leaderboard as JSON or CSV text, safe to print and to open in a spreadsheet.

    JSON keeps every value exactly (control characters as JSON escapes). CSV shows control
    characters as ``\xNN`` text and, with ``formula_guard``, prefixes cells that would run
    as spreadsheet formulas with ``'``.
    """
    rows = [
        {**row, **{c: same_timestamp(str(row[c])) for c in TIMESTAMP_COLUMNS if c in row}} for row in rows
    ]
    if fmt == "json":
        return _ascii_c1(json.dumps(rows, ensure_ascii=False, indent=2))
    return csv_text(rows, [*LEADERBOARD_COLUMNS, *TIMESTAMP_COLUMNS], formula_guard)


_C1_ESCAPES = {code: f"\\u{code:04x}" for code in range(0x7F, 0xA0)}


def _ascii_c1(text: str) -> str:
    """JSON escapes for DEL and C1 controls, which json.dumps leaves raw (a terminal obeys them)."""
    return text.translate(_C1_ESCAPES)


@dataclass(frozen=True)
class SourceStatus:
    """One source: where it is, the cursor, how far behind it is, and its health."""

    source: str
    location: str
    cursor: str
    lag: str
    last_commit: str | None
    health: str


def pipeline_status(
    warehouse: Warehouse, config: PipelineConfig, explicit: Collection[str] = ()
) -> dict[str, Any]:
    """Cursors, lag per source, last commit times and quarantine counts.

    The lag is measured on the sources the pipeline recorded in the warehouse, except for
    the config fields named in ``explicit`` (an option or environment variable the user set).
    """
    rows = {
        key: (json.loads(value), same_timestamp(str(updated)))
        for key, value, updated in warehouse.execute("SELECT key, value, updated_at FROM pipeline_state")
    }
    state = {key: value for key, (value, _) in rows.items()}
    config = with_recorded_sources(config, state, explicit)
    cursors = Cursors.from_state(state)

    def health(source: str) -> SourceHealth:
        return SourceHealth.from_json(state.get(health_key(source)))

    sources = [
        SourceStatus(
            "test_runs",
            str(config.test_runs_log),
            f"byte {cursors.log.offset}",
            _lag(lambda: f"{RunLog(config.test_runs_log).lag(cursors.log)} bytes"),
            rows.get(LOG_KEY, (None, None))[1],
            health("test_runs").describe(),
        ),
        SourceStatus(
            "students",
            str(config.students_db),
            f"id {cursors.students.last_id}",
            _lag(lambda: f"{_students_behind(config, cursors)} rows"),
            rows.get(STUDENTS_KEY, (None, None))[1],
            health("students").describe(),
        ),
        SourceStatus(
            "batches",
            config.batches_url,
            f"{cursors.batches.created_at} ids {list(cursors.batches.boundary_ids)}",
            _lag(lambda: f"{_batches_behind(config, cursors)} batches"),
            rows.get(BATCHES_KEY, (None, None))[1],
            health("batches").describe(),
        ),
    ]
    return {
        "sources": [s.__dict__ for s in sources],
        "quarantine": [{"source": s, "reason": r, "count": n} for s, r, n in warehouse.quarantine_counts()],
        # Values stored with U+FFFD in place of what the warehouse cannot hold (cohortflow.warehouse.text).
        "text_values_replaced": int(state.get(REPLACED_KEY) or 0),
    }


def _lag(measure: Callable[[], str]) -> str:
    try:
        return measure()
    except SourceReset as exc:
        # Not the source's hint: rebuilding is wrong advice when status merely looks elsewhere.
        return f"unknown ({exc.message}: is this the source the warehouse was built from?)"
    except CohortflowError as exc:
        return f"unknown ({exc})"


def _students_behind(config: PipelineConfig, cursors: Cursors) -> int:
    return max(0, StudentsTable(config.students_db).max_id() - cursors.students.last_id)


def _batches_behind(config: PipelineConfig, cursors: Cursors) -> int:
    api = BatchApi(config.batches_url, timeout=config.http_timeout)
    try:
        return len(api.read(cursors.batches).batches)
    finally:
        api.close()


def status_tables(status: dict[str, Any]) -> list[Table]:
    """Rich tables for `cohortflow status`."""
    sources = Table(title="Sources")
    for column in ("Source", "Location", "Cursor", "Lag", "Last commit", "Health"):
        sources.add_column(column, overflow="fold")
    for s in status["sources"]:
        cells = (s["source"], s["location"], s["cursor"], s["lag"], s["last_commit"] or "never", s["health"])
        sources.add_row(*map(plain, cells))
    quarantine = Table(title="Quarantine")
    for column in ("Source", "Reason", "Count"):
        quarantine.add_column(column)
    for q in status["quarantine"]:
        quarantine.add_row(*map(plain, (q["source"], q["reason"], q["count"])))
    if status.get("text_values_replaced"):
        quarantine.add_row("(stored)", "text_values_replaced (U+FFFD)", str(status["text_values_replaced"]))
    return [sources, quarantine]
