"""`report` output is safe: names are shown, never interpreted by rich, a terminal or a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
import os
import pty
import re
import shutil
import sqlite3
import subprocess
import sys

import pytest
from click.testing import CliRunner

from cohortflow.cli import main
from cohortflow.simulator.process import SimulatorProcess
from tests.helpers import generate
from tests.support.pipeline import catch_up

HOSTILE = [
    "[/] unbalanced [/bold]",
    "[bold red]styled[/]",
    "\x1b[31mred\x1b[0m",
    '=HYPERLINK("http://evil.example","x")',
    "+1+1",
    "-2",
    "@SUM(A1:A2)",
    "\ttab first",
    "\rcr first",
    "bell\x07 and c1 \x9b31m",
    "a long batch name that a pipe must not fold at eighty columns because scripts read it whole",
]
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}$")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A warehouse the pipeline filled, whose top batches then got hostile names."""
    root = tmp_path_factory.mktemp("output")
    data, warehouse = root / "data", str(root / "warehouse.db")
    history = ("--history-batches", "12", "--history-students", "120", "--history-test-runs", "6000")
    generate(data, "--seed", "4", *history)
    with SimulatorProcess(data, "--no-stream", "--serve") as sim:
        assert catch_up(data, sim.url, warehouse).returncode == 0
    with sqlite3.connect(warehouse) as conn:
        ids = [r[0] for r in conn.execute("SELECT batch_id FROM batch_leaderboard ORDER BY rank, batch_id")]
        conn.executemany("UPDATE batches SET name = ? WHERE id = ?", zip(HOSTILE, ids, strict=False))
    conn.close()
    return warehouse


def report(warehouse: str, *args: str) -> str:
    result = CliRunner().invoke(main, ["report", "--warehouse", warehouse, "--top", "12", *args])
    assert result.exit_code == 0, result.output
    return result.output


def no_raw_controls(text: str) -> bool:
    return not re.search(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]", text)


def test_table_shows_markup_as_text_and_control_characters_escaped(hostile: str) -> None:
    out = report(hostile)
    assert "[/] unbalanced [/bold]" in out and "[bold red]styled[/]" in out
    assert "\\x1b[31mred\\x1b[0m" in out and "bell\\x07 and c1 \\x9b31m" in out
    assert no_raw_controls(out)


def test_table_on_a_real_terminal_gets_no_escape_sequence_from_names(hostile: str) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "250", "TERM": "xterm-256color"}
    command = [sys.executable, "-m", "cohortflow", "report", "--warehouse", hostile, "--top", "12"]
    done = subprocess.run(command, stdout=follower, stderr=follower, env=env, timeout=60, check=False)
    os.close(follower)
    chunks = []
    try:
        while chunk := os.read(leader, 65536):
            chunks.append(chunk)
    except OSError:  # EIO: the terminal's other side is closed
        pass
    os.close(leader)
    out = b"".join(chunks).decode()
    assert done.returncode == 0, out
    assert "\x1b[31mred" not in out and "\x07" not in out and "\x9b" not in out
    assert "\\x1b[31mred" in out and "[/] unbalanced [/bold]" in out


def test_json_keeps_every_name_exactly_with_controls_as_json_escapes(hostile: str) -> None:
    out = report(hostile, "--format", "json")
    assert no_raw_controls(out.replace("\n", ""))
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= set(HOSTILE)
    for row in rows:
        assert TIMESTAMP.match(row["created_at"]) and TIMESTAMP.match(row["updated_at"]), row


def test_csv_guards_formulas_and_escapes_controls_instead_of_stripping_them(hostile: str) -> None:
    rows = list(csv.DictReader(io.StringIO(report(hostile, "--format", "csv"))))
    names = {r["name"] for r in rows}
    for formula in ("=HYPERLINK(", "+1+1", "-2", "@SUM("):
        assert not any(n.startswith(formula) for n in names)
        assert any(n.startswith("'" + formula) for n in names), formula
    assert "'\\x09tab first" not in names and "\\x09tab first" in names  # escaped: no longer leads
    assert "\\x1b[31mred\\x1b[0m" in names  # shown, not stripped
    assert all(TIMESTAMP.match(r["created_at"]) and TIMESTAMP.match(r["updated_at"]) for r in rows)
    raw = {
        r["name"]
        for r in csv.DictReader(io.StringIO(report(hostile, "--format", "csv", "--no-formula-guard")))
    }
    assert '=HYPERLINK("http://evil.example","x")' in raw and "-2" in raw


def test_piped_table_does_not_fold_names(hostile: str) -> None:
    command = [sys.executable, "-m", "cohortflow", "report", "--warehouse", hostile, "--top", "12"]
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60, check=True)
    assert HOSTILE[-1] in done.stdout
    assert shutil.which("cat")  # and through another program
    cat = subprocess.run(
        f"{sys.executable} -m cohortflow report --warehouse {hostile} --top 12 | cat",
        shell=True,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    assert HOSTILE[-1] in cat.stdout
