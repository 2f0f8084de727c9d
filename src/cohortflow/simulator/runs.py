"""Test-run lines: draw them with numpy, render them without a per-line Python loop.

A line is three fragments: a *head* chosen from a small table (result text,
the ``student_id`` separator, an opening quote for string ids), the student id
digits, and a *tail* from another small table (closing quote, the lesson part,
``}`` and the newline). Rendering gathers the table rows into one padded
``uint8`` matrix and drops the padding bytes, so ten million lines cost a few
numpy passes. `render_line` is the plain per-line reference the tests compare
against and the dirty-line writer starts from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache

import numpy as np
from numpy.typing import NDArray

from cohortflow.simulator.catalogue import DEFAULT_MIX, LESSONS, MAX_TESTS, LessonForm, LineMix

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]
ByteArray = NDArray[np.uint8]

_PASSING_SLOTS = MAX_TESTS + 1
_HEAD_FLAGS = 8  # out_of x colon x student-id-string
_FORMS = len(LessonForm)
_UNKNOWN_AHEAD = 4
"""An unknown student is one of the next ``_UNKNOWN_AHEAD`` ids the writer will create."""


@dataclass(frozen=True)
class Run:
    """One test run as the upstream would log it (one line)."""

    lesson: int
    """Index into `LESSONS` (0-based)."""
    passing: int
    student_id: int
    form: LessonForm = LessonForm.BOTH_NUMBER
    out_of: bool = False
    colon: bool = False
    student_id_string: bool = False


@dataclass
class RunColumns:
    """Column arrays of ``n`` test runs (the vectorised twin of `Run`)."""

    lesson: IntArray
    passing: IntArray
    student_id: IntArray
    form: IntArray
    out_of: BoolArray
    colon: BoolArray
    student_id_string: BoolArray

    def __len__(self) -> int:
        return len(self.lesson)

    def row(self, index: int) -> Run:
        """Return line ``index`` as a `Run`."""
        return Run(
            lesson=int(self.lesson[index]),
            passing=int(self.passing[index]),
            student_id=int(self.student_id[index]),
            form=LessonForm(int(self.form[index])),
            out_of=bool(self.out_of[index]),
            colon=bool(self.colon[index]),
            student_id_string=bool(self.student_id_string[index]),
        )


def result_text(passing: int, tests: int, out_of: bool) -> str:
    """Render a result the two ways the upstream does: ``3/7`` or ``3 out of 7``."""
    return f"{passing} out of {tests}" if out_of else f"{passing}/{tests}"


def head_text(result: str, colon: bool, student_id_string: bool) -> str:
    """Render everything before the student id digits."""
    separator = ":" if colon else ","
    quote = '"' if student_id_string else ""
    return f'{{"result": {json.dumps(result)}, "student_id"{separator} {quote}'


def lesson_text(lesson: int, form: LessonForm) -> str:
    """Render the lesson part of a line in one of the five forms."""
    entry = LESSONS[lesson]
    title = f'"lesson_title": {json.dumps(entry.title)}'
    by_form = {
        LessonForm.BOTH_NUMBER: f'"lesson_id": {entry.id}, {title}',
        LessonForm.BOTH_STRING: f'"lesson_id": "{entry.id}", {title}',
        LessonForm.ID_STRING: f'"lesson_id": "{entry.id}"',
        LessonForm.ID_NUMBER: f'"lesson_id": {entry.id}',
        LessonForm.TITLE: title,
    }
    return by_form[form]


def tail_text(lesson: int, form: LessonForm, student_id_string: bool) -> str:
    """Render everything after the student id digits, newline included."""
    quote = '"' if student_id_string else ""
    return f"{quote}, {lesson_text(lesson, form)}}}\n"


def render_line(run: Run) -> bytes:
    """Render one run the slow, obvious way (the reference for `render`)."""
    tests = LESSONS[run.lesson].tests
    head = head_text(result_text(run.passing, tests, run.out_of), run.colon, run.student_id_string)
    tail = tail_text(run.lesson, run.form, run.student_id_string)
    return f"{head}{run.student_id}{tail}".encode()


def _head_index(lesson: IntArray, passing: IntArray, flags: IntArray) -> IntArray:
    return (lesson * _PASSING_SLOTS + passing) * _HEAD_FLAGS + flags


def _head_flags(out_of: BoolArray, colon: BoolArray, sid_string: BoolArray) -> IntArray:
    return out_of.astype(np.int64) * 4 + colon.astype(np.int64) * 2 + sid_string.astype(np.int64)


def _pad_table(texts: list[str]) -> tuple[ByteArray, IntArray]:
    encoded = [text.encode() for text in texts]
    width = max(len(item) for item in encoded)
    table = np.zeros((len(encoded), width), dtype=np.uint8)
    for row, item in enumerate(encoded):
        table[row, : len(item)] = np.frombuffer(item, dtype=np.uint8)
    return table, np.array([len(item) for item in encoded], dtype=np.int64)


@cache
def _head_table() -> tuple[ByteArray, IntArray]:
    texts = []
    for lesson in range(len(LESSONS)):
        for passing in range(_PASSING_SLOTS):
            for flags in range(_HEAD_FLAGS):
                out_of, colon, sid_string = bool(flags & 4), bool(flags & 2), bool(flags & 1)
                result = result_text(passing, LESSONS[lesson].tests, out_of)
                texts.append(head_text(result, colon, sid_string))
    return _pad_table(texts)


@cache
def _tail_table() -> tuple[ByteArray, IntArray]:
    texts = [
        tail_text(lesson, LessonForm(form), bool(sid_string))
        for lesson in range(len(LESSONS))
        for form in range(_FORMS)
        for sid_string in range(2)
    ]
    return _pad_table(texts)


@cache
def _four_digit_tables() -> tuple[ByteArray, ByteArray]:
    """Rows for 0..9999: ``left`` unpadded (0 is empty), ``right`` zero-filled then unpadded."""
    zero_filled = np.array([list(f"{i:04d}".encode()) for i in range(10_000)], dtype=np.uint8)
    unpadded = zero_filled.copy()
    for value in range(10_000):
        unpadded[value, : 4 - len(str(value))] = 0
    left = unpadded.copy()
    left[0] = 0
    return left, np.concatenate([zero_filled, unpadded])


def _digits_by_division(values: IntArray) -> ByteArray:
    width = len(str(int(values.max())))
    powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
    scaled = values[:, None] // powers
    digits = (scaled % 10 + 48).astype(np.uint8)
    leading = scaled == 0
    leading[:, -1] = False
    digits[leading] = 0
    return digits


def _digit_count(values: IntArray) -> IntArray:
    """Number of decimal digits of each non-negative int."""
    count = np.ones(len(values), dtype=np.int64)
    for power in range(1, 19):
        bigger = values >= 10**power
        if not bigger.any():
            break
        count += bigger
    return count


def _digits(values: IntArray) -> ByteArray:
    """ASCII digits of non-negative ints, right-aligned, left-padded with zero bytes."""
    if len(values) == 0 or int(values.max()) >= 10**8:
        return _digits_by_division(values) if len(values) else np.zeros((0, 1), np.uint8)
    left_table, right_table = _four_digit_tables()
    high = values // 10_000
    low = values - high * 10_000 + 10_000 * (high == 0)
    left = np.take(left_table, high, axis=0)
    return np.concatenate([left, np.take(right_table, low, axis=0)], axis=1)


@dataclass
class Rendered:
    """Rendered lines: the bytes of all lines and each line's length."""

    data: ByteArray
    lengths: IntArray

    def offsets(self) -> IntArray:
        """Byte offset of each line's start, plus the total length at the end."""
        return np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(self.lengths)])


