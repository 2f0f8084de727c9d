"""The floor: the fastest program we know for the per-batch answer, to measure the pipeline against.

No durability, no cursors, no quarantine, no generality beyond the data it
is given: Polars scans the log's lines (lossily when some are not UTF-8: a
U+FFFD then keeps that line from the canonical shape), keeps the lines whose
``result`` reads ``N/M`` or ``N out of M`` with N = M (a cheap anchored
regex), reads the fields of those with one regex of the upstream's canonical
shape, maps title-only runs to ids through the first ``(lesson_id, title)``
pair seen among them, counts distinct lessons per student and joins the
students and the batches (both read in threads meanwhile).

It shares no code with ``cohortflow.parse``, and takes shortcuts the pipeline
may not: non-canonical lines are not read at all (the simulator writes only
canonical valid lines, its broken ones are all invalid), and the title map
comes from completed lines only (the simulator's pairs never conflict). The
benchmarks check its answer against the engine's on every run, which keeps
both honest.

Usage: python bench/floor.py LOG STUDENTS_DB BATCHES_URL OUT.json
"""

from __future__ import annotations

import io
import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import polars as pl

from common import Answer, fetch_batches, save_answer

RESULT = r'^\{"result": "(?P<n>[0-9]{1,9})(?:/| out of )(?P<m>[0-9]{1,9})"'
_ID = r'(?:"(?P<{0}q>[0-9]{{1,18}})"|(?P<{0}n>[1-9][0-9]{{0,17}}))'
_TITLE = r'"(?P<{0}>[^ "\\\x00-\x1f\ufffd][^"\\\x00-\x1f\ufffd]*)"'
SHAPE = (
    r'^\{"result": "[0-9]{1,9}(?:/| out of )[0-9]{1,9}", "student_id"[:,] '
    + _ID.format("s")
    + r'(?:, "lesson_(?:id": '
    + _ID.format("l")
    + r'(?:, "lesson_title": '
    + _TITLE.format("t1")
    + r')?|title": '
    + _TITLE.format("t2")
    + r"))\}$"
)


def log_lines(log: Path | bytes) -> pl.LazyFrame:
    """The log's lines (a file, or its bytes) with their positions; lossy only when some are not UTF-8."""
    try:
        frame = pl.scan_lines(log).collect()
    except pl.exceptions.ComputeError:
        frame = pl.read_csv(
            log if isinstance(log, Path) else io.BytesIO(log),
            has_header=False,
            separator="\x1f",
            quote_char=None,
            encoding="utf8-lossy",
            schema={"line": pl.String},
        )
    return frame.lazy().with_row_index("pos")


def completed_runs(log: Path | bytes) -> pl.DataFrame:
    """(pos, student, lesson id | null, title | null) of every completed canonical run."""
    result = pl.col("line").str.extract_groups(RESULT)
    fields = pl.col("line").str.extract_groups(SHAPE)
    return (
        log_lines(log)
        .filter(result.struct.field("n").cast(pl.Int64) == result.struct.field("m").cast(pl.Int64))
        .select("pos", fields.alias("f"))
        .unnest("f")
        .select(
            "pos",
            pl.coalesce("sq", "sn").cast(pl.Int64).alias("student"),
            pl.coalesce("lq", "ln").cast(pl.Int64).alias("lesson"),
            pl.coalesce("t1", "t2").alias("title"),
        )
        .filter(
            (pl.col("student") >= 1)
            & (pl.col("lesson").is_null() | (pl.col("lesson") >= 1))
            & (pl.col("lesson").is_not_null() | pl.col("title").is_not_null())
        )
        .collect()
    )


def title_map(runs: pl.DataFrame) -> dict[str, int]:
    """title -> lesson id: pairs in order first seen, the first wins by id and by title."""
    pairs = (
        runs.lazy()
        .filter(pl.col("lesson").is_not_null() & pl.col("title").is_not_null())
        .group_by("lesson", "title")
        .agg(pl.col("pos").min())
        .sort("pos")
        .collect()
    )
    by_title: dict[str, int] = {}
    ids: set[int] = set()
    for lesson, title in pairs.select("lesson", "title").iter_rows():
        if lesson not in ids and title not in by_title:
            ids.add(lesson)
            by_title[title] = lesson
    return by_title


def lessons_per_student(log: Path | bytes) -> pl.DataFrame:
    """(student, lessons): distinct completed lessons, for students with at least one."""
    runs = completed_runs(log)
    mapping = title_map(runs)
    titles = pl.DataFrame(
        {"title": list(mapping), "mapped": list(mapping.values())},
        schema={"title": pl.String, "mapped": pl.Int64},
    )
    return (
        runs.lazy()
        .join(titles.lazy(), on="title", how="left")
        .select("student", pl.coalesce("lesson", "mapped").alias("lesson"))
        .drop_nulls()
        .unique()
        .group_by("student")
        .agg(pl.len().alias("lessons"))
        .collect()
    )


def students(path: Path) -> pl.DataFrame:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, batch_id FROM students").fetchall()
    finally:
        conn.close()
    return pl.DataFrame(rows, schema={"id": pl.Int64, "batch_id": pl.Int64}, orient="row")


def answer(log: Path, students_db: Path, batches_url: str) -> Answer:
    """The per-batch answer from the three sources (API and students read while the log is)."""
    with ThreadPoolExecutor(2) as pool:
        batches = pool.submit(fetch_batches, batches_url)
        people = pool.submit(students, students_db)
        done = lessons_per_student(log)
        batch_ids = pl.DataFrame({"id": [int(b["id"]) for b in batches.result()]}, schema={"id": pl.Int64})
        members = people.result()
    per_batch = (
        members.lazy()
        .join(done.lazy(), left_on="id", right_on="student", how="left")
        .group_by("batch_id")
        .agg(pl.len().alias("total"), (pl.col("lessons") >= 3).sum().alias("done"))
    )
    rows = (
        batch_ids.lazy()
        .join(per_batch, left_on="id", right_on="batch_id", how="left")
        .select("id", pl.col("total").fill_null(0), pl.col("done").fill_null(0))
        .collect()
    )
    return {int(i): (int(t), int(d)) for i, t, d in rows.iter_rows()}


def main() -> None:
    log, students_db, url, out = sys.argv[1:5]
    began = time.perf_counter()
    result = answer(Path(log), Path(students_db), url)
    save_answer(Path(out), result)
    print(f"floor: {len(result)} batches in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
