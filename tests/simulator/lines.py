"""An independent reader of test-run lines, for checking what the simulator writes.

It knows the contract's forms from the outside (regex + json), not from the
simulator's tables, so the tests do not grade the generator with its own code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

CLEAN = re.compile(
    r'\{"result": "(?P<result>[^"]*)", "student_id"(?P<sep>[,:]) (?P<sid>"?-?\d+"?)'
    r'(?:, "lesson_id": (?P<lid>"[^"]*"|-?\d+))?(?:, "lesson_title": "(?P<title>[^"]*)")?\}'
)
RESULT = re.compile(r"(-?\d+)(?:/| out of )(-?\d+)")


@dataclass(frozen=True)
class Shape:
    """The form of one clean line."""

    lesson: str  # "both", "id", "title"
    lesson_id_string: bool | None
    out_of: bool
    colon: bool
    student_id_string: bool
    student_id: int
    lesson_id: int | None
    title: str | None
    passing: int
    total: int


def shape(line: bytes) -> Shape:
    """Parse one clean line (trailing newline allowed) or raise ValueError."""
    match = CLEAN.fullmatch(line.decode().rstrip("\n"))
    if match is None:
        raise ValueError(line)
    lid, title = match["lid"], match["title"]
    result = RESULT.fullmatch(match["result"])
    if result is None:
        raise ValueError(line)
    return Shape(
        lesson="both" if lid and title else ("id" if lid else "title"),
        lesson_id_string=None if lid is None else lid.startswith('"'),
        out_of=" out of " in match["result"],
        colon=match["sep"] == ":",
        student_id_string=match["sid"].startswith('"'),
        student_id=int(match["sid"].strip('"')),
        lesson_id=None if lid is None else int(lid.strip('"')),
        title=title,
        passing=int(result[1]),
        total=int(result[2]),
    )


def _as_json(text: str) -> dict[str, object]:
    loaded = json.loads(text.replace('"student_id", ', '"student_id": '))
    assert isinstance(loaded, dict)
    return loaded


def classify(line: bytes, catalogue: dict[int, tuple[str, int]]) -> str:
    """Name the dirty kind of a line, or ``clean``; ``catalogue`` maps id -> (title, tests)."""
    if line.strip() == b"":
        return "empty"
    try:
        text = line.decode()
    except UnicodeDecodeError:
        return "invalid_utf8"
    if not text.endswith("}\n"):
        return "truncated"
    record = _as_json(text)
    if "result" not in record or "student_id" not in record:
        return "missing_field"
    if "lesson_id" not in record and "lesson_title" not in record:
        return "missing_field"
    return _classify_values(record, catalogue)


def _classify_values(record: dict[str, object], catalogue: dict[int, tuple[str, int]]) -> str:
    if record["result"] == "abc":
        return "bad_result"
    student_id = int(str(record["student_id"]))
    if student_id < 0:
        return "negative_number"
    if student_id >= 2**63:
        return "huge_number"
    if record.get("lesson_id") == "abc":
        return "bad_lesson_id"
    result = RESULT.fullmatch(str(record["result"]))
    assert result, record
    if int(result[1]) > int(result[2]):
        return "passing_over_total"
    if "lesson_id" in record:
        assert int(str(record["lesson_id"])) in catalogue, record
    return "clean"
