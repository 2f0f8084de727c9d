"""What parsed runs contribute to the warehouse, and how partial contributions merge."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

MAPPINGS_SCHEMA: Final = pa.schema(
    [("lesson_id", pa.int64()), ("lesson_title", pa.string()), ("file", pa.string()), ("offset", pa.int64())]
)
COMPLETIONS_SCHEMA: Final = pa.schema([("student_id", pa.int64()), ("lesson_id", pa.int64())])
TITLE_COMPLETIONS_SCHEMA: Final = pa.schema([("student_id", pa.int64()), ("lesson_title", pa.string())])
REJECTS_SCHEMA: Final = pa.schema(
    [("file", pa.string()), ("offset", pa.int64()), ("raw", pa.string()), ("reason", pa.string())]
)


@dataclass(frozen=True)
class RunsDelta:
    """What a slice of parsed runs contributes to the warehouse.

    Attributes:
        mappings: ``(lesson_id, lesson_title, file, offset)`` pairs, first seen first.
        completions: distinct completed ``(student_id, lesson_id)``.
        title_completions: distinct completed ``(student_id, lesson_title)`` of title-only runs.
        rejects: ``(file, offset, raw, reason)`` of quarantined lines.
        lines: how many lines the slice held.

    """

    mappings: pa.Table
    completions: pa.Table
    title_completions: pa.Table
    rejects: pa.Table
    lines: int


def summarise_runs(runs: pa.Table) -> RunsDelta:
    """Reduce parsed runs (RUNS_SCHEMA) to the warehouse's delta."""
    runs = runs.sort_by([("file", "ascending"), ("offset", "ascending")])
    frame = pl.from_arrow(
        runs.select(["student_id", "lesson_id", "lesson_title", "passed", "total", "reason"])
    )
    assert isinstance(frame, pl.DataFrame)
    valid = frame.lazy().with_row_index("row").filter(pl.col("reason").is_null()).drop("reason")
    rejects = runs.filter(pc.is_valid(runs.column("reason"))).select(list(REJECTS_SCHEMA.names))
    return summarise(valid, runs.select(["file", "offset"]), rejects, runs.num_rows)


def summarise(valid: pl.LazyFrame, where: pa.Table, rejects: pa.Table, lines: int) -> RunsDelta:
    """The delta of valid runs and quarantined lines.

    Args:
        valid: ``row`` (numbers in file order) and the run's fields, of every valid line.
        where: ``file`` and ``offset`` of each row number.
        rejects: ``file``, ``offset``, ``raw``, ``reason`` of the quarantined lines.
        lines: how many lines in all.

    """
    completed = valid.filter(pl.col("passed") == pl.col("total"))
    named = valid.filter(pl.col("lesson_id").is_not_null() & pl.col("lesson_title").is_not_null())
    mappings, completions, titles = pl.collect_all(
        [
            named.group_by("lesson_id", "lesson_title").agg(pl.col("row").min()).sort("row"),
            completed.filter(pl.col("lesson_id").is_not_null()).select("student_id", "lesson_id").unique(),
            completed.filter(pl.col("lesson_id").is_null()).select("student_id", "lesson_title").unique(),
        ]
    )
    seen = where.take(mappings["row"].to_arrow())
    mapping_table = _arrow(mappings.drop("row"), MAPPINGS_SCHEMA.remove(3).remove(2))
    return RunsDelta(
        mappings=mapping_table.append_column("file", seen.column("file"))
        .append_column("offset", seen.column("offset"))
        .cast(MAPPINGS_SCHEMA),
        completions=_arrow(completions, COMPLETIONS_SCHEMA),
        title_completions=_arrow(titles, TITLE_COMPLETIONS_SCHEMA),
        rejects=rejects.cast(REJECTS_SCHEMA),
        lines=lines,
    )


def _arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    return frame.to_arrow(compat_level=pl.CompatLevel.oldest()).cast(schema)


def _first_seen(mappings: pa.Table) -> pa.Table:
    """Each (id, title) pair once, where it was first seen, in the order first seen."""
    ordered = mappings.sort_by([("file", "ascending"), ("offset", "ascending")])
    firsts = ordered.group_by(["lesson_id", "lesson_title"], use_threads=False).aggregate(
        [("file", "first"), ("offset", "first")]
    )
    firsts = firsts.rename_columns(["lesson_id", "lesson_title", "file", "offset"])
    return firsts.sort_by([("file", "ascending"), ("offset", "ascending")])


def _distinct(table: pa.Table, columns: list[str]) -> pa.Table:
    return table.group_by(columns, use_threads=False).aggregate([]).select(columns)


#: One Arrow table that carries a whole RunsDelta, so partial deltas can travel and merge.
DELTA_SCHEMA: Final = pa.schema(
    [
        ("kind", pa.string()),
        ("student_id", pa.int64()),
        ("lesson_id", pa.int64()),
        ("lesson_title", pa.string()),
        ("file", pa.string()),
        ("offset", pa.int64()),
        ("raw", pa.string()),
        ("reason", pa.string()),
    ]
)
_DELTA_PARTS: Final = {
    "mapping": ("mappings", ["lesson_id", "lesson_title", "file", "offset"]),
    "completion": ("completions", ["student_id", "lesson_id"]),
    "title_completion": ("title_completions", ["student_id", "lesson_title"]),
    "reject": ("rejects", ["file", "offset", "raw", "reason"]),
}


def delta_to_arrow(delta: RunsDelta) -> pa.Table:
    """Flatten a delta into DELTA_SCHEMA rows (the line count rides as kind ``lines``)."""
    parts = [_as_kind(getattr(delta, attr), kind) for kind, (attr, _) in _DELTA_PARTS.items()]
    parts.append(_as_kind(pa.table({"offset": pa.array([delta.lines], pa.int64())}), "lines"))
    return pa.concat_tables(parts)


def _as_kind(table: pa.Table, kind: str) -> pa.Table:
    columns = {
        field.name: table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(table.num_rows, field.type)
        for field in DELTA_SCHEMA
        if field.name != "kind"
    }
    return pa.table({"kind": pa.array([kind] * table.num_rows, pa.string()), **columns}, schema=DELTA_SCHEMA)


def delta_from_arrow(table: pa.Table) -> RunsDelta:
    """Merge DELTA_SCHEMA rows from any number of partial deltas into one delta."""
    table = table.cast(DELTA_SCHEMA)

    def part(kind: str) -> pa.Table:
        return table.filter(pc.equal(table.column("kind"), kind)).select(_DELTA_PARTS[kind][1])

    lines = table.filter(pc.equal(table.column("kind"), "lines")).column("offset")
    return RunsDelta(
        mappings=_first_seen(part("mapping")),
        completions=_distinct(part("completion"), ["student_id", "lesson_id"]),
        title_completions=_distinct(part("title_completion"), ["student_id", "lesson_title"]),
        rejects=part("reject"),
        lines=int(pc.sum(lines).as_py() or 0),
    )
