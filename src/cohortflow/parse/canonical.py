"""The fast path: the upstream's canonical line shape, decided for a whole column at once.

Almost every upstream line reads exactly

    {"result": "N/M" | "N out of M", "student_id", ID, "lesson_id": ID[, "lesson_title": "T"]}
    {"result": "N/M" | "N out of M", "student_id", ID, "lesson_title": "T"}

(with ``:`` or the defect's ``,`` after ``"student_id"``; an ID is a JSON
integer without leading zeros or a quoted digit string; T has no escape,
quote, control character or leading space). A line that matches this shape
whole is, under the full rule, valid JSON (once repaired) whose values read
exactly as written, so one regex gives its fields. It is accepted here only
when the rule's remaining checks hold too (N <= M, ids >= 1); every other
line is left to :func:`cohortflow.parse.rules.judge`.
"""

from __future__ import annotations

from typing import Final

import polars as pl
import pyarrow as pa

_ID = r'(?:"(?P<{0}q>[0-9]{{1,18}})"|(?P<{0}n>[1-9][0-9]{{0,17}}))'
_TITLE = r'"(?P<{0}>[^ "\\\x00-\x1f][^"\\\x00-\x1f]*)"'
# Factored so that each byte decides the next state (a one-pass regex: captures stay cheap).
CANONICAL: Final = (
    r'^\{"result": "(?P<n>[0-9]{1,9})(?:/| out of )(?P<m>[0-9]{1,9})", "student_id"[:,] '
    + _ID.format("s")
    + r'(?:, "lesson_(?:id": '
    + _ID.format("l")
    + r'(?:, "lesson_title": '
    + _TITLE.format("t1")
    + r')?|title": '
    + _TITLE.format("t2")
    + r"))\}\n?$"
)

FIELDS: Final = ("student_id", "lesson_id", "lesson_title", "passed", "total")


def canonical_runs(text: pa.LargeStringArray) -> pl.DataFrame:
    """Every line's ``row`` number, FIELDS (null where not canonical) and whether it was accepted (``ok``)."""
    return (
        pl.DataFrame({"line": pl.from_arrow(text)})
        .lazy()
        .select(
            pl.int_range(pl.len(), dtype=pl.UInt32).alias("row"), pl.col("line").str.extract_groups(CANONICAL)
        )
        .unnest("line")
        .select(
            "row",
            pl.coalesce("sq", "sn").cast(pl.Int64).alias("student_id"),
            pl.coalesce("lq", "ln").cast(pl.Int64).alias("lesson_id"),
            pl.coalesce("t1", "t2").alias("lesson_title"),
            pl.col("n").cast(pl.Int64).alias("passed"),
            pl.col("m").cast(pl.Int64).alias("total"),
        )
        .with_columns(
            ok=(
                (pl.col("passed") <= pl.col("total"))
                & (pl.col("student_id") >= 1)
                & (pl.col("lesson_id").is_null() | (pl.col("lesson_id") >= 1))
            ).fill_null(value=False)
        )
        .collect()
    )
