"""The one implementation of the test-run line rules, vectorised.

Raw lines (``file``, ``offset``, ``line`` bytes) become normalised runs
``(student_id, lesson_id | lesson_title, passed, total)`` or rejects with a
reason code. Both engines call :func:`parse_runs` (Spark through
``mapInArrow``), then :func:`summarise_runs` to get what the warehouse needs.

A line is valid iff, once the upstream's ``"student_id", N`` defect is
repaired, it is one JSON object with a ``result`` of the form ``N/M`` or
``N out of M`` (0 <= N <= M), a ``student_id`` >= 1, and a ``lesson_id`` >= 1
and/or a non-empty ``lesson_title``. Ids may be JSON integers or digit
strings; a JSON ``null`` lesson field counts as absent; a duplicated key
counts by its first value. A title may not hold U+0000 (PostgreSQL text
cannot), and quarantined raw text has it replaced.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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
RAW_TEXT_LIMIT: Final = 4096

# An id is a JSON integer or a string of digits that fits in a BIGINT.
_ID = """CASE json_type({v})
    WHEN 'BIGINT' THEN TRY_CAST({v} AS BIGINT)
    WHEN 'UBIGINT' THEN TRY_CAST({v} AS BIGINT)
    WHEN 'VARCHAR' THEN CASE WHEN regexp_full_match({v} ->> '$', '[0-9]{{1,18}}')
                             THEN CAST({v} ->> '$' AS BIGINT) END
END"""

# The upstream's own shape, which almost every line has. A line that matches it whole is
# valid JSON whose values read exactly as written (no escapes, no leading zeros), so its
# fields come from this one regex; every other line goes through the JSON parser.
_CANONICAL = (
    r'^\{"result": "([0-9]{1,9})(?:/| out of )([0-9]{1,9})", '
    r'"student_id"[:,] (?:"([0-9]{1,18})"|(0|[1-9][0-9]{0,17}))'
    r'(?:, "lesson_id": (?:"([0-9]{1,18})"|(0|[1-9][0-9]{0,17})))?'
    r'(?:, "lesson_title": "([^"\\\x00-\x1f]+)")?\}$'
)
_CANONICAL_GROUPS = "['n', 'm', 'sq', 'sn', 'lq', 'ln', 'title']"

_PARSE_SQL: Final = rf"""
WITH stripped AS (
    SELECT file, "offset", rtrim(CAST(line AS VARCHAR), chr(10) || chr(13)) AS line, bad_utf8
    FROM raw_lines
), canonical AS (
    SELECT *, regexp_extract(line, '{_CANONICAL}', {_CANONICAL_GROUPS}) AS f FROM stripped
), repaired AS (
    SELECT *, f.n <> '' AS canon,
           CASE WHEN f.n <> '' THEN NULL
                WHEN json_valid(line) THEN line
                ELSE regexp_replace(line, '([{{,]\s*"student_id"\s*),', '\1:') END AS doc
    FROM canonical
), checked AS (
    SELECT *, canon OR coalesce(json_valid(doc), false) AS is_json FROM repaired
), fields AS (
    SELECT *,
        CASE WHEN canon THEN 'OBJECT' WHEN is_json THEN json_type(doc) END AS doc_type,
        CASE WHEN is_json AND NOT canon THEN json_extract(doc,
            ['$.result', '$.student_id', '$.lesson_id', '$.lesson_title']) END AS v
    FROM checked
), typed AS (
    SELECT *,
        CASE WHEN canon THEN {{'n': f.n, 'm': f.m}}
             ELSE regexp_extract(CASE WHEN json_type(v[1]) = 'VARCHAR' THEN v[1] ->> '$' END,
                '^\s*([0-9]{{1,9}})\s*(?:/|\s+out\s+of\s+)\s*([0-9]{{1,9}})\s*$',
                ['n', 'm']) END AS nm,
        CASE WHEN canon THEN CAST(f.sq || f.sn AS BIGINT) ELSE {_ID.format(v="v[2]")} END AS sid,
        CASE WHEN canon THEN CAST(nullif(f.lq || f.ln, '') AS BIGINT)
             WHEN coalesce(json_type(v[3]), 'NULL') = 'NULL' THEN NULL
             ELSE coalesce(({_ID.format(v="v[3]")}), -1) END AS lid,
        CASE WHEN canon THEN nullif(f.title, '')
             WHEN coalesce(json_type(v[4]), 'NULL') = 'NULL' THEN NULL
             WHEN json_type(v[4]) = 'VARCHAR' THEN v[4] ->> '$' END AS title,
        CASE WHEN canon THEN f.title <> ''
             ELSE coalesce(json_type(v[4]), 'NULL') <> 'NULL' END AS has_title
    FROM fields
), judged AS (
    SELECT *, CASE
        WHEN bad_utf8 THEN 'invalid_utf8'
        WHEN trim(line) = '' THEN 'empty_line'
        WHEN NOT is_json THEN 'invalid_json'
        WHEN doc_type <> 'OBJECT' THEN 'not_an_object'
        WHEN coalesce(nm.n, '') = '' THEN 'bad_result'
        WHEN TRY_CAST(nm.n AS BIGINT) > TRY_CAST(nm.m AS BIGINT) THEN 'passing_exceeds_total'
        WHEN sid IS NULL OR sid < 1 THEN 'bad_student_id'
        WHEN lid IS NOT NULL AND lid < 1 THEN 'bad_lesson_id'
        WHEN has_title AND (title IS NULL OR trim(title) = '' OR contains(title, chr(0)))
            THEN 'bad_lesson_title'
        WHEN lid IS NULL AND NOT has_title THEN 'missing_lesson'
    END AS reason
    FROM typed
)
SELECT file, "offset",
    CASE WHEN reason IS NULL THEN sid END AS student_id,
    CASE WHEN reason IS NULL THEN lid END AS lesson_id,
    CASE WHEN reason IS NULL THEN title END AS lesson_title,
    CASE WHEN reason IS NULL THEN TRY_CAST(nm.n AS BIGINT) END AS passed,
    CASE WHEN reason IS NULL THEN TRY_CAST(nm.m AS BIGINT) END AS total,
    reason,
    CASE WHEN reason IS NOT NULL THEN replace(left(line, {RAW_TEXT_LIMIT}), chr(0), '\ufffd') END AS raw
