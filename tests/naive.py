"""A deliberately naive, independent recompute of the whole contract, for tests to compare with.

Plain Python: `json.loads` line by line, dicts and sets, no shared code with
the pipeline (only the written rules of the data contract).
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

# The README's rule, read literally ("whitespace" is JSON's: space, tab, CR, LF).
LINE_LIMIT = 1024 * 1024
_DEFECT = re.compile(r'([{,][ \t\r\n]*"student_id"[ \t\r\n]*),')
_W = "[ \t\r\n]"
_RESULT = re.compile(rf"^{_W}*([0-9]{{1,9}}){_W}*(/|{_W}+out{_W}+of{_W}+){_W}*([0-9]{{1,9}}){_W}*\Z")
INT64_MAX = 2**63 - 1


def _as_id(value: Any) -> int | None:
    if type(value) is int:
        return value if 1 <= value <= INT64_MAX else None
    if isinstance(value, str) and value != "" and all(c in "0123456789" for c in value):
        significant = value.lstrip("0")
        if len(significant) > 19:
            return None
        number = int(significant or "0")
        return number if 1 <= number <= INT64_MAX else None
    return None


def _too_deep(text: str) -> bool:
    """Nesting deeper than 64 levels, counting brackets outside strings, char by char."""
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > 64:
                return True
        elif char in "]}":
            depth -= 1
    return False


_INVALID = object()


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key not in doc:
            doc[key] = value
    return doc


def _refuse(name: str) -> Any:
    raise ValueError(name)


_DECODER = json.JSONDecoder(
    object_pairs_hook=_first_key_wins,
    parse_constant=_refuse,
    parse_int=lambda digits: int(digits) if len(digits) <= 30 else float("inf"),
)


def _loads(text: str) -> Any:
    """Strict JSON: json.loads minus NaN/Infinity, lone surrogates and deep nesting."""
    if text.count("[") + text.count("{") > 64 and _too_deep(text):
        return _INVALID
    try:
        doc = _DECODER.decode(text)
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return _INVALID
    return doc


def naive_raw(raw: bytes) -> str:
    """The quarantined text of a line (without its newline), as the README says it is stored."""
    text = raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return text[:4096]


def naive_parse(raw: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """One line (without its newline) -> (run, None) or (None, reason)."""
    if len(raw) > LINE_LIMIT:
        return None, "line_too_long"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    while text.endswith("\r"):
        text = text[:-1]
    if all(c in " \t\r\n" for c in text):
        return None, "empty_line"
    doc = _loads(text)
    if doc is _INVALID:
        repaired = _DEFECT.sub(r"\1:", text)
        doc = _loads(repaired) if repaired != text else _INVALID
    if doc is _INVALID:
        return None, "invalid_json"
    if not isinstance(doc, dict):
        return None, "not_an_object"
    result = doc.get("result")
    match = _RESULT.match(result) if isinstance(result, str) else None
    if match is None:
        return None, "bad_result"
    passed, total = int(match.group(1)), int(match.group(3))
    if passed > total:
        return None, "passing_exceeds_total"
    student = _as_id(doc.get("student_id"))
    if student is None:
        return None, "bad_student_id"
    lesson: int | None = None
    if doc.get("lesson_id") is not None:
        lesson = _as_id(doc["lesson_id"])
        if lesson is None:
            return None, "bad_lesson_id"
    title = doc.get("lesson_title")
    if title is not None and (
        not isinstance(title, str) or all(c in " \t\r\n" for c in title) or "\x00" in title
    ):
        return None, "bad_lesson_title"
    if lesson is None and title is None:
        return None, "missing_lesson"
    return {
        "student_id": student,
        "lesson_id": lesson,
        "title": title,
        "passed": passed,
        "total": total,
    }, None


@dataclass
class NaiveModel:
    """Everything the warehouse should hold, computed from scratch."""

    batches: dict[int, dict[str, Any]] = field(default_factory=dict)
    students: dict[int, dict[str, Any]] = field(default_factory=dict)
    lessons: dict[int, str] = field(default_factory=dict)
    completed: dict[int, set[int]] = field(default_factory=dict)
    rejects: dict[str, int] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)

    def add_lines(self, lines: list[bytes]) -> None:
        """Apply log lines in order (the mapping's first pair wins, by id and by title)."""
        for raw in lines:
            run, reason = naive_parse(raw)
            if run is None:
                self.rejects[reason or "?"] = self.rejects.get(reason or "?", 0) + 1
                continue
            self.runs.append(run)
            lesson, title = run["lesson_id"], run["title"]
            named = lesson is not None and title is not None
            if named and lesson not in self.lessons and title not in self.lessons.values():
                self.lessons[lesson] = title

    def finish(self) -> None:
        """Resolve every completed run to a lesson id."""
        by_title = {title: lesson for lesson, title in self.lessons.items()}
        self.completed = {}
        for run in self.runs:
            if run["passed"] != run["total"]:
                continue
            lesson = run["lesson_id"] if run["lesson_id"] is not None else by_title.get(run["title"])
            if lesson is not None:
                self.completed.setdefault(run["student_id"], set()).add(lesson)

    def student_rows(self) -> dict[int, tuple[Any, ...]]:
        """students table rows by id: (name, batch_id, lessons_completed)."""
        return {
            sid: (s["name"], s["batch_id"], len(self.completed.get(sid, ())))
            for sid, s in self.students.items()
        }

    def batch_rows(self) -> dict[int, tuple[Any, ...]]:
        """batches table rows by id: (name, students_total, students_completed_3plus)."""
        rows = {}
        for bid, b in self.batches.items():
            members = [sid for sid, s in self.students.items() if s["batch_id"] == bid]
            done = [sid for sid in members if len(self.completed.get(sid, ())) >= 3]
            rows[bid] = (b["name"], len(members), len(done))
        return rows


@dataclass(frozen=True)
class Upto:
    """A prefix of the sources: log bytes, students up to an id, batches up to an instant.

    ``batches_until`` is a timestamp (ISO 8601); batches created then count only if their id
    is in ``boundary_ids``.
    """

    log_bytes: int
    last_student_id: int
    batches_until: str | None
    boundary_ids: tuple[int, ...] = ()

    def has_batch(self, batch: dict[str, Any]) -> bool:
        """Whether the batch is within the prefix."""
        if self.batches_until is None:
            return False
        created, until = (datetime.fromisoformat(t) for t in (batch["created_at"], self.batches_until))
        return created < until or (created == until and batch["id"] in self.boundary_ids)


def recompute(data_dir: Path, batches_url: str, upto: Upto | None = None) -> NaiveModel:
    """Read all three sources from scratch (whole file, whole table, every API page), or a prefix.

    Students are the table's current rows, so edits and deletes made upstream count as they
    are now; the completions of a deleted student are kept but belong to no batch.
    """
    model = NaiveModel()
    with sqlite3.connect(data_dir / "students.db") as conn:
        for sid, name, batch_id, created_at in conn.execute(
            "SELECT id, name, batch_id, created_at FROM students"
        ):
            if upto is None or sid <= upto.last_student_id:
                model.students[sid] = {"name": name, "batch_id": batch_id, "created_at": created_at}
    conn.close()
    if upto is None:
        model.add_lines(log_lines(data_dir / "test_runs.log"))
    else:  # a prefix of one (unrotated) log
        data = (data_dir / "test_runs.log").read_bytes()[: upto.log_bytes]
        model.add_lines(data[: data.rfind(b"\n") + 1].split(b"\n")[:-1])
    model.finish()
    served = all_batches(batches_url)
    model.batches = {b["id"]: b for b in served if upto is None or upto.has_batch(b)}
    return model


def log_lines(live: Path) -> list[bytes]:
    """The log's lines in writing order: rotated `live.N` (highest N first), then `live`.

    A rotated file is complete (an unterminated tail is its last line); the live file's
    half-written last line is not a line yet.
    """
    rotated = [p for p in live.parent.glob(live.name + ".*") if p.suffix[1:].isdigit()]
    lines: list[bytes] = []
    for path in sorted(rotated, key=lambda p: -int(p.suffix[1:])):
        parts = path.read_bytes().split(b"\n")
        lines += parts if parts[-1] else parts[:-1]
    if live.exists():
        lines += live.read_bytes().split(b"\n")[:-1]
    return lines


def all_batches(url: str) -> list[dict[str, Any]]:
    """Every batch the API serves, paging naively and de-duplicating by id."""
    seen: dict[int, dict[str, Any]] = {}
    after: str | None = None
    while True:
        page = httpx.get(url, params={"after": after} if after else {}, timeout=10).json()
        before = len(seen)
        for item in page:
            seen.setdefault(item["id"], item)
        if len(page) < 100 or len(seen) == before:
            return sorted(seen.values(), key=lambda b: b["id"])
        after = page[-1]["created_at"].replace(" ", "T")[:23]
