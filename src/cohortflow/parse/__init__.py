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

import codecs
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cohortflow.parse.canonical import FIELDS, canonical_fields
from cohortflow.parse.rules import LINE_LIMIT, RAW_TEXT_LIMIT, Judged, judge

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
    "summarise_partition",
    "summarise_runs",
]

RAW_SCHEMA: Final = pa.schema([("file", pa.string()), ("offset", pa.int64()), ("line", pa.large_binary())])
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


def split_lines(buf: bytes, base_offset: int, file: str) -> pa.RecordBatch:
    """Cut a newline-terminated buffer into a RAW_SCHEMA batch without copying the bytes.

    Each value keeps its trailing newline (the parse strips it); offsets are
    the lines' byte offsets in the file.
    """
    if buf and not buf.endswith(b"\n"):
        msg = "split_lines needs a buffer that ends at a newline"
        raise ValueError(msg)
    ends = np.flatnonzero(np.frombuffer(buf, dtype=np.uint8) == 10) + 1
    offsets = np.concatenate([np.zeros(1, dtype=np.int64), ends.astype(np.int64)])
    count = len(ends)
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), count, [None, pa.py_buffer(offsets), pa.py_buffer(buf)]
    )
    files = pa.DictionaryArray.from_arrays(
        _from_numpy(np.zeros(count, dtype=np.int32), pa.int32()), pa.array([file], type=pa.string())
    )
    return pa.RecordBatch.from_arrays(
        [files.cast(pa.string()), _from_numpy(offsets[:-1] + base_offset, pa.int64()), lines],
        schema=RAW_SCHEMA,
    )


def _from_numpy(values: np.ndarray, kind: pa.DataType) -> pa.Array:
    """Wrap a numpy buffer as an Arrow array (pa.array on numpy would import pandas)."""
    data = np.ascontiguousarray(values)
    return pa.Array.from_buffers(kind, len(data), [None, pa.py_buffer(data)])


def _invalid_utf8(lines: pa.LargeBinaryArray, group: int = 256) -> np.ndarray:
    """Flag lines that are not valid UTF-8: groups of lines at once, one by one in a failing group."""
    bad = np.zeros(len(lines), dtype=bool)
    offsets = _offsets(lines)
    data = memoryview(lines.buffers()[2] or b"")
    for low in range(0, len(lines), group):
        high = min(low + group, len(lines))
        if not _decodes(data[offsets[low] : offsets[high]]):
            for row in range(low, high):
                bad[row] = not _decodes(data[offsets[row] : offsets[row + 1]])
    return bad


def _decodes(data: memoryview) -> bool:
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def _offsets(lines: pa.LargeBinaryArray) -> np.ndarray:
    return np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]


def _as_raw(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    table = pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch
    return table.cast(RAW_SCHEMA)


def _decoded(lines: pa.LargeBinaryArray) -> pa.LargeStringArray:
    """The lines as text, with lines the fast path must not see (too long, not UTF-8) nulled."""
    skip = np.diff(_offsets(lines)) > LINE_LIMIT + 1  # + 1: the newline
    if not skip.any():
        try:
            return lines.cast(pa.large_string())
        except pa.ArrowInvalid:
            pass
    skip |= _invalid_utf8(pc.if_else(_mask(skip), pa.scalar(b"", pa.large_binary()), lines))
    kept = pc.if_else(_mask(skip), pa.scalar(None, pa.large_binary()), lines)
    return kept.cast(pa.large_string())


def _mask(flags: np.ndarray) -> pa.BooleanArray:
    bits = np.packbits(flags, bitorder="little")
    return pa.BooleanArray.from_buffers(pa.bool_(), len(flags), [None, pa.py_buffer(bits)])


def _judge_slow_lines(
    columns: dict[str, pa.Array], lines: pa.LargeBinaryArray, slow: pa.BooleanArray
) -> None:
    """Overwrite the rows of the lines the fast path left with the full rule's verdicts."""
    judged = [judge(line) for line in lines.filter(slow).to_pylist()]
    for name, values in zip(Judged._fields, zip(*judged, strict=True), strict=True):
        column = columns[name]
        columns[name] = pc.replace_with_mask(column, slow, pa.array(values, column.type))


def parse_runs(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Parse raw lines into RUNS_SCHEMA: one row per line, valid or with a reason code.

    The canonical shape is decided vectorised (:mod:`.canonical`); every other
    line goes through the full rule (:func:`.rules.judge`).
    """
    raw = _as_raw(batch)
    lines = raw.column("line").combine_chunks()
    fields, ok = canonical_fields(_decoded(lines))
    columns = {name: fields.column(name).combine_chunks() for name in FIELDS}
    columns["reason"] = columns["raw"] = pa.nulls(len(lines), pa.string())
    slow = pc.invert(ok)
    if pc.any(slow).as_py():
        _judge_slow_lines(columns, lines, slow)
    return pa.table(
        {
            "file": raw.column("file"),
            "offset": raw.column("offset"),
            **columns,
        },
        schema=RUNS_SCHEMA,
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
    valid = runs.filter(pc.is_null(runs.column("reason")))
    completed = valid.filter(pc.equal(valid.column("passed"), valid.column("total")))
    has_id = pc.is_valid(completed.column("lesson_id"))
    named = valid.filter(
        pc.and_(pc.is_valid(valid.column("lesson_id")), pc.is_valid(valid.column("lesson_title")))
    )
    return RunsDelta(
        mappings=_first_seen(named.select(["lesson_id", "lesson_title", "file", "offset"])),
        completions=_distinct(completed.filter(has_id), ["student_id", "lesson_id"]),
        title_completions=_distinct(completed.filter(pc.invert(has_id)), ["student_id", "lesson_title"]),
        rejects=runs.filter(pc.is_valid(runs.column("reason"))).select(["file", "offset", "raw", "reason"]),
        lines=runs.num_rows,
    )


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


def summarise_partition(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """Parse and reduce raw-line batches where they are (Spark's mapInArrow runs this)."""
    for batch in batches:
        if batch.num_rows:
            yield from delta_to_arrow(summarise_runs(parse_runs(batch))).to_batches()
