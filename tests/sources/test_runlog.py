"""The log reader across rotations, on real files: rename, copytruncate, and what stays a reset.

Every scenario is read twice: by one reader that keeps its file open, and by a
fresh reader after every chunk (a restart from the committed cursor); both must
give every line exactly once, in the order written.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from cohortflow.errors import ConfigError, SourceReset
from cohortflow.sources import LogCursor, RunLog, logfiles
from cohortflow.sources.logfiles import is_rotated_name


def line(n: int) -> bytes:
    return b'{"result": "1/1", "student_id", %d, "lesson_id": 2}\n' % n


def lines(first: int, count: int) -> bytes:
    return b"".join(line(n) for n in range(first, first + count))


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def rotate_rename(path: Path) -> None:
    """Logrotate's default: shift `.N` to `.N+1`, the log to `.1`, a new empty log at the path."""
    numbered = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    for old in numbered:
        old.rename(path.with_name(f"{path.name}.{int(old.suffix[1:]) + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))
    path.touch()


def rotate_copytruncate(path: Path) -> None:
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    os.truncate(path, 0)


def numbered_copytruncate(path: Path) -> None:
    """Logrotate's copytruncate with numbered copies: shift `.N` to `.N+1`, copy, truncate."""
    numbered = sorted(
        (p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()),
        key=lambda p: -int(p.suffix[1:]),
    )
    for old in numbered:
        old.rename(path.with_name(f"{path.name}.{int(old.suffix[1:]) + 1}"))
    rotate_copytruncate(path)


class Reader:
    """Reads a log chunk by chunk, optionally as a new process would after each commit."""

    def __init__(self, path: Path, *, restart: bool, budget: int = 200) -> None:
        self.path, self.restart, self.budget = path, restart, budget
        self.log = RunLog(path)
        self.cursor = LogCursor()
        self.seen: list[bytes] = []

    def drain(self) -> list[bytes]:
        while True:
            if self.restart:
                self.log.close()
                self.log = RunLog(self.path)
            chunk = self.log.read(self.cursor, self.budget)
            if chunk is None:
                return self.seen
            self.seen += chunk.lines.column("line").to_pylist()
            self.cursor = chunk.cursor

    def close(self) -> None:
        self.log.close()


@pytest.fixture(params=[False, True], ids=["held-open", "restart-each-chunk"])
def reader(request: pytest.FixtureRequest, tmp_path: Path) -> Reader:
    made = Reader(tmp_path / "test_runs.log", restart=request.param)
    request.addfinalizer(made.close)
    return made


def split(data: bytes) -> list[bytes]:
    return [part + b"\n" for part in data.split(b"\n")[:-1]]


def test_rename_rotation_reads_the_old_file_to_its_end_then_the_new_one(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 10))
    assert reader.drain() == split(lines(0, 10))
    append(path, lines(10, 5))  # written after our last read, just before rotation
    rotate_rename(path)
    assert reader.drain() == split(lines(0, 15)), "the old file is read to its end"
    append(path, lines(15, 5))
    assert reader.drain() == split(lines(0, 20))
    assert reader.cursor.offset == len(lines(15, 5))


def test_the_new_file_is_not_started_until_the_writer_moved_to_it(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 3))
    reader.drain()
    rotate_rename(path)  # the new file is empty: a late writer may still append to the old one
    append(path.with_name("test_runs.log.1"), lines(3, 2))
    assert reader.drain() == split(lines(0, 5))
    append(path, lines(5, 2))
    assert reader.drain() == split(lines(0, 7))


def test_several_rotations_while_away_are_read_in_order(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 4))
    reader.drain()
    for first in (4, 8, 12):
        append(path, lines(first, 4))
        rotate_rename(path)
    append(path, lines(16, 4))
    assert reader.drain() == split(lines(0, 20))


def test_a_fresh_reader_starts_with_the_oldest_rotated_file(reader: Reader) -> None:
    path = reader.path
    for first in (0, 5, 10):
        append(path, lines(first, 5))
        rotate_rename(path)
    append(path, lines(15, 5))
    assert reader.drain() == split(lines(0, 20))


def test_copytruncate_reads_the_rest_from_the_copy_without_doubles(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 60))
    reader.drain()
    append(path, lines(60, 7))  # only in the copy after the truncate
    rotate_copytruncate(path)
    append(path, lines(67, 80))  # longer than what we had read: the size alone cannot tell
    assert reader.drain() == split(lines(0, 147))


