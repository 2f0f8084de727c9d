"""The fixed lesson catalogue and the mix of line forms the upstream writes.

The catalogue and the proportions are taken from a capture of the real
upstream log (`/work/shared/samples/upstream_test_runs.log`): ten lessons with
a fixed number of tests each; about half the lines name the lesson by id *and*
title, a third by id only (as a digit string), a fifth by title only; half the
results read ``N/M``, half ``N out of M``; every captured line has the
``"student_id", N`` defect (a comma where the colon belongs).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


@dataclass(frozen=True)
class Lesson:
    """One lesson of the curriculum: its id, its title and how many tests it has."""

    id: int
    title: str
    tests: int


LESSONS: tuple[Lesson, ...] = (
    Lesson(1, "Use Fetch", 7),
    Lesson(2, "Communicating with the Server", 10),
    Lesson(3, "JS Fundamentals: Objects", 6),
    Lesson(4, "JS Fundamentals: Objects Lab", 6),
    Lesson(5, "JS Fundamentals: Traversing Nested Objects", 10),
    Lesson(6, "JS Fundamentals: Object Iteration", 10),
    Lesson(7, "JS Fundamentals: Looping Code Along", 3),
    Lesson(8, "Fetch Lab", 10),
    Lesson(9, "Asynchrony", 5),
    Lesson(10, "Sending Data with Fetch Lab", 2),
)
MAX_TESTS = max(lesson.tests for lesson in LESSONS)

TRACKS: tuple[str, ...] = ("web", "ios", "data_science")
"""Batch name prefixes: a batch is named ``<track>-<uuid1>``."""


class LessonForm(IntEnum):
    """How a line names its lesson (the key order is always id, then title)."""

    BOTH_NUMBER = 0
    """``"lesson_id": 7, "lesson_title": "..."`` (the common form)."""
    BOTH_STRING = 1
    """``"lesson_id": "7", "lesson_title": "..."`` (rare: the other id type)."""
    ID_STRING = 2
    """``"lesson_id": "7"`` (the common id-only form)."""
    ID_NUMBER = 3
    """``"lesson_id": 7`` (rare: the other id type)."""
    TITLE = 4
    """``"lesson_title": "..."`` only."""


@dataclass(frozen=True)
class LineMix:
    """Probabilities of each line variant; the defaults reproduce the upstream capture."""

    both: float = 0.49
    """Lesson named by id and title."""
    id_only: float = 0.31
    """Lesson named by id only (the rest, ``1 - both - id_only``, by title only)."""
    other_id_type: float = 0.03
    """Share of id-bearing lines whose lesson id has the unusual type."""
    out_of: float = 0.5
    """Results written ``N out of M`` (the rest ``N/M``)."""
    colon: float = 0.03
    """Lines with the correct ``"student_id": N`` instead of the comma defect."""
    student_id_string: float = 0.03
    """Lines whose student id is a digit string (``"student_id", "12"``)."""


DEFAULT_MIX = LineMix()
