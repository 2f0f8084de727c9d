"""Each extra installs what it needs: a fresh virtualenv with one extra alone runs the pipeline.

The README promises ``pip install 'cohortflow[spark]'`` gives a working Spark
engine; the dev extra brings more (pandas, for one), so only a virtualenv with
the extra alone can tell. pip's local mirror and wheel cache keep it short.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cohortflow.simulator.process import SimulatorProcess
from tests.helpers import generate
from tests.support.pipeline import assert_matches_recompute, pipeline_cmd
from tests.support.spark import require_java

ROOT = Path(__file__).resolve().parents[1]
SMALL = ("--seed", "31", "--history-batches", "8", "--history-students", "60", "--history-test-runs", "3000")

pytestmark = pytest.mark.timeout(900)


def _venv_with(tmp_path: Path, extra: str) -> Path:
    """A fresh virtualenv (no system site-packages) with cohortflow[extra] installed; its python."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    done = subprocess.run(
        [*install, f"{ROOT}[{extra}]"], capture_output=True, text=True, check=False, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return python


def _run_once(python: Path, data: Path, url: str, warehouse: str, *extra: str) -> None:
    command = pipeline_cmd(data, url, warehouse, "--once", *extra)
    command[0] = str(python)
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.spark
def test_the_spark_extra_alone_runs_the_spark_engine(tmp_path: Path) -> None:
    require_java()
    python = _venv_with(tmp_path, "spark")
    data, warehouse = tmp_path / "data", str(tmp_path / "wh.db")
    generate(data, *SMALL)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        _run_once(python, data, sim.url, warehouse, "--engine", "spark", "--checkpoint", str(tmp_path / "ck"))
        assert_matches_recompute(data, sim.url, warehouse)


def test_the_postgres_extra_alone_runs_into_a_real_postgresql(tmp_path: Path, pg_url: str) -> None:
    python = _venv_with(tmp_path, "postgres")
    data = tmp_path / "data"
    generate(data, *SMALL)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        _run_once(python, data, sim.url, pg_url)
        assert_matches_recompute(data, sim.url, pg_url)