def test_copytruncate_after_we_read_past_the_copy_moves_straight_on(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 100))  # longer than the head we identify it by
    reader.drain()
    shutil.copyfile(path, path.with_name("test_runs.log.1"))
    append(path, lines(100, 3))  # between the copy and the truncate: we happen to read it
    assert reader.drain() == split(lines(0, 103))
    os.truncate(path, 0)
    append(path, lines(103, 4))
    assert reader.drain() == split(lines(0, 107))


def test_a_rotated_file_left_with_a_half_line_ends_with_it(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 3) + b'{"result": "1/1", "stud')
    assert reader.drain() == split(lines(0, 3))
    rotate_rename(path)
    append(path, lines(3, 2))
    assert reader.drain() == [*split(lines(0, 3)), b'{"result": "1/1", "stud\n', *split(lines(3, 2))]


Change = Callable[[Path], None]


def _truncate(path: Path) -> None:
    os.truncate(path, 0)
    append(path, lines(100, 1))


def _cut_short(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)  # the head we name it by is still there


def _rewrite(path: Path) -> None:
    with path.open("r+b") as f:
        f.write(line(9))


def _replace(path: Path) -> None:
    path.unlink()
    path.write_bytes(lines(50, 20))


def _rename_elsewhere(path: Path) -> None:
    path.rename(path.parent.parent / "moved.log")
    path.write_bytes(lines(50, 20))


@pytest.mark.parametrize("fresh", [False, True], ids=["held-open", "after-restart"])
@pytest.mark.parametrize("change", [_truncate, _cut_short, _rewrite, _replace, _rename_elsewhere])
def test_a_log_replaced_without_a_copy_or_rotated_file_is_a_reset(
    tmp_path: Path, change: Change, fresh: bool
) -> None:
    path = tmp_path / "logs" / "test_runs.log"
    path.parent.mkdir()
    path.write_bytes(lines(0, 200))  # longer than the head we name it by
    log = RunLog(path)
    chunk = log.read(LogCursor(), 1 << 20)
    assert chunk is not None
    change(path)
    if fresh:
        log.close()
        log = RunLog(path)
    with pytest.raises(SourceReset, match="--on-reset restart"):
        log.read(chunk.cursor, 1 << 20)
    log.close()


def test_a_deleted_log_is_waited_for_and_a_different_one_is_a_reset(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 10))
    log = RunLog(path)
    chunk = log.read(LogCursor(), 1 << 20)
    assert chunk is not None
    path.unlink()
    assert log.read(chunk.cursor, 1 << 20) is None
    assert log.waiting
    path.write_bytes(lines(30, 20))  # it may well get the same inode back: its head tells
    with pytest.raises(SourceReset, match="--on-reset restart"):
        log.read(chunk.cursor, 1 << 20)
    log.close()


def test_configuration_errors_fail_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"directory .* does not exist"):
        RunLog(tmp_path / "nope" / "test_runs.log").check(once=False)
    with pytest.raises(ConfigError, match="is a directory"):
        RunLog(tmp_path).check(once=False)
    missing = RunLog(tmp_path / "test_runs.log")
    missing.check(once=False)  # follow mode waits for it
    with pytest.raises(ConfigError, match="does not exist; check --test-runs-log"):
        missing.check(once=True)
    assert missing.read(LogCursor(), 100) is None and missing.waiting


def test_lag_counts_the_rotated_rest(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 10))
    log = RunLog(path)
    chunk = log.read(LogCursor(), len(lines(0, 4)))
    assert chunk is not None
    rotate_rename(path)
    append(path, lines(10, 3))
    assert log.lag(chunk.cursor) == len(lines(4, 6)) + len(lines(10, 3))
    log.close()


def test_the_spark_interface_reads_ranges_of_a_rotated_file_by_identity(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 10))
    log = RunLog(path)
    first = log.aligned_end(LogCursor(), len(lines(0, 4)))
    assert first.offset == len(lines(0, 4))
    append(path, lines(10, 2))
    rotate_rename(path)
    append(path, lines(12, 3))
    end_of_old = log.aligned_end(first)
    assert (end_of_old.identity, end_of_old.offset) == (first.identity, len(lines(0, 12)))
    ranges = log.cut_points(first.offset, end_of_old.offset, 100, at=end_of_old)
    got = [
        ln
        for s, e in ranges
        for b in log.read_range(s, e, 64, at=end_of_old)
        for ln in b.column("line").to_pylist()
    ]
    assert got == split(lines(4, 8))
    following = log.aligned_end(end_of_old)
    assert following.identity == (path.stat().st_dev, path.stat().st_ino) and following.offset == 0
    assert log.aligned_end(following).offset == len(lines(12, 3))
    log.close()


