"""What analysts and operators read: report and status on a real warehouse; no credential leaks."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.simulator.process import SimulatorProcess
from cohortflow.warehouse.postgres import PostgresBackend, redact
from tests.helpers import generate
from tests.support.pipeline import catch_up


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A warehouse caught up with a small messy history."""
    root = tmp_path_factory.mktemp("report")
    data, warehouse = root / "data", str(root / "warehouse.db")
    history = ("--history-batches", "12", "--history-students", "120", "--history-test-runs", "6000")
    generate(data, "--seed", "4", "--dirty-rate", "0.05", *history)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
    return data, warehouse


def test_report_formats_agree(ingested: tuple[Path, str]) -> None:
    _, warehouse = ingested
    runner = CliRunner()
    as_json = json.loads(
        runner.invoke(main, ["report", "--warehouse", warehouse, "--format", "json", "--top", "5"]).output
    )
    as_csv = list(
        csv.DictReader(
            io.StringIO(
                runner.invoke(
                    main, ["report", "--warehouse", warehouse, "--format", "csv", "--top", "5"]
                ).output
            )
        )
    )
    table = runner.invoke(main, ["report", "--warehouse", warehouse, "--top", "5"]).output
    assert len(as_json) == 5 and len(as_csv) == 5
    assert [r["batch_id"] for r in as_json] == [int(r["batch_id"]) for r in as_csv]
    counts = [r["students_completed_3plus"] for r in as_json]
    assert counts == sorted(counts, reverse=True) and counts[0] > 0
    assert as_json[0]["name"][:16] in table  # names fold over lines, they are never cut


def test_status_shows_cursors_lag_and_quarantine(ingested: tuple[Path, str]) -> None:
    data, warehouse = ingested
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        args = ["status", "--json", "--warehouse", warehouse, "--batches-url", f"{sim.url}/batches"]
        args += ["--students-db", str(data / "students.db"), "--test-runs-log", str(data / "test_runs.log")]
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    sources = {s["source"]: s for s in status["sources"]}
    assert sources["test_runs"]["lag"] == "0 bytes"
    assert sources["students"]["cursor"] == "id 120" and sources["students"]["lag"] == "0 rows"
    assert sources["batches"]["lag"] == "0 batches" and sources["batches"]["health"] == "ok"
    assert all(s["last_commit"] for s in sources.values())
    reasons = {q["reason"] for q in status["quarantine"] if q["source"] == "test_runs"}
    assert "invalid_json" in reasons


def test_report_on_a_missing_warehouse_is_one_clear_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["report", "--warehouse", str(tmp_path / "none.db")])
    assert result.exit_code == 1
    assert "no warehouse at" in result.output and "cohortflow run" in result.output
    assert not (tmp_path / "none.db").exists(), "a reader must not create the warehouse"


def test_postgres_credentials_never_show() -> None:
    url = "postgresql://analyst:s3cr3t-pw@127.0.0.1:1/school?sslmode=disable&password=other"
    backend = PostgresBackend(url, connect_timeout=1)
    assert redact(url) == "postgresql://analyst@127.0.0.1:1/school"
    assert "s3cr3t" not in backend.display
    with pytest.raises(psycopg.OperationalError) as caught:
        backend.connect(writer=False)
    mapped = backend.wrap_error(caught.value)
    assert mapped is not None and mapped.transient
    assert "s3cr3t" not in str(mapped) and "other" not in str(mapped)
