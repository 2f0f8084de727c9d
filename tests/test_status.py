"""`status` reports on the sources the pipeline follows, as recorded in the warehouse."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.simulator.process import SimulatorProcess
from tests.helpers import generate
from tests.support.pipeline import catch_up

SMALL = ("--history-batches", "8", "--history-students", "60", "--history-test-runs", "2000")


def status(warehouse: str, *args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(main, ["status", "--json", "--warehouse", warehouse, *args], env=env)
    assert result.exit_code == 0, result.output
    return {s["source"]: s for s in json.loads(result.output)["sources"]}


def test_status_follows_the_sources_the_pipeline_recorded_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, warehouse = tmp_path / "upstream", str(tmp_path / "warehouse.db")
    generate(data, "--seed", "21", *SMALL)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the defaults (data/..., port 8000) point at nothing from here
    for name in ("COHORTFLOW_STUDENTS_DB", "COHORTFLOW_TEST_RUNS_LOG", "COHORTFLOW_BATCHES_URL"):
        monkeypatch.delenv(name, raising=False)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        relative = Path("..") / "upstream"  # the pipeline was given relative paths
        done = catch_up(relative, sim.url, warehouse)
        assert done.returncode == 0, done.stderr
        sources = status(warehouse)
        assert sources["test_runs"]["location"] == str(data.resolve() / "test_runs.log")
        assert sources["students"]["location"] == str(data.resolve() / "students.db")
        assert sources["batches"]["location"] == f"{sim.url}/batches"
        assert sources["test_runs"]["lag"] == "0 bytes"
        assert sources["students"]["lag"] == "0 rows"
        assert sources["batches"]["lag"] == "0 batches"

        other = tmp_path / "other.log"
        other.write_bytes(b"x" * 10)
        told = status(warehouse, "--batches-url", "http://127.0.0.1:9/batches")
        assert told["batches"]["location"] == "http://127.0.0.1:9/batches"
        assert told["batches"]["lag"].startswith("unknown")
        assert told["test_runs"]["lag"] == "0 bytes"  # the others still follow the record
        by_env = status(warehouse, env={"COHORTFLOW_TEST_RUNS_LOG": str(other)})
        assert by_env["test_runs"]["location"] == str(other)
        assert by_env["students"]["lag"] == "0 rows" and by_env["batches"]["lag"] == "0 batches"