FROM judged
"""

_local = threading.local()


def _duckdb() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB connection per thread (connections are not thread-safe)."""
    con = getattr(_local, "con", None)
    if con is None:
        threads = os.environ.get("COHORTFLOW_PARSE_THREADS")  # Spark workers: one each
        con = duckdb.connect(":memory:", config={"threads": int(threads)} if threads else {})
        _local.con = con
    return con


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


def _invalid_utf8(lines: pa.LargeBinaryArray) -> np.ndarray:
    """Flag lines that are not valid UTF-8, in one linear pass over the bytes."""
    bad = np.zeros(len(lines), dtype=bool)
    _, offsets_buf, data_buf = lines.buffers()
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    data = memoryview(data_buf)[offsets[0] : offsets[-1]] if len(lines) else memoryview(b"")
    base, start = int(offsets[0]), 0
    while True:
        try:
            str(data[start:], "utf-8")
        except UnicodeDecodeError as exc:
            row = int(np.searchsorted(offsets, base + start + exc.start, side="right")) - 1
            bad[row] = True
            start = int(offsets[row + 1]) - base
            continue
        return bad


def _as_raw(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Normalise input to RAW_SCHEMA with a ``bad_utf8`` flag, blanking undecodable lines."""
    table = pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch
    table = table.cast(RAW_SCHEMA)
    lines = table.column("line").combine_chunks()
    try:
        text = lines.cast(pa.large_string())
        bad_flags = pa.repeat(pa.scalar(False), len(lines))
    except pa.ArrowInvalid:
        bad_flags = pa.array(_invalid_utf8(lines).tolist(), type=pa.bool_())
        text = pc.if_else(bad_flags, pa.scalar(b"", pa.large_binary()), lines).cast(pa.large_string())
    return pa.table(
        {
            "file": table.column("file"),
            "offset": table.column("offset"),
            "line": text,
            "bad_utf8": bad_flags,
        }
    )


def parse_runs(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """Parse raw lines into RUNS_SCHEMA: one row per line, valid or with a reason code."""
    raw = _as_raw(batch)
    cursor = _duckdb().cursor()
    try:
        cursor.register("raw_lines", raw)
        runs = cursor.sql(_PARSE_SQL).to_arrow_table()
    finally:
        cursor.close()
    runs = runs.cast(RUNS_SCHEMA)
    return _restore_raw_bytes(runs, batch, raw)


def _restore_raw_bytes(runs: pa.Table, batch: pa.RecordBatch | pa.Table, raw: pa.Table) -> pa.Table:
    """Put an escaped copy of undecodable lines into ``raw`` (DuckDB only saw blanks).

    Only the few bad lines are touched in Python; the columns stay in Arrow.
    """
    flags = raw.column("bad_utf8")
    if not pc.any(flags).as_py():
        return runs
    source = (pa.table(batch) if isinstance(batch, pa.RecordBatch) else batch).filter(flags)
    escaped = pa.array(
        [
            line.rstrip(b"\r\n")
            .decode("utf-8", "backslashreplace")[:RAW_TEXT_LIMIT]
            .replace("\x00", "\ufffd")
            for line in source.column("line").to_pylist()
        ],
        pa.string(),
    )
    where = pc.index_in(runs.column("offset"), value_set=source.column("offset").combine_chunks())
    fixed = pc.coalesce(pc.take(escaped, where), runs.column("raw"))
    return runs.set_column(runs.schema.get_field_index("raw"), "raw", fixed)


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
