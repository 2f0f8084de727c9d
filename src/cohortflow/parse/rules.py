"""The full line rule, one line at a time: what the vectorised fast path cannot decide.

This is the README's rule as code, step by step, in the order the reasons are
checked. It runs on the few lines that are not in the upstream's canonical
shape (:mod:`cohortflow.parse.canonical` decides those), so clarity beats
speed here; a whole file of odd lines still parses at ~100k lines/s.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final, NamedTuple

#: A line longer than this many bytes (its newline not counted) is ``line_too_long``.
LINE_LIMIT: Final = 1 << 20
#: Quarantined raw text is cut to this many characters.
RAW_TEXT_LIMIT: Final = 4096
#: JSON nested deeper than this is ``invalid_json`` (RFC 8259 lets a parser set a limit).
MAX_DEPTH: Final = 64
ID_MAX: Final = 2**63 - 1

_WS = " \t\r\n"  # JSON whitespace, the only whitespace the rules know
_DEFECT = re.compile(r'([{,][ \t\r\n]*"student_id"[ \t\r\n]*),')
_W = r"[ \t\r\n]"
_RESULT = re.compile(rf"{_W}*([0-9]{{1,9}}){_W}*(?:/|{_W}+out{_W}+of{_W}+){_W}*([0-9]{{1,9}}){_W}*")
_DIGITS = re.compile(r"[0-9]+")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


class Judged(NamedTuple):
    """One line's verdict: the run's fields, or a reason and the raw text to quarantine."""

    reason: str | None
    student_id: int | None = None
    lesson_id: int | None = None
    lesson_title: str | None = None
    passed: int | None = None
    total: int | None = None
    raw: str | None = None


class _Invalid(Exception):
    """Not JSON under the strict rule."""


class _Number:
    """A JSON number that is not an id candidate (a fraction, exponent or > 19 digits)."""


_NUMBER: Final = _Number()


def raw_text(line: bytes) -> str:
    r"""The stored form of a quarantined line: its text without the newline, cut to 4096 characters.

    Bytes that are not UTF-8 are written ``\xNN``, and so is NUL (PostgreSQL text cannot hold it).
    """
    head = line[: 4 * RAW_TEXT_LIMIT + 4].removesuffix(b"\n")
    text = head.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    return text[:RAW_TEXT_LIMIT]


def judge(line: bytes) -> Judged:
    """Apply the whole rule to one line (with or without its trailing newline)."""
    body = line[:-1] if line.endswith(b"\n") else line
    if len(body) > LINE_LIMIT:
        return Judged("line_too_long", raw=raw_text(line))
    try:
        text = body.decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        return Judged("invalid_utf8", raw=raw_text(line))
    reason, fields = _judge_text(text)
    if reason is not None:
        return Judged(reason, raw=raw_text(line))
    return Judged(None, *fields)


def _judge_text(text: str) -> tuple[str | None, tuple[Any, ...]]:
    if text.strip(_WS) == "":
        return "empty_line", ()
    try:
        doc = _document(text)
    except _Invalid:
        return "invalid_json", ()
    if not isinstance(doc, dict):
        return "not_an_object", ()
    return _judge_object(doc)


def _judge_object(doc: dict[str, Any]) -> tuple[str | None, tuple[Any, ...]]:
    result = doc.get("result")
    match = _RESULT.fullmatch(result) if isinstance(result, str) else None
    if match is None:
        return "bad_result", ()
    passed, total = int(match[1]), int(match[2])
    if passed > total:
        return "passing_exceeds_total", ()
    student = _id(doc.get("student_id"))
    if student is None:
        return "bad_student_id", ()
    lesson = doc.get("lesson_id")
    if lesson is not None and _id(lesson) is None:
        return "bad_lesson_id", ()
    title = doc.get("lesson_title")
    if title is not None and not _valid_title(title):
        return "bad_lesson_title", ()
    if lesson is None and title is None:
        return "missing_lesson", ()
    return None, (student, _id(lesson), title, passed, total)


def _id(value: Any) -> int | None:
    """An id: a JSON integer or a string of ASCII digits, valued 1 to 2**63 - 1."""
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        digits = value.lstrip("0")
        value = int(digits) if 0 < len(digits) <= 19 else 0
    if type(value) is not int:  # bool is an int subclass, and not an id
        return None
    return value if 1 <= value <= ID_MAX else None


def _valid_title(title: Any) -> bool:
    return isinstance(title, str) and title.strip(_WS) != "" and "\x00" not in title


def _document(text: str) -> Any:
    """The line as strict JSON, or as JSON once the upstream's defect is repaired."""
    try:
        return _strict_loads(text)
    except _Invalid:
        repaired = _DEFECT.sub(r"\1:", text)
        if repaired == text:
            raise
        return _strict_loads(repaired)


def _strict_loads(text: str) -> Any:
    """RFC 8259 JSON: no NaN/Infinity, no lone surrogates, at most MAX_DEPTH deep; first key wins."""
    if text.count("[") + text.count("{") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise _Invalid
    try:
        doc = _DECODER.decode(text)
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise _Invalid from exc
    if "\\u" in text and _has_lone_surrogate(doc):
        raise _Invalid
    return doc


def _depth(text: str) -> int:
    """Deepest bracket nesting outside strings (exact for any valid JSON prefix)."""
    depth = deepest = 0
    for char in _STRING.sub("", text):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _first_key_wins(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        doc.setdefault(key, value)
    return doc


def _no_constant(name: str) -> Any:
    raise ValueError(name)


def _integer(digits: str) -> int | _Number:
    return int(digits) if len(digits) <= 20 else _NUMBER


def _float(_text: str) -> _Number:
    return _NUMBER


def _has_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(item) for item in value)
    return False


_DECODER: Final = json.JSONDecoder(
    object_pairs_hook=_first_key_wins, parse_constant=_no_constant, parse_int=_integer, parse_float=_float
)
