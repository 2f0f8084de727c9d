"""The naive baseline: what a typical solution does, written the typical way.

Read the log line by line, repair the ``"student_id", N`` defect, ``json.loads``
each line in Python and validate it with a few ``if``s, collect columns in
lists, then pandas: ``drop_duplicates`` for the title mapping, ``groupby`` per
student and per batch, and rewrite the whole ``batches`` table with
``DataFrame.to_sql(if_exists="replace")``. Same contract rules as the floor.

Usage: python bench/naive_baseline.py LOG STUDENTS_DB BATCHES_URL OUT.json TABLE.db
"""

from __future__ import annotations

import json
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from common import Answer, fetch_batches, save_answer

DEFECT = re.compile(r'([{,]\s*"student_id"\s*),')
RESULT = re.compile(r"^\s*([0-9]{1,9})\s*(?:/|\s+out\s+of\s+)\s*([0-9]{1,9})\s*$")
DIGITS = re.compile(r"^[0-9]{1,18}$")


def as_id(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, str) and DIGITS.match(value):
        return int(value)
    return None


def parse(raw: bytes) -> tuple[int, int | None, str | None, bool] | None:
    """One line -> (student, lesson id, title, completed), or None when invalid."""
    try:
        text = raw.decode("utf-8").rstrip("\r\n")
        try:
            doc = json.loads(text)
        except ValueError:
            doc = json.loads(DEFECT.sub(r"\1:", text))
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    result = doc.get("result")
    match = RESULT.match(result) if isinstance(result, str) else None
    if match is None or int(match.group(1)) > int(match.group(2)):
        return None
    student = as_id(doc.get("student_id"))
    lesson = None if doc.get("lesson_id") is None else as_id(doc["lesson_id"])
    title = doc.get("lesson_title")
    if student is None or student < 1 or (doc.get("lesson_id") is not None and (lesson or 0) < 1):
        return None
    if title is not None and (not isinstance(title, str) or not title.strip(" ") or "\x00" in title):
        return None
    if lesson is None and title is None:
        return None
    return student, lesson, title, int(match.group(1)) == int(match.group(2))


def runs(log: Path) -> pd.DataFrame:
    columns: dict[str, list[Any]] = {"student": [], "lesson": [], "title": [], "done": []}
    with open(log, "rb") as lines:
        for raw in lines:
            if not raw.endswith(b"\n"):
                break  # a half-written last line
            run = parse(raw)
            if run is not None:
                for column, value in zip(columns.values(), run, strict=True):
                    column.append(value)
    return pd.DataFrame(columns)


def answer(log: Path, students_db: Path, batches_url: str, table_db: Path) -> Answer:
    df = runs(log)
    pairs = df.dropna(subset=["lesson", "title"]).drop_duplicates(["lesson", "title"])
    pairs = pairs.drop_duplicates("lesson").drop_duplicates("title")  # first pair wins both ways
    by_title = dict(zip(pairs["title"], pairs["lesson"], strict=True))
    done = df[df["done"]].copy()
    done["lesson"] = done["lesson"].fillna(done["title"].map(by_title))
    per_student = done.dropna(subset=["lesson"]).groupby("student")["lesson"].nunique()
    with sqlite3.connect(students_db) as conn:
        students = pd.read_sql("SELECT id, batch_id FROM students", conn)
    conn.close()
    students["lessons"] = students["id"].map(per_student).fillna(0)
    students["done"] = students["lessons"] >= 3
    per_batch = students.groupby("batch_id").agg(total=("id", "size"), done=("done", "sum"))
    batches = pd.DataFrame(fetch_batches(batches_url)).set_index("id")
    batches = batches.join(per_batch).fillna({"total": 0, "done": 0})
    with sqlite3.connect(table_db) as conn:
        batches.to_sql("batches", conn, if_exists="replace")
    conn.close()
    return {int(i): (int(r.total), int(r.done)) for i, r in batches.iterrows()}


def main() -> None:
    log, students_db, url, out, table_db = sys.argv[1:6]
    began = time.perf_counter()
    result = answer(Path(log), Path(students_db), url, Path(table_db))
    save_answer(Path(out), result)
    print(f"naive: {len(result)} batches in {time.perf_counter() - began:.2f} s")


if __name__ == "__main__":
    main()
