"""Test-run lines: every upstream form, the upstream's proportions, dirty kinds, unknown students."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cohortflow.simulator.catalogue import LESSONS, LessonForm
from cohortflow.simulator.dirty import DIRTY_KINDS, DirtyKind, dirty_line, with_dirt
from cohortflow.simulator.runs import (
    Run,
    draw_runs,
    draw_student_ids,
    render,
    render_line,
)
from tests.simulator.conftest import DATA
from tests.simulator.lines import Shape, classify, shape

CATALOGUE = {lesson.id: (lesson.title, lesson.tests) for lesson in LESSONS}


def _lines(seed: int, n: int, existing: int = 1000, unknown: float = 0.02) -> list[bytes]:
    rng = np.random.default_rng(seed)
    columns = draw_runs(rng, np.full(n, existing, dtype=np.int64), unknown)
    return render(columns).data.tobytes().splitlines(keepends=True)


def _shares(shapes: list[Shape]) -> dict[str, float]:
    n = len(shapes)
    with_id = [s for s in shapes if s.lesson_id_string is not None]
    return {
        "both": sum(s.lesson == "both" for s in shapes) / n,
        "id": sum(s.lesson == "id" for s in shapes) / n,
        "title": sum(s.lesson == "title" for s in shapes) / n,
        "out_of": sum(s.out_of for s in shapes) / n,
        "colon": sum(s.colon for s in shapes) / n,
        "student_id_string": sum(s.student_id_string for s in shapes) / n,
        "id_only_as_string": sum(bool(s.lesson_id_string) for s in with_id if s.lesson == "id")
        / max(1, sum(s.lesson == "id" for s in with_id)),
        "both_with_number": sum(not s.lesson_id_string for s in with_id if s.lesson == "both")
        / max(1, sum(s.lesson == "both" for s in with_id)),
    }


def test_catalogue_matches_the_upstream_capture() -> None:
    sample = (DATA / "upstream_test_runs.log").read_bytes().splitlines(keepends=True)
    seen: dict[str, int | None] = {}
    for line in sample:
        parsed = shape(line)
        if parsed.lesson_id is not None:
            title, tests = CATALOGUE[parsed.lesson_id]
            assert parsed.total == tests
            assert parsed.title in (None, title)
        if parsed.title is not None:
            seen[parsed.title] = parsed.total
    assert seen == {title: tests for title, tests in CATALOGUE.values()}


def test_proportions_match_the_upstream_capture() -> None:
    sample = [shape(line) for line in (DATA / "upstream_test_runs.log").read_bytes().splitlines()]
    ours = _shares([shape(line) for line in _lines(seed=11, n=100_000)])
    theirs = _shares(sample)
    for key in ("both", "id", "title", "out_of"):
        assert abs(ours[key] - theirs[key]) < 0.08, (key, ours[key], theirs[key])
    assert abs(ours["both"] - 0.49) < 0.01
    assert abs(ours["id"] - 0.31) < 0.01
    assert abs(ours["title"] - 0.20) < 0.01
    assert abs(ours["out_of"] - 0.50) < 0.01
    # the rarer variants the upstream contract allows, a few % each
    for key in ("colon", "student_id_string"):
        assert 0.02 < ours[key] < 0.04, (key, ours[key])
    assert 0.95 < ours["id_only_as_string"] < 0.99
    assert 0.95 < ours["both_with_number"] < 0.99


def test_every_form_appears_in_a_small_stream() -> None:
    shapes = [shape(line) for line in _lines(seed=3, n=2000)]
    forms = {(s.lesson, s.lesson_id_string) for s in shapes}
    assert forms == {("both", False), ("both", True), ("id", True), ("id", False), ("title", None)}
    assert {s.out_of for s in shapes} == {True, False}
    assert {s.colon for s in shapes} == {True, False}
    assert {s.student_id_string for s in shapes} == {True, False}


def test_lines_are_consistent_with_the_catalogue() -> None:
    passing: Counter[tuple[int, int]] = Counter()
    for line in _lines(seed=5, n=50_000):
        parsed = shape(line)
        lesson_id = parsed.lesson_id or next(i for i, (t, _) in CATALOGUE.items() if t == parsed.title)
        title, tests = CATALOGUE[lesson_id]
        assert parsed.title in (None, title)
        assert parsed.total == tests
        assert 0 <= parsed.passing <= tests
        passing[(lesson_id, parsed.passing)] += 1
    # passing is uniform in 0..tests: every value of every lesson shows up
    assert len(passing) == sum(tests + 1 for _title, tests in CATALOGUE.values())


def test_key_order_and_spacing_are_the_upstream_ones() -> None:
    run = Run(lesson=6, passing=0, student_id=3, form=LessonForm.BOTH_NUMBER, out_of=True)
    expected = (
        b'{"result": "0 out of 3", "student_id", 3, "lesson_id": 7, '
        b'"lesson_title": "JS Fundamentals: Looping Code Along"}\n'
    )
    assert render_line(run) == expected
    sample_line = (DATA / "upstream_test_runs.log").read_bytes().splitlines(keepends=True)[0]
    assert render_line(run) == sample_line


@settings(max_examples=300, deadline=None)
@given(
    runs=st.lists(
        st.builds(
            Run,
            lesson=st.integers(0, len(LESSONS) - 1),
            passing=st.integers(0, 2),
            student_id=st.one_of(st.integers(0, 10**9), st.integers(10**8 - 2, 10**8 + 2)),
            form=st.sampled_from(list(LessonForm)),
            out_of=st.booleans(),
            colon=st.booleans(),
            student_id_string=st.booleans(),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_vectorised_rendering_equals_the_reference(runs: list[Run]) -> None:
    columns = draw_runs(np.random.default_rng(0), np.ones(len(runs), dtype=np.int64), 0.0)
    for name in ("lesson", "passing", "student_id", "form", "out_of", "colon", "student_id_string"):
        getattr(columns, name)[:] = [getattr(run, name) for run in runs]
    rendered = render(columns)
    assert rendered.data.tobytes() == b"".join(render_line(run) for run in runs)
    assert rendered.lengths.tolist() == [len(render_line(run)) for run in runs]


def test_unknown_students_are_the_next_few_ids() -> None:
    rng = np.random.default_rng(9)
    existing = rng.integers(0, 5000, size=100_000)
    ids = draw_student_ids(rng, existing, 0.02)
    assert (ids >= 1).all()
    unknown = ids > existing
    assert abs(unknown[existing > 0].mean() - 0.02) < 0.003
    assert (ids[unknown] <= existing[unknown] + 4).all()
    assert unknown[existing == 0].all()  # nobody exists yet: the run names a coming student


def test_no_unknown_students_at_rate_zero() -> None:
    rng = np.random.default_rng(1)
    existing = np.full(10_000, 50, dtype=np.int64)
    assert (draw_student_ids(rng, existing, 0.0) <= 50).all()


@pytest.mark.parametrize("kind", DIRTY_KINDS)
def test_each_dirty_kind_is_recognisable(kind: DirtyKind) -> None:
    rng = np.random.default_rng(4)
    for lesson in range(len(LESSONS)):
        for form in LessonForm:
            run = Run(lesson=lesson, passing=1, student_id=42, form=form, out_of=lesson % 2 == 0)
            assert classify(render_line(run), CATALOGUE) == "clean"
            line = dirty_line(rng, kind, run)
            assert line.endswith(b"\n") and line.count(b"\n") == 1
            assert classify(line, CATALOGUE) == kind.value, line


def test_dirty_rate_mixes_every_kind_in_order() -> None:
    rng = np.random.default_rng(8)
    n = 40_000
    columns = draw_runs(rng, np.full(n, 300, dtype=np.int64), 0.0)
    pieces = with_dirt(rng, columns, render(columns), 0.1)
    lines = b"".join(pieces).splitlines(keepends=True)
    assert len(lines) == n
    kinds = Counter(classify(line, CATALOGUE) for line in lines)
    assert set(kinds) == {"clean", *(kind.value for kind in DIRTY_KINDS)}
    assert abs(1 - kinds["clean"] / n - 0.1) < 0.01
    clean = render(columns).data.tobytes().splitlines(keepends=True)
    kept = [i for i, line in enumerate(lines) if classify(line, CATALOGUE) == "clean"]
    assert all(lines[i] == clean[i] for i in kept)  # clean lines stay in place