def render(columns: RunColumns) -> Rendered:
    """Render many runs at once; byte-identical to `render_line` on each row."""
    if np.any(columns.student_id < 0):
        msg = "vectorised rendering needs non-negative student ids; use render_line"
        raise ValueError(msg)
    head_table, head_len = _head_table()
    tail_table, tail_len = _tail_table()
    flags = _head_flags(columns.out_of, columns.colon, columns.student_id_string)
    head_idx = _head_index(columns.lesson, columns.passing, flags)
    tail_idx = (columns.lesson * _FORMS + columns.form) * 2 + columns.student_id_string
    digits = _digits(columns.student_id)
    heads = np.take(head_table, head_idx, axis=0)
    tails = np.take(tail_table, tail_idx, axis=0)
    flat = np.concatenate([heads, digits, tails], axis=1).reshape(-1)
    lengths = head_len[head_idx] + _digit_count(columns.student_id) + tail_len[tail_idx]
    return Rendered(flat[flat != 0], lengths)


def draw_lesson_forms(rng: np.random.Generator, n: int, mix: LineMix) -> IntArray:
    """Draw each line's `LessonForm` with the mix's proportions."""
    pick = rng.random(n)
    other = rng.random(n) < mix.other_id_type
    both = np.where(other, LessonForm.BOTH_STRING, LessonForm.BOTH_NUMBER)
    id_only = np.where(other, LessonForm.ID_NUMBER, LessonForm.ID_STRING)
    forms = np.where(pick < mix.both, both, np.where(pick < mix.both + mix.id_only, id_only, 4))
    return forms.astype(np.int64)


def draw_student_ids(rng: np.random.Generator, existing: IntArray, unknown_rate: float) -> IntArray:
    """Pick an existing student per line, or at ``unknown_rate`` one the writer creates soon.

    ``existing[i]`` is how many students exist when line ``i`` is written (ids
    ``1..existing[i]``); with none yet, the line names one of the first ids.
    """
    n = len(existing)
    known = rng.integers(1, np.maximum(existing, 1) + 1, size=n, dtype=np.int64)
    ahead = existing + rng.integers(1, _UNKNOWN_AHEAD + 1, size=n, dtype=np.int64)
    unknown = (rng.random(n) < unknown_rate) | (existing <= 0)
    return np.where(unknown, ahead, known)


def draw_runs(
    rng: np.random.Generator,
    existing: IntArray,
    unknown_rate: float,
    mix: LineMix = DEFAULT_MIX,
) -> RunColumns:
    """Draw ``len(existing)`` runs: uniform lesson, passing uniform in ``0..tests``."""
    n = len(existing)
    tests = np.array([lesson.tests for lesson in LESSONS], dtype=np.int64)
    lesson = rng.integers(0, len(LESSONS), size=n, dtype=np.int64)
    passing = (rng.random(n) * (tests[lesson] + 1)).astype(np.int64)
    return RunColumns(
        lesson=lesson,
        passing=passing,
        student_id=draw_student_ids(rng, existing, unknown_rate),
        form=draw_lesson_forms(rng, n, mix),
        out_of=rng.random(n) < mix.out_of,
        colon=rng.random(n) < mix.colon,
        student_id_string=rng.random(n) < mix.student_id_string,
    )
