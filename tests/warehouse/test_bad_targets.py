"""Every bad --warehouse is one clear line and exit 1, never a traceback (real files, modes, the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.warehouse import open_warehouse
from cohortflow.warehouse.sqlite import SQLiteBackend
from tests.helpers import tiny_sources

ROOT_IGNORES_MODES = os.geteuid() == 0


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cohortflow", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        check=False,
    )


def _run(target: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    sources = tiny_sources(tmp / "sources")  # real, good sources: only the warehouse is wrong
    return _cli("run", "--once", "--quiet", "--warehouse", target, *sources, cwd=tmp)


def _file(tmp: Path) -> str:
    (tmp / "afile").write_text("x")
    return str(tmp / "afile" / "warehouse.db")


def _dir(tmp: Path) -> str:
    (tmp / "adir").mkdir()
    return str(tmp / "adir")


def _not_sqlite(tmp: Path) -> str:
    (tmp / "notes.db").write_text("these are my notes, not a database\n" * 200)
    return str(tmp / "notes.db")


def _readonly_file(tmp: Path) -> str:
    db = tmp / "ro.db"
    with open_warehouse(str(db), writer=True) as wh:
        wh.ensure_schema()
    db.chmod(0o444)
    return str(db)


def _readonly_dir(tmp: Path) -> str:
    (tmp / "locked").mkdir()
    (tmp / "locked").chmod(0o555)
    return str(tmp / "locked" / "sub" / "warehouse.db")


CASES: dict[str, tuple[Callable[[Path], str], str]] = {
    "parent is a file": (_file, "is a file, not a directory"),
    "a directory": (_dir, "is a directory"),
    "not a SQLite file": (_not_sqlite, "is not a SQLite database"),
    "read-only file": (_readonly_file, "is read-only"),
    "unwritable directory": (_readonly_dir, "is not writable"),
    "sqlite URL with a host": (lambda tmp: "sqlite://host/x.db", "sqlite:///absolute/path.db"),
    "unknown scheme": (lambda tmp: "mysql://u@h/db", "is not supported"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_warehouse_targets_are_one_clear_line(case: str, tmp_path: Path) -> None:
    make, says = CASES[case]
    if ROOT_IGNORES_MODES and case in ("read-only file", "unwritable directory"):
        pytest.skip("running as root: file modes do not stop root (checked by os.access, which says so too)")
    done = _run(make(tmp_path), tmp_path)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_report_on_a_directory_or_missing_file_is_one_clear_line(tmp_path: Path) -> None:
    for target, says in ((_dir(tmp_path), "is a directory"), (str(tmp_path / "none.db"), "no warehouse at")):
        done = _cli("report", "--warehouse", target, cwd=tmp_path)
        assert done.returncode == 1 and says in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_a_sqlite_url_with_three_slashes_is_an_absolute_path(tmp_path: Path) -> None:
    relative_twin = tmp_path / tmp_path.relative_to("/")  # where the old, relative reading would land
    with open_warehouse(f"sqlite://{tmp_path}/url.db", writer=True) as wh:
        wh.ensure_schema()
        assert isinstance(wh.backend, SQLiteBackend) and wh.backend.path == tmp_path / "url.db"
    assert (tmp_path / "url.db").exists() and not relative_twin.exists()
    with open_warehouse(f"sqlite:///{tmp_path}/url.db") as four_slashes:  # SQLAlchemy's absolute form
        assert (
            isinstance(four_slashes.backend, SQLiteBackend)
            and four_slashes.backend.path == tmp_path / "url.db"
        )
