"""The live stream as a real process: rates, readiness, clean stops, determinism, restarts."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.simulator.catalogue import LESSONS
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.simulator.runner import GenerateOptions, stream_script
from cohortflow.simulator.stream import StreamState
from tests.simulator.conftest import (
    get,
    hidden_batches,
    ready_info,
    stopped_counts,
    students,
    wait_for,
)
from tests.simulator.lines import classify, shape

Start = Callable[..., SimulatorProcess]
FAST = ("--interval-ms", "10")


def _student_count(data_dir: Path) -> int:
    return len(students(data_dir)) if (data_dir / "students.db").exists() else 0


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stream_grows_then_stops_cleanly(simulator: Start, tmp_path: Path, signum: int) -> None:
    history = ("--history-batches", "3", "--history-students", "12", "--history-test-runs", "100")
    sim = simulator("--seed", "2", *FAST, *history)
    data = sim.data_dir
    history_end = students(data)[11][3]  # the last history student (the stream may have begun)
    wait_for(lambda: _student_count(data) >= 12 + 12 and len(hidden_batches(data)) >= 3 + 2)
    assert sim.stop(signum) == 0, sim.stderr
    log = (data / "test_runs.log").read_bytes()
    assert log.endswith(b"\n")  # never a half-written last line after a stop
    assert not (data / ".simulator.json").exists()
    counts = stopped_counts(sim.stderr)
    people = students(data)
    batches = hidden_batches(data)
    assert len(people) == 12 + counts["students"]
    assert len(batches) == 3 + counts["batches"]
    assert len(log.splitlines()) == 100 + counts["test_runs"]
    assert [s[0] for s in people] == list(range(1, len(people) + 1))
    assert all(s[3] > history_end for s in people[12:])  # the stream continues after the past
    batch_created = {b[0]: b[2] for b in batches}
    for _id, _name, batch_id, created_at in people:
        assert batch_created[batch_id] < created_at  # students only join existing batches


def test_rates_follow_the_upstream_ratios(simulator: Start) -> None:
    sim = simulator("--seed", "4", *FAST)
    wait_for(lambda: _student_count(sim.data_dir) >= 40)
    assert sim.stop() == 0
    counts = stopped_counts(sim.stderr)
    intervals = counts["intervals"]
    assert counts["batches"] == -(-intervals // 10)  # one at 0, 10, 20, ...
    assert counts["students"] == 4 * -(-intervals // 5)  # four at 0, 5, 10, ...
    assert intervals <= counts["test_runs"] <= 19 * intervals
    assert 6 * intervals <= counts["test_runs"] <= 14 * intervals  # about 10 per interval


def test_ready_file_and_line(simulator: Start) -> None:
    sim = simulator("--seed", "1", *FAST)
    info = ready_info(sim.data_dir)
    assert set(info) == {"pid", "port", "host", "started_at"}
    assert info["pid"] == sim.pid
    assert info["port"] == sim.port != 0
    assert info["host"] == "127.0.0.1"
    assert get(f"{sim.url}/batches").status_code == 200


def test_duration_stops_by_itself(tmp_path: Path) -> None:
    sim = SimulatorProcess(tmp_path, "--seed", "1", *FAST, "--duration", "0.5").start()
    began = time.monotonic()
    assert sim.wait(timeout_s=30) == 0, sim.stderr
    assert time.monotonic() - began < 10
    assert stopped_counts(sim.stderr)["intervals"] >= 1
    assert not (tmp_path / ".simulator.json").exists()


def _script_records(seed: int, intervals: int) -> tuple[list[tuple[str, int]], list[bytes]]:
    script = stream_script(GenerateOptions(seed=seed, interval_ms=10), seed)
    state = StreamState()
    people: list[tuple[str, int]] = []
    log = b""
    for n in range(intervals):
        tick = script.tick(n, state)
        people += tick.students
        log += tick.burst.data
    return people, log.splitlines(keepends=True)


def test_same_seed_same_records(simulator: Start, tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        sim = simulator("--seed", "9", *FAST, data_dir=tmp_path / name)
        wait_for(lambda sim=sim: _student_count(sim.data_dir) >= 20)
        assert sim.stop() == 0
        runs.append((sim.data_dir, stopped_counts(sim.stderr)))
    expected_people, expected_lines = _script_records(9, max(c["intervals"] for _, c in runs))
    for data, counts in runs:
        people = [(s[1], s[2]) for s in students(data)]
        assert people == expected_people[: len(people)] and len(people) == counts["students"]
        lines = (data / "test_runs.log").read_bytes().splitlines(keepends=True)
        assert lines == expected_lines[: len(lines)] and len(lines) == counts["test_runs"]
        tracks = [b[1].split("-")[0] for b in hidden_batches(data)]
        assert tracks[:2] == [b[1].split("-")[0] for b in hidden_batches(runs[0][0])][:2]


def test_bursts_are_sometimes_flushed_mid_line() -> None:
    script = stream_script(GenerateOptions(seed=5, interval_ms=500), 5)
    state = StreamState()
    bursts = [script.tick(n, state).burst for n in range(300)]
    split = [b for b in bursts if b.split_at is not None]
    assert 0.2 < len(split) / len(bursts) < 0.4
    assert any(b.data[b.split_at - 1 : b.split_at] != b"\n" for b in split if b.split_at)
    assert all(0 < b.pause_s <= 0.02 for b in split)
    assert all(1 <= b.lines <= 19 for b in bursts)


def test_a_restart_continues_the_data(simulator: Start, tmp_path: Path) -> None:
    first = simulator("--seed", "1", *FAST)
    wait_for(lambda: _student_count(first.data_dir) >= 8)
    assert first.stop() == 0
    before = students(first.data_dir)
    batches_before = hidden_batches(first.data_dir)
    second = simulator("--seed", "1", *FAST)
    wait_for(lambda: _student_count(second.data_dir) >= len(before) + 8)
    assert second.stop() == 0
    after = students(second.data_dir)
    assert after[: len(before)] == before
    assert [s[0] for s in after] == list(range(1, len(after) + 1))
    assert [s[3] for s in after] == sorted({s[3] for s in after})
    assert hidden_batches(second.data_dir)[: len(batches_before)] == batches_before


def test_a_crash_mid_line_leaves_one_broken_line_on_restart(simulator: Start, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "test_runs.log").write_bytes(b'{"result": "1/2", "student_id", 1\n{"result": "3/')
    sim = simulator("--seed", "1", *FAST)
    wait_for(lambda: len((data / "test_runs.log").read_bytes().splitlines()) > 5)
    assert sim.stop() == 0
    lines = (data / "test_runs.log").read_bytes().splitlines()
    assert lines[1] == b'{"result": "3/'
    assert all(shape(line) for line in lines[2:])


def test_a_second_generator_on_the_same_directory_is_refused(simulator: Start) -> None:
    sim = simulator("--seed", "1", *FAST)
    second = SimulatorProcess(sim.data_dir, "--seed", "1", *FAST, ready_timeout_s=30)
    with pytest.raises(Exception, match="already running"):
        second.start()
    assert os.path.exists(sim.data_dir / ".simulator.json")


def test_live_stream_mixes_dirty_lines_and_unknown_students(simulator: Start) -> None:
    sim = simulator("--seed", "12", *FAST, "--dirty-rate", "0.3", "--unknown-student-rate", "0.2")
    log_path = sim.data_dir / "test_runs.log"
    wait_for(lambda: log_path.exists() and log_path.read_bytes().count(b"\n") >= 400)
    assert sim.stop() == 0
    catalogue = {lesson.id: (lesson.title, lesson.tests) for lesson in LESSONS}
    lines = log_path.read_bytes().splitlines(keepends=True)
    kinds = Counter(classify(line, catalogue) for line in lines)
    assert 0.2 < 1 - kinds["clean"] / len(lines) < 0.4
    assert len(kinds) >= 7
    last_id = len(students(sim.data_dir))
    clean_ids = [shape(line).student_id for line in lines if classify(line, catalogue) == "clean"]
    assert max(clean_ids) <= last_id + 4
