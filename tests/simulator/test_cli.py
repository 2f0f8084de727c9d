"""The simulator's command line: the documented flags, readable errors, the bin/ wrappers."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cohortflow.cli import main

ROOT = Path(__file__).resolve().parents[2]
CONTRACT_FLAGS = [
    "--data-dir", "--port", "--host", "--seed", "--interval-ms", "--history-batches",
    "--history-students", "--history-test-runs", "--unknown-student-rate", "--dirty-rate",
    "--exact-after", "--no-stream", "--serve", "--duration", "--start-time",
]  # fmt: skip


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_generate_documents_every_contract_flag() -> None:
    code, output = _run("generate", "--help")
    assert code == 0
    for flag in CONTRACT_FLAGS:
        assert flag in output, flag
    assert "--busy-timeout-ms" not in output  # a hidden knob for tests


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--history-students", "5"], "--history-students needs --history-batches"),
        (["--interval-ms", "0"], "--interval-ms must be at least 1"),
        (["--dirty-rate", "2"], "--dirty-rate must be in 0..1"),
        (["--start-time", "yesterday"], "--start-time 'yesterday' is not ISO 8601"),
        (["--port", "70000"], "--port must be in 0..65535"),
    ],
)
def test_bad_options_are_one_readable_line(tmp_path: Path, args: list[str], message: str) -> None:
    code, output = _run("generate", "--data-dir", str(tmp_path), "--no-stream", *args)
    assert code == 1
    assert message in output
    assert "Traceback" not in output


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def test_a_busy_port_says_which_flag_to_change(tmp_path: Path, busy_port: int) -> None:
    command = [
        str(ROOT / ".venv/bin/cohortflow"), "generate", "--data-dir", str(tmp_path),
        "--port", str(busy_port), "--duration", "5",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert f"port {busy_port}" in done.stderr and "--port 0" in done.stderr
    assert not (tmp_path / ".simulator.json").exists()


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A copy of bin/ beside a stub bootstrap and a stub cohortflow that record their calls."""
    (tmp_path / "bin").mkdir()
    for name in ("generate", "reset"):
        shutil.copy2(ROOT / "bin" / name, tmp_path / "bin" / name)
    stubs = {
        "scripts/bootstrap": 'echo "bootstrap $*" >> "$(dirname "$0")/../calls"; echo setting up',
        ".venv/bin/cohortflow": 'echo "cohortflow $*" >> "$(dirname "$0")/../../calls"; echo "ran $*"',
    }
    for path, body in stubs.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(f"#!/usr/bin/env bash\n{body}\n", encoding="utf-8")
        (tmp_path / path).chmod(0o755)
    return tmp_path


@pytest.mark.parametrize("command", ["generate", "reset"])
def test_bin_wrappers_bootstrap_then_exec_the_command(fake_root: Path, command: str) -> None:
    assert os.access(ROOT / "bin" / command, os.X_OK)
    elsewhere = fake_root / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run(
        [str(fake_root / "bin" / command), "--data-dir", "my data", "--seed", "1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"ran {command} --data-dir my data --seed 1\n"  # set-up talk is on stderr
    calls = (fake_root / "calls").read_text(encoding="utf-8").splitlines()
    assert calls == ["bootstrap core", f"cohortflow {command} --data-dir my data --seed 1"]
