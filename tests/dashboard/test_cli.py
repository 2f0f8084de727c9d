"""The dashboard command's edges: the missing extra, the loopback rule, read-only access."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from cohortflow.dashboard import _is_loopback
from cohortflow.dashboard.reader import Reader
from cohortflow.errors import WarehouseError
from cohortflow.warehouse import open_warehouse


def test_missing_extra_prints_the_pip_line(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['uvicorn'] = None\n"  # what an environment without the extra looks like
        "from cohortflow.cli import main\n"
        f"main(['dashboard', '--warehouse', {str(tmp_path / 'w.db')!r}])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 1
    assert "pip install 'cohortflow[dashboard]'" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("192.168.1.4", False)],
)
def test_only_loopback_hosts_are_quiet(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def test_reader_never_writes_nor_creates(tmp_path: Path) -> None:
    missing = Reader(str(tmp_path / "none.db"))
    with pytest.raises(WarehouseError, match="no warehouse"), missing.snapshot():
        pass
    assert not (tmp_path / "none.db").exists()
    target = str(tmp_path / "w.db")
    with open_warehouse(target, writer=True) as wh:
        wh.ensure_schema()
    reader = Reader(target)
    with pytest.raises(WarehouseError, match=r"readonly|read-only"), reader.snapshot() as wh:
        wh.execute("DELETE FROM batches")
    with reader.snapshot() as wh:
        assert wh.execute("SELECT count(*) FROM pipeline_state")[0][0] == 1
    with closing(sqlite3.connect(target)) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_postgres_reader_is_read_only(pg_url: str) -> None:
    with open_warehouse(pg_url, writer=True) as wh:
        wh.ensure_schema()
    reader = Reader(pg_url)
    try:
        with pytest.raises(WarehouseError, match="read-only"), reader.snapshot() as wh:
            wh.execute("DELETE FROM batches")
        with reader.snapshot() as wh:  # the failed connection was dropped, not reused
            assert wh.execute("SELECT count(*) FROM pipeline_state")[0][0] == 1
    finally:
        reader.close()
