"""The floor: the smallest vectorised program that computes the per-batch answer.

No durability, no cursors, no quarantine: memory-map the log, split it into
lines with numpy, run two DuckDB statements over all of it (lines of the
upstream's plain shape are read by one regex, the rest by the JSON functions), resolve the lesson
title mapping in Python (a handful of pairs), join students and the batches
from the API. Written independently of ``cohortflow.parse`` (it shares no
code with the pipeline), so a match with the engine is also a correctness
check of the contract rules:

* the upstream's ``"student_id", N`` defect is repaired when the line is not
  valid JSON as it stands;
* a line counts iff it is a JSON object with ``result`` ``N/M`` or
  ``N out of M`` (N <= M), ``student_id`` >= 1 and a ``lesson_id`` >= 1
  and/or a non-empty ``lesson_title``; ids are JSON integers or digit strings;
  a present ``lesson_id`` that is not an id, or a title that is not a
  non-blank string, makes the line invalid;
* the first ``(lesson_id, lesson_title)`` pair seen (file order) wins, by id
  and by title; a completed title-only run counts for the id its title maps
  to, wherever the mapping appears.

Usage: python bench/floor.py LOG STUDENTS_DB BATCHES_URL OUT.json
"""

from __future__ import annotations

import sqlite3
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from common import Answer, fetch_batches, save_answer

# An id: a JSON integer (its raw text is all digits) or a string of 1-18 digits; else NULL.
# ``j`` is the raw JSON text of the value, ``s`` the same value as a decoded string.
_ID = r"""CASE WHEN regexp_full_match({j}, '[0-9]+') THEN TRY_CAST({j} AS BIGINT)
     WHEN starts_with({j}, '"') AND regexp_full_match({s}, '[0-9]{{1,18}}') THEN CAST({s} AS BIGINT)
END"""


# The plain shape almost every upstream line has, read by one regex: a line it matches whole
# is (once repaired) a JSON object whose values read as written (no escapes, no leading zeros
# in numbers), so its fields come from the groups. Other lines go through the JSON functions.
PLAIN = (
    r'^\{"result": "([0-9]{1,9})(?:/| out of )([0-9]{1,9})", "student_id"[,:] '
    r'(?:"([0-9]{1,18})"|([1-9][0-9]{0,17}))'
    r'(?:, "lesson_id": (?:"([0-9]{1,18})"|([1-9][0-9]{0,17})))?'
    r'(, "lesson_title": "([^"\\\x00-\x1f]*)")?\}$'
)
PLAIN_GROUPS = "['n', 'm', 'sq', 'sn', 'lq', 'ln', 'tc', 't']"

# Stage 1, materialised so that each line is decoded, matched and (when not plain) repaired
# once: DuckDB re-evaluates an inlined expression in every filter that uses it.
DOCS = rf"""
CREATE TEMP TABLE docs AS
WITH lines AS (
    SELECT pos, rtrim(TRY(decode(line)), chr(10) || chr(13)) AS text FROM log
), matched AS (
    SELECT pos, text, regexp_extract(text, '{PLAIN}', {PLAIN_GROUPS}) AS p
    FROM lines WHERE text IS NOT NULL
)
SELECT pos, p,
    CASE WHEN p.n <> '' THEN NULL
         WHEN json_valid(text) THEN text
         ELSE regexp_replace(text, '([{{,]\s*"student_id"\s*),', '\1:') END AS doc
FROM matched
"""

PATHS = "['$.result', '$.student_id', '$.lesson_id', '$.lesson_title']"

# Stage 2: the fields of every line, plain or JSON, then the valid ones grouped twice:
# set 1: (lesson_id, lesson_title) with its first position; set 2: (student, lesson_id |
# title-only) with "completed at least once".
GROUPS = rf"""
CREATE TEMP TABLE groups AS
WITH plain AS (
    SELECT pos, p.n AS n, p.m AS m, CAST(p.sq || p.sn AS BIGINT) AS sid,
        p.lq || p.ln <> '' AS has_lid, CAST(nullif(p.lq || p.ln, '') AS BIGINT) AS lid,
        p.tc <> '' AS has_title, CASE WHEN p.tc <> '' THEN p.t END AS title
    FROM docs WHERE p.n <> ''
), objects AS (
    SELECT pos, json_extract(doc, {PATHS}) AS j, json_extract_string(doc, {PATHS}) AS s
    FROM docs WHERE p.n = '' AND json_valid(doc) AND json_type(doc) = 'OBJECT'
), parsed AS (
    SELECT pos,
        regexp_extract(CASE WHEN starts_with(j[1], '"') THEN s[1] END,
            '^\s*([0-9]{{1,9}})\s*(?:/|\s+out\s+of\s+)\s*([0-9]{{1,9}})\s*$', ['n', 'm']) AS nm,
        {_ID.format(j="j[2]", s="s[2]")} AS sid,
        coalesce(j[3], 'null') <> 'null' AS has_lid,
        {_ID.format(j="j[3]", s="s[3]")} AS lid,
        coalesce(j[4], 'null') <> 'null' AS has_title,
        CASE WHEN starts_with(j[4], '"') THEN s[4] END AS title
    FROM objects
), fields AS (
    SELECT * FROM plain
    UNION ALL
    SELECT pos, nm.n, nm.m, sid, has_lid, lid, has_title, title FROM parsed
), valid AS (
    SELECT pos, sid,
        CASE WHEN has_lid THEN lid END AS lid,
        CASE WHEN has_title THEN title END AS title,
        CAST(n AS BIGINT) = CAST(m AS BIGINT) AS done
    FROM fields
    WHERE n <> '' AND CAST(n AS BIGINT) <= CAST(m AS BIGINT)
      AND sid >= 1
      AND (NOT has_lid OR lid >= 1)
      AND (NOT has_title OR (title IS NOT NULL AND trim(title) <> '' AND NOT contains(title, chr(0))))
      AND (has_lid OR has_title)
)
SELECT sid, lid, title, CASE WHEN lid IS NULL THEN title END AS title_only,
       min(pos) AS first_pos, bool_or(done) AS done, GROUPING(sid) = 1 AS is_pair
FROM valid
GROUP BY GROUPING SETS ((lid, title), (sid, lid, title_only))
"""


