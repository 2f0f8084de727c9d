"""The simulator's files in ``--data-dir``, the running-generator lock, and reset.

Layout (everything the simulator creates, and the only files reset deletes)::

    students.db (+ -journal, -wal, -shm)   the students source (SQLite)
    test_runs.log                          the test-run source (append-only lines)
    test_runs.log.N                        rotated logs (--rotate-every), .1 the newest
    .batches.db (+ -journal, -wal, -shm)   hidden: the batch list the API serves
    .simulator.json                        hidden: {pid, port, host, started_at} while serving
    .simulator.lock                        hidden: flock held by a running generator

A generator holds an exclusive ``flock`` on ``.simulator.lock`` for its whole
life, so "is one running?" has an exact answer even after ``kill -9`` (the
kernel drops the lock). Without a lock file, the pid in ``.simulator.json`` is
checked instead: a file whose process is gone is stale, i.e. not running.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from cohortflow.errors import ConfigError

STUDENTS_DB = "students.db"
TEST_RUNS_LOG = "test_runs.log"
BATCHES_DB = ".batches.db"
READY_FILE = ".simulator.json"
LOCK_FILE = ".simulator.lock"
SQLITE_SUFFIXES = ("", "-journal", "-wal", "-shm")
READY_LINE = "cohortflow-simulator ready port={port}"


@dataclass(frozen=True)
class DataDir:
    """Paths of the generated files under one data directory."""

    root: Path

    @property
    def students_db(self) -> Path:
        """The students source database."""
        return self.root / STUDENTS_DB

    @property
    def test_runs_log(self) -> Path:
        """The test-run log."""
        return self.root / TEST_RUNS_LOG

    @property
    def batches_db(self) -> Path:
        """The hidden batch list the API serves from."""
        return self.root / BATCHES_DB

    @property
    def ready_file(self) -> Path:
        """Written once the API listens; removed on clean exit."""
        return self.root / READY_FILE

    @property
    def lock_file(self) -> Path:
        """Held (flock) by a running generator."""
        return self.root / LOCK_FILE

    def generated_names(self) -> list[str]:
        """Every file name the simulator may create here (the ready file first)."""
        databases = [f"{base}{suffix}" for base in (STUDENTS_DB, BATCHES_DB) for suffix in SQLITE_SUFFIXES]
        return [READY_FILE, *databases, TEST_RUNS_LOG, LOCK_FILE]

    def rotated_logs(self) -> list[Path]:
        """The rotated logs ``test_runs.log.N`` (``--rotate-every``) that exist."""
        found = self.root.glob(f"{TEST_RUNS_LOG}.*") if self.root.is_dir() else []
        return sorted(p for p in found if p.suffix[1:].isdigit())

    def has_data(self) -> bool:
        """True when any source file already exists (a previous run's data)."""
        sources = (self.students_db, self.test_runs_log, self.batches_db)
        return any(p.exists() for p in sources) or bool(self.rotated_logs())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_ready(data_dir: DataDir) -> dict[str, Any] | None:
    """The ready file's content, or None when absent or unreadable."""
    try:
        content = json.loads(data_dir.ready_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return content if isinstance(content, dict) else None


def write_ready(data_dir: DataDir, info: dict[str, Any]) -> None:
    """Write the ready file atomically (temp file, then rename)."""
    temporary = data_dir.root / f"{READY_FILE}.{os.getpid()}.tmp"
    temporary.write_text(json.dumps(info), encoding="utf-8")
    os.replace(temporary, data_dir.ready_file)


def remove_ready(data_dir: DataDir) -> None:
    """Remove the ready file if it is ours (same pid)."""
    info = read_ready(data_dir)
    if info is not None and info.get("pid") == os.getpid():
        data_dir.ready_file.unlink(missing_ok=True)


def _lock_holder_pid(data_dir: DataDir) -> int | None:
    try:
        return int(data_dir.lock_file.read_text(encoding="ascii").strip() or 0) or None
    except (OSError, ValueError):
        return None


def running_pid(data_dir: DataDir) -> int | None:
    """Pid of the generator running on ``data_dir``, or None when none is."""
    if data_dir.lock_file.exists():
        with open(data_dir.lock_file, "a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return _lock_holder_pid(data_dir) or -1
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    info = read_ready(data_dir)
    pid = info.get("pid") if info else None
    return pid if isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid) else None


class GeneratorLock:
    """The exclusive lock a generator holds on its data directory while it runs."""

    def __init__(self, data_dir: DataDir) -> None:
        self._data_dir = data_dir
        self._handle: Any = None

    def __enter__(self) -> GeneratorLock:
        self._data_dir.root.mkdir(parents=True, exist_ok=True)
        handle = open(self._data_dir.lock_file, "a+b")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            pid = _lock_holder_pid(self._data_dir)
            msg = (
                f"another generator (pid {pid}) is already running on `{self._data_dir.root}`; "
                "stop it first or pass another --data-dir"
            )
            raise ConfigError(msg) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n".encode("ascii"))
        handle.flush()
        self._handle = handle
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._handle.close()


def _running_error(data_dir: DataDir, pid: int) -> ConfigError:
    shown = "unknown pid" if pid < 0 else f"pid {pid}"
    msg = (
        f"a generator ({shown}) is running on `{data_dir.root}`; stop it first "
        "(Ctrl-C or kill -TERM) or pass --force to delete its data anyway"
    )
    return ConfigError(msg)


def _delete_generated(data_dir: DataDir, keep: set[str]) -> list[Path]:
    deleted = []
    for name in data_dir.generated_names():
        path = data_dir.root / name
        if name not in keep and (path.is_file() or path.is_symlink()):
            path.unlink()
            deleted.append(path)
    for path in data_dir.rotated_logs():
        path.unlink()
        deleted.append(path)
    return deleted


def reset(data_dir: DataDir, *, force: bool = False) -> list[Path]:
    """Delete the generated files (and nothing else); return what was deleted.

    Holds the generator lock while deleting, so no generator starts halfway.

    Raises:
        ConfigError: a generator is running on the directory and ``force`` is false.

    """
    if not data_dir.root.is_dir():
        return []
    pid = running_pid(data_dir)
    if pid is not None and not force:
        raise _running_error(data_dir, pid)
    had_lock_file = data_dir.lock_file.exists()
    with open(data_dir.lock_file, "a+b") as handle:
        if pid is None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise _running_error(data_dir, _lock_holder_pid(data_dir) or -1) from None
        deleted = _delete_generated(data_dir, keep=set() if had_lock_file else {LOCK_FILE})
    if not had_lock_file:
        data_dir.lock_file.unlink(missing_ok=True)
    return deleted + _remove_stale_temporaries(data_dir)


def _remove_stale_temporaries(data_dir: DataDir) -> list[Path]:
    stale = sorted(data_dir.root.glob(f"{READY_FILE}.*.tmp")) if data_dir.root.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
