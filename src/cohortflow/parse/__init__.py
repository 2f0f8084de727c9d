"""The one implementation of the test-run line rules, vectorised.

Raw lines (``file``, ``offset``, ``line`` bytes) become normalised runs
``(student_id, lesson_id | lesson_title, passed, total)`` or rejects with a
reason code. Both engines call :func:`parse_runs` (Spark through
``mapInArrow``), then :func:`summarise_runs` to get what the warehouse needs.

The rule itself is written in the README ("A test-run line is valid iff")
and, as code, in :mod:`.rules`; :mod:`.canonical` decides the upstream's
usual shape for a whole column at once and leaves every other line to it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Final

import polars as pl
import pyarrow as pa

from cohortflow.parse.canonical import canonical_runs
from cohortflow.parse.delta import (
    COMPLETIONS_SCHEMA,
    DELTA_SCHEMA,
    MAPPINGS_SCHEMA,
    REJECTS_SCHEMA,
    TITLE_COMPLETIONS_SCHEMA,
    RunsDelta,
    delta_from_arrow,
    delta_to_arrow,
    summarise,
    summarise_runs,
)
from cohortflow.parse.lines import RAW_SCHEMA, as_raw, decoded, split_lines
from cohortflow.parse.rules import LINE_LIMIT, RAW_TEXT_LIMIT, judge

__all__ = [
    "DELTA_SCHEMA",
    "LINE_LIMIT",
    "RAW_SCHEMA",
    "RAW_TEXT_LIMIT",
    "REASONS",
    "RUNS_SCHEMA",
    "RunsDelta",
    "delta_from_arrow",
    "delta_to_arrow",
    "parse_runs",
    "split_lines",
    "summarise_judged",
    "summarise_lines",
    "summarise_partition",
    "summarise_runs",
    "summarise_vectorised",
]

RUNS_SCHEMA: Final = pa.schema(
    [
        ("file", pa.string()),
        ("offset", pa.int64()),
        ("student_id", pa.int64()),
        ("lesson_id", pa.int64()),
        ("lesson_title", pa.string()),
        ("passed", pa.int64()),
        ("total", pa.int64()),
        ("reason", pa.string()),
        ("raw", pa.string()),
    ]
)

#: Reason codes of quarantined lines, in the order they are checked.
REASONS: Final = (
    "line_too_long",
    "invalid_utf8",
    "empty_line",
    "invalid_json",
    "not_an_object",
    "bad_result",
    "passing_exceeds_total",
    "bad_student_id",
    "bad_lesson_id",
    "bad_lesson_title",
    "missing_lesson",
)


_SLOW_SCHEMA: Final = {
    "row": pl.UInt32,
    "reason": pl.String,
    "student_id": pl.Int64,
    "lesson_id": pl.Int64,
    "lesson_title": pl.String,
    "passed": pl.Int64,
    "total": pl.Int64,
    "raw": pl.String,
}


def _verdicts(raw: pa.Table) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every line's ``row`` and fields where the fast path decided (``ok``); the others judged.

    The second frame has ``row`` and :class:`.rules.Judged`'s fields, in line order.
    """
    lines = raw.column("line").combine_chunks()
    fields = canonical_runs(decoded(lines))
    slow = fields["row"].filter(~fields["ok"])
    judged = [
        (row, *judge(line)) for row, line in zip(slow, lines.take(slow.to_arrow()).to_pylist(), strict=True)
    ]
    return fields, pl.DataFrame(judged, schema=_SLOW_SCHEMA, orient="row")


def parse_runs(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Parse raw lines into RUNS_SCHEMA: one row per line, valid or with a reason code.

    The canonical shape is decided vectorised (:mod:`.canonical`); every other
    line goes through the full rule (:func:`.rules.judge`).
    """
    raw = as_raw(batch)
    fields, judged = _verdicts(raw)
    runs = pl.concat([fields.filter("ok").drop("ok"), judged], how="diagonal_relaxed").sort("row")
    table = runs.drop("row").to_arrow(compat_level=pl.CompatLevel.oldest())
    return pa.table([raw.column("file"), raw.column("offset"), *table.columns], names=RUNS_SCHEMA.names).cast(
        RUNS_SCHEMA
    )


#: Below this many lines a chunk is judged line by line: the vectorised path costs ~6 ms of
#: query planning per chunk whatever its size, more than the rule costs a follower's trickle.
FEW_LINES: Final = 400


def summarise_lines(batch: pa.RecordBatch | pa.Table) -> RunsDelta:
    """``summarise_runs(parse_runs(batch))`` without building every line's row (the hot path)."""
    raw = as_raw(batch)
    return summarise_judged(raw) if raw.num_rows < FEW_LINES else summarise_vectorised(raw)


def summarise_vectorised(raw: pa.Table) -> RunsDelta:
    """:func:`summarise_lines` of many lines: the canonical shape decided for the whole column."""
    fields, judged = _verdicts(raw)
    valid = pl.concat(
        [
            fields.lazy().filter("ok").drop("ok"),
            judged.lazy().filter(pl.col("reason").is_null()).drop("reason", "raw"),
        ]
    )
    rejects = judged.filter(pl.col("reason").is_not_null())
    where = raw.select(["file", "offset"])
    bad = where.take(rejects["row"].to_arrow())
    rejects_table = pa.table(
        [bad.column("file"), bad.column("offset"), rejects["raw"].to_arrow(), rejects["reason"].to_arrow()],
        names=["file", "offset", "raw", "reason"],
    )
    return summarise(valid, where, rejects_table, raw.num_rows)


def summarise_judged(raw: pa.Table) -> RunsDelta:
    """:func:`summarise_lines` of a few lines: the rule on each line, reduced with dicts."""
    mappings: dict[tuple[int, str], tuple[str, int]] = {}  # first sight of each pair, in order
    completions: dict[tuple[Any, Any], None] = {}  # an ordered set
    titles: dict[tuple[Any, Any], None] = {}
    rejects: list[tuple[str, int, str | None, str]] = []
    columns = (raw.column(name).to_pylist() for name in ("file", "offset", "line"))
    for file, offset, line in zip(*columns, strict=True):
        run = judge(line)
        if run.reason is not None:
            rejects.append((file, offset, run.raw, run.reason))
            continue
        if run.lesson_id is not None and run.lesson_title is not None:
            mappings.setdefault((run.lesson_id, run.lesson_title), (file, offset))
        if run.passed == run.total:
            if run.lesson_id is not None:
                completions[(run.student_id, run.lesson_id)] = None
            else:
                titles[(run.student_id, run.lesson_title)] = None
    return RunsDelta(
        mappings=_table([(*pair, *seen) for pair, seen in mappings.items()], MAPPINGS_SCHEMA),
        completions=_table(list(completions), COMPLETIONS_SCHEMA),
        title_completions=_table(list(titles), TITLE_COMPLETIONS_SCHEMA),
        rejects=_table(rejects, REJECTS_SCHEMA),
        lines=raw.num_rows,
    )


def _table(rows: list[tuple[Any, ...]], schema: pa.Schema) -> pa.Table:
    columns = list(zip(*rows, strict=True)) or [()] * len(schema)
    return pa.table([pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


def summarise_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Parse and reduce raw-line batches where they are (Spark's mapInArrow runs this)."""
    for batch in batches:
        if batch.num_rows:
            yield from delta_to_arrow(summarise_lines(batch)).to_batches()