def log_table(path: Path) -> pa.Table:
    """The log as (pos, line) rows: zero-copy views of the memory-mapped file."""
    data = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
    ends = np.flatnonzero(data == 10) + 1  # complete lines only, newline included
    offsets = np.concatenate([np.zeros(1, np.int64), ends.astype(np.int64)])
    lines = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), len(ends), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return pa.table({"pos": pa.array(offsets[:-1]), "line": lines})


def lesson_map(pairs: list[tuple[int, str, int]]) -> dict[str, int]:
    """title -> lesson id: pairs in file order, the first wins by id and by title."""
    by_title: dict[str, int] = {}
    ids: set[int] = set()
    for lesson, title, _ in sorted(pairs, key=lambda p: p[2]):
        if lesson not in ids and title not in by_title:
            ids.add(lesson)
            by_title[title] = lesson
    return by_title


PER_STUDENT = """
SELECT g.sid, count(DISTINCT coalesce(g.lid, m.lid)) AS lessons
FROM groups g LEFT JOIN mapping m ON g.lid IS NULL AND m.title = g.title_only
WHERE NOT g.is_pair AND g.done AND coalesce(g.lid, m.lid) IS NOT NULL
GROUP BY g.sid
"""

PER_BATCH = f"""
WITH done AS ({PER_STUDENT})
SELECT b.id, count(s.id) AS total, count(s.id) FILTER (WHERE d.lessons >= 3) AS done
FROM batches b
LEFT JOIN students s ON s.batch_id = b.id
LEFT JOIN done d ON d.sid = s.id
GROUP BY b.id
"""


def students(path: Path) -> pa.Table:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, batch_id FROM students").fetchall()
    finally:
        conn.close()
    ids, batches = zip(*rows, strict=True) if rows else ((), ())
    return pa.table({"id": pa.array(ids, pa.int64()), "batch_id": pa.array(batches, pa.int64())})


def parse_log(log: Path) -> duckdb.DuckDBPyConnection:
    """A connection holding ``groups`` (the grouped valid lines) and ``mapping`` (title -> id)."""
    con = duckdb.connect(":memory:")
    con.register("log", log_table(log))
    con.execute(DOCS)
    con.execute(GROUPS)
    con.execute("DROP TABLE docs")
    pairs = con.sql(
        "SELECT lid, title, first_pos FROM groups WHERE is_pair AND lid IS NOT NULL AND title IS NOT NULL"
    ).fetchall()
    mapping = lesson_map(pairs)
    con.register("mapping", pa.table({"title": list(mapping), "lid": pa.array(mapping.values(), pa.int64())}))
    return con


def lessons_per_student(log: Path) -> dict[int, int]:
    """student id -> distinct lessons completed (students with none are absent)."""
    return {int(sid): int(n) for sid, n in parse_log(log).sql(PER_STUDENT).fetchall()}


def answer(log: Path, students_db: Path, batches_url: str) -> Answer:
    """The per-batch answer from the three sources (the API is paged while DuckDB parses)."""
    with ThreadPoolExecutor(1) as pool:
        batches = pool.submit(fetch_batches, batches_url)
        con = parse_log(log)
        con.register("students", students(students_db))
        batch_ids = [int(b["id"]) for b in batches.result()]
    con.register("batches", pa.table({"id": pa.array(batch_ids, pa.int64())}))
    return {int(i): (int(t), int(d)) for i, t, d in con.sql(PER_BATCH).fetchall()}


def main() -> None:
    log, students_db, url, out = sys.argv[1:5]
    began = time.perf_counter()
    result = answer(Path(log), Path(students_db), url)
    save_answer(Path(out), result)
    print(f"floor: {len(result)} batches in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
