"""The benchmark suite must not rot: its contract checks, then the whole suite at a tiny size."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cohortflow.errors import ConfigError
from cohortflow.testing.pgserver import find_binaries
from tests.helpers import generate
from tests.naive import NaiveModel, naive_parse
from tests.support import in_ci

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
import floor  # noqa: E402
import naive_baseline  # noqa: E402
import suite  # noqa: E402

TRICKY = [
    b'{"result": "3/3", "student_id", 1, "lesson_title": "Late Title"}',
    b'{"result": "2/5", "student_id": 2, "lesson_id": 9, "lesson_title": "Late Title"}',
    b'{"result": "5 out of 5", "student_id", "3", "lesson_id": "4"}',
    b'{"result": "6/5", "student_id", 3, "lesson_id": 5}',
    b'{"result": "1/1", "student_id", 3, "lesson_id": "abc", "lesson_title": "X"}',
    b'{"result": "1/1", "student_id", 3, "lesson_id": 4, "lesson_title": "Other"}',
    b'{"result": "1/1", "student_id", 3, "lesson_id": 8, "lesson_title": "Other"}',
    b'{"result": "1/1", "student_id", 4, "lesson_id": 4, "lesson_title": "Third"}',
    b'{"result": "1/1", "student_id", 4, "lesson_title": "Third"}',
    b'{"result": "1/1", "student_id", 4, "lesson_title": "Other"}',
    b'{"result": "1/1", "student_id", 0, "lesson_id": 4}',
    b'{"result": "1/1", "student_id", -3, "lesson_id": 4}',
    b'{"result": "1/1", "student_id", 1000000000000000000000000000000, "lesson_id": 4}',
    b'{"result": "abc", "student_id", 5, "lesson_id": 4}',
    b'{"result": "2/2", "student_id", 5, "lesson_id": null, "lesson_title": "Other"}',
    b'{"result": "2/2", "student_id", 5, "lesson_id": 6, "lesson_title": null}',
    b'{"result": "2/2", "student_id", 5, "lesson_id": 7, "lesson_title": "  "}',
    b'{"result": "2/2", "student_id", 5}',
    b'{"result": "2/2", "student_id", 5, "lesson_id": 1.0}',
    b'{"result": " 3 out of 3 ", "student_id", 6, "lesson_id": 1}',
    b'{"result": "3/3", "student_id": 6, "lesson_id": true}',
    b'{"result": "3/3", "student_id", 6, "lesson_id": 2',
    b'{"result": "3/3", "student_id", 6, "lesson_title": "Fetch \xff\xfe Lab"}',
    b"[1, 2]",
    b"",
    b'{"result": "3/3", "student_id", 6, "lesson_id": 3}',
    b'{"result": "0/0", "student_id", 7, "lesson_id": "10"}',
    b'{"result": "1/1", "student_id", "7", "lesson_id": 11, "lesson_title": "Late Title"}',
    b'{"result": "1/1", "student_id", 7, "lesson_id": 12}',
    b'{"result": "3/3", "student_id", 0, "lesson_id": 4}',
    b'{"result": "3/3", "student_id", 007, "lesson_id": 4}',
    b'{"result": "3/3", "student_id", 8, "lesson_id": "0"}',
    b'{"result": "3/3", "student_id", 8, "lesson_id": 5, "lesson_title": ""}',
    b'{"result": "3/3", "student_id", "0008", "lesson_id": "05"}',
    b'{"result": "3/3", "student_id", 8, "lesson_title": "Caf\xc3\xa9 Lab"}',
    b'{"result": "3/3", "student_id", 8, "lesson_id": 14, "lesson_title": "Caf\xc3\xa9 Lab"}',
    b'{"result": "3/3", "student_id", 9, "lesson_title": "Caf\\u00e9 Lab"}',
    b'{"result": "3\\/3", "student_id", 9, "lesson_id": 2}',
]


def test_floor_counts_lessons_like_the_naive_reference_on_simulator_data(tmp_path: Path) -> None:
    """The floor's shortcuts (canonical lines only) hold on the data the benchmarks feed it."""
    generate(
        tmp_path,
        "--seed",
        "3",
        "--history-test-runs",
        "30000",
        "--history-students",
        "500",
        "--history-batches",
        "20",
        "--dirty-rate",
        "0.05",
    )
    raw = (tmp_path / "test_runs.log").read_bytes()
    model = NaiveModel()
    model.add_lines(raw.split(b"\n")[:-1])
    model.finish()
    want = {sid: len(lessons) for sid, lessons in model.completed.items()}
    got = dict(floor.lessons_per_student(tmp_path / "test_runs.log").iter_rows())
    assert len(want) > 100
    assert got == want


def test_floor_reads_only_completed_canonical_lines() -> None:
    """What the floor skips, by design: a valid line outside the canonical shape (the pipeline counts it)."""
    lines = [line for line in TRICKY if b"\xff" not in line]
    log = b"\n".join(lines) + b"\n"
    got = dict(floor.lessons_per_student(log).iter_rows())
    model = NaiveModel()
    model.add_lines(lines)
    model.finish()
    want = {sid: len(lessons) for sid, lessons in model.completed.items()}
    assert (got[6], want[6]) == (1, 2)  # '" 3 out of 3 "' is valid, but not canonical
    assert all(n <= want[sid] for sid, n in got.items())  # it may miss such lines, never invent


def test_naive_baseline_judges_lines_like_the_naive_reference() -> None:
    for line in TRICKY:
        run, _ = naive_parse(line)
        got = naive_baseline.parse(line + b"\n")
        assert (got is None) == (run is None), line
        if run is not None and got is not None:
            assert got == (run["student_id"], run["lesson_id"], run["title"], run["passed"] == run["total"])


def test_a_disagreement_with_the_floor_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def disagree(run: suite.Run) -> None:
        common.compare("engine", {1: (3, 1)}, {1: (3, 2)})

    monkeypatch.setitem(suite.STEPS, "backfill", disagree)
    assert suite.main(["--only", "backfill", "--no-docs", "--out", str(tmp_path)]) == 2
    results = json.loads((tmp_path / "results-full.json").read_text())["results"]
    assert "MISMATCH" in results[0]["measured"] and "(1, (3, 1), (3, 2))" in results[0]["measured"]


def _postgres_args() -> list[str]:
    try:
        find_binaries()
    except ConfigError:
        if in_ci():
            raise
        return ["--no-postgres"]
    return []


@pytest.mark.timeout(240)
def test_the_whole_suite_runs_at_a_tiny_size(tmp_path: Path) -> None:
    tiny = ["--lines", "20000", "--students", "2000", "--batches", "100", "--samples", "5", "--repeats", "1"]
    done = subprocess.run(
        [
            str(ROOT / "bench" / "run"),
            "--quick",
            *tiny,
            *_postgres_args(),
            "--no-spark",
            "--no-docs",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=230,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads((tmp_path / "results-quick.json").read_text())["results"]
    workloads = " ".join(r["workload"] for r in results)
    for name in ("Backfill 20k", "Tick", "Freshness at 100x", "Idle CPU", "Writer"):
        assert name in workloads
    cases = {r["case"] for r in results if r["workload"].startswith("Backfill 20k")}
    assert "students + batches alone (empty log), minus start-up" in cases
    if "--no-postgres" not in _postgres_args():
        assert "embedded → PostgreSQL vs → SQLite" in cases
    assert not [r for r in results if r["status"] == "**FAILED**"]
    assert not list(tmp_path.glob("run-quick-*")), "the scratch directory must be cleaned up"
