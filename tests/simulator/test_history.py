"""History preload: a consistent, ordered past; byte-identical for a seed and start time."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cohortflow.contract import parse_timestamp
from cohortflow.errors import ConfigError
from tests.simulator.conftest import hidden_batches, students, write_history
from tests.simulator.lines import shape

UUID_EPOCH_100NS = 0x01B21DD213814000


def _generate(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cohortflow", "generate", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


HISTORY = (
    "--history-batches", "40", "--history-students", "600", "--history-test-runs", "30000",
    "--dirty-rate", "0.01", "--no-stream",
)  # fmt: skip


def test_same_seed_and_start_time_give_identical_files(tmp_path: Path) -> None:
    fixed = ("--seed", "17", "--start-time", "2025-03-01T08:00:00", *HISTORY)
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for data_dir, seed_args in ((first, fixed), (second, fixed), (other, ("--seed", "18", *fixed[2:]))):
        done = _generate(data_dir, *seed_args)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""  # no ready line: nothing is served
    log = (first / "test_runs.log").read_bytes()
    assert log == (second / "test_runs.log").read_bytes()
    assert students(first) == students(second)
    assert hidden_batches(first) == hidden_batches(second)
    assert log != (other / "test_runs.log").read_bytes()
    assert students(first) != students(other)
    assert students(first)[0][3] >= "2025-03-01 08:00:00"
    assert not (first / ".simulator.json").exists()


def test_history_is_consistent_and_in_the_past(tmp_path: Path) -> None:
    before = datetime.now(UTC)
    write_history(tmp_path, seed=3, history_batches=30, history_students=500, history_test_runs=20_000)
    batches = hidden_batches(tmp_path)
    people = students(tmp_path)
    assert [b[0] for b in batches] == list(range(1, 31))
    assert [s[0] for s in people] == list(range(1, 501))
    batch_times = [b[2] for b in batches]
    student_times = [s[3] for s in people]
    assert batch_times == sorted(set(batch_times))  # strictly increasing
    assert student_times == sorted(set(student_times))
    assert parse_timestamp(max(batch_times[-1], student_times[-1])) < before
    for _id, _name, batch_id, created_at in people:
        assert 1 <= batch_id <= 30
        assert batch_times[batch_id - 1] < created_at  # the batch existed already


def test_batch_names_are_track_and_time_based_uuid(tmp_path: Path) -> None:
    write_history(tmp_path, seed=4, history_batches=50)
    tracks = set()
    for _id, name, created_at in hidden_batches(tmp_path):
        track, _, text = name.partition("-")
        tracks.add(track)
        value = uuid.UUID(text)
        assert value.version == 1
        micros = (value.time - UUID_EPOCH_100NS) // 10
        assert datetime.fromtimestamp(micros // 10**6, UTC).replace(microsecond=micros % 10**6) == (
            parse_timestamp(created_at)
        )
    assert tracks == {"web", "ios", "data_science"}


def test_runs_only_name_students_created_before_or_soon_after(tmp_path: Path) -> None:
    n, m = 40_000, 400
    write_history(tmp_path, seed=5, history_batches=10, history_students=m, history_test_runs=n)
    lines = (tmp_path / "test_runs.log").read_bytes().splitlines()
    assert len(lines) == n
    ahead = 0
    for index, line in enumerate(lines):
        existing = (index + 1) * m / n  # students spread evenly over the same span
        student_id = shape(line).student_id
        assert 1 <= student_id <= existing + 1 + 4
        ahead += student_id > existing + 1
    assert ahead / n < 0.03  # about --unknown-student-rate (0.02), plus timeline jitter


def test_students_need_a_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--history-batches"):
        write_history(tmp_path, history_students=5)


def test_history_refuses_a_directory_with_data(tmp_path: Path) -> None:
    write_history(tmp_path, seed=1, history_batches=2, history_students=3)
    with pytest.raises(ConfigError, match="cohortflow reset"):
        write_history(tmp_path, seed=1, history_batches=2, history_students=3)


def test_history_only_exits_through_the_cli(tmp_path: Path) -> None:
    done = _generate(tmp_path, "--history-batches", "3", "--history-test-runs", "10", "--no-stream")
    assert done.returncode == 0, done.stderr
    assert "history batches=3 students=0 test_runs=10" in done.stderr
    assert len((tmp_path / "test_runs.log").read_bytes().splitlines()) == 10


def test_history_log_has_the_upstream_mix(tmp_path: Path) -> None:
    write_history(tmp_path, seed=8, history_batches=5, history_students=200, history_test_runs=50_000)
    shapes = [shape(line) for line in (tmp_path / "test_runs.log").read_bytes().splitlines()]
    n = len(shapes)
    assert abs(sum(s.lesson == "both" for s in shapes) / n - 0.49) < 0.015
    assert abs(sum(s.lesson == "id" for s in shapes) / n - 0.31) < 0.015
    assert abs(sum(s.lesson == "title" for s in shapes) / n - 0.20) < 0.015
    assert abs(sum(s.out_of for s in shapes) / n - 0.50) < 0.015
    assert 0.02 < sum(not s.colon for s in shapes) / n - 0.95 < 0.04  # the comma defect: ~97 %
