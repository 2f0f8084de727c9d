"""Truly broken log lines, mixed in at ``--dirty-rate``.

Each kind is built from a clean line so it stays realistic, and each is
recognisable on its own (the tests classify them back):

=====================  =========================================================
kind                   what the line looks like
=====================  =========================================================
``empty``              an empty line
``truncated``          a clean line cut before its closing ``}``
``invalid_utf8``       a clean line with bytes that are not UTF-8 in a string
``negative_number``    ``"student_id", -17``
``huge_number``        ``"student_id", 1000000000000000000000000000000`` (10**30)
``bad_result``         ``"result": "abc"``
``missing_field``      no ``result``, no ``student_id``, or no lesson at all
``passing_over_total`` ``"result": "12/10"``
``bad_lesson_id``      ``"lesson_id": "abc"`` and no title
=====================  =========================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum

import numpy as np

from cohortflow.simulator.catalogue import LESSONS, LessonForm
from cohortflow.simulator.runs import (
    Rendered,
    Run,
    RunColumns,
    head_text,
    lesson_text,
    render_line,
    result_text,
    tail_text,
)

HUGE_STUDENT_ID = 10**30
INVALID_UTF8 = b"\xff\xfe\xc3("


class DirtyKind(StrEnum):
    """The kinds of broken line the simulator writes."""

    EMPTY = "empty"
    TRUNCATED = "truncated"
    INVALID_UTF8 = "invalid_utf8"
    NEGATIVE_NUMBER = "negative_number"
    HUGE_NUMBER = "huge_number"
    BAD_RESULT = "bad_result"
    MISSING_FIELD = "missing_field"
    PASSING_OVER_TOTAL = "passing_over_total"
    BAD_LESSON_ID = "bad_lesson_id"


DIRTY_KINDS: tuple[DirtyKind, ...] = tuple(DirtyKind)


def _with_student(run: Run, student_id: int) -> bytes:
    tests = LESSONS[run.lesson].tests
    head = head_text(result_text(run.passing, tests, run.out_of), run.colon, False)
    return f"{head}{student_id}{tail_text(run.lesson, run.form, False)}".encode()


def _with_result(run: Run, result: str) -> bytes:
    head = head_text(result, run.colon, run.student_id_string)
    tail = tail_text(run.lesson, run.form, run.student_id_string)
    return f"{head}{run.student_id}{tail}".encode()


def _missing_field(rng: np.random.Generator, run: Run) -> bytes:
    tests = LESSONS[run.lesson].tests
    result = f'"result": "{result_text(run.passing, tests, run.out_of)}"'
    student = f'"student_id", {run.student_id}'
    lesson = lesson_text(run.lesson, run.form)
    parts = [result, student, lesson]
    del parts[int(rng.integers(0, 3))]
    return ("{" + ", ".join(parts) + "}\n").encode()


def _truncated(rng: np.random.Generator, run: Run) -> bytes:
    clean = render_line(run)
    return clean[: int(rng.integers(1, len(clean) - 2))] + b"\n"


def _invalid_utf8(run: Run) -> bytes:
    clean = render_line(replace(run, form=LessonForm.TITLE))
    title = LESSONS[run.lesson].title.encode()
    cut = len(title) // 2
    return clean.replace(title, title[:cut] + INVALID_UTF8 + title[cut:])


def _negative(rng: np.random.Generator, run: Run) -> bytes:
    return _with_student(run, -int(rng.integers(1, 1000)))


def _passing_over_total(rng: np.random.Generator, run: Run) -> bytes:
    tests = LESSONS[run.lesson].tests
    return _with_result(run, result_text(tests + int(rng.integers(1, 6)), tests, run.out_of))


def _bad_lesson_id(run: Run) -> bytes:
    clean = render_line(replace(run, form=LessonForm.ID_STRING))
    good = f'"lesson_id": "{LESSONS[run.lesson].id}"'.encode()
    return clean.replace(good, b'"lesson_id": "abc"')


_BREAKERS: dict[DirtyKind, Callable[[np.random.Generator, Run], bytes]] = {
    DirtyKind.EMPTY: lambda _rng, _run: b"\n",
    DirtyKind.TRUNCATED: _truncated,
    DirtyKind.INVALID_UTF8: lambda _rng, run: _invalid_utf8(run),
    DirtyKind.NEGATIVE_NUMBER: _negative,
    DirtyKind.HUGE_NUMBER: lambda _rng, run: _with_student(run, HUGE_STUDENT_ID),
    DirtyKind.BAD_RESULT: lambda _rng, run: _with_result(run, "abc"),
    DirtyKind.MISSING_FIELD: _missing_field,
    DirtyKind.PASSING_OVER_TOTAL: _passing_over_total,
    DirtyKind.BAD_LESSON_ID: lambda _rng, run: _bad_lesson_id(run),
}


def dirty_line(rng: np.random.Generator, kind: DirtyKind, run: Run) -> bytes:
    """Break the clean ``run`` the ``kind`` way; the result ends with a newline."""
    return _BREAKERS[kind](rng, run)


def draw_dirty(rng: np.random.Generator, runs: list[Run]) -> list[bytes]:
    """Turn each clean run into a broken line of a uniformly drawn kind."""
    kinds = rng.integers(0, len(DIRTY_KINDS), size=len(runs))
    return [dirty_line(rng, DIRTY_KINDS[k], run) for k, run in zip(kinds, runs, strict=True)]


def with_dirt(
    rng: np.random.Generator, columns: RunColumns, rendered: Rendered, dirty_rate: float
) -> list[bytes | memoryview]:
    """Replace about ``dirty_rate`` of the rendered lines by broken ones, keeping order.

    Returns the pieces to write one after another (views into ``rendered``
    between the broken lines).
    """
    whole = memoryview(rendered.data.data)
    if dirty_rate <= 0 or len(columns) == 0:
        return [whole]
    positions = np.flatnonzero(rng.random(len(columns)) < dirty_rate)
    broken = draw_dirty(rng, [columns.row(int(i)) for i in positions])
    offsets = rendered.offsets()
    pieces: list[bytes | memoryview] = []
    start = 0
    for position, line in zip(positions, broken, strict=True):
        pieces += [whole[offsets[start] : offsets[position]], line]
        start = int(position) + 1
    pieces.append(whole[offsets[start] :])
    return pieces