def test_a_spark_range_planned_before_a_copytruncate_is_read_from_the_copy(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 100))
    log = RunLog(path)
    end = log.aligned_end(LogCursor())  # the driver plans [0, end) of the live file
    rotate_copytruncate(path)  # then the executor reads: the live file holds other lines
    append(path, lines(100, 200))
    got = [ln for b in log.read_range(0, end.offset, 1000, at=end) for ln in b.column("line").to_pylist()]
    assert got == split(lines(0, 100))
    log.close()


@pytest.mark.parametrize(
    ("name", "rotated"),
    [
        ("test_runs.log.1", True),
        ("test_runs.log.12", True),
        ("test_runs.log-20260101", True),
        ("test_runs.log-2026-01-01.1", True),
        ("test_runs.log", False),
        ("test_runs.log.2.gz", False),
        ("test_runs.log.bak", False),
        ("test_runs.logs.1", False),
    ],
)
def test_which_names_are_rotated_files_of_the_log(name: str, rotated: bool) -> None:
    assert is_rotated_name("test_runs.log", name) is rotated


def test_a_backup_beside_the_log_is_not_read(reader: Reader) -> None:
    path = reader.path
    path.write_bytes(lines(0, 5))
    shutil.copyfile(path, path.with_name("test_runs.log.bak"))
    shutil.copyfile(path, path.with_name("test_runs.log.1.gz"))
    assert reader.drain() == split(lines(0, 5))


def test_a_rotation_renaming_files_while_we_look_for_the_copy_does_not_send_us_to_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rotations every few ms: between our listing and our opens, `.1` became `.2`.

    The name listed for one file then holds another; checking the bytes under the name
    but reading the file listed under it read an older copy from our offset, then ours
    again from its start (seen as doubled quarantine rows in the rotation crash test).
    """
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 100))
    rotate_copytruncate(path)
    append(path, lines(100, 100))  # longer than the head the cursor names it by
    reader = Reader(path, restart=False)
    assert reader.drain() == split(lines(0, 200))  # the copy, then the live file to its end
    numbered_copytruncate(path)  # ours (lines 100-199) is now `.1`
    append(path, lines(200, 100))

    listed = logfiles.scan

    def rotating_right_after_the_listing(log_path: Path) -> list[logfiles.LogFile]:
        files = listed(log_path)
        monkeypatch.setattr(logfiles, "scan", listed)  # once
        numbered_copytruncate(path)  # ours becomes `.2`: the name listed for the oldest copy
        append(path, lines(300, 5))
        return files

    monkeypatch.setattr(logfiles, "scan", rotating_right_after_the_listing)
    assert reader.drain() == split(lines(0, 305))
    reader.close()


def test_a_copy_still_being_made_is_not_left_early(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 100))
    log = RunLog(path)
    first = log.read(LogCursor(), len(lines(0, 50)))
    assert first is not None
    rotate_copytruncate(path)  # we are behind: the rest of lines 0-99 is in the copy
    append(path, lines(100, 100))
    path.with_name("test_runs.log.1").rename(path.with_name("test_runs.log.2"))
    making = path.with_name("test_runs.log.1")
    making.write_bytes(path.read_bytes()[: len(lines(100, 60)) + 7])  # the next copy, mid-way
    reader = Reader(path, restart=False)
    reader.log, reader.cursor = log, first.cursor
    assert reader.drain() == split(lines(50, 110)), "no fragment taken, the live file not started"
    making.write_bytes(path.read_bytes())  # the copy completes, then the truncate
    os.truncate(path, 0)
    append(path, lines(200, 5))
    assert reader.drain() == split(lines(50, 155))
    log.close()


def test_an_empty_rotated_file_is_left_for_the_next(reader: Reader) -> None:
    path = reader.path
    path.touch()
    assert reader.drain() == []
    rotate_rename(path)
    append(path, lines(0, 3))
    assert reader.drain() == split(lines(0, 3))


def test_an_empty_copy_just_created_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "test_runs.log"
    path.write_bytes(lines(0, 100))
    log = RunLog(path)
    first = log.read(LogCursor(), len(lines(0, 50)))
    assert first is not None
    rotate_copytruncate(path)  # we are behind, in the first copy
    append(path, lines(100, 100))
    path.with_name("test_runs.log.1").rename(path.with_name("test_runs.log.2"))
    making = path.with_name("test_runs.log.1")
    making.touch()  # the next copy, created, nothing copied yet; the log not truncated yet
    reader = Reader(path, restart=False)
    reader.log, reader.cursor = log, first.cursor
    assert reader.drain() == split(lines(50, 50)), "the live file is not started yet"
    making.write_bytes(path.read_bytes())
    os.truncate(path, 0)
    append(path, lines(200, 5))
    assert reader.drain() == split(lines(50, 155))
    log.close()
