"""`cohortflow reset`: deletes exactly the generated files, refuses while a generator runs."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cohortflow.simulator.process import SimulatorProcess
from tests.simulator.conftest import write_history

GENERATED = {"students.db", "test_runs.log", ".batches.db", ".simulator.lock"}
USER_FILES = ["notes.txt", "students.db.bak", ".env", "sub/students.db", "sub/test_runs.log"]


def _reset(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "cohortflow", "reset", "--data-dir", str(data_dir), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _user_files(root: Path) -> None:
    for name in USER_FILES:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")


def _names(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_reset_deletes_exactly_the_generated_files(tmp_path: Path) -> None:
    write_history(tmp_path, seed=1, history_batches=2, history_students=3, history_test_runs=5)
    _user_files(tmp_path)
    (tmp_path / "students.db-journal").write_bytes(b"")  # leftovers of a crash go too
    (tmp_path / ".batches.db-wal").write_bytes(b"")
    assert _names(tmp_path) >= GENERATED
    done = _reset(tmp_path)
    assert done.returncode == 0, done.stderr
    assert _names(tmp_path) == set(USER_FILES)
    assert (tmp_path / "notes.txt").read_text(encoding="utf-8") == "notes.txt"


def test_reset_of_a_missing_or_clean_directory_is_fine(tmp_path: Path) -> None:
    assert _reset(tmp_path / "absent").returncode == 0
    assert not (tmp_path / "absent").exists()
    _user_files(tmp_path)
    assert _reset(tmp_path).returncode == 0
    assert _names(tmp_path) == set(USER_FILES)


def test_reset_refuses_while_a_generator_runs(
    simulator: Callable[..., SimulatorProcess], tmp_path: Path
) -> None:
    sim = simulator("--seed", "1", "--interval-ms", "20")
    refused = _reset(sim.data_dir)
    assert refused.returncode == 1
    assert f"pid {sim.pid}" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1  # one readable line, no traceback
    assert (sim.data_dir / "students.db").exists()
    assert (sim.data_dir / ".simulator.json").exists()
    forced = _reset(sim.data_dir, "--force")
    assert forced.returncode == 0, forced.stderr
    assert not (sim.data_dir / "students.db").exists()
    assert sim.stop() == 0, sim.stderr


def test_a_stale_ready_file_means_not_running(tmp_path: Path) -> None:
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    info = {"pid": int(gone.stdout), "port": 1, "host": "127.0.0.1", "started_at": "x"}
    (tmp_path / ".simulator.json").write_text(json.dumps(info), encoding="utf-8")
    (tmp_path / "test_runs.log").write_bytes(b"\n")
    done = _reset(tmp_path)
    assert done.returncode == 0, done.stderr
    assert _names(tmp_path) == set()


def test_a_stopped_generator_leaves_no_running_marker(
    simulator: Callable[..., SimulatorProcess],
) -> None:
    sim = simulator("--seed", "1", "--interval-ms", "20")
    assert sim.stop() == 0
    assert not (sim.data_dir / ".simulator.json").exists()
    assert _reset(sim.data_dir).returncode == 0  # the lock file alone does not mean running


def test_reset_after_kill_9(simulator: Callable[..., SimulatorProcess]) -> None:
    sim = simulator("--seed", "1", "--interval-ms", "20")
    sim.kill()
    assert (sim.data_dir / ".simulator.json").exists()  # stale: the process is gone
    done = _reset(sim.data_dir)
    assert done.returncode == 0, done.stderr
    assert _names(sim.data_dir) == set()
